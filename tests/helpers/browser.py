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


@contextlib.contextmanager
def served_page(demo, viewport=(1360, 1200)):
    """Serve ``demo`` and open it in headless Chromium; yields ``(expect, page)``."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    import app

    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                theme=app.THEME)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
                page.locator("#corea-question textarea").wait_for(timeout=60_000)
                yield sync_api.expect, page
            finally:
                browser.close()
    finally:
        demo.close()
