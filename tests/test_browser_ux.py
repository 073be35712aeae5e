"""What a visitor and an owner lose or misread in the page (issue 33), in headless Chromium:
text typed while an answer streams, the rating form, LaTeX in model text (rendered, never HTML),
the dead-threshold note, the owner's Training runs after a sign-in, and the explorer's runs on a
fresh deploy. Scripted models (the UI is the point)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from corea.auth import Roles
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from browser import served_page  # noqa: E402

pytestmark = pytest.mark.browser

TOKEN = "owner-token-ux"
# a long, slowly streamed reasoning: there is time to type while it streams
SLM_REPLY = ("In April Natalia sold 48 clips. In May she sold half as many: 48 / 2 = 24. " * 4
             + "Altogether: 48 + 24 = 72. \\boxed{72}\nConfidence: 0.55")
# model text is hostile input: markup must stay text
LLM_REPLY = ("Total: 48 + 24 = 72 clips <img src=x onerror=\"window.__pwned=1\"> "
             "![pixel](http://127.0.0.1:9/pixel.png) \\(<img src=y onerror=\"window.__pwned=2\">"
             "\\) \\boxed{72}")


_page = served_page


def test_ask_tab_keeps_typing_renders_latex_clears_the_rating_form_and_warns(tmp_path):
    import app

    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'ux.sqlite'}")
    service = CoreaService(
        settings,
        slm=FakeBackend([SLM_REPLY], chunk_chars=4, delay_s=0.03, model_name=settings.slm.name),
        llm=FakeBackend([LLM_REPLY], chunk_chars=6, delay_s=0.02, model_name=settings.llm.name))
    with _page(app.build_demo(service)) as (expect, page):
        box = page.locator("#corea-question textarea")
        box.fill("What is 48 + 24?")
        page.locator("#corea-send").click()
        chat = page.locator("#corea-chat")
        chat.get_by_text("Small model reasoning").first.wait_for(timeout=60_000)
        # 1. the visitor types the next question while the answer streams: it stays
        box.click()
        page.keyboard.type("And 48 - 24?")
        expect(page.locator("#corea-details")).to_contain_text("logged as #1", timeout=60_000)
        page.wait_for_timeout(500)
        assert box.input_value() == "And 48 - 24?"
        # 5. \boxed{72} is rendered math (KaTeX), the model's <img> is not an element
        expect(chat.locator(".katex").first).to_be_visible(timeout=10_000)
        assert "\\boxed" not in chat.inner_text()
        for src in ("x", "y", "http://127.0.0.1:9/pixel.png"):
            assert chat.locator(f'img[src="{src}"]').count() == 0, src
        assert "<img src=x" in chat.inner_text()  # shown as the text it is
        assert page.evaluate("window.__pwned") is None
        # 4. the rating form clears once saved
        page.get_by_label("Comment (optional)").fill("the sum is right")
        page.locator("#corea-thumbs-up").click()
        expect(page.locator("#corea-rating-status")).to_contain_text("for interaction #1",
                                                                     timeout=30_000)
        expect(page.get_by_label("Comment (optional)")).to_have_value("", timeout=10_000)
        assert service.store.get_interaction(1)["rating_comment"] == "the sum is right"
        # 8. a second deferred turn at τ 0.70: every recent turn deferred, the range that splits
        page.locator("#corea-send").click()  # the question typed above
        expect(page.locator("#corea-details")).to_contain_text("logged as #2", timeout=60_000)
        note = page.locator("#corea-threshold-note")
        expect(note).to_contain_text("Dead threshold", timeout=30_000)
        expect(note).to_contain_text("all 2 recent turns of this session")
        tau = page.locator("#corea-threshold input[type=number]")
        tau.fill("0.5")
        tau.press("Enter")
        expect(note).to_contain_text("none of the 2", timeout=30_000)


def test_an_owner_signing_in_after_a_reload_sees_and_can_stop_the_runs(tmp_path):
    """A run recorded before the page loaded: the owner, a visitor until the sign-in, gets the
    Training tab with the run listed and no refusal on it."""
    import app
    from corea.jobs import DeviceInfo, JobManager

    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'owner.sqlite'}")
    service = CoreaService(settings, slm=FakeBackend(["\\boxed{1}\nConfidence: 0.9"]),
                           llm=FakeBackend(["\\boxed{1}"]))
    manager = JobManager(service.store, runs_root=tmp_path / "runs" / "train",
                         device=DeviceInfo("cpu", "CPU", "CPU (test)"))
    jid = service.store.add_job("train", "cpu-smoke", {}, str(tmp_path / "out"), None)
    demo = app.build_demo(service, training_manager=manager,
                          roles=Roles(token=TOKEN, host="0.0.0.0", on_space=False))
    with _page(demo) as (expect, page):
        page.get_by_text("Owner", exact=True).first.click()
        page.locator("#corea-owner-token input").fill(TOKEN)
        page.locator("#corea-owner-sign-in").click()
        expect(page.locator("#corea-owner-status")).to_contain_text("Signed in as the owner",
                                                                    timeout=30_000)
        tab = page.get_by_role("tab", name="Training")
        expect(tab).to_be_visible(timeout=30_000)
        tab.click()
        run = page.locator("#corea-train-run input")
        run.click()
        expect(page.get_by_role("option", name=f"#{jid} cpu-smoke — running")).to_be_visible(
            timeout=30_000)
        page.keyboard.press("Escape")
        for elem in ("#corea-train-status", "#corea-train-action", "#corea-train-ck-action"):
            assert "Only the owner" not in page.locator(elem).inner_text()


def _run(folder, n: int = 6) -> None:
    folder.mkdir(parents=True)
    with open(folder / "items.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": str(i), "slm": {"confidence": i / n, "answer": "1"},
                                "llm": {"answer": "1"}, "slm_correct": i % 2 == 0,
                                "llm_correct": True}) + "\n")


def test_the_explorer_lists_committed_runs_and_new_ones_by_itself(tmp_path, monkeypatch):
    runs = tmp_path / "runs"  # a fresh deploy: no run of its own
    monkeypatch.setenv("COREA_RUNS_DIR", str(runs))
    import app

    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'ex.sqlite'}")
    service = CoreaService(settings, slm=FakeBackend(["\\boxed{1}\nConfidence: 0.9"]),
                           llm=FakeBackend(["\\boxed{1}"]))
    with _page(app.build_demo(service)) as (expect, page):
        page.get_by_role("tab", name="Threshold explorer").click()
        status = page.locator("#corea-explorer-status")
        expect(status).to_contain_text("gsm8k-test-200: 200 row(s)", timeout=60_000)
        expect(status).to_contain_text("Deciding signal: stated confidence")
        source = page.locator("#corea-explorer-source input")
        expect(source).to_have_value("gsm8k-test-200 (committed)")
        # a run added later (e.g. an evaluation) is offered without "Rescan runs"
        _run(runs / "new-eval-run")
        page.get_by_role("tab", name="Ask").click()
        page.get_by_role("tab", name="Threshold explorer").click()
        source.click()
        expect(page.get_by_role("option", name="new-eval-run")).to_be_visible(timeout=30_000)
        page.get_by_role("option", name="new-eval-run").click()
        expect(status).to_contain_text("new-eval-run: 6 row(s)", timeout=30_000)
        # an SLM-only committed run says why it has no cascade metrics
        source.click()
        source.fill("svamp-test-100-slm")
        page.get_by_role("option", name="svamp-test-100-slm (committed)").click()
        expect(status).to_contain_text("no large-model answers", timeout=60_000)
