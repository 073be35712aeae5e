"""Who may do what in the web app: visitors and owners, decided on the server for each request,
by a secret and never by where a request comes from.

A **visitor** (anyone) asks questions and reads, rates and exports the turns of their own browser
session. An **owner** can do everything else: read every session, train, evaluate, switch the SLM,
fit and switch the calibrator.

Who is an owner (:meth:`Roles.who`), in order:

1. **Hugging Face sign-in** (on a Space): the username of the ``gr.LoginButton`` session is in
   ``COREA_OWNERS`` (comma-separated usernames).
2. **Owner token**: the browser session entered the token in the "Owner sign-in" box, or opened
   the page with ``?token=<token>`` in its address (:meth:`Roles.sign_in_from_url`, on page
   load; the token never goes back to the browser, the server remembers the session). The token
   is ``COREA_OWNER_TOKEN``; when **no owner is configured** (neither variable set) the app makes
   a one-time token at start-up (256 random bits) and prints a sign-in link with it on the
   server's console only (:meth:`Roles.console_lines`), as Jupyter does.

Otherwise the request is a visitor's, whatever its address: a reverse proxy (nginx, a Docker port
map, a tunnel) or Gradio's share link (``GRADIO_SHARE=true``) forwards strangers from 127.0.0.1,
so "the request comes from this machine" proves nothing.

Every owner action calls :meth:`Roles.refuse` **inside its handler** (hiding a widget does not stop
a script that calls the endpoint). A handler called in-process without a request (tests, the CLI)
is trusted. Wrong tokens are throttled per client (:mod:`corea.clients`), not per page load.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .clients import TrustedProxies, client_key

__all__ = ["Identity", "Roles", "OWNER_ONLY", "session_of"]

OWNER_ONLY = "⚠️ Only the owner of this demo can do that."
_MAX_FAILED = 5          # failed token attempts per client ...
_FAILED_WINDOW_S = 60.0  # ... within this many seconds before sign-in stops answering it


def session_of(request: Any) -> str | None:
    """The Gradio session hash of a request (``None`` without one)."""
    return getattr(request, "session_hash", None) if request is not None else None


@dataclass(frozen=True)
class Identity:
    """``role`` is ``owner`` or ``visitor``; ``how`` says why (``token``, ``oauth``,
    ``in-process`` or ``visitor``); ``name`` is the Hugging Face username when signed in so."""

    role: str
    how: str
    name: str | None = None

    @property
    def owner(self) -> bool:
        return self.role == "owner"


def _oauth_username(request: Any) -> str | None:
    """The Hugging Face username of the request's OAuth session (``gr.LoginButton``), if any."""
    try:
        from gradio.helpers import _session_from_request
        from gradio.oauth import _get_valid_oauth_info_from_session

        info = _get_valid_oauth_info_from_session(_session_from_request(request))
    except Exception:  # noqa: BLE001 — no session middleware, an older Gradio: not signed in
        return None
    if not info:
        return None
    user = info.get("userinfo") or {}
    return user.get("preferred_username") or user.get("name")


def _query_token(request: Any) -> str | None:
    """The ``token`` query parameter of the page that sent ``request`` (Gradio's page load sends
    the page's query string with each event)."""
    try:
        params = getattr(request, "query_params", None) or {}
        value = params.get("token")
    except Exception:  # noqa: BLE001 — a request without query parameters
        return None
    return value if isinstance(value, str) and value.strip() else None


