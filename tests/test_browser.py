"""The app in a real browser: headless Chromium (Debian's) driven by Playwright.

Asks one question, watches the SLM's reasoning stream, the decision text, the LLM's answer and the
rating buttons, rates the answer, and saves a screenshot to ``assets/screenshot-test.png``.

By default the models are scripted (the point here is the UI wiring; real models are exercised in
``test_integration_models.py``). Set ``COREA_BROWSER_REAL=1`` to run the embedded models instead
(used to make README's screenshot, ``assets/screenshot.png``).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("COREA_CHROMIUM", "/usr/bin/chromium")
ASSETS = Path(__file__).resolve().parents[1] / "assets"
QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May?")
SLM_REPLY = ("In April Natalia sold 48 clips. In May she sold half as many: 48 / 2 = 24 clips. "
             "Altogether: 48 + 24 = 72. \\boxed{72}\nConfidence: 0.55")
LLM_REPLY = ("April: 48 clips. May: 48 / 2 = 24 clips. Total: 48 + 24 = 72 clips. "
             "The answer is \\boxed{72}.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium chromium-driver)")
    import app

    real = os.environ.get("COREA_BROWSER_REAL") == "1"
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'browser.sqlite'}")
    if real:
        service = CoreaService(settings)
    else:
        service = CoreaService(
            settings,
            slm=FakeBackend([SLM_REPLY], continuations=[" 0.5"], chunk_chars=6, delay_s=0.02,
                            model_name=settings.slm.name),
            llm=FakeBackend([LLM_REPLY], chunk_chars=6, delay_s=0.02,
                            model_name=settings.llm.name))
    demo = app.build_demo(service)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield sync_api, f"http://127.0.0.1:{port}/", service, real
    finally:
        demo.close()


def test_ask_stream_decide_and_rate_in_browser(served_app):
    sync_api, url, service, real = served_app
    timeout_ms = 600_000 if real else 60_000
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            box = page.locator("#corea-question textarea")
            box.wait_for(timeout=60_000)
            box.fill(QUESTION)
            page.locator("#corea-send").click()

            chat = page.locator("#corea-chat")
            # the SLM's reasoning block appears (titled with the model name) while text streams
            chat.get_by_text("Small model reasoning").first.wait_for(timeout=timeout_ms)
            # the decision, in plain words, with its reason
            decision = chat.get_by_text("threshold 0.70").first
            decision.wait_for(timeout=timeout_ms)
            text = decision.inner_text()
            assert ("Deferred to the large model" in text or "Answered by the small model" in text
                    or "stated no confidence" in text)
            # the turn summary appears once the cascade is done
            details = page.locator("#corea-details")
            sync_api.expect(details).to_contain_text("logged as #1", timeout=timeout_ms)
            if not real:
                assert "Deferred to the large model — confidence 0.55 < threshold 0.70" in text
                sync_api.expect(chat).to_contain_text("Large model (Qwen2.5-Coder-1.5B-Instruct)")
                sync_api.expect(chat).to_contain_text("Small model's answer:")
                sync_api.expect(details).to_contain_text("by Qwen2.5-Coder-1.5B-Instruct")

            up = page.locator("#corea-thumbs-up")
            down = page.locator("#corea-thumbs-down")
            assert up.is_visible() and down.is_visible()
            up.click()
            sync_api.expect(page.locator("#corea-rating-status")).to_contain_text(
                "for interaction #1", timeout=30_000)
            ASSETS.mkdir(exist_ok=True)
            name = "screenshot.png" if real else "screenshot-test.png"
            page.screenshot(path=str(ASSETS / name), full_page=True)
        finally:
            browser.close()
    row = service.store.get_interaction(1)
    assert row["question"] == QUESTION and row["rating_thumbs"] == "up"
