"""Two visitors and an owner in one headless Chromium (three browser contexts = three people) on
a public-looking app (``Roles(host="0.0.0.0")`` with an owner token; the server binds 127.0.0.1):
each visitor's History, rating list, export and τ are their own; the Training tab and the
calibrator are the owner's, who signs in with the token. With no owner configured, the console's
one-time sign-in link is the only way in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from corea.auth import Roles
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from browser import free_port, launch_chromium, require_chromium  # noqa: E402

pytestmark = pytest.mark.browser

TOKEN = "owner-token-browser"
SECRET = "my account DE89370400440532013000"



@pytest.fixture
def two_visitors(tmp_path, monkeypatch):
    sync_api = require_chromium()
    monkeypatch.setenv("COREA_RUNS_DIR", str(tmp_path / "runs"))
    import app

    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'roles.sqlite'}")
    service = CoreaService(
        settings,
        slm=FakeBackend(["\\boxed{72}\nConfidence: 0.55"], model_name=settings.slm.name),
        llm=FakeBackend(["\\boxed{72}"], model_name=settings.llm.name))
    demo = app.build_demo(service, roles=Roles(token=TOKEN, host="0.0.0.0", on_space=False))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield sync_api, f"http://127.0.0.1:{port}/", service
    finally:
        demo.close()


def _ask(sync_api, page, question, expect):
    page.locator("#corea-question textarea").fill(question)
    page.locator("#corea-send").click()
    sync_api.expect(page.locator("#corea-details")).to_contain_text(expect, timeout=60_000)


def test_visitors_are_isolated_and_the_owner_signs_in(two_visitors):
    sync_api, url, service = two_visitors
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            pages = {}
            for who in ("alice", "bob", "owner"):
                ctx = browser.new_context(viewport={"width": 1360, "height": 1100})
                pages[who] = page = ctx.new_page()
                page.goto(url, wait_until="domcontentloaded")
                page.locator("#corea-question textarea").wait_for(timeout=60_000)
            alice, bob, owner = pages["alice"], pages["bob"], pages["owner"]

            # alice asks (deferred at τ 0.70) and rates; bob lowers his τ and asks (kept)
            _ask(sync_api, alice, f"{SECRET}: what is 48 + 24?", "logged as #1")
            expect(alice.locator("#corea-chat")).to_contain_text("Deferred to the large model")
            alice.locator("#corea-thumbs-up").click()
            expect(alice.locator("#corea-rating-status")).to_contain_text(
                "for interaction #1", timeout=30_000)
            tau = bob.locator("#corea-threshold input[type=number]")
            tau.fill("0.2")
            tau.press("Enter")
            _ask(sync_api, bob, "What is 2 + 3?", "logged as #2")
            expect(bob.locator("#corea-chat")).to_contain_text("Answered by the small model")
            # bob's τ did not change alice's: her next question is still deferred at 0.70
            _ask(sync_api, alice, "And 1 + 1?", "logged as #3")
            expect(alice.locator("#corea-chat")).to_contain_text("threshold 0.70")
            assert service.store.get_interaction(3)["threshold"] == 0.7

            # bob's rating list, History and export hold his own turn only
            expect(bob.locator("#corea-rate-target input")).to_have_value(
                "#2 — What is 2 + 3?", timeout=10_000)
            bob.get_by_role("tab", name="History").click()
            bob.get_by_role("button", name="Refresh").click()
            expect(bob.get_by_text("1 interaction(s) of this browser session")).to_be_visible(
                timeout=30_000)
            assert SECRET not in bob.content()
            bob.get_by_role("button", name="Export rated interactions (JSONL)").click()
            expect(bob.get_by_text("Exported 0 rated interaction(s) of this browser session")
                   ).to_be_visible(timeout=30_000)
            # no Training tab and no calibrator for a visitor, and no database path on the page
            assert bob.get_by_role("tab", name="Training").count() == 0 or \
                not bob.get_by_role("tab", name="Training").is_visible()
            bob.get_by_role("tab", name="Threshold explorer").click()
            assert not bob.get_by_text("Calibrator: learn").is_visible()
            assert "roles.sqlite" not in bob.content()
            bob.get_by_role("tab", name="Ask").click()
            expect(bob.locator("#corea-model-info")).to_contain_text("SQLite file")

            # the owner signs in with the token: Training appears, History shows every session
            owner.get_by_text("Owner", exact=True).first.click()
            owner.locator("#corea-owner-token input").fill(TOKEN)
            owner.locator("#corea-owner-sign-in").click()
            expect(owner.locator("#corea-owner-status")).to_contain_text(
                "Signed in as the owner", timeout=30_000)
            expect(owner.get_by_role("tab", name="Training")).to_be_visible(timeout=30_000)
            owner.get_by_role("tab", name="History").click()
            expect(owner.get_by_text("3 interaction(s) of all sessions")).to_be_visible(
                timeout=30_000)
            assert SECRET in owner.content()
            # bob, still a visitor, sees no Training tab after a reload either
            bob.reload(wait_until="domcontentloaded")
            bob.locator("#corea-question textarea").wait_for(timeout=60_000)
            assert bob.get_by_role("tab", name="Training").count() == 0 or \
                not bob.get_by_role("tab", name="Training").is_visible()
        finally:
            browser.close()


@pytest.fixture
def no_owner_configured(tmp_path, monkeypatch):
    """The app as ``python app.py`` starts it with no owner configured: a one-time token."""
    sync_api = require_chromium()
    monkeypatch.setenv("COREA_RUNS_DIR", str(tmp_path / "runs"))
    for name in ("COREA_OWNER_TOKEN", "COREA_OWNERS", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    import app

    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'console.sqlite'}")
    service = CoreaService(
        settings,
        slm=FakeBackend(["\\boxed{72}\nConfidence: 0.55"], model_name=settings.slm.name),
        llm=FakeBackend(["\\boxed{72}"], model_name=settings.llm.name))
    roles = Roles.from_env()
    demo = app.build_demo(service, roles=roles)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield sync_api, f"http://127.0.0.1:{port}/", roles
    finally:
        demo.close()


def test_the_console_link_signs_in_and_nothing_else_does(no_owner_configured):
    """On 127.0.0.1 with nothing configured a browser is a visitor; the console's link makes
    that page the owner's; the token is on no page."""
    sync_api, url, roles = no_owner_configured
    expect = sync_api.expect
    link = roles.sign_in_url(int(url.rstrip("/").rsplit(":", 1)[1]))
    token = link.split("?token=", 1)[1]
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            visitor = browser.new_context(viewport={"width": 1360, "height": 1100}).new_page()
            visitor.goto(url, wait_until="domcontentloaded")
            visitor.get_by_text("Owner", exact=True).first.click()
            expect(visitor.locator("#corea-owner-status")).to_contain_text(
                "printed on the server's console", timeout=60_000)
            assert not visitor.get_by_role("tab", name="Training").is_visible()
            owner = browser.new_context(viewport={"width": 1360, "height": 1100}).new_page()
            owner.goto(link, wait_until="domcontentloaded")
            owner.get_by_text("Owner", exact=True).first.click()
            expect(owner.locator("#corea-owner-status")).to_contain_text(
                "signed in with the owner token", timeout=60_000)
            expect(owner.get_by_role("tab", name="Training")).to_be_visible(timeout=30_000)
            assert token not in owner.content() and token not in visitor.content()
            # a stale link (from an earlier start) says so and signs nobody in
            stale = browser.new_context().new_page()
            stale.goto(f"{url}?token=an-old-token", wait_until="domcontentloaded")
            stale.get_by_text("Owner", exact=True).first.click()
            expect(stale.locator("#corea-owner-status")).to_contain_text(
                "not valid", timeout=60_000)
            assert not stale.get_by_role("tab", name="Training").is_visible()
        finally:
            browser.close()