class Roles:
    """The app's role rules (see the module docstring). Thread-safe; one per app.

    Args:
        owners: Hugging Face usernames that are owners (OAuth sign-in).
        token: the owner token (``None``/empty: none configured; then, unless ``owners`` are
            set, a one-time token is made here).
        host: the address the server binds (default ``GRADIO_SERVER_NAME`` or ``127.0.0.1``);
            used only to write the console's sign-in link, never to decide a role.
        on_space: running on a Hugging Face Space (default: ``SPACE_ID`` is set).
        trusted: the proxies whose ``X-Forwarded-For`` names the client, for throttling wrong
            tokens per client (:class:`corea.clients.TrustedProxies`; default none).
    """

    def __init__(self, owners=(), token: str | None = None, host: str | None = None,
                 on_space: bool | None = None, trusted: TrustedProxies | None = None):
        self.owners = {o.strip().lower() for o in owners if o and o.strip()}
        self._token = (token or "").strip() or None
        self.generated = self._token is None and not self.owners
        if self.generated:
            self._token = secrets.token_urlsafe(32)
        self.host = host if host is not None else os.environ.get("GRADIO_SERVER_NAME",
                                                                 "127.0.0.1")
        self.on_space = bool(os.environ.get("SPACE_ID")) if on_space is None else on_space
        self.trusted = trusted or TrustedProxies()
        self._signed: dict[str, float] = {}
        self._failed: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, trusted: TrustedProxies | None = None) -> Roles:
        """``COREA_OWNERS``, ``COREA_OWNER_TOKEN``, ``GRADIO_SERVER_NAME``, ``SPACE_ID``;
        ``trusted`` defaults to ``COREA_TRUSTED_PROXIES`` (the app passes its settings')."""
        if trusted is None:
            trusted = TrustedProxies.configured(os.environ.get("COREA_TRUSTED_PROXIES", ""))
        return cls(owners=os.environ.get("COREA_OWNERS", "").split(","),
                   token=os.environ.get("COREA_OWNER_TOKEN"), trusted=trusted)

    # -- configuration
    @property
    def configured(self) -> bool:
        """An owner was configured (``COREA_OWNER_TOKEN`` or ``COREA_OWNERS``), not generated."""
        return not self.generated

    @property
    def token_sign_in(self) -> bool:
        """The owner-token box is offered (a configured or a generated token)."""
        return self._token is not None

    @property
    def oauth_sign_in(self) -> bool:
        """The ``gr.LoginButton`` is offered (a Space with ``COREA_OWNERS``)."""
        return self.on_space and bool(self.owners)

    def banner(self) -> str:
        """One line for visitors on how owner actions work here (never the token)."""
        if self.generated:
            return ("The owner signs in with the link printed on the server's console when it "
                    "started.")
        return ("You see and export your own questions only; the owner signs in below for "
                "the rest.")

    def sign_in_url(self, port: int | None = None, root: str = "") -> str | None:
        """The console's sign-in link with the generated token (``None`` for a configured
        token: the operator has it, and it is not repeated into any log). On a Space, its
        public address (``SPACE_HOST``); elsewhere the bound address (a wildcard bind as
        127.0.0.1). ``root``: a path the app is mounted under; ``port`` defaults to
        ``GRADIO_SERVER_PORT`` or 7860."""
        if not self.generated:
            return None
        token = quote(self._token, safe="")
        space_host = os.environ.get("SPACE_HOST") if self.on_space else None
        if space_host:  # a Space: its public address (the container's port is not reachable)
            return f"https://{space_host}{root.rstrip('/')}/?token={token}"
        port = port or int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
        host = self.host.strip() or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{port}{root.rstrip('/')}/?token={token}"

    def console_lines(self, port: int | None = None) -> list[str]:
        """What the app prints on its console at start-up about owners (the generated token's
        link is printed here and nowhere else)."""
        if self.generated:
            return ["[app] no owner configured (COREA_OWNER_TOKEN, COREA_OWNERS): every browser "
                    "is a visitor until it signs in as the owner with this one-time link "
                    "(valid until the app stops; keep it private):",
                    f"[app]     {self.sign_in_url(port)}"]
        ways = [w for w, on in (("Hugging Face (COREA_OWNERS)", self.oauth_sign_in),
                                ("the owner token (COREA_OWNER_TOKEN)", self.token_sign_in)) if on]
        if ways:
            return ["[app] owners sign in with " + " or ".join(ways)]
        return ["[app] COREA_OWNERS needs a Hugging Face Space (its sign-in); set "
                "COREA_OWNER_TOKEN to sign in here"]

    # -- who
    def who(self, request: Any) -> Identity:
        if request is None:
            return Identity("owner", "in-process")
        if self.owners:
            name = _oauth_username(request)
            if name and name.lower() in self.owners:
                return Identity("owner", "oauth", name)
        sid = session_of(request)
        if sid is not None:
            with self._lock:
                if sid in self._signed:
                    return Identity("owner", "token")
        return Identity("visitor", "visitor")

    def is_owner(self, request: Any) -> bool:
        return self.who(request).owner

    def refuse(self, request: Any) -> str | None:
        """``None`` for an owner, else the message to show instead of acting."""
        return None if self.is_owner(request) else OWNER_ONLY

    def limit_key(self, request: Any) -> str:
        """Whom a per-client limit counts (:func:`corea.clients.client_key`): the Hugging Face
        username when signed in, else the client's address through the trusted proxies."""
        return client_key(request, self.trusted,
                          user=_oauth_username(request) if request is not None else None)

    # -- token sign-in
    def sign_in(self, token: str | None, request: Any) -> tuple[bool, str]:
        """Check an owner token for this browser session; ``(ok, message)``. Five wrong tries
        in a minute from one client (any number of page loads) stop sign-in for that client
        for the rest of that minute."""
        sid = session_of(request)
        if self.who(request).owner:
            return True, "You are signed in as the owner."
        if self._token is None:
            return False, "Token sign-in is not configured on this server."
        if sid is None:
            return False, "No browser session: reload the page."
        who = self.limit_key(request)
        now = time.monotonic()
        with self._lock:
            fails = [t for t in self._failed.get(who, []) if now - t < _FAILED_WINDOW_S]
            self._failed[who] = fails
            if len(fails) >= _MAX_FAILED:
                return False, "Too many wrong tokens; wait a minute."
        ok = hmac.compare_digest((token or "").strip().encode(), self._token.encode())
        with self._lock:
            if ok:
                self._signed[sid] = time.time()
            else:
                self._failed.setdefault(who, []).append(now)
                if len(self._failed) > 10_000:  # forget clients with no recent failure
                    for k in [k for k, v in self._failed.items()
                              if not v or now - v[-1] >= _FAILED_WINDOW_S]:
                        self._failed.pop(k, None)
        return (True, "Signed in as the owner.") if ok else (False, "⚠️ Wrong owner token.")

    def sign_in_from_url(self, request: Any) -> tuple[bool, str] | None:
        """Sign this session in with the page address's ``?token=`` (the console link); ``None``
        when the address carries no token."""
        token = _query_token(request)
        if token is None or request is None:
            return None
        return self.sign_in(token, request)

    def sign_out(self, request: Any) -> None:
        sid = session_of(request)
        with self._lock:
            self._signed.pop(sid, None)
