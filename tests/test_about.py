""""How it works" describes the shipped model from its card: the Ask tab said the stated
confidence was "often too high" while the shipped calibration adapter states 8% on average."""

from __future__ import annotations

from corea.adapters import EMBEDDED_SLM_NAME, adapter_card, shipped_adapter_dir
from corea.config import Settings
from corea.ui.about import how_it_works, stated_confidence_sentence
from corea.ui.ask import about_text


def test_how_it_works_states_the_shipped_adapters_own_figures():
    card = adapter_card(shipped_adapter_dir(EMBEDDED_SLM_NAME))
    after = card["test"]["gsm8k"]["after"]
    text = how_it_works(EMBEDDED_SLM_NAME, adapter_on=True)
    assert f"states {after['mean_confidence']:.0%} on average" in text
    assert f"answers {after['pass_at_1']:.0%} right" in text
    side = "too low" if after["mean_confidence"] < after["pass_at_1"] else "too high"
    assert side in text and "often too high" not in text


def test_without_the_adapter_it_describes_the_untrained_model():
    before = adapter_card(shipped_adapter_dir(EMBEDDED_SLM_NAME))["test"]["gsm8k"]["before"]
    text = how_it_works(EMBEDDED_SLM_NAME, adapter_on=False)
    assert "untrained" in text and f"states {before['mean_confidence']:.0%}" in text


def test_no_card_figures_no_sentence():
    assert stated_confidence_sentence({}, True) == ""
    assert "states" not in how_it_works("Some-Other-Model", adapter_on=False)


def test_the_app_shows_the_sentence_for_its_settings():
    s = Settings(db_url="sqlite://")
    assert about_text(s) == how_it_works(EMBEDDED_SLM_NAME, s.slm.model == "embedded:slm+calibration")
    other = Settings(db_url="sqlite://", slm={"model": "gpt-x", "backend": "openai", "name": "x"})
    assert "states" not in about_text(other).split("state a calibrated confidence.")[-1]
