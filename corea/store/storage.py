"""The interaction log: every cascade run and the user's ratings of it, in a SQL database.

(Longer than 400 lines on purpose: the models, the Alembic wiring and the store's methods for
interactions, ratings, jobs and the export change together whenever the schema does.)

One :class:`Store` per process. It is thread-safe (one engine, one ``sessionmaker``, a short
transaction per call), so Gradio worker threads can share it.

The schema is managed by Alembic; the migration scripts ship inside the package
(``corea/store/migrations``), so no ``alembic.ini`` is needed and the log works from any working
directory. Opening a :class:`Store` upgrades the database to the newest revision; later schema
changes are new revision files, so existing rows are never lost. To write a new revision::

    python -c "from alembic import command; from corea.store.storage import alembic_config; \\
        command.revision(alembic_config('sqlite:///db/corea.sqlite'), 'add foo', autogenerate=True)"

For SQLite (the default, ``sqlite:///db/corea.sqlite``) each connection uses WAL journaling and a
busy timeout, so readers never block the writer and several processes may share one file.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator

from sqlalchemy import (Boolean, DateTime, Float, ForeignKey, Integer, MetaData, String, Text,
                        TypeDecorator, UniqueConstraint, create_engine, event, exists, func, or_,
                        select, text)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

from ..events import CascadeResult
from .tiers import TIER_KEYS, legacy_tiers, tier_record, turn_tiers

__all__ = ["Base", "Interaction", "InteractionTier", "Rating", "Store", "StorageError",
           "open_store", "alembic_config", "check_rating", "MIGRATIONS_DIR", "THUMBS"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Alembic script folder shipped with the package."""

THUMBS = ("up", "down")
BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another writer's lock (milliseconds)."""
CONNECT_TIMEOUT_S = 10
"""How long a PostgreSQL connection attempt may take (seconds) unless the URL says otherwise."""

_HINT = "set COREA_DB_URL to use another database"


class StorageError(Exception):
    """The interaction log cannot be opened or written (corrupt, read-only, unreachable, ...).

    The message is meant for users: it names the database and the cause.
    """


# --------------------------------------------------------------------------------------- schema


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime, stored naive (UTC) so it works the same on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class Interaction(Base):
    """One cascade run (one question). Mirrors :class:`corea.events.CascadeResult`.

    Token counts are tokens, latencies seconds, cost USD. ``llm_*`` columns are NULL when the
    question was not deferred. ``errors`` is a JSON list of strings (model errors, then
    user-visible warnings); ``extra`` a JSON object for signals without a column yet.

    Every tier that ran has a row in ``interaction_tiers`` (:class:`InteractionTier`, since
    revision 0004). The ``slm_*`` / ``llm_*`` columns are still written: ``slm_*`` is the first
    tier, ``llm_*`` the last tier that ran after it, ``decision_*`` the first tier's decision and
    ``cost_usd`` the total; rows of revision 0003 and older have only these (and, for an N-tier
    turn, ``extra["tiers"]``), from which :func:`corea.store.tiers.legacy_tiers` rebuilds the
    tiers. A question asked with earlier turns stores them in ``extra["context"]``
    (``[{"role", "content"}]``). ``journal_key`` is the key of a turn written from the local
    journal (:mod:`corea.journal`): a replayed turn is written once, however often it is
    replayed.
    """

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_utcnow, index=True)
    session_id: Mapped[str | None] = mapped_column(String(255))
    question: Mapped[str] = mapped_column(Text)
    threshold: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    slm_model: Mapped[str] = mapped_column(String(255), index=True)
    slm_output: Mapped[str] = mapped_column(Text, default="")
    slm_answer: Mapped[str | None] = mapped_column(Text)
    slm_answer_method: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(Float)
    confidence_method: Mapped[str | None] = mapped_column(String(16))
    confidence_note: Mapped[str | None] = mapped_column(Text)
    decision_defer: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    decision_reason: Mapped[str | None] = mapped_column(String(32))
    decision_message: Mapped[str | None] = mapped_column(Text)
    llm_model: Mapped[str | None] = mapped_column(String(255))
    llm_output: Mapped[str | None] = mapped_column(Text)
    llm_answer: Mapped[str | None] = mapped_column(Text)
    final_answer: Mapped[str | None] = mapped_column(Text)
    final_model: Mapped[str | None] = mapped_column(String(255))
    slm_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    slm_completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    llm_prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    llm_completion_tokens: Mapped[int | None] = mapped_column(Integer)
    slm_latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    llm_latency_s: Mapped[float | None] = mapped_column(Float)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    errors: Mapped[str] = mapped_column(Text, default="[]")
    extra: Mapped[str] = mapped_column(Text, default="{}")
    journal_key: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)


