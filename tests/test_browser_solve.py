"""In headless Chromium (issue 29, "In the app"): a visitor picks "A Python program" under "Solve
by", asks, and sees the program, what it printed and the card's "computed by a program"; the
configured default is chain of thought. Scripted models (the UI is the point)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from browser import served_page  # noqa: E402

pytestmark = pytest.mark.browser


def test_a_visitor_picks_a_python_program_and_sees_it_computed(tmp_path):
    import app

    settings = Settings(threshold=0.5, confidence_source="verbal",
                        db_url=f"sqlite:///{tmp_path / 'solve.sqlite'}")

    def slm_reply(messages):  # a program when the program-of-thought prompt asks for one
        if "Python" in messages[0].content:
            return "```python\nfirst = 17\nsecond = 23\nprint(first * second)\n```\nConfidence: 0.9"
        return "In words. \\boxed{390}\nConfidence: 0.9"

    service = CoreaService(
        settings, slm=FakeBackend(slm_reply, continuations=[" 0.5"], model_name=settings.slm.name),
        llm=FakeBackend(["\\boxed{5}"], model_name=settings.llm.name))
    with served_page(app.build_demo(service)) as (expect, page):
        choice = page.locator("#corea-solve")
        expect(choice).to_contain_text("Solve by")
        expect(choice).to_contain_text("2-vCPU")  # the measured trade-off, in one line
        expect(choice.get_by_label("Reasoning in words")).to_be_checked()  # the default
        choice.get_by_label("A Python program").check()
        page.locator("#corea-question textarea").fill("What is 17 * 23?")
        page.locator("#corea-send").click()
        details = page.locator("#corea-details")
        expect(details).to_contain_text("logged as #1", timeout=60_000)
        expect(details).to_contain_text("391")
        chat = page.locator("#corea-chat")
        expect(chat).to_contain_text("computed by a program")  # the card
        # the collapsed blocks open on a click: what the program printed, and the program
        chat.get_by_text("🧮 Program run").first.click()
        expect(chat.get_by_text("It printed")).to_be_visible(timeout=10_000)
        expect(chat.locator("pre").filter(has_text="391").first).to_be_visible()
        chat.get_by_text("reasoning —").first.click()
        expect(chat.get_by_text("print(first * second)")).to_be_visible(timeout=10_000)
