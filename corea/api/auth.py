"""API keys and per-key limits.

Keys come from :class:`corea.api.settings.ApiSettings` (``COREA_API_KEYS`` and/or
``COREA_API_KEY_FILE``). Only their SHA-256 is kept in memory after loading; a request's key is
hashed and looked up, and everything downstream (logs, the interaction's session) sees the key's
**id**: its name when one is given (``name=key`` / ``name key``), else ``key-`` and the first 8 hex
digits of its SHA-256. A key itself is never logged.

:class:`Limiter` enforces a per-key request rate (rolling 60 s window) and concurrency caps (per
key and in total); a request beyond them is refused with the seconds to wait (``Retry-After``).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from pathlib import Path

from .settings import ApiSettings

#: the key id of requests on a server without keys (loopback only)
LOCAL_KEY_ID = "api-local"


def key_id_of(key: str) -> str:
    """The loggable id of an unnamed key: ``key-`` + 8 hex digits of its SHA-256."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyConfigError(ValueError):
    """The key configuration is unusable (the message says where, never the key)."""


class KeyRing:
    """The accepted keys, as SHA-256 digest → key id.

    Raises:
        KeyConfigError: the key file is missing or unreadable, or two keys share a name.
    """

    def __init__(self, settings: ApiSettings):
        self._ids: dict[str, str] = {}
        entries: list[tuple[str | None, str]] = []
        for item in settings.keys.split(","):
            item = item.strip()
            if item:
                name, sep, key = item.partition("=")
                entries.append((name.strip(), key.strip()) if sep else (None, item))
        if settings.key_file is not None:
            path = Path(settings.key_file).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise KeyConfigError(f"cannot read the API key file {path}: "
                                f"{exc.strerror or exc}") from exc
            for n, line in enumerate(lines, 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) > 2:
                    raise KeyConfigError(f"{path}:{n}: expected 'key' or 'name key'")
                entries.append((parts[0], parts[1]) if len(parts) == 2 else (None, parts[0]))
        names = set()
        for name, key in entries:
            if not key:
                raise KeyConfigError(f"an API key named {name!r} is empty")
            kid = name or key_id_of(key)
            if name:
                if name in names:
                    raise KeyConfigError(f"two API keys are named {name!r}")
                names.add(name)
            self._ids[_digest(key)] = kid

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (else the server is loopback-only and open)."""
        return bool(self._ids)

    def identify(self, key: str | None) -> str | None:
        """The key id of ``key``, or None when it is not accepted."""
        if not key:
            return None
        return self._ids.get(_digest(key))


class Limiter:
    """Per-key request rate and concurrency caps. Thread-safe.

    :meth:`acquire` either admits a request (call :meth:`release` once when it ends) or returns
    the seconds after which trying again may succeed.
    """

    def __init__(self, rate_per_minute: int, max_concurrent: int, max_concurrent_total: int,
                 clock=time.monotonic):
        self.rate = rate_per_minute
        self.max_concurrent = max_concurrent
        self.max_total = max_concurrent_total
        self._clock = clock
        self._lock = threading.Lock()
        self._starts: dict[str, deque[float]] = {}
        self._active: dict[str, int] = {}
        self._total = 0

    def acquire(self, key_id: str) -> tuple[bool, int, str]:
        """Admit one request of ``key_id``: ``(True, 0, "")``, or ``(False, retry_after_s, why)``
        with ``why`` ``rate_limit_exceeded`` or ``concurrency_limit_exceeded``."""
        now = self._clock()
        with self._lock:
            if self._active.get(key_id, 0) >= self.max_concurrent or self._total >= self.max_total:
                return False, 1, "concurrency_limit_exceeded"
            if self.rate:
                starts = self._starts.setdefault(key_id, deque())
                while starts and now - starts[0] >= 60.0:
                    starts.popleft()
                if len(starts) >= self.rate:
                    return False, max(1, math.ceil(60.0 - (now - starts[0]))), \
                        "rate_limit_exceeded"
                starts.append(now)
            self._active[key_id] = self._active.get(key_id, 0) + 1
            self._total += 1
            return True, 0, ""

    def release(self, key_id: str) -> None:
        with self._lock:
            n = self._active.get(key_id, 0)
            if n <= 1:
                self._active.pop(key_id, None)
            else:
                self._active[key_id] = n - 1
            self._total = max(0, self._total - 1)

    def in_flight(self, key_id: str | None = None) -> int:
        with self._lock:
            return self._total if key_id is None else self._active.get(key_id, 0)
