"""Running the API: where it may listen, and one uvicorn server (``corea serve``; ``python
app.py`` serves the web app on the same server).

Without API keys the API answers loopback clients only, so a server without keys binds
127.0.0.1 and refuses any other address (:func:`bind_plan`).
"""

from __future__ import annotations

import ipaddress
import logging
import re

log = logging.getLogger("corea.api")

NO_KEYS = ("no API keys configured (COREA_API_KEYS or COREA_API_KEY_FILE): the API answers "
           "without authentication, on 127.0.0.1 only")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_plan(host: str, keys_enabled: bool) -> tuple[bool, str]:
    """``(ok, message)`` for serving the API on ``host``: without keys only a loopback address
    is allowed; the message says so (it never contains a key)."""
    if keys_enabled:
        return True, "API keys required (Authorization: Bearer <key>)"
    if is_loopback(host):
        return True, NO_KEYS
    return False, (f"refusing to serve the API on {host} without API keys: set COREA_API_KEYS "
                   "or COREA_API_KEY_FILE, or listen on 127.0.0.1")


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]+")


class HideTokens(logging.Filter):
    """Blanks ``token=...`` query values in uvicorn's access log lines (the web app's owner
    sign-in link carries its token there; the console prints it once, no log repeats it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_IN_QUERY.sub(r"\1***", record.msg)
        return True


def serve(app, host: str, port: int, log_level: str = "info",
          forwarded_allow_ips: str | None = None) -> None:
    """Run ``app`` with uvicorn until interrupted. ``forwarded_allow_ips``: the proxies whose
    ``X-Forwarded-For`` uvicorn believes (:func:`corea.clients.uvicorn_trust`; ``None``:
    uvicorn's default, ``FORWARDED_ALLOW_IPS`` or 127.0.0.1). Access log lines never show a
    ``token=`` value (:class:`HideTokens`)."""
    import uvicorn

    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideTokens) for f in access.filters):
        access.addFilter(HideTokens())
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                forwarded_allow_ips=forwarded_allow_ips)


def with_ui(api, demo, **mount_kwargs):
    """``api`` (from :func:`corea.api.create_api`) with the Gradio ``demo`` mounted at ``/``:
    the API's ``/v1/...`` routes come first, everything else is the web app.
    ``mount_kwargs`` go to ``gr.mount_gradio_app`` (e.g. ``theme``)."""
    import gradio as gr

    return gr.mount_gradio_app(api, demo, path="/", **mount_kwargs)
