"""The interaction log: every cascade run and the user's ratings of it, in a SQL database.

One :class:`Store` per process. It is thread-safe (one engine, one ``sessionmaker``, a short
transaction per call), so Gradio worker threads can share it.

The schema is managed by Alembic; the migration scripts ship inside the package
(``corea/store/migrations``), so no ``alembic.ini`` is needed and the log works from any working
directory. Opening a :class:`Store` upgrades the database to the newest revision; later schema
changes are new revision files, so existing rows are never lost. To write a new revision::

    python -c "from alembic import command; from corea.store.storage import alembic_config; \\
        command.revision(alembic_config('sqlite:///db/corea.sqlite'), 'add foo', autogenerate=True)"

Split by job: tables (:mod:`.schema`), reading and export (:mod:`.reading`), ratings
(:mod:`.ratings`), jobs (:mod:`.joblog`); here: opening, migrating and writing turns.

For SQLite (the default, ``sqlite:///db/corea.sqlite``) each connection uses WAL journaling and a
busy timeout, so readers never block the writer and several processes may share one file.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

from ..events import CascadeResult
from .errors import HINT, StorageError, storage_error
from .joblog import JobsMixin
from .ratings import THUMBS, RatingsMixin, check_rating
from .reading import ReadingMixin
from .schema import (EXPORT_FIELDS, Base, Interaction, InteractionTier, Job,  # noqa: F401
                     Rating, tier_row, utcnow)
from .tiers import legacy_tiers, turn_tiers

__all__ = ["Base", "Interaction", "InteractionTier", "Rating", "Store", "StorageError",
           "open_store", "alembic_config", "check_rating", "MIGRATIONS_DIR", "THUMBS"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Alembic script folder shipped with the package."""

BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another writer's lock (milliseconds)."""
CONNECT_TIMEOUT_S = 10
"""How long a PostgreSQL connection attempt may take (seconds) unless the URL says otherwise."""


# --------------------------------------------------------------------------------------- store


