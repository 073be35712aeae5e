"""In headless Chromium (issue 33): one confidence per turn — the badge, the details line and the
History tab show the same number, named in words, with the stated one a click away — and the
session summary after asking both examples, honest in money and seconds. Scripted models (the UI
is the point)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService
from corea.signals.tokens import TOKPROB

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from browser import served_page  # noqa: E402

pytestmark = pytest.mark.browser

WORDS = "how likely the small model found its own words"


def test_one_confidence_in_the_badge_the_details_line_and_history(tmp_path):
    import app

    settings = Settings(threshold=0.7, confidence_source=TOKPROB,
                        db_url=f"sqlite:///{tmp_path / 'one.sqlite'}")
    # every token at p = e^-0.5: the deciding token probability is 61%; the stated one 90%
    slm = FakeBackend(["Two and two make four. \\boxed{4}\nConfidence: 0.9"], chunk_chars=4,
                      token_logprob=-0.5, model_name=settings.slm.name)
    service = CoreaService(settings, slm=slm,
                           llm=FakeBackend(["It is \\boxed{4}"], model_name=settings.llm.name))
    number = f"{math.exp(-0.5) * 100:.0f}%"
    with served_page(app.build_demo(service)) as (expect, page):
        page.locator("#corea-question textarea").fill("What is 2 + 2?")
        page.locator("#corea-send").click()
        details = page.locator("#corea-details")
        expect(details).to_contain_text("logged as #1", timeout=60_000)
        expect(details).to_contain_text(f"{WORDS}: {number}")
        chat = page.locator("#corea-chat")
        expect(chat).to_contain_text(f"{WORDS}: {number}")
        assert "stated 90%" not in chat.inner_text()
        # the stated number is one click away, in the collapsed block behind the badge
        stated = chat.get_by_text("the small model's stated confidence: 90%")
        expect(stated).to_be_hidden()
        chat.get_by_text("Behind this confidence").first.click()
        expect(stated).to_be_visible(timeout=10_000)
        # History shows the same number
        page.get_by_role("tab", name="History").click()
        page.get_by_role("button", name="Refresh").click()
        table = page.locator("#corea-history")
        expect(table).to_contain_text(number, timeout=30_000)
        expect(table).to_contain_text("deciding confidence")
        assert "90%" not in table.inner_text() and "0.9" not in table.inner_text()


def test_the_session_summary_after_both_examples_is_honest_in_money_and_seconds(tmp_path):
    import app
    from corea.ui.ask import EXAMPLES

    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'summary.sqlite'}")
    kept, deferred = EXAMPLES[0][0], EXAMPLES[1][0]

    def slm_reply(messages):  # the first example kept; the second rambles, then defers
        if messages[-1].content.startswith(kept[:20]):
            return "Jerry has 40, so 20 + 40 = \\boxed{60}\nConfidence: 0.9"
        return "Robert is 28 now. " * 60 + "\\boxed{14}\nConfidence: 0.2"

    service = CoreaService(
        settings, slm=FakeBackend(slm_reply, chunk_chars=8, model_name=settings.slm.name),
        llm=FakeBackend(["Robert is 28, Patrick 14. \\boxed{14}"], model_name=settings.llm.name))
    with served_page(app.build_demo(service)) as (expect, page):
        details = page.locator("#corea-details")
        for i, question in enumerate((kept, deferred), start=1):
            page.get_by_text(question[:30]).first.click()  # the example fills the question box
            expect(page.locator("#corea-question textarea")).to_have_value(question)
            page.locator("#corea-send").click()
            expect(details).to_contain_text(f"logged as #{i}", timeout=60_000)
        summary = page.locator("#corea-session-summary")
        expect(summary).to_contain_text("2 question(s) · 1 kept by the small model (50%)",
                                        timeout=30_000)
        text = summary.inner_text()
        assert "cost $" in text and "vs large model alone" in text  # money
        assert "compute" in text and " s vs " in text  # seconds
        # the deferred turn paid for both models, more than the kept one saved: said in words
        assert "It cost more" in text and "deferred 1 of 2 question(s)" in text
        assert "paid for both models" in text
