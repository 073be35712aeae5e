"""The interaction log's tables as SQLAlchemy models (interactions, their tier rows, ratings,
jobs) and the conversions between a row and the dicts the :class:`~corea.store.storage.Store`
returns. The schema's history is in the Alembic migrations (``corea/store/migrations``)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (Boolean, DateTime, Float, ForeignKey, Integer, MetaData, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .tiers import TIER_KEYS, legacy_tiers, tier_record

__all__ = ["UTCDateTime", "utcnow", "Base", "Interaction", "InteractionTier", "Rating", "Job",
           "tier_row", "tier_dict", "job_dict", "row_dict", "JOB_JSON", "INTERACTION_COLUMNS",
           "EXPORT_FIELDS"]


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


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
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


def tier_row(interaction_id: int, values: dict[str, Any]) -> InteractionTier:
    rec = tier_record(values)
    cols = {k: rec[k] for k in TIER_KEYS if k not in ("index", "extra")}
    return InteractionTier(interaction_id=interaction_id, tier_index=rec["index"],
                           extra=json.dumps(rec["extra"], ensure_ascii=False, default=str),
                           **cols)


def tier_dict(row: InteractionTier) -> dict[str, Any]:
    values = {k: getattr(row, k) for k in TIER_KEYS if k not in ("index", "extra")}
    return tier_record(values | {"index": row.tier_index, "extra": json.loads(row.extra or "{}")})


class Rating(Base):
    """A user's rating of one interaction. Several per interaction are allowed; the latest row
    (highest id) is the one that counts."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
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


JOB_JSON = ("config", "checkpoints", "final_metrics")


def job_dict(r: Job) -> dict[str, Any]:
    d = {c.key: getattr(r, c.key) for c in Job.__table__.columns}
    for k in JOB_JSON:
        d[k] = json.loads(d[k] or ("[]" if k == "checkpoints" else "{}"))
    return d


INTERACTION_COLUMNS = [c.key for c in Interaction.__table__.columns]

EXPORT_FIELDS = ("id", "created_at", "question", "slm_answer", "slm_output", "llm_answer",
                 "llm_output", "final_answer", "final_model", "confidence", "decision_defer",
                 "decision_reason", "threshold", "rating_thumbs", "rating_correction",
                 "rating_comment", "tiers")
"""Keys of each line written by :meth:`Store.export_rated_jsonl`, in order (``tiers``: the
interaction's tier records, :data:`corea.store.tiers.TIER_KEYS`)."""


def row_dict(inter: Interaction, rating: Rating | None,
              tiers: list[dict[str, Any]] | None) -> dict[str, Any]:
    d = {k: getattr(inter, k) for k in INTERACTION_COLUMNS}
    d["decision_defer"] = bool(d["decision_defer"])
    d["errors"] = json.loads(d["errors"] or "[]")
    d["extra"] = json.loads(d["extra"] or "{}")
    d["rating_thumbs"] = rating.thumbs if rating else None
    d["rating_correction"] = rating.correction if rating else None
    d["rating_comment"] = rating.comment if rating else None
    d["rating_created_at"] = rating.created_at if rating else None
    d["tiers"] = tiers if tiers else legacy_tiers(d)
    return d
