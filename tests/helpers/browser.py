"""Serving a Gradio demo and opening it in headless Chromium, for the browser tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket

import pytest

CHROMIUM = os.environ.get("COREA_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
"""Headless Chromium as root in a container: no sandbox, no GPU, nothing fetched in the
background."""


def require_chromium():
    """Playwright's sync API, or skip the test when Playwright or Debian's Chromium is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    return sync_api


def launch_chromium(pw):
    """Debian's Chromium, headless, launched by Playwright (``pw``: a ``sync_playwright()``)."""
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)


@contextlib.contextmanager
def served_page(demo, viewport=(1360, 1200)):
    """Serve ``demo`` and open it in headless Chromium; yields ``(expect, page)``."""
    sync_api = require_chromium()
    import app

    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                theme=app.THEME)
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
                page.locator("#corea-question textarea").wait_for(timeout=60_000)
                yield sync_api.expect, page
            finally:
                browser.close()
    finally:
        demo.close()
