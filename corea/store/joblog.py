"""The jobs table's methods of the :class:`~corea.store.storage.Store`: the child processes the
app started (:mod:`corea.jobs`), recorded so they survive a restart (:class:`JobsMixin`)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .errors import storage_error
from .schema import JOB_JSON, Job, job_dict, utcnow

__all__ = ["JobsMixin"]


class JobsMixin:
    """The :class:`~corea.store.storage.Store` methods for jobs. Uses the store's ``_write()``
    transaction, ``_Session`` factory and ``description``."""

    def add_job(self, kind: str, name: str, config: dict, output_dir: str, pid: int | None,
                status: str = "running") -> int:
        """Record a launched job (``kind`` ``train`` or ``evaluate``); returns its id.

        Raises:
            StorageError: the database cannot be written."""
        row = Job(kind=kind, name=name, config=json.dumps(config, default=str), status=status,
                  pid=pid, output_dir=str(output_dir), started_at=utcnow())
        try:
            with self._write() as session:
                session.add(row)
                session.flush()
                return row.id
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Set fields of a job (``config``/``checkpoints``/``final_metrics`` as Python objects).

        Raises:
            ValueError: unknown job id or field. StorageError: the database cannot be written."""
        cols = {c.key for c in Job.__table__.columns}
        bad = set(fields) - cols
        if bad:
            raise ValueError(f"unknown job fields: {sorted(bad)}")
        try:
            with self._write() as session:
                row = session.get(Job, job_id)
                if row is None:
                    raise ValueError(f"no job with id {job_id}")
                for k, v in fields.items():
                    setattr(row, k, json.dumps(v, default=str) if k in JOB_JSON else v)
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        """One job as a dict (JSON fields decoded), or None."""
        try:
            with self._Session() as session:
                row = session.get(Job, job_id)
                return job_dict(row) if row is not None else None
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc

    def list_jobs(self, kind: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
        """Jobs (of one ``kind`` when given), newest first."""
        stmt = select(Job).order_by(Job.id.desc())
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        if limit is not None:
            stmt = stmt.limit(limit)
        try:
            with self._Session() as session:
                return [job_dict(r) for r in session.execute(stmt).scalars().all()]
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc
