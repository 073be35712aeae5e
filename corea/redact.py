"""What a visitor may read: database URLs without credentials, no server paths, no internal URLs,
model faults in plain words. Owners and the server log keep the details.
"""

from __future__ import annotations

import re

__all__ = ["describe_db", "redact", "plain_error", "plain_logging_off"]

_KINDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "postgres": "PostgreSQL",
          "mysql": "MySQL", "mariadb": "MariaDB", "oracle": "Oracle", "mssql": "SQL Server"}

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s`'\"<>)\]]+")
# an absolute path of two or more parts (``/data/runs``, ``/home/x/.cache/corea/m.gguf``), or a
# home-relative one; not a fraction such as ``48 / 2`` (spaces) nor ``1/2``
_PATH = re.compile(r"(?<![\w/.:])(?:~|/)(?:[\w.@+\-]+/)+[\w.@+\-]*")


def describe_db(db_url: str, detail: bool = False) -> str:
    """A database URL as its kind and location, never its credentials:
    ``PostgreSQL at db.example.com``, ``SQLite file``, ``in-memory SQLite``.

    ``detail=True`` (owners) adds the database name or the SQLite file path (still no user name
    or password)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db_url)
    except Exception:  # noqa: BLE001 — an invalid URL: say nothing about it
        return "an unrecognised database URL"
    backend = url.get_backend_name()
    kind = _KINDS.get(backend, backend or "database")
    if backend == "sqlite":
        db = url.database or ""
        if db in ("", ":memory:") or "mode=memory" in db:
            return "in-memory SQLite"
        return f"SQLite file `{db}`" if detail else "SQLite file"
    where = url.host or "a local socket"
    if url.port and detail:
        where += f":{url.port}"
    text = f"{kind} at {where}"
    if detail and url.database:
        text += f", database `{url.database}`"
    return text


def redact(text: str | None) -> str:
    """``text`` without URLs (→ ``<internal URL>``) and absolute server paths (→ ``<path>``)."""
    if not text:
        return text or ""
    text = _URL.sub("<internal URL>", str(text))
    return _PATH.sub("<path>", text)


def plain_error(model: str, error: str | None) -> str:
    """A model fault in plain words for a visitor: ``model`` is ``small`` or ``large``."""
    low = (error or "").lower()
    if "engine process stopped" in low:  # corea.backends.worker: the engine crashed
        what = f"the {model} model's engine stopped; it is restarting for the next question"
    elif "timeout" in low or "timed out" in low:
        what = f"the {model} model took too long to answer"
    elif "auth" in low or "401" in low or "403" in low or "api key" in low:
        what = f"the {model} model refused the server's credentials"
    elif any(w in low for w in ("connect", "unreachable", "refused", "resolve", "network",
                                "503", "502")):
        what = f"the {model} model is unreachable"
    elif "rate" in low and "limit" in low or "429" in low:
        what = f"the {model} model is busy (rate limit)"
    else:
        what = f"the {model} model failed"
    if model == "large":
        return what[0].upper() + what[1:] + " — showing the small model's answer."
    return what[0].upper() + what[1:] + "."


def plain_logging_off() -> str:
    """Why nothing is saved, for a visitor (the owner sees the database's own message)."""
    return ("Logging is paused: the database is unavailable. Answers still work, but this "
            "question is not saved and cannot be rated.")
