"""Running the API: where it may listen, and one uvicorn server (``corea serve``; ``python
app.py`` serves the web app on the same server).

Without API keys the API answers loopback clients only, so a server without keys binds
127.0.0.1 and refuses any other address (:func:`bind_plan`).
"""

from __future__ import annotations

import ipaddress
import logging

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


def serve(app, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def with_ui(api, demo, **mount_kwargs):
    """``api`` (from :func:`corea.api.create_api`) with the Gradio ``demo`` mounted at ``/``:
    the API's ``/v1/...`` routes come first, everything else is the web app.
    ``mount_kwargs`` go to ``gr.mount_gradio_app`` (e.g. ``theme``)."""
    import gradio as gr

    return gr.mount_gradio_app(api, demo, path="/", **mount_kwargs)
