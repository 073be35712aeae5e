"""The interaction log's one error type and the rule that words a low-level database error for
users (:class:`StorageError`)."""

from __future__ import annotations

__all__ = ["StorageError", "storage_error", "HINT"]

HINT = "set COREA_DB_URL to use another database"
"""The advice every storage message ends with."""


class StorageError(Exception):
    """The interaction log cannot be opened or written (corrupt, read-only, unreachable, ...).

    The message is meant for users: it names the database and the cause.
    """


def _cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).strip()
    return msg.splitlines()[0] if msg else type(exc).__name__


def storage_error(what: str, exc: BaseException) -> StorageError:
    """Turn a low-level error into a :class:`StorageError` with a user-facing message."""
    cause = _cause(exc)
    low = cause.lower()
    if "not a database" in low or "malformed" in low or "file is encrypted" in low:
        msg = (f"{what} is not a valid SQLite database ({cause}); move it away or "
               f"set COREA_DB_URL")
    elif "readonly" in low or "read-only" in low or "permission denied" in low:
        msg = f"{what} is read-only ({cause}); make it writable or {HINT}"
    elif "unable to open" in low or "not a directory" in low or "no such file" in low:
        msg = (f"cannot open {what} ({cause}); check that its folder exists and is writable, "
               f"or {HINT}")
    elif "locked" in low or "busy" in low:
        msg = f"{what} is locked by another process ({cause}); try again or {HINT}"
    elif "can't locate revision" in low or "no such revision" in low:
        msg = (f"{what} has a schema revision this version of COREA does not know ({cause}); "
               f"it was written by a newer COREA: upgrade COREA or {HINT}")
    else:
        msg = f"cannot use {what} ({type(exc).__name__}: {cause}); {HINT}"
    return StorageError(msg)