class Store(ReadingMixin, RatingsMixin, JobsMixin):
    """The interaction log. Thread-safe; create one per process and share it. Reading and
    export, ratings and jobs come from :class:`~.reading.ReadingMixin`,
    :class:`~.ratings.RatingsMixin` and :class:`~.joblog.JobsMixin`.

    Args:
        db_url: SQLAlchemy URL, e.g. ``sqlite:///db/corea.sqlite`` (relative to the working
            directory; its folder is created). ``sqlite://`` gives a throw-away in-memory log.

    Raises:
        StorageError: the database is corrupt (not SQLite), read-only, unreachable, has an
            unknown (newer) schema revision, or its folder cannot be created.
    """

    def __init__(self, db_url: str):
        try:
            self.url = make_url(db_url)
        except SQLAlchemyError as exc:  # ArgumentError
            raise StorageError(f"invalid database URL {db_url!r} ({exc}); {HINT}") from exc
        self.description = _describe_url(self.url)
        self._write_lock = threading.Lock()
        is_sqlite = self.url.get_backend_name() == "sqlite"
        path = _sqlite_path(self.url) if is_sqlite else None
        read_only = self.url.query.get("mode") == "ro" or "mode=ro" in (self.url.database or "")
        if path and not read_only:
            try:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the folder of {self.description} ({exc.strerror or exc}); "
                    f"{HINT}") from exc
            if Path(path).is_dir():
                raise StorageError(f"{self.description} is a folder, not a file; {HINT}")
        try:
            self.engine = _make_engine(self.url)
        except Exception as exc:  # missing driver, bad URL arguments
            raise storage_error(self.description, exc) from exc
        self._Session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._upgrade()
            self._check_writable()
        except StorageError:
            self.engine.dispose()
            raise
        except Exception as exc:  # SQLAlchemy/sqlite3/OS errors, alembic.util.CommandError
            self.engine.dispose()
            raise storage_error(self.description, exc) from exc

    # -- setup

    def _upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision (a no-op when already there)."""
        from alembic import command

        if self.url.get_backend_name() == "sqlite" and not _is_memory(self.url):
            # A separate connection with foreign keys off: SQLite table rebuilds (batch
            # migrations) must not trip over rows referencing the rebuilt table.
            engine = _make_engine(self.url, foreign_keys=False, migration=True)
        else:
            engine = self.engine
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(self.url, conn), "head")
        finally:
            if engine is not self.engine:
                engine.dispose()

    def _check_writable(self) -> None:
        """Fail now, not at the first logged question, when the database is read-only."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin() as tx:
                conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
                tx.rollback()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A short write transaction (``BEGIN IMMEDIATE`` on SQLite), serialised in-process."""
        with self._write_lock, self._Session() as session:
            session.connection(execution_options={"sqlite_immediate": True})
            yield session
            session.commit()

    def close(self) -> None:
        """Release all connections. The store must not be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.description})"

    # -- writing

    def log_interaction(self, result: CascadeResult, session_id: str | None,
                        extra: dict[str, Any] | None = None) -> int:
        """Append one cascade run; returns its new row id and sets ``result.interaction_id``.

        Args:
            result: the run's record.
            session_id: the UI session that asked (groups a user's questions).
            extra: further JSON-serialisable signals, merged into the ``extra`` column.

        Raises:
            StorageError: the row could not be written (disk full, locked too long, ...).
        """
        return self.log_row(self.interaction_row(result, session_id, extra), result=result)

    @staticmethod
    def interaction_row(result: CascadeResult, session_id: str | None,
                        extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The column values of one cascade run as a JSON-serialisable dict (``created_at`` an ISO
        string, ``tiers`` the records of its ``interaction_tiers`` rows,
        :func:`corea.store.tiers.turn_tiers`): what :meth:`log_row` writes, and what a journal
        keeps while the database is away (:mod:`corea.journal`)."""
        slm, llm, dec = result.slm, result.llm, result.decision
        extra_all = _extra_of(result)
        if extra:
            extra_all.update(extra)
        return dict(
            created_at=utcnow().isoformat(),
            session_id=session_id,
            question=result.question,
            threshold=float(result.threshold),
            status=result.status,
            slm_model=slm.model,
            slm_output=slm.text or "",
            slm_answer=slm.answer,
            slm_answer_method=slm.answer_method,
            confidence=slm.confidence,
            confidence_method=slm.confidence_method,
            confidence_note=slm.confidence_note,
            decision_defer=bool(dec.defer) if dec is not None else llm is not None,
            decision_reason=dec.reason if dec is not None else None,
            decision_message=dec.message if dec is not None else None,
            llm_model=llm.model if llm else None,
            llm_output=llm.text if llm else None,
            llm_answer=llm.answer if llm else None,
            final_answer=result.final_answer,
            final_model=result.final_model,
            slm_prompt_tokens=slm.prompt_tokens,
            slm_completion_tokens=slm.completion_tokens,
            llm_prompt_tokens=llm.prompt_tokens if llm else None,
            llm_completion_tokens=llm.completion_tokens if llm else None,
            slm_latency_s=slm.latency_s,
            llm_latency_s=llm.latency_s if llm else None,
            latency_s=result.latency_s,
            cost_usd=result.cost_usd,
            errors=json.dumps(_errors_of(result), ensure_ascii=False),
            extra=json.dumps(extra_all, ensure_ascii=False, default=str),
            tiers=turn_tiers(result),
        )

    def log_row(self, values: dict[str, Any], result: CascadeResult | None = None,
                keep_time: bool = False, key: str | None = None) -> int:
        """Append one interaction and its tier rows from :meth:`interaction_row` values; returns
        its id (also set on ``result`` when given). ``keep_time``: keep the values'
        ``created_at`` (a journaled turn written later) instead of the time of writing.
        ``key``: a journaled turn's key; a turn with a key already in the log is not written
        again (its id is returned), so a replay can be repeated. Values without ``tiers`` (a
        journal of an older version) get the tiers :func:`corea.store.tiers.legacy_tiers`
        rebuilds from their columns.

        Raises:
            StorageError: the row could not be written."""
        values = dict(values)
        created = values.pop("created_at", None)
        tiers = values.pop("tiers", None)
        if tiers is None:
            tiers = legacy_tiers({**values, "errors": json.loads(values.get("errors") or "[]"),
                                  "extra": json.loads(values.get("extra") or "{}")})
        try:
            with self._write() as session:
                old = None if key is None else session.scalar(
                    select(Interaction.id).where(Interaction.journal_key == key))
                if old is not None:  # already replayed: nothing to write
                    new_id = old
                else:
                    row = Interaction(**values, journal_key=key)
                    # under the write lock: id order == time order (except replayed journal rows)
                    row.created_at = (datetime.fromisoformat(created) if keep_time and created
                                      else utcnow())
                    session.add(row)
                    session.flush()
                    new_id = row.id
                    session.add_all([tier_row(new_id, t) for t in tiers])
        except IntegrityError as exc:  # another process replayed the same key just now
            found = self.id_for_key(key) if key is not None else None
            if found is None:
                raise storage_error(self.description, exc) from exc
            new_id = found
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc
        if result is not None:
            result.interaction_id = new_id
        return new_id

    def id_for_key(self, key: str) -> int | None:
        """The id of the turn written from the journal with ``key``, ``None`` if none yet.

        Raises:
            StorageError: the database cannot be read."""
        try:
            with self._Session() as session:
                return session.scalar(select(Interaction.id).where(
                    Interaction.journal_key == key))
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc


# ------------------------------------------------------------------------------------- helpers


def alembic_config(db_url: str | URL, connection=None):
    """An Alembic ``Config`` for the packaged migrations (no ``alembic.ini`` needed).

    Args:
        db_url: SQLAlchemy URL of the database.
        connection: optional open SQLAlchemy ``Connection`` the migrations run on.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = make_url(db_url) if isinstance(db_url, str) else db_url
    # ConfigParser interpolation: '%' must be doubled.
    cfg.set_main_option("sqlalchemy.url",
                        url.render_as_string(hide_password=False).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _is_memory(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or "mode=memory" in db or url.query.get("mode") == "memory"


def _sqlite_path(url: URL) -> str | None:
    """The file path of a sqlite URL (``None`` for in-memory databases)."""
    if _is_memory(url):
        return None
    db = url.database or ""
    if db.startswith("file:"):
        db = db[len("file:"):].split("?", 1)[0]
    return db


def _describe_url(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        path = _sqlite_path(url)
        return f"database file {path}" if path else "in-memory database"
    return f"database {url.render_as_string(hide_password=True)}"


def _install_sqlite_listeners(engine: Engine, foreign_keys: bool) -> None:
    """WAL + busy timeout on connect, and real (transactional, BEGIN IMMEDIATE-able) SQLite
    transactions instead of pysqlite's implicit ones."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _make_engine(url: URL, *, foreign_keys: bool = True, migration: bool = False) -> Engine:
    if url.get_backend_name() != "sqlite":
        # a server that does not answer fails a connection in seconds, not at the OS's
        # TCP timeout (minutes): a turn's write waits that long before it is journaled
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} \
            if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query \
            else {}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False,
                                               "timeout": BUSY_TIMEOUT_MS / 1000}}
    if _is_memory(url):
        kwargs["poolclass"] = StaticPool
    elif migration:
        kwargs["poolclass"] = NullPool
    engine = create_engine(url, **kwargs)
    _install_sqlite_listeners(engine, foreign_keys)
    return engine


def _errors_of(result: CascadeResult) -> list[str]:
    errors = []
    if result.slm.error:
        errors.append(f"slm error: {result.slm.error}")
    for step in result.tiers[1:]:
        if step.role == "mid" and step.output.error:
            errors.append(f"tier {step.index} error: {step.output.error}")
    if result.llm is not None and result.llm.error:
        errors.append(f"llm error: {result.llm.error}")
    errors.extend(str(w) for w in result.warnings)
    return errors


def _extra_of(result: CascadeResult) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "slm_ttft_s": result.slm.ttft_s,
        "slm_finish_reason": result.slm.finish_reason,
        "slm_cost_usd": result.slm.cost_usd,
        "slm_signals": result.slm.signals,
    }
    if result.decision is not None:
        extra.update(decision_signal=result.decision.signal,
                     decision_confidence=result.decision.confidence,
                     decision_signal_note=result.decision.signal_note)
    if result.llm is not None:
        extra.update(llm_ttft_s=result.llm.ttft_s, llm_finish_reason=result.llm.finish_reason,
                     llm_cost_usd=result.llm.cost_usd, llm_answer_method=result.llm.answer_method)
    if result.context:
        extra["context"] = [m.as_dict() for m in result.context]
    return extra


def open_store(db_url: str) -> tuple[Store | None, str | None]:
    """Open the log without raising: ``(store, None)``, or ``(None, message)`` where
    ``message`` tells the user why logging is off."""
    try:
        return Store(db_url), None
    except StorageError as exc:
        return None, f"Logging is off: {exc}"
