"""A local journal for turns the database could not take: while the database is away (a server
stopped, a file made read-only, a full disk), each turn's row is appended to a JSONL file on the
app's machine; the first write that works again replays the journal first, in order, so no turn of
that window is lost. Replayed rows keep the time they were asked; they get their ids when written.
What an entry holds is the writer's business (:class:`corea.store.durable.DurableLog` keeps turns
and ratings, each with a key that makes its replay idempotent).

The file is locked (``flock``) for every append and replay, so several app processes on one
machine may share it. Default place: ``<cache_dir>/journal/<hash of the database URL>.jsonl``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["Journal", "journal_path"]


def journal_path(cache_dir: str | os.PathLike, db_url: str) -> Path:
    """The default journal file of one database (the URL is hashed: no credentials in names)."""
    digest = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / "journal" / f"{digest}.jsonl"


class Journal:
    """Rows waiting for the database (see the module docstring). Thread- and process-safe."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, row: dict[str, Any]) -> int:
        """Keep one row; returns how many rows are waiting now."""
        with self._locked() as fh:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            fh.seek(0)
            return sum(1 for line in fh if line.strip())

    def pending(self) -> int:
        """How many rows are waiting (0 when there is no journal)."""
        if not self.path.is_file():
            return 0
        with self._locked() as fh:
            fh.seek(0)
            return sum(1 for line in fh if line.strip())

    def counts(self) -> dict[str, int]:
        """How many entries of each ``kind`` are waiting (an entry without one, written by an
        older version, counts as a ``turn``); ``{}`` when there is no journal."""
        if not self.path.is_file():
            return {}
        out: dict[str, int] = {}
        with self._locked() as fh:
            fh.seek(0)
            for line in fh:
                if line.strip():
                    kind = json.loads(line).get("kind") or "turn"
                    out[kind] = out.get(kind, 0) + 1
        return out

    def replay(self, write) -> int:
        """Write every waiting row, oldest first, with ``write(row)``; returns how many were
        written. A row that fails stops the replay: it and the later rows stay in the journal and
        the error is raised."""
        if not self.path.is_file():
            return 0
        with self._locked() as fh:
            fh.seek(0)
            rows = [json.loads(line) for line in fh if line.strip()]
            if not rows:
                return 0
            done = 0
            try:
                for row in rows:
                    write(row)
                    done += 1
            finally:
                fh.seek(0)
                fh.truncate()
                for row in rows[done:]:
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            return done
