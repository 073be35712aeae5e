"""Never keep a broken answer: cut-off and answerless SLM turns, unusable LLM turns, confidences
that echo the answer (scripted backends), and the rule's vector twin."""

from __future__ import annotations

import numpy as np
import pytest

from corea import policy
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Settings
from corea.eval.scored import ScoredSet
from corea.events import Final
from corea.parsing import confidence_echoes_answer


def run(slm_reply, llm_reply="So \\boxed{391}", tau=0.5, max_new=512, llm_max_new=512,
        continuations=("  0.9",), llm_error=None):
    settings = Settings(db_url="sqlite://", threshold=tau)
    settings = settings.model_copy(update={
        "slm": settings.slm.model_copy(update={"max_new_tokens": max_new}),
        "llm": settings.llm.model_copy(update={"max_new_tokens": llm_max_new})})
    slm = FakeBackend([slm_reply], continuations=list(continuations), model_name="slm")
    llm = FakeBackend([llm_reply], model_name="llm", error=llm_error)
    events = list(Cascade(slm, llm, settings).run("What is 17 * 23?"))
    assert isinstance(events[-1], Final)
    return events[-1].result, slm


LOOP = " ".join(["17 × 23 = 17 × (20 + 3) ="] * 40)  # far over an 8-word budget


def test_a_slm_turn_cut_at_its_budget_is_deferred_and_never_elicited():
    r, slm = run(LOOP, max_new=8)
    assert r.slm.finish_reason == "length" and r.decision.reason == "truncated"
    assert r.decision.defer and "cut off" in r.decision.message
    assert not [c for c in slm.calls if c[0] == "continue"]  # no forced "Answer:"/"Confidence:"
    assert r.final_answer == "391" and r.final_model == "llm"


def test_an_answerless_slm_turn_is_never_kept_whatever_confidence_was_elicited():
    r, _ = run("I think about it a lot.\nConfidence: 0.99", continuations=("",))
    assert r.slm.answer is None and r.slm.confidence == 0.99
    assert r.decision.reason == "no_answer" and r.decision.defer and r.final_model == "llm"


def test_an_llm_cut_at_its_budget_falls_back_to_the_slm_answer_with_the_reason():
    r, _ = run("\\boxed{391}\nConfidence: 0.2", llm_reply=" ".join(["0.60^{16} ≈"] * 50),
               llm_max_new=10)
    assert r.llm.finish_reason == "length" and r.decision.reason == "llm_truncated"
    assert r.final_answer == "391" and r.final_model == "slm"
    assert "showing the small model's answer" in r.decision.message
    assert r.decision.message in r.warnings


def test_no_answer_from_either_model_shows_none_and_says_why():
    r, _ = run(LOOP, max_new=8, llm_reply=" ".join(["hmm"] * 50), llm_max_new=10)
    assert r.decision.reason == "llm_truncated" and r.final_answer is None
    assert "small model had none either" in r.decision.message


def test_an_unreachable_llm_never_shows_a_cut_off_slm_answer():
    from corea.backends.base import BackendError

    r, _ = run("\\boxed{12} " + LOOP, max_new=8, llm_error=BackendError("timeout", "slow"))
    assert r.slm.answer == "12" and r.decision.reason == "llm_error"
    assert r.final_answer is None


def test_an_echoed_confidence_is_discarded_and_asked_again_naming_the_answer():
    r, slm = run("12 + 30 = \\boxed{42}\nConfidence: 0.42", continuations=(" 0.7",))
    assert r.slm.confidence_echo == 0.42 and r.slm.confidence == 0.7
    assert r.slm.confidence_method == "asked"
    kind, messages, prefix = slm.calls[-1]
    assert kind == "continue" and prefix == "Confidence:"
    assert "Your final answer is 42" in messages[-1].content
    assert messages[-2].role == "assistant" and messages[-2].content.startswith("12 + 30")


def test_an_echo_asked_again_that_echoes_again_is_no_confidence():
    r, _ = run("\\boxed{56}\nConfidence: 0.56", continuations=(" 0.56",))
    assert r.slm.confidence is None and r.slm.confidence_echo == 0.56
    assert "echo again" in r.slm.confidence_note
    assert r.decision.reason == "no_confidence" and r.decision.defer


@pytest.mark.parametrize("answer, conf", [
    ("120", 0.12), ("960", 0.96), ("685", 0.685), ("42", 0.42), ("56", 0.56), ("1,200", 0.12),
    ("$42$", 0.42)])
def test_echo_detector_flags_the_examples(answer, conf):
    assert confidence_echoes_answer(answer, conf)


@pytest.mark.parametrize("answer, conf", [
    ("9", 0.9), ("80", 0.8), ("18", 0.85), ("100", 1.0), ("0.5", 0.5), ("x + 1", 0.42),
    ("A", 0.42), (None, 0.42), ("42", None), ("3", 0.3), ("7", 0.75)])
def test_echo_detector_leaves_legitimate_pairs_alone(answer, conf):
    assert not confidence_echoes_answer(answer, conf)


def test_the_vector_rule_agrees_with_the_cascade_on_unusable_outputs():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(400):
        conf = None if rng.random() < 0.1 else float(rng.choice([0.3, 0.5, 0.7, rng.random()]))
        finish = "length" if rng.random() < 0.2 else "stop"
        answer = None if rng.random() < 0.15 else "4"
        rows.append({"id": i, "slm": {"confidence": conf, "answer": answer,
                                      "finish_reason": finish},
                     "llm": {}, "slm_correct": bool(rng.random() < 0.5), "llm_correct": True})
    scored = ScoredSet.from_rows(rows)
    for tau in (0.0, 0.3, 0.5, 0.7, 1.0):
        want = []
        for r in rows:
            s = r["slm"]
            why = policy.unusable(s["answer"], s["finish_reason"])
            want.append(True if why else policy.decide(s["confidence"], tau).defer)
        assert scored.defer(tau).tolist() == want
    assert scored.subset(np.arange(10)).usable.tolist() == scored.usable[:10].tolist()


def test_the_summary_reports_the_echo_rate_before_and_after():
    from corea.eval.summary import echo_rates

    outs = [{"answer": "42", "confidence": 0.7, "confidence_echo": 0.42,
             "confidence_method": "asked"},
            {"answer": "56", "confidence": None, "confidence_echo": 0.56},
            {"answer": "9", "confidence": 0.9}, {"answer": "3", "confidence": None},
            {"answer": "120", "confidence": 0.12}]  # an old row, echo kept
    e = echo_rates(outs)
    assert e["n_stated"] == 4 and e["n_before"] == 3 and e["n_after"] == 1
    assert e["n_asked_ok"] == 1 and e["before"] == 0.75 and e["after"] == 0.25


@pytest.mark.parametrize("c, tau, text, pct", [
    (0.9999999999999, 1.0, "0.9999999999999", "99.99999999999%"),
    (0.45, 0.7, "0.45", "45%"), (0.7, 0.7, "0.70", "70%"), (0.699999, 0.7, "0.699999", "69.9999%"),
    (0.705, 0.7, "0.705", "70.5%"),
])
def test_shown_numbers_keep_the_comparison_true(c, tau, text, pct):
    assert policy.shown(c, tau) == text and policy.shown(c, tau, percent=True) == pct


def test_the_decision_sentence_and_badge_never_contradict_the_rule():
    from corea.ui.ask import confidence_badge

    d = policy.decide(0.9999999999999, 1.0)
    assert d.defer and "0.9999999999999 < threshold 1.00" in d.message
    assert "100%" not in confidence_badge(d)
