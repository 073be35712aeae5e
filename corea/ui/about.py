"""The Ask tab's "How it works" text. What it says about the small model's stated confidence is
generated from the shipped calibration adapter's card (``corea/assets/adapters/<slm>/card.json``,
:func:`corea.adapters.adapter_card`: its GSM8K test pass@1 and mean stated confidence), so a new
adapter, or none, cannot leave the page describing another model.
"""

from __future__ import annotations

from ..adapters import adapter_card, shipped_adapter_dir

__all__ = ["HOW_IT_WORKS_HEAD", "how_it_works", "stated_confidence_sentence"]

HOW_IT_WORKS_HEAD = """\
**A small model first, a large one when it is unsure.** Your question goes to a small language
model (here Qwen2.5-Coder-0.5B). It reasons step by step, gives a final answer and says how sure
it is: a **confidence** between 0 and 1. If that confidence is at least the **threshold τ**
(the slider), its answer is kept; otherwise the question is **deferred** to a large model
(Qwen2.5-Coder-1.5B), which answers instead. A small model's answer that was cut off or that has
no final answer is never kept.

Each turn ends with a card: both models' answers, the deciding confidence against τ, why it was
kept or deferred, and the tokens, time and cost of each model. Raising τ defers more: better
answers, higher cost. The threshold explorer shows that trade-off on benchmark data.

This demo implements *Confidence-Calibrated Small-Large Language Model Collaboration for
Cost-Efficient Reasoning* (Zhang et al., arXiv:2603.03752, 2026), which trains the small model to
state a calibrated confidence."""


def stated_confidence_sentence(card: dict, adapter_on: bool) -> str:
    """What the small model's stated confidence is like, from an adapter card's GSM8K test
    figures (``test.gsm8k.after`` with the adapter on, ``before`` without): its mean stated
    confidence against the share it answers right. "" when the card has no such figures."""
    test = ((card.get("test") or {}).get("gsm8k") or {}).get("after" if adapter_on else "before")
    if not test or test.get("mean_confidence") is None or test.get("pass_at_1") is None:
        return ""
    mean, right = test["mean_confidence"], test["pass_at_1"]
    who = (f"With its calibration adapter ({card.get('name', 'shipped')}) the small model"
           if adapter_on else "The small model here is untrained: it")
    side = "too low" if mean < right else "too high"
    return (f"{who} states {mean:.0%} on average on GSM8K test questions, of which it answers "
            f"{right:.0%} right — {side} on average, which is why a learned signal may decide "
            "instead (the badge names the number that decided).")


def how_it_works(slm_name: str, adapter_on: bool) -> str:
    """The "How it works" Markdown for an SLM (its name as in :func:`corea.adapters.
    shipped_adapter_dir`) with or without its shipped calibration adapter."""
    folder = shipped_adapter_dir(slm_name)
    sentence = stated_confidence_sentence(adapter_card(folder), adapter_on) if folder else ""
    return HOW_IT_WORKS_HEAD + (" " + sentence if sentence else "") + "\n"
