"""Who may do what in the web app: visitors and owners, decided on the server for each request.

A **visitor** (anyone) asks questions and reads, rates and exports the turns of their own browser
session. An **owner** can do everything else: read every session, train, evaluate, switch the SLM,
fit and switch the calibrator.

Who is an owner (:meth:`Roles.who`), in order:

1. **Hugging Face sign-in** (on a Space): the username of the ``gr.LoginButton`` session is in
   ``COREA_OWNERS`` (comma-separated usernames).
2. **Owner token**: the browser session entered ``COREA_OWNER_TOKEN`` in the "Owner sign-in" box
   (once per page load; the token never goes back to the browser, the server remembers the
   session).
3. **Local use**: no owner is configured (neither variable set), the server listens on a loopback
   address (``GRADIO_SERVER_NAME`` unset, ``127.0.0.1``, ``localhost`` or ``::1``) and it is not a
   Space: everyone who can reach it is at the machine, so everyone is an owner (as before).

Otherwise the request is a visitor's. With no owner configured on a public bind, owner actions are
off for everyone and :meth:`Roles.banner` says so.

Every owner action calls :meth:`Roles.refuse` **inside its handler** (hiding a widget does not stop
a script that calls the endpoint). A handler called in-process without a request (tests, the CLI)
is trusted.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Identity", "Roles", "LOOPBACK", "OWNER_ONLY", "session_of"]

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
OWNER_ONLY = "⚠️ Only the owner of this demo can do that."
_MAX_FAILED = 5          # failed token attempts per session ...
_FAILED_WINDOW_S = 60.0  # ... within this many seconds before the box stops answering


def session_of(request: Any) -> str | None:
    """The Gradio session hash of a request (``None`` without one)."""
    return getattr(request, "session_hash", None) if request is not None else None


@dataclass(frozen=True)
class Identity:
    """``role`` is ``owner`` or ``visitor``; ``how`` says why (``local``, ``token``, ``oauth``,
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


class Roles:
    """The app's role rules (see the module docstring). Thread-safe; one per app.

    Args:
        owners: Hugging Face usernames that are owners (OAuth sign-in).
        token: the owner token (``None``/empty: no token sign-in).
        host: the address the server binds (default ``GRADIO_SERVER_NAME`` or ``127.0.0.1``).
        on_space: running on a Hugging Face Space (default: ``SPACE_ID`` is set).
    """

    def __init__(self, owners=(), token: str | None = None, host: str | None = None,
                 on_space: bool | None = None):
        self.owners = {o.strip().lower() for o in owners if o and o.strip()}
        self._token = (token or "").strip() or None
        self.host = host if host is not None else os.environ.get("GRADIO_SERVER_NAME",
                                                                 "127.0.0.1")
        self.on_space = bool(os.environ.get("SPACE_ID")) if on_space is None else on_space
        self._signed: dict[str, float] = {}
        self._failed: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Roles:
        """``COREA_OWNERS``, ``COREA_OWNER_TOKEN``, ``GRADIO_SERVER_NAME``, ``SPACE_ID``."""
        return cls(owners=os.environ.get("COREA_OWNERS", "").split(","),
                   token=os.environ.get("COREA_OWNER_TOKEN"))

    # -- configuration
    @property
    def configured(self) -> bool:
        """An owner can sign in (a token or OAuth usernames are set)."""
        return bool(self._token or self.owners)

    @property
    def loopback(self) -> bool:
        return self.host.strip().lower() in LOOPBACK

    @property
    def local(self) -> bool:
        """Everyone is an owner: nothing configured, a loopback bind, not a Space."""
        return not self.configured and self.loopback and not self.on_space

    @property
    def token_sign_in(self) -> bool:
        return self._token is not None

    @property
    def oauth_sign_in(self) -> bool:
        """The ``gr.LoginButton`` is offered (a Space with ``COREA_OWNERS``)."""
        return self.on_space and bool(self.owners)

    def banner(self) -> str:
        """One line on how owner actions work here (empty for local use)."""
        if self.local:
            return ""
        if not self.configured:
            return ("Owner actions (all sessions' history, training, evaluation, the calibrator) "
                    "are **off**: this server is public and no owner is configured "
                    "(set COREA_OWNER_TOKEN or COREA_OWNERS).")
        return ("You see and export your own questions only; the owner signs in below for "
                "the rest.")

    # -- who
    def who(self, request: Any) -> Identity:
        if request is None:
            return Identity("owner", "in-process")
        if self.local:
            return Identity("owner", "local")
        if self.owners:
            name = _oauth_username(request)
            if name and name.lower() in self.owners:
                return Identity("owner", "oauth", name)
        sid = session_of(request)
        if sid is not None and self._token is not None:
            with self._lock:
                if sid in self._signed:
                    return Identity("owner", "token")
        return Identity("visitor", "visitor")

    def is_owner(self, request: Any) -> bool:
        return self.who(request).owner

    def refuse(self, request: Any) -> str | None:
        """``None`` for an owner, else the message to show instead of acting."""
        return None if self.is_owner(request) else OWNER_ONLY

    # -- token sign-in
    def sign_in(self, token: str | None, request: Any) -> tuple[bool, str]:
        """Check an owner token for this browser session; ``(ok, message)``. Five wrong tries
        in a minute lock the session's box for the rest of that minute."""
        sid = session_of(request)
        if self.who(request).owner:
            return True, "You are signed in as the owner."
        if self._token is None:
            return False, "Token sign-in is not configured on this server."
        if sid is None:
            return False, "No browser session: reload the page."
        now = time.monotonic()
        with self._lock:
            fails = [t for t in self._failed.get(sid, []) if now - t < _FAILED_WINDOW_S]
            self._failed[sid] = fails
            if len(fails) >= _MAX_FAILED:
                return False, "Too many wrong tokens; wait a minute."
        ok = hmac.compare_digest((token or "").strip().encode(), self._token.encode())
        with self._lock:
            if ok:
                self._signed[sid] = time.time()
                self._failed.pop(sid, None)
            else:
                self._failed.setdefault(sid, []).append(now)
        return (True, "Signed in as the owner.") if ok else (False, "⚠️ Wrong owner token.")

    def sign_out(self, request: Any) -> None:
        sid = session_of(request)
        with self._lock:
            self._signed.pop(sid, None)