class InteractionTier(Base):
    """One tier that ran in one interaction (:class:`corea.events.TierStep`); the columns are
    the keys of a tier record (:data:`corea.store.tiers.TIER_KEYS`, ``index`` as
    ``tier_index``). Tokens are tokens, times seconds, cost USD, confidences in [0, 1].
    ``decision`` is ``kept``/``deferred`` (``None`` for the last tier or a tier stopped before
    deciding); ``signal_value`` is the number compared with ``threshold``; ``extra`` a JSON
    object of the tier's fields without a column (token signals, ...)."""

    __tablename__ = "interaction_tiers"
    __table_args__ = (UniqueConstraint("interaction_id", "tier_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"), index=True)
    tier_index: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(8))
    model: Mapped[str] = mapped_column(String(255), index=True)
    threshold: Mapped[float | None] = mapped_column(Float)
    answered: Mapped[bool] = mapped_column(Boolean, default=False)
    answer: Mapped[str | None] = mapped_column(Text)
    answer_method: Mapped[str | None] = mapped_column(String(16))
    stated_confidence: Mapped[float | None] = mapped_column(Float)
    confidence_method: Mapped[str | None] = mapped_column(String(16))
    confidence_note: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[str | None] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(32))
    signal: Mapped[str | None] = mapped_column(String(32))
    signal_value: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text, default="")
    extra: Mapped[str] = mapped_column(Text, default="{}")


def _tier_row(interaction_id: int, values: dict[str, Any]) -> InteractionTier:
    rec = tier_record(values)
    cols = {k: rec[k] for k in TIER_KEYS if k not in ("index", "extra")}
    return InteractionTier(interaction_id=interaction_id, tier_index=rec["index"],
                           extra=json.dumps(rec["extra"], ensure_ascii=False, default=str),
                           **cols)


def _tier_dict(row: InteractionTier) -> dict[str, Any]:
    values = {k: getattr(row, k) for k in TIER_KEYS if k not in ("index", "extra")}
    return tier_record(values | {"index": row.tier_index, "extra": json.loads(row.extra or "{}")})


class Rating(Base):
    """A user's rating of one interaction. Several per interaction are allowed; the latest row
    (highest id) is the one that counts."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_utcnow)
    thumbs: Mapped[str | None] = mapped_column(String(8))
    correction: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    journal_key: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)


class Job(Base):
    """A child process the app started (:mod:`corea.jobs`): a calibration-RL run (``kind``
    ``train``, ``name`` its recipe) or an evaluation (``evaluate``, ``name`` its run folder).

    ``status``: ``starting``, ``running``, ``stopping``, ``completed``, ``failed``, ``stopped`` or
    ``interrupted`` (the app stopped while it ran). ``config`` is the launch configuration (JSON,
    with the command and the log file), ``checkpoints`` the checkpoint folders found (JSON list),
    ``final_metrics`` the last logged metrics (JSON)."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16), default="train")
    name: Mapped[str] = mapped_column(String(255))
    config: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int | None] = mapped_column(Integer)
    output_dir: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    return_code: Mapped[int | None] = mapped_column(Integer)
    checkpoints: Mapped[str] = mapped_column(Text, default="[]")
    final_metrics: Mapped[str] = mapped_column(Text, default="{}")
    message: Mapped[str | None] = mapped_column(Text)


_JOB_JSON = ("config", "checkpoints", "final_metrics")


def _job_dict(r: Job) -> dict[str, Any]:
    d = {c.key: getattr(r, c.key) for c in Job.__table__.columns}
    for k in _JOB_JSON:
        d[k] = json.loads(d[k] or ("[]" if k == "checkpoints" else "{}"))
    return d


_INTERACTION_COLUMNS = [c.key for c in Interaction.__table__.columns]

EXPORT_FIELDS = ("id", "created_at", "question", "slm_answer", "slm_output", "llm_answer",
                 "llm_output", "final_answer", "final_model", "confidence", "decision_defer",
                 "decision_reason", "threshold", "rating_thumbs", "rating_correction",
                 "rating_comment", "tiers")
"""Keys of each line written by :meth:`Store.export_rated_jsonl`, in order (``tiers``: the
interaction's tier records, :data:`corea.store.tiers.TIER_KEYS`)."""


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


def _cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).strip()
    return msg.splitlines()[0] if msg else type(exc).__name__


