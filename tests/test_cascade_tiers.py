"""The tier as the unit (issue #28): tier events and their deprecated two-tier names, one record
per tier in ``CascadeResult.tiers``, and a deciding tier's options (calibrator, confidence-first)
on a middle tier, on scripted backends."""

from __future__ import annotations

import pytest

from corea.backends.fake import FakeBackend
from corea.cascade import Cascade, TierOptions
from corea.config import Settings
from corea.events import (CascadeResult, Decision, Final, LLMDelta, LLMDone, LLMStarted,
                          ModelOutput, SLMDelta, SLMDone, SLMStarted, TierDelta, TierDone,
                          TierStarted)

TIERS = [{"backend": "fake", "model": "t0", "threshold": 0.7},
         {"backend": "fake", "model": "t1", "threshold": 0.6},
         {"backend": "fake", "model": "t2"}]


def reply(answer, confidence) -> str:
    return f"Working it out. \\boxed{{{answer}}}\nConfidence: {confidence}"


def three(c0=0.3, c1=0.3, last="The answer is \\boxed{6}", options=(), b1=None, **kw):
    settings = Settings(tiers=TIERS, db_url="sqlite://", use_probe=False,
                        confidence_source="verbal", **kw)
    b0 = FakeBackend([reply(4, c0)], model_name="t0")
    b1 = b1 or FakeBackend([reply(5, c1)], model_name="t1")
    b2 = FakeBackend([last], model_name="t2")
    return Cascade(b0, b2, settings, middle=[b1], options=options), (b0, b1, b2)


def run(cascade, **kw):
    results = []
    events = list(cascade.run("What is 2+2?", on_result=results.append, **kw))
    assert len(results) == 1 and isinstance(events[-1], Final)
    return events, results[0]


# ------------------------------------------------------------------------------ the events

def test_the_old_event_names_are_aliases_matched_by_role():
    ev = SLMDelta("x", forced=True)
    assert type(ev) is TierDelta and (ev.tier, ev.text, ev.forced, ev.role) == (0, "x", True, "slm")
    assert isinstance(ev, SLMDelta) and isinstance(ev, TierDelta)
    assert not isinstance(ev, LLMDelta) and not isinstance(ev, SLMDone)
    last = TierDelta(2, "y", role="llm")
    assert isinstance(last, LLMDelta) and not isinstance(last, SLMDelta)
    assert not isinstance(TierDelta(1, "z"), (SLMDelta, LLMDelta))  # a middle tier's
    started = LLMStarted(model="big", tier=2)
    assert started == TierStarted(2, "big", "llm") and isinstance(started, LLMStarted)
    assert LLMStarted("big").tier == 1 and SLMStarted("small") == TierStarted(0, "small", "slm")
    out = ModelOutput(model="m")
    assert isinstance(SLMDone(out), SLMDone) and isinstance(LLMDone(output=out), LLMDone)
    assert not isinstance(TierDone(0, out, "slm"), LLMDone)
    assert not isinstance("text", SLMDelta)
    match ev:  # structural pattern matching goes through isinstance too
        case LLMDelta():
            matched = "llm"
        case SLMDelta(text=text):
            matched = text
    assert matched == "x"


def test_the_cascade_emits_tier_events_the_old_names_still_recognise():
    cascade, _ = three(c0=0.3, c1=0.3)
    events, r = run(cascade)
    tiered = [e for e in events if not isinstance(e, (Decision, Final))]
    assert {type(e) for e in tiered} == {TierStarted, TierDelta, TierDone}
    assert [(e.tier, e.role) for e in tiered if isinstance(e, TierStarted)] == \
        [(0, "slm"), (1, "mid"), (2, "llm")]
    for k, step in enumerate(r.tiers):  # every tier's streamed text is its output's text
        assert "".join(e.text for e in events if isinstance(e, TierDelta) and e.tier == k) \
            == step.output.text
    # what a two-tier consumer (README's example) sees
    assert "".join(e.text for e in events if isinstance(e, SLMDelta)) == r.tiers[0].output.text
    assert "".join(e.text for e in events if isinstance(e, LLMDelta)) == r.tiers[2].output.text
    assert [e.output for e in events if isinstance(e, LLMDone)] == [r.tiers[2].output]


# ------------------------------------------------------------------------ one record per tier

def test_each_tier_that_ran_is_one_step_and_the_two_tier_names_read_from_it():
    cascade, _ = three(c0=0.3, c1=0.3)
    _, r = run(cascade)
    assert [(t.index, t.role, t.model) for t in r.tiers] == \
        [(0, "slm", "t0"), (1, "mid", "t1"), (2, "llm", "t2")]
    assert [t.output.answer for t in r.tiers] == ["4", "5", "6"]
    assert r.slm is r.tiers[0].output and r.llm is r.tiers[2].output
    assert r.decision is r.tiers[0].decision and r.threshold == 0.7 and r.slm_prior is None
    d = r.to_dict()
    assert d["slm"]["answer"] == "4" and d["llm"]["answer"] == "6"
    assert [t["answer"] for t in d["tiers"]] == ["4", "5", "6"]
    # kept by the middle tier: its output is in tiers, never in result.llm
    cascade, (_, _, b2) = three(c0=0.3, c1=0.9)
    _, r = run(cascade)
    assert [t.output.answer for t in r.tiers] == ["4", "5"] and b2.calls == []
    assert r.llm is None and r.to_dict()["llm"] is None
    assert (r.answered_tier, r.final_answer) == (1, "5")
    with pytest.raises(AttributeError):
        r.llm = r.tiers[1].output  # derived, read-only


