"""Who is asking, for limits: a signed-in user, else the client's address as seen through the
configured trusted proxies — never the browser session, which a reload renews.

The address rule (that of nginx's ``real_ip_recursive`` and uvicorn's
``ProxyHeadersMiddleware``): start from the TCP peer; while that hop is a trusted proxy, step to
the address it wrote last in ``X-Forwarded-For`` (right to left). The first untrusted hop is the
client. A request from an untrusted peer is that peer, whatever headers it sends, so a script
cannot rotate a made-up ``X-Forwarded-For`` to get a fresh allowance.

uvicorn applies its own version of this rule before the app sees a request (trusting
``FORWARDED_ALLOW_IPS``, by default 127.0.0.1, so that a request from the machine could set its
address to anything); :func:`uvicorn_trust` gives uvicorn the same list, and the rule applied
twice gives the same address.

Sources: RFC 7239 §5.2 and nginx ``ngx_http_realip_module`` (``set_real_ip_from``,
``real_ip_recursive``).
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["TrustedProxies", "client_address", "client_key", "PerClientLimit", "uvicorn_trust"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> str:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80`` or ``::1`` → the address without its port."""
    text = text.strip().strip('"')
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    if text.count(":") == 1:  # IPv4 with a port (an IPv6 address has several colons)
        return text.rsplit(":", 1)[0]
    return text


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed: addresses and networks
    (``127.0.0.1``, ``10.0.0.0/8``, ``::1``), and ``*``: whatever peer connects is one proxy
    that appended the client's address (for an app reachable only through a proxy, as on a
    Hugging Face Space: the rightmost entry is the client; anything left of it is ignored).
    Empty: nobody's (the default off a Space).

    Raises:
        ValueError: an entry is neither an address, a network nor ``*`` (the message names it).
    """

    networks: tuple[Network, ...] = ()
    any_peer: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str] | str | None) -> TrustedProxies:
        if isinstance(entries, str):
            entries = entries.split(",")
        nets, any_peer = [], False
        for raw in entries or ():
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                any_peer = True
                continue
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {entry!r} is not an IP address or network "
                                 "(e.g. 127.0.0.1 or 10.0.0.0/8) or *") from None
        return cls(tuple(nets), any_peer)

    @classmethod
    def configured(cls, entries: Iterable[str] | str | None,
                   on_space: bool | None = None) -> TrustedProxies:
        """:meth:`parse`, with ``*`` as the default on a Hugging Face Space (``SPACE_ID`` set):
        its container is reached through Hugging Face's proxy only."""
        trusted = cls.parse(entries)
        on_space = bool(os.environ.get("SPACE_ID")) if on_space is None else on_space
        if on_space and not trusted.networks and not trusted.any_peer:
            return cls((), any_peer=True)
        return trusted

    def __contains__(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def __str__(self) -> str:
        """The networks, comma-separated (``*`` is left out: uvicorn's ``*`` believes the
        leftmost, client-written entry)."""
        return ",".join(str(n) for n in self.networks)


def _peer_and_headers(request: Any) -> tuple[str | None, Any]:
    client = getattr(request, "client", None)
    host = getattr(client, "host", None) if client is not None else None
    if host is None and isinstance(client, dict):
        host = client.get("host")
    return host, getattr(request, "headers", None) or {}


def client_address(request: Any, trusted: TrustedProxies) -> str | None:
    """The client's address: the TCP peer, or, through trusted proxies, the last untrusted
    address of ``X-Forwarded-For`` (see the module docstring). ``None`` without a peer (an
    in-process call)."""
    peer, headers = _peer_and_headers(request)
    if peer is None:
        return None
    if peer not in trusted and not trusted.any_peer:
        return peer
    values = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else \
        [headers.get("x-forwarded-for") or headers.get("X-Forwarded-For") or ""]
    hops = [_address(h) for v in values for h in (v or "").split(",") if h.strip()]
    address = peer
    for hop in reversed(hops):
        address = hop
        if hop not in trusted:
            break
    return address


def client_key(request: Any, trusted: TrustedProxies, user: str | None = None) -> str:
    """The key of one client for limits: ``user:<name>`` when signed in, else
    ``addr:<address>`` (see :func:`client_address`), else ``session:<hash>``, else
    ``in-process``."""
    if user:
        return f"user:{user.lower()}"
    address = client_address(request, trusted)
    if address:
        return f"addr:{address}"
    session = getattr(request, "session_hash", None) if request is not None else None
    return f"session:{session}" if session else "in-process"


def uvicorn_trust(trusted: TrustedProxies) -> str:
    """``FORWARDED_ALLOW_IPS`` / ``forwarded_allow_ips`` for uvicorn: the same proxies, and an
    empty string (nobody) when none are configured (uvicorn's own default trusts 127.0.0.1)."""
    return str(trusted)


class PerClientLimit:
    """At most ``limit`` events per client key in any ``window_s`` seconds (a sliding window).
    Thread-safe; idle keys are forgotten once more than ``max_keys`` are held."""

    def __init__(self, window_s: float = 60.0, max_keys: int = 10_000):
        self.window_s = window_s
        self.max_keys = max_keys
        self._seen: dict[str, deque] = {}
        self._lock = threading.Lock()

    def take(self, key: str, limit: int) -> float | None:
        """Count one event for ``key`` and return ``None``, or, when ``limit`` events already
        fell in the window, count nothing and return the seconds until the next is allowed.
        ``limit`` 0 means no limit."""
        if not limit:
            return None
        now = time.monotonic()
        with self._lock:
            q = self._seen.setdefault(key, deque())
            while q and now - q[0] >= self.window_s:
                q.popleft()
            if len(q) >= limit:
                return self.window_s - (now - q[0])
            q.append(now)
            if len(self._seen) > self.max_keys:
                for k in [k for k, v in self._seen.items()
                          if not v or now - v[-1] > self.window_s]:
                    self._seen.pop(k, None)
        return None
