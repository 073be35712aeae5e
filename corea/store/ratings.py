"""Ratings of logged turns: the one rule for a rating's fields (:func:`check_rating`) and the
store's methods that write and count them (:class:`RatingsMixin`, part of
:class:`~corea.store.storage.Store`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from .errors import storage_error
from .schema import Interaction, Rating, utcnow

__all__ = ["THUMBS", "check_rating", "RatingsMixin"]

THUMBS = ("up", "down")


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


class RatingsMixin:
    """The :class:`~corea.store.storage.Store` methods for ratings. Uses the store's
    ``_write()`` transaction, ``_Session`` factory and ``description``."""

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
                                            else utcnow()),
                                thumbs=thumbs, correction=correction, comment=comment,
                                journal_key=key)
                session.add(rating)
                session.flush()
                return rating.id
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc

    def rating_count(self, interaction_id: int) -> int:
        """How many ratings the interaction has (the latest counts).

        Raises:
            StorageError: the database cannot be read."""
        try:
            with self._Session() as session:
                return int(session.scalar(select(func.count(Rating.id)).where(
                    Rating.interaction_id == interaction_id)) or 0)
        except SQLAlchemyError as exc:
            raise storage_error(self.description, exc) from exc