def test_a_result_built_by_hand_is_a_two_tier_record():
    slm, llm = ModelOutput(model="s", answer="4"), ModelOutput(model="l", text="5", answer="5")
    r = CascadeResult(question="q", threshold=0.5, slm=slm, llm=llm, final_model="l",
                      final_text="5")
    assert [(t.index, t.role, t.threshold) for t in r.tiers] == [(0, "slm", 0.5), (1, "llm", None)]
    assert r.answering_index() == 1  # worked out from its outputs (no answered_tier recorded)
    with pytest.raises(ValueError, match="either tiers or slm"):
        CascadeResult(question="q", slm=slm, tiers=r.tiers)


# ------------------------------------------------------------------- options on any tier

class ConstantCalibrator:
    """A calibrator's interface (:class:`corea.signals.calibrator.Calibrator`): one P(correct)."""

    def __init__(self, p: float):
        self.p = p
        self.seen: list[dict] = []

    def predict_one(self, out: dict) -> float:
        self.seen.append(out)
        return self.p


def test_a_middle_tier_can_decide_with_a_calibrator():
    cal = ConstantCalibrator(0.95)
    b1 = FakeBackend([reply(5, 0.1)], model_name="t1", token_logprob=-0.1)
    cascade, (_, _, b2) = three(c0=0.3, b1=b1,
                                options=[None, TierOptions(signal="calibrated", calibrator=cal)])
    _, r = run(cascade)
    d1 = r.tiers[1].decision
    assert (d1.signal, d1.confidence, d1.verbal_confidence, d1.defer) == \
        ("calibrated", 0.95, 0.1, False)
    assert cal.seen[0]["confidence"] == 0.1 and cal.seen[0]["signals"]["solution_prob"] > 0
    assert r.answered_tier == 1 and b2.calls == []
    assert r.decision.signal == "verbal"  # the first tier keeps its default options
    # without token log-probabilities the middle tier falls back to its stated confidence
    cascade, _ = three(c0=0.3, c1=0.1,
                       options=[None, TierOptions(signal="calibrated", calibrator=cal)])
    _, r = run(cascade)
    d1 = r.tiers[1].decision
    assert d1.signal == "verbal" and d1.defer and "the engine returned no token" in d1.signal_note


def test_a_middle_tier_can_state_its_confidence_before_solving():
    b1 = FakeBackend([reply(5, 0.9)], continuations=[" 0.2"], model_name="t1")
    cascade, (_, b1, b2) = three(c0=0.3, b1=b1, options=[None, TierOptions(confidence_first=True)])
    events, r = run(cascade)
    step = r.tiers[1]
    assert step.prior is not None and step.prior.confidence == 0.2
    assert [kind for kind, *_ in b1.calls] == ["continue"]  # it never solved
    assert step.decision.defer and step.decision.signal == "prior"
    assert step.decision.message.endswith("(stated before solving)")
    assert all(e.forced for e in events if isinstance(e, TierDelta) and e.tier == 1)
    assert (r.answered_tier, r.final_answer) == (2, "6")
    # stated high enough: it solves and its answer is kept, the turn counted in its output
    b1 = FakeBackend([reply(5, 0.1)], continuations=[" 0.9"], model_name="t1")
    cascade, (_, b1, b2) = three(c0=0.3, b1=b1, options=[None, TierOptions(confidence_first=True)])
    _, r = run(cascade)
    step = r.tiers[1]
    assert not step.decision.defer and r.answered_tier == 1 and b2.calls == []
    assert step.output.text.startswith(step.prior.text)
    assert step.output.completion_tokens > step.prior.completion_tokens


def test_an_unknown_solve_mode_is_refused_before_anything_runs():
    cascade, (b0, _, _) = three(options=[TierOptions(solve="no-such-mode")])
    with pytest.raises(ValueError, match="unknown solve mode 'no-such-mode'"):
        cascade.run("q")
    assert b0.calls == []


# ---------------------------------------------------------------- the shared final-answer rule

def test_a_cut_off_last_answer_is_never_final_after_a_deferral_before_solving():
    settings = Settings(db_url="sqlite://", use_probe=False, confidence_source="verbal",
                        deferral_order="confidence_first")
    settings = settings.model_copy(update={
        "llm": settings.llm.model_copy(update={"max_new_tokens": 2})})
    cascade = Cascade(FakeBackend([reply(4, 0.9)], continuations=[" 0.1"], model_name="s"),
                      FakeBackend(["one two three \\boxed{5}"], model_name="l"), settings)
    _, r = run(cascade)
    assert r.llm.finish_reason == "length"
    assert r.decision.reason == "llm_truncated" and r.final_answer is None
    assert r.answered_tier is None and r.warnings == [r.decision.message]
