"""Reading the interaction log: one turn, filtered lists, counts and the JSONL export of rated
turns, each with its latest rating and tier records (:class:`ReadingMixin`, part of
:class:`~corea.store.storage.Store`)."""

from __future__ import annotations

import json
import os
from typing import IO, Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .errors import storage_error
from .schema import EXPORT_FIELDS, Interaction, InteractionTier, Rating, row_dict, tier_dict

__all__ = ["ReadingMixin"]


class ReadingMixin:
    """The :class:`~corea.store.storage.Store` methods that read interactions. Uses the store's
    ``_Session`` factory and ``description``."""


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
                return [row_dict(i, r, tiers.get(i.id)) for i, r in pairs]
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc

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
                out.setdefault(t.interaction_id, []).append(tier_dict(t))
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
            raise storage_error(self.description, exc) from exc

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