def _storage_error(what: str, exc: BaseException) -> StorageError:
    """Turn a low-level error into a :class:`StorageError` with a user-facing message."""
    cause = _cause(exc)
    low = cause.lower()
    if "not a database" in low or "malformed" in low or "file is encrypted" in low:
        msg = (f"{what} is not a valid SQLite database ({cause}); move it away or "
               f"set COREA_DB_URL")
    elif "readonly" in low or "read-only" in low or "permission denied" in low:
        msg = f"{what} is read-only ({cause}); make it writable or {_HINT}"
    elif "unable to open" in low or "not a directory" in low or "no such file" in low:
        msg = (f"cannot open {what} ({cause}); check that its folder exists and is writable, "
               f"or {_HINT}")
    elif "locked" in low or "busy" in low:
        msg = f"{what} is locked by another process ({cause}); try again or {_HINT}"
    elif "can't locate revision" in low or "no such revision" in low:
        msg = (f"{what} has a schema revision this version of COREA does not know ({cause}); "
               f"it was written by a newer COREA: upgrade COREA or {_HINT}")
    else:
        msg = f"cannot use {what} ({type(exc).__name__}: {cause}); {_HINT}"
    return StorageError(msg)


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


def _row_dict(inter: Interaction, rating: Rating | None,
              tiers: list[dict[str, Any]] | None) -> dict[str, Any]:
    d = {k: getattr(inter, k) for k in _INTERACTION_COLUMNS}
    d["decision_defer"] = bool(d["decision_defer"])
    d["errors"] = json.loads(d["errors"] or "[]")
    d["extra"] = json.loads(d["extra"] or "{}")
    d["rating_thumbs"] = rating.thumbs if rating else None
    d["rating_correction"] = rating.correction if rating else None
    d["rating_comment"] = rating.comment if rating else None
    d["rating_created_at"] = rating.created_at if rating else None
    d["tiers"] = tiers if tiers else legacy_tiers(d)
    return d


def _blank(s: str | None) -> bool:
    return s is None or not str(s).strip()


def check_rating(thumbs: str | None, correction: str | None, comment: str | None,
                 final_answer: str | None = None,
                 check_answer: bool = False) -> tuple[str | None, str | None]:
    """The one rule for a rating's fields; returns ``(correction, comment)`` with blank ones as
    ``None``. With ``check_answer``, a 👍 whose corrected answer differs from ``final_answer``
    (the rated turn's final answer) contradicts itself and is refused.

    Raises:
        ValueError: ``thumbs`` not ``"up"``, ``"down"`` or ``None``; all three fields empty;
            or a 👍 with a different corrected answer."""
    if thumbs is not None and thumbs not in THUMBS:
        raise ValueError(f"thumbs must be 'up', 'down' or None, not {thumbs!r}")
    correction = None if _blank(correction) else correction
    comment = None if _blank(comment) else comment
    if thumbs is None and correction is None and comment is None:
        raise ValueError("a rating needs thumbs, a correction or a comment")
    if check_answer and thumbs == "up" and correction is not None:
        from ..grading import same_answer  # math-verify: imported on first use

        if not same_answer(correction, final_answer):
            raise ValueError("A 👍 says the answer was right, but the corrected answer "
                             "differs from it: send 👎 with the correction, or 👍 "
                             "without one.")
    return correction, comment


# --------------------------------------------------------------------------------------- store


