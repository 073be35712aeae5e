"""Training runs launched from the app (calibration RL).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("recipe", sa.String(255), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("output_dir", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("return_code", sa.Integer(), nullable=True),
        sa.Column("checkpoints", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("final_metrics", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_training_runs_created_at", "training_runs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_training_runs_created_at", table_name="training_runs")
    op.drop_table("training_runs")
