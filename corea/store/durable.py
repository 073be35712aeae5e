"""The log that loses nothing: turns and ratings go to the database when it can take them, else to
the local journal (:mod:`corea.journal`), from the first second of the process on.

A database that cannot be opened at start-up (a PostgreSQL server not up yet, a missing folder,
a locked or broken file) is treated like one that goes away later: every turn and rating is
journaled, the database is tried again at most every :attr:`DurableLog.reopen_every_s` seconds
(on the next turn, rating or :meth:`DurableLog.status` call), and once it opens the journal is
replayed, oldest first. Each journal entry carries a key stored with its row (``journal_key``),
so a replay that is interrupted and run again, or run by two processes sharing the journal,
writes every row once.

A journaled turn gets a provisional id, a negative number (counting down from a random start per
process, so a page that outlives a restart cannot rate another turn by an old id), so it can be
rated at once; the rating is journaled with the turn's key and lands on the turn's real
row when both are replayed. A journaled rating's id is negative too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from ..events import CascadeResult
from ..journal import Journal
from .storage import StorageError, Store, check_rating

__all__ = ["DurableLog", "LogStatus"]

log = logging.getLogger(__name__)

_PENDING_KEPT = 10_000
"""How many provisional ids a process remembers (the oldest are forgotten first)."""


@dataclass(frozen=True)
class LogStatus:
    """Where the log stands, for the page.

    Attributes:
        state: ``on`` (rows are written), ``paused`` (the database is open but the last write
            failed) or ``offline`` (the database could not be opened yet).
        turns_waiting / ratings_waiting: journal entries not yet in the database.
        cause: the database's own message (for an owner; may name paths or hosts), or ``None``.
    """

    state: Literal["on", "paused", "offline"]
    turns_waiting: int = 0
    ratings_waiting: int = 0
    cause: str | None = None

    def message(self, owner: bool = False) -> str:
        """One line for the page: empty when the log is on and nothing waits; otherwise e.g.
        "The log is offline: 3 turns and 1 rating waiting; they will be saved when it returns."
        The cause is added for an owner only."""
        waiting = [f"{n} {word}{'' if n == 1 else 's'}" for n, word in (
            (self.turns_waiting, "turn"), (self.ratings_waiting, "rating")) if n]
        if self.state == "on" and not waiting:
            return ""
        what = " and ".join(waiting) or "nothing"
        head = {"on": "The log is back", "paused": "The log is paused",
                "offline": "The log is offline"}[self.state]
        tail = ("they are being saved now" if self.state == "on"
                else "they will be saved when it returns")
        line = f"{head}: {what} waiting; {tail}." if waiting else \
            f"{head}: new turns and ratings are kept and saved when it returns."
        return line + (f" ({self.cause})" if owner and self.cause else "")


@dataclass(frozen=True)
class _Pending:
    key: str
    session_id: str | None
    final_answer: str | None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class DurableLog:
    """A :class:`~corea.store.storage.Store` that may be absent or failing, plus its journal.
    Thread-safe.

    Args:
        db_url: the database's SQLAlchemy URL (opened now, and again later while it fails).
        journal: where turns and ratings wait.
        store: an already open store (then ``db_url`` is only used to reopen nothing).
    """

    reopen_every_s: float = 5.0
    """Least time between two attempts to open an unavailable database (seconds)."""

    def __init__(self, db_url: str, journal: Journal, store: Store | None = None):
        self.db_url = db_url
        self.journal = journal
        self.store: Store | None = store
        self.error: str | None = None  # why the database is not open (None: it is)
        self.paused: str | None = None  # why the last write failed (None: it worked)
        self._open_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = -random.randrange(1, 100_000) * 1000  # e.g. -418000, -418001, ...
        self._last_try = float("-inf")
        if store is None:
            self.ensure_open()

    # -- the database coming and going

    def ensure_open(self) -> Store | None:
        """The store, opening the database first when it is not open and the last attempt is
        :attr:`reopen_every_s` old; a database that opens gets the journal replayed at once
        (a failing replay leaves the rest waiting). While another thread is opening it, returns
        ``None`` at once (the caller journals) instead of waiting. Never raises."""
        if self.store is not None:
            return self.store
        if not self._open_lock.acquire(blocking=False):
            return None  # another thread is trying right now: journal rather than wait
        try:
            if self.store is not None or \
                    time.monotonic() - self._last_try < self.reopen_every_s:
                return self.store
            self._last_try = time.monotonic()
            try:
                store = Store(self.db_url)
            except StorageError as exc:
                if str(exc) != self.error:  # once per cause, not every few seconds
                    log.warning("the log is offline: %s", exc)
                self.error = str(exc)
                return None
            self.store, self.error = store, None
            log.warning("the log is online: %s", store.description)
        finally:
            self._open_lock.release()
        self._replay_quietly()
        return store

    def _replay_quietly(self) -> None:
        try:
            self.replay()
            self.paused = None
        except Exception as exc:  # noqa: BLE001 — the entries stay in the journal
            self.paused = str(exc)
            log.warning("journal replay failed; kept for later: %s", exc)

    def replay(self) -> int:
        """Write the journal's entries to the database, oldest first; returns how many. A rating
        the log refuses (its turn is unknown or it contradicts itself) is dropped with a
        warning; any other failure stops the replay and leaves the rest waiting.

        Raises:
            StorageError: the database cannot be written (the rest stays in the journal)."""
        store = self.store
        if store is None:
            return 0
        n = self.journal.replay(lambda entry: self._write_entry(store, entry))
        if n:
            log.warning("replayed %d journaled entries into the database", n)
        return n

    @staticmethod
    def _write_entry(store: Store, entry: dict[str, Any]) -> None:
        kind = entry.get("kind")
        if kind is None:  # a journal of an older version: a bare interaction row
            store.log_row(entry, keep_time=True)
        elif kind == "turn":
            store.log_row(entry["row"], keep_time=True, key=entry["key"])
        elif kind == "rating":
            iid = entry.get("interaction_id")
            if iid is None:
                iid = store.id_for_key(entry["interaction_key"])
            try:
                if iid is None:
                    raise ValueError("its turn is not in the log")
                store.add_rating(iid, entry.get("thumbs"), entry.get("correction"),
                                 entry.get("comment"), session_id=entry.get("session_id"),
                                 key=entry["key"], created_at=entry.get("created_at"))
            except ValueError as exc:
                log.warning("dropped a journaled rating: %s", exc)
        else:
            log.warning("dropped a journal entry of unknown kind %r", kind)

    # -- writing

    def log_turn(self, result: CascadeResult, session_id: str | None) -> str | None:
        """Write the turn, or journal it; sets ``result.interaction_id`` (a negative provisional
        id when journaled). Returns a warning for the user, or ``None`` when it was written."""
        row = Store.interaction_row(result, session_id)
        store, cause = self.ensure_open(), self.error
        if store is not None:
            try:
                self.replay()
                store.log_row(row, result=result)
                self.paused = None
                return None
            except Exception as exc:  # a log row must never vanish silently
                log.exception("could not log interaction; keeping it in the journal")
                self.paused = cause = str(exc)
        key = uuid.uuid4().hex
        try:
            n = self.journal.append({"kind": "turn", "key": key, "row": row})
        except Exception as jexc:  # noqa: BLE001 — the journal's disk is gone too
            log.exception("could not write the journal either")
            return (f"This interaction was not saved to the database ({cause}) nor to the local "
                    f"journal ({jexc}).")
        result.interaction_id = self._remember(key, session_id, result.final_answer)
        return (f"Logging is paused: the database cannot be written ({cause}). This turn is kept "
                f"in the local journal ({n} waiting) and is saved when the database is back; "
                "it can be rated meanwhile.")

    def _remember(self, key: str, session_id: str | None, final_answer: str | None) -> int:
        with self._pending_lock:
            pid = self._next_id
            self._next_id -= 1
            self._pending[pid] = _Pending(key, session_id, final_answer)
            while len(self._pending) > _PENDING_KEPT:
                self._pending.pop(next(iter(self._pending)))
            return pid

    def rate(self, interaction_id: int, thumbs: str | None = None,
             correction: str | None = None, comment: str | None = None,
             session_id: str | None = None) -> int:
        """Store a rating, or journal it while the database is away; returns the rating's id
        (negative when journaled). ``interaction_id`` may be a turn's provisional id.

        Raises:
            ValueError: a bad rating (:func:`~corea.store.storage.check_rating`), or no such
                interaction (in that session).
            RuntimeError: neither the database nor the journal could take it."""
        correction, comment = check_rating(thumbs, correction, comment)
        pending = None
        if interaction_id < 0:
            with self._pending_lock:
                pending = self._pending.get(interaction_id)
            if pending is None or (session_id is not None and pending.session_id != session_id):
                raise ValueError(f"no interaction with id {interaction_id}"
                                 + (" in this session" if session_id is not None else ""))
            check_rating(thumbs, correction, comment, pending.final_answer, check_answer=True)
        store, cause = self.ensure_open(), self.error
        if store is not None:
            try:
                self.replay()
                real = interaction_id if pending is None else store.id_for_key(pending.key)
                if real is not None:
                    rid = store.add_rating(real, thumbs=thumbs, correction=correction,
                                           comment=comment, session_id=session_id)
                    self.paused = None
                    return rid
            except StorageError as exc:
                log.exception("could not save a rating; keeping it in the journal")
                self.paused = cause = str(exc)
        entry = {"kind": "rating", "key": uuid.uuid4().hex,
                 "interaction_id": None if pending else interaction_id,
                 "interaction_key": pending.key if pending else None, "thumbs": thumbs,
                 "correction": correction, "comment": comment, "session_id": session_id,
                 "created_at": _now()}
        try:
            self.journal.append(entry)
        except Exception as jexc:  # noqa: BLE001
            raise RuntimeError(f"The rating was not saved: the database cannot be written "
                               f"({cause}) nor the local journal ({jexc}).") from jexc
        return -self.journal.counts().get("rating", 1)

    # -- status

    def status(self) -> LogStatus:
        """Where the log stands (tries to open the database and replay first, see
        :meth:`ensure_open`). Never raises."""
        store = self.ensure_open()
        try:
            counts = self.journal.counts()
            if store is not None and counts:
                self._replay_quietly()
                counts = self.journal.counts()
        except Exception:  # noqa: BLE001 — an unreadable journal waits for nothing we can count
            log.exception("could not read the journal")
            counts = {}
        state = "offline" if store is None else ("paused" if self.paused else "on")
        return LogStatus(state, counts.get("turn", 0), counts.get("rating", 0),
                         self.error if store is None else self.paused)