class Store:
    """The interaction log. Thread-safe; create one per process and share it.

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
            raise StorageError(f"invalid database URL {db_url!r} ({exc}); {_HINT}") from exc
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
                    f"{_HINT}") from exc
            if Path(path).is_dir():
                raise StorageError(f"{self.description} is a folder, not a file; {_HINT}")
        try:
            self.engine = _make_engine(self.url)
        except Exception as exc:  # missing driver, bad URL arguments
            raise _storage_error(self.description, exc) from exc
        self._Session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._upgrade()
            self._check_writable()
        except StorageError:
            self.engine.dispose()
            raise
        except Exception as exc:  # SQLAlchemy/sqlite3/OS errors, alembic.util.CommandError
            self.engine.dispose()
            raise _storage_error(self.description, exc) from exc

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
            created_at=_utcnow().isoformat(),
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
                                      else _utcnow())
                    session.add(row)
                    session.flush()
                    new_id = row.id
                    session.add_all([_tier_row(new_id, t) for t in tiers])
        except IntegrityError as exc:  # another process replayed the same key just now
            found = self.id_for_key(key) if key is not None else None
            if found is None:
                raise _storage_error(self.description, exc) from exc
            new_id = found
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc
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
            raise _storage_error(self.description, exc) from exc

    def add_rating(self, interaction_id: int, thumbs: str | None = None,
                   correction: str | None = None, comment: str | None = None,
                   session_id: str | None = None, key: str | None = None,
                   created_at: str | None = None) -> int:
        """Record a rating of one interaction; returns the rating's id. Every rating is kept; the
        latest one of an interaction is the one that counts in reads, exports and labels (send
        all fields together). A 👍 with a corrected answer that differs from the interaction's
        final answer contradicts itself and is refused (:func:`check_rating`).

        ``session_id``: when given, only an interaction logged by that session can be rated
        (another session's id reads as unknown, so ids of others cannot be probed).
        ``key`` / ``created_at``: a journaled rating's key and time (ISO 8601); a rating whose
        key is already in the log is not written again (its id is returned).

        Raises:
            ValueError: ``thumbs`` not ``"up"``, ``"down"`` or ``None``; all three fields empty;
                no interaction with that id (in that session); or a 👍 with a different
                corrected answer.
            StorageError: the rating could not be written.
        """
        correction, comment = check_rating(thumbs, correction, comment)
        try:
            with self._write() as session:
                if key is not None:
                    old = session.scalar(select(Rating.id).where(Rating.journal_key == key))
                    if old is not None:
                        return old
                row = session.get(Interaction, interaction_id)
                if row is None or (session_id is not None and row.session_id != session_id):
                    raise ValueError(f"no interaction with id {interaction_id}"
                                     + (" in this session" if session_id is not None else ""))
                check_rating(thumbs, correction, comment, row.final_answer, check_answer=True)
                rating = Rating(interaction_id=interaction_id,
                                created_at=(datetime.fromisoformat(created_at) if created_at
                                            else _utcnow()),
                                thumbs=thumbs, correction=correction, comment=comment,
                                journal_key=key)
                session.add(rating)
                session.flush()
                return rating.id
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

    def rating_count(self, interaction_id: int) -> int:
        """How many ratings the interaction has (the latest counts).

        Raises:
            StorageError: the database cannot be read."""
        try:
            with self._Session() as session:
                return int(session.scalar(select(func.count(Rating.id)).where(
                    Rating.interaction_id == interaction_id)) or 0)
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

    # -- reading

    def _query(self):
        latest = (select(Rating.interaction_id, func.max(Rating.id).label("rid"))
                  .group_by(Rating.interaction_id).subquery("latest"))
        stmt = (select(Interaction, Rating)
                .outerjoin(latest, latest.c.interaction_id == Interaction.id)
                .outerjoin(Rating, Rating.id == latest.c.rid))
        return stmt, latest

    def _read(self, stmt) -> list[dict[str, Any]]:
        try:
            with self._Session() as session:
                pairs = session.execute(stmt).all()
                tiers = self._tiers_of(session, [i.id for i, _ in pairs])
                return [_row_dict(i, r, tiers.get(i.id)) for i, r in pairs]
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

    @staticmethod
    def _tiers_of(session: Session, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The tier records of these interactions from ``interaction_tiers`` (ids without tier
        rows are absent), in tier order."""
        out: dict[int, list[dict[str, Any]]] = {}
        for start in range(0, len(ids), 500):  # bounded IN lists
            stmt = (select(InteractionTier)
                    .where(InteractionTier.interaction_id.in_(ids[start:start + 500]))
                    .order_by(InteractionTier.interaction_id, InteractionTier.tier_index))
            for t in session.execute(stmt).scalars():
                out.setdefault(t.interaction_id, []).append(_tier_dict(t))
        return out

    def get_interaction(self, interaction_id: int) -> dict[str, Any] | None:
        """One interaction as a dict (all columns; ``created_at`` an aware UTC datetime,
        ``errors`` a list, ``extra`` a dict) plus the latest rating's ``rating_thumbs``,
        ``rating_correction``, ``rating_comment``, ``rating_created_at`` (``None`` if unrated)
        and ``tiers``, one record per tier that ran (:data:`corea.store.tiers.TIER_KEYS`; from
        ``interaction_tiers``, or rebuilt from the old columns for a row logged before them);
        ``None`` if there is no such id.

        Raises:
            StorageError: the database cannot be read.
        """
        stmt, _ = self._query()
        rows = self._read(stmt.where(Interaction.id == interaction_id))
        return rows[0] if rows else None

    def list_interactions(self, limit: int | None = 100, rated: bool | None = None,
                          deferred: bool | None = None,
                          model: str | None = None,
                          session_id: str | None = None) -> list[dict[str, Any]]:
        """Interactions, newest first, as :meth:`get_interaction` dicts.

        Args:
            limit: at most this many rows (``None``: all).
            rated: ``True`` only rated ones, ``False`` only unrated ones, ``None`` all.
            deferred: ``True`` only deferred turns, ``False`` only turns the SLM's answer was kept
                for (a decision was made: a turn cancelled before its decision is neither).
            model: keep rows whose SLM, LLM, final or any tier's model name contains this text
                (case does not matter; ``"1.5B"`` finds ``Qwen2.5-Coder-1.5B-Instruct``).
            session_id: only this session's rows (``None``: every session's).

        Raises:
            ValueError: ``limit`` is negative.
            StorageError: the database cannot be read.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        stmt, latest = self._query()
        if rated is True:
            stmt = stmt.where(latest.c.rid.is_not(None))
        elif rated is False:
            stmt = stmt.where(latest.c.rid.is_(None))
        if deferred is True:
            stmt = stmt.where(Interaction.decision_defer.is_(True))
        elif deferred is False:
            stmt = stmt.where(Interaction.decision_defer.is_(False),
                              Interaction.decision_reason.is_not(None))
        if session_id is not None:
            stmt = stmt.where(Interaction.session_id == session_id)
        if model:
            pat = "%" + model.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            tier = exists().where(InteractionTier.interaction_id == Interaction.id,
                                  InteractionTier.model.ilike(pat, escape="\\"))
            stmt = stmt.where(or_(tier, *(col.ilike(pat, escape="\\") for col in (
                Interaction.slm_model, Interaction.llm_model, Interaction.final_model))))
        stmt = stmt.order_by(Interaction.created_at.desc(), Interaction.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._read(stmt)

    def count(self) -> int:
        """Number of logged interactions.

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            with self._Session() as session:
                return int(session.scalar(select(func.count(Interaction.id))) or 0)
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

    # ------------------------------------------------------------------ jobs
    def add_job(self, kind: str, name: str, config: dict, output_dir: str, pid: int | None,
                status: str = "running") -> int:
        """Record a launched job (``kind`` ``train`` or ``evaluate``); returns its id.

        Raises:
            StorageError: the database cannot be written."""
        row = Job(kind=kind, name=name, config=json.dumps(config, default=str), status=status,
                  pid=pid, output_dir=str(output_dir), started_at=_utcnow())
        try:
            with self._write() as session:
                session.add(row)
                session.flush()
                return row.id
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

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
                    setattr(row, k, json.dumps(v, default=str) if k in _JOB_JSON else v)
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        """One job as a dict (JSON fields decoded), or None."""
        try:
            with self._Session() as session:
                row = session.get(Job, job_id)
                return _job_dict(row) if row is not None else None
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

    def list_jobs(self, kind: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
        """Jobs (of one ``kind`` when given), newest first."""
        stmt = select(Job).order_by(Job.id.desc())
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        if limit is not None:
            stmt = stmt.limit(limit)
        try:
            with self._Session() as session:
                return [_job_dict(r) for r in session.execute(stmt).scalars().all()]
        except SQLAlchemyError as exc:
            raise _storage_error(self.description, exc) from exc

    def export_rated_jsonl(self, path_or_fileobj: str | os.PathLike | IO[str],
                           session_id: str | None = None) -> int:
        """Write one JSON line per rated interaction (oldest first) with the keys in
        :data:`EXPORT_FIELDS` (``created_at`` as ISO 8601 UTC); returns the number of lines.

        Args:
            path_or_fileobj: a file path (overwritten, UTF-8) or an open text file.
            session_id: only this session's rated interactions (``None``: every session's).

        Raises:
            OSError: the file cannot be written.
            StorageError: the database cannot be read.
        """
        stmt, latest = self._query()
        stmt = stmt.where(latest.c.rid.is_not(None))
        if session_id is not None:
            stmt = stmt.where(Interaction.session_id == session_id)
        rows = self._read(stmt.order_by(Interaction.id))

        def write(fh: IO[str]) -> None:
            for d in rows:
                rec = {k: d[k] for k in EXPORT_FIELDS}
                rec["created_at"] = d["created_at"].isoformat() if d["created_at"] else None
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")

        if isinstance(path_or_fileobj, (str, os.PathLike)):
            with open(path_or_fileobj, "w", encoding="utf-8") as fh:
                write(fh)
        else:
            write(path_or_fileobj)
        return len(rows)


def open_store(db_url: str) -> tuple[Store | None, str | None]:
    """Open the log without raising: ``(store, None)``, or ``(None, message)`` where
    ``message`` tells the user why logging is off."""
    try:
        return Store(db_url), None
    except StorageError as exc:
        return None, f"Logging is off: {exc}"
