"""One table for every child process the app starts: training runs become jobs with a kind.

``training_runs`` is renamed ``jobs``; ``recipe`` becomes ``name`` (a training run's recipe, an
evaluation's run folder) and ``kind`` is added (``train`` for the existing rows, or ``evaluate``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_training_runs_created_at", table_name="training_runs")
    op.rename_table("training_runs", "jobs")
    with op.batch_alter_table("jobs", recreate="always") as b:
        b.alter_column("recipe", new_column_name="name", existing_type=sa.String(255),
                       existing_nullable=False)
        b.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="train"))
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    _resync_id_sequence("jobs")


def _resync_id_sequence(table: str) -> None:
    """PostgreSQL: the rebuilt table's id sequence starts at 1 although the copied rows keep
    their ids, so the next insert would collide with row 1; move it past the largest id. (SQLite
    needs nothing: a rowid follows the largest one.)"""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
               f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")


def downgrade() -> None:
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.execute("DELETE FROM jobs WHERE kind != 'train'")
    with op.batch_alter_table("jobs", recreate="always") as b:
        b.drop_column("kind")
        b.alter_column("name", new_column_name="recipe", existing_type=sa.String(255),
                       existing_nullable=False)
    op.rename_table("jobs", "training_runs")
    op.create_index("ix_training_runs_created_at", "training_runs", ["created_at"])
    _resync_id_sequence("training_runs")
