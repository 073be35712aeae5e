"""The cascade's flow on scripted backends: decisions, forced suffix, faults, cancel, cost."""

from __future__ import annotations

import threading

import pytest

from corea.backends.base import BackendError
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Price, Settings
from corea.events import (Decision, Final, LLMDelta, LLMDone, LLMStarted, SLMDelta, SLMDone,
                          SLMStarted)
from corea.prompts import ANSWER_SUFFIX, CONFIDENCE_SUFFIX
from corea.validation import InvalidQuestion

PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}


def make(slm_reply="Two plus two. \\boxed{4}\nConfidence: 0.9", llm_reply="It is \\boxed{5}",
         continuations=None, mode="auto", **kw):
    settings = Settings(threshold=0.7, confidence_mode=mode, prices=PRICES,
                        db_url="sqlite://", **kw)
    slm = FakeBackend([slm_reply], continuations=continuations, model_name="slm")
    llm = kw.pop("llm", None) or FakeBackend([llm_reply], model_name="llm")
    return Cascade(slm, llm, settings), slm, llm


def run(cascade, q="What is 2+2?", **kw):
    results = []
    events = list(cascade.run(q, on_result=results.append, **kw))
    assert len(results) == 1, "on_result must be called exactly once"
    assert isinstance(events[-1], Final) and events[-1].result is results[0]
    return events, results[0]


def kind(e) -> str:
    """An event's name as the two-tier design named it (``TierDelta`` of the first tier:
    ``SLMDelta``), for readable expected sequences."""
    name = type(e).__name__
    if name.startswith("Tier"):
        return {"slm": "SLM", "mid": "Tier", "llm": "LLM"}[e.role] + name[4:]
    return name


def kinds(events):
    return [kind(e) for e in events]


def test_confident_slm_answer_is_kept():
    cascade, _, llm = make()
    events, r = run(cascade)
    assert kinds(events)[:1] == ["SLMStarted"]
    assert kinds(events)[-3:] == ["SLMDone", "Decision", "Final"]
    assert "".join(e.text for e in events if isinstance(e, SLMDelta)) == r.slm.text
    assert r.slm.answer == "4" and r.slm.answer_method == "free"
    assert r.slm.confidence == 0.9 and r.slm.confidence_method == "free"
    assert r.decision.reason == "confident" and not r.decision.defer
    assert r.decision.message == "Answered by the small model — confidence 0.90 ≥ threshold 0.70"
    assert r.llm is None and llm.calls == []
    assert r.final_answer == "4" and r.final_model == "slm" and r.status == "ok"


def test_low_confidence_defers_and_streams_llm():
    cascade, _, llm = make(slm_reply="\\boxed{4}\nConfidence: 45%")
    events, r = run(cascade)
    names = kinds(events)
    assert names.index("Decision") < names.index("LLMStarted") < names.index("LLMDelta")
    assert names[-2:] == ["LLMDone", "Final"]
    assert r.decision.reason == "low_confidence" and r.decision.defer
    assert r.decision.message == "Deferred to the large model — confidence 0.45 < threshold 0.70"
    assert r.final_answer == "5" and r.final_model == "llm"
    assert "".join(e.text for e in events if isinstance(e, LLMDelta)) == "It is \\boxed{5}"


def test_confidence_equal_to_threshold_is_kept():
    cascade, _, _ = make(slm_reply="\\boxed{4}\nConfidence: 0.7")
    _, r = run(cascade)
    assert not r.decision.defer and r.decision.reason == "confident"


def test_threshold_override_per_call():
    cascade, _, _ = make()
    _, r = run(cascade, threshold=0.95)
    assert r.decision.defer and r.threshold == 0.95


def test_no_confidence_in_free_mode_defers_with_reason():
    cascade, _, _ = make(slm_reply="\\boxed{4}", mode="free")
    _, r = run(cascade)
    assert r.slm.confidence is None and r.slm.confidence_note == "missing"
    assert r.decision.reason == "no_confidence"
    assert r.decision.message == "Deferred — the small model stated no confidence"


def test_forced_suffix_elicits_missing_answer_and_confidence():
    cascade, slm, _ = make(slm_reply="Let me think about it step by step.",
                           continuations=[" 4", " 0.8"])
    events, r = run(cascade)
    forced = [e.text for e in events if isinstance(e, SLMDelta) and e.forced]
    assert forced == [ANSWER_SUFFIX, " 4", CONFIDENCE_SUFFIX, " 0.8"]
    # each continuation sees the model's own completion plus the suffix
    prefixes = [c[2] for c in slm.calls if c[0] == "continue"]
    assert prefixes == ["Let me think about it step by step." + ANSWER_SUFFIX,
                        "Let me think about it step by step." + ANSWER_SUFFIX + " 4"
                        + CONFIDENCE_SUFFIX]
    assert r.slm.answer == "4" and r.slm.answer_method == "forced"
    assert r.slm.confidence == 0.8 and r.slm.confidence_method == "forced"
    assert r.slm.text.endswith("Answer: 4\nConfidence: 0.8")
    assert r.decision.reason == "confident"


def test_forced_suffix_only_for_the_missing_confidence():
    cascade, slm, _ = make(slm_reply="So \\boxed{4}", continuations=[" 85%"])
    _, r = run(cascade)
    assert [c[2] for c in slm.calls if c[0] == "continue"] == ["So \\boxed{4}" + CONFIDENCE_SUFFIX]
    assert r.slm.answer_method == "free" and r.slm.confidence == 0.85
    assert r.slm.confidence_method == "forced"


def test_forced_mode_replaces_a_free_confidence():
    cascade, _, _ = make(continuations=[" 0.3"], mode="forced")
    _, r = run(cascade)
    assert r.slm.confidence == 0.3 and r.slm.confidence_method == "forced"
    assert r.decision.defer


def test_forced_suffix_word_only_confidence_gives_none_and_defers():
    cascade, _, _ = make(slm_reply="\\boxed{4}", continuations=[" high"])
    _, r = run(cascade)
    assert r.slm.confidence is None
    assert "forced suffix" in r.slm.confidence_note
    assert r.decision.reason == "no_confidence"


def test_chat_only_slm_cannot_force_and_says_so():
    cascade, _, _ = make(slm_reply="\\boxed{4}", continuations=None)
    _, r = run(cascade)
    assert r.slm.confidence is None and "cannot continue" in r.slm.confidence_note
    assert r.decision.reason == "no_confidence"


def test_llm_error_falls_back_to_slm_answer_with_warning():
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.2"], model_name="slm")
    llm = FakeBackend(model_name="llm", error=BackendError("timeout", "read timed out"))
    events, r = run(Cascade(slm, llm, settings))
    assert r.decision.reason == "llm_error"
    assert r.decision.message == "LLM unavailable (timeout) — showing the small model's answer"
    assert r.final_answer == "4" and r.final_model == "slm" and r.status == "ok"
    assert r.warnings == [r.decision.message]
    assert r.llm.error.startswith("timeout")
    assert isinstance(events[-2], LLMDone)


def test_llm_error_says_so_when_the_slm_had_no_answer_either():
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    settings = settings.model_copy(update={  # the SLM is cut off at its budget: no usable answer
        "slm": settings.slm.model_copy(update={"max_new_tokens": 4})})
    slm = FakeBackend([" ".join(["17 × 23 = 17 × (20 + 3) ="] * 20)], model_name="slm")
    llm = FakeBackend(model_name="llm", error=BackendError("unreachable", "connection refused"))
    _, r = run(Cascade(slm, llm, settings))
    assert r.decision.reason == "llm_error" and r.final_answer is None
    assert r.decision.message == ("LLM unavailable (unreachable), and the small model had no "
                                  "answer either")
    assert r.warnings == [r.decision.message]


def test_slm_error_defers_to_llm():
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend(model_name="slm", error=BackendError("internal", "boom"))
    llm = FakeBackend(["\\boxed{5}"], model_name="llm")
    _, r = run(Cascade(slm, llm, settings))
    assert r.decision.reason == "slm_error" and r.decision.defer
    assert r.final_model == "llm" and r.final_answer == "5" and r.status == "ok"


def test_both_fail_is_an_error_result_not_an_exception():
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend(model_name="slm", error=RuntimeError("weights missing"))
    llm = FakeBackend(model_name="llm", error=BackendError("unreachable", "no route"))
    _, r = run(Cascade(slm, llm, settings))
    assert r.status == "error" and r.final_answer is None
    assert r.slm.error == "internal: weights missing"


def test_cost_and_tokens():
    # FakeBackend counts words as tokens: prompt = system + user words
    cascade, _, _ = make(slm_reply="\\boxed{4}\nConfidence: 0.1", llm_reply="\\boxed{5} ok")
    _, r = run(cascade)
    s, l = r.slm, r.llm
    assert s.completion_tokens == 3 and l.completion_tokens == 2
    assert s.cost_usd == pytest.approx((s.prompt_tokens * 1 + 3 * 2) / 1e6)
    assert l.cost_usd == pytest.approx((l.prompt_tokens * 10 + 2 * 20) / 1e6)
    assert r.cost_usd == pytest.approx(s.cost_usd + l.cost_usd)
    assert r.prompt_tokens == s.prompt_tokens + l.prompt_tokens


def test_forced_continuation_counts_only_new_input_tokens():
    cascade, _, _ = make(slm_reply="one two \\boxed{4}", continuations=[" 0.9"])
    _, r = run(cascade)
    first_prompt = r.slm.prompt_tokens - 1  # "\nConfidence:" is one new word
    assert r.slm.completion_tokens == 3 + 1
    assert first_prompt > 0


def test_cancel_mid_stream_logs_cancelled():
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    cancel = threading.Event()
    slm = FakeBackend(["word " * 200], model_name="slm", chunk_chars=5)
    cascade = Cascade(slm, FakeBackend(["x"], model_name="llm"), settings)
    results, events = [], []
    for ev in cascade.run("q?", cancel=cancel, on_result=results.append):
        events.append(ev)
        if sum(isinstance(e, SLMDelta) for e in events) == 3:
            cancel.set()
    r = results[0]
    assert r.status == "cancelled" and isinstance(events[-1], Final)
    assert slm.closed_early == 1
    assert r.slm.text == "word " * 3
    # no usage arrived: the announced prompt and the streamed chunks are counted and charged
    prompt = r.slm.prompt_tokens
    assert prompt == sum(len(m.content.split()) for m in slm.calls[0][1]) > 0
    assert r.slm.completion_tokens == 3
    assert r.cost_usd == pytest.approx((prompt * 1 + 3 * 2) / 1e6)


def test_consumer_closing_the_stream_still_reports_once():
    cascade, slm, _ = make(slm_reply="word " * 100)
    results = []
    gen = cascade.run("q?", on_result=results.append)
    for ev in gen:
        if isinstance(ev, SLMDelta):
            break
    gen.close()
    assert len(results) == 1 and results[0].status == "cancelled"
    assert slm.closed_early == 1


@pytest.mark.parametrize("q", ["", "   \n\t ", "x" * 5000, b"\xff\xfe"])
def test_bad_questions_are_rejected_before_any_model_runs(q):
    cascade, slm, _ = make(max_question_chars=4000)
    with pytest.raises(InvalidQuestion):
        cascade.run(q)
    assert slm.calls == []


def test_control_characters_are_removed():
    cascade, slm, _ = make()
    _, r = run(cascade, q="What\x00 is\x07 2+2?\n")
    assert r.question == "What is 2+2?"


def test_event_types_in_order_for_deferral():
    cascade, _, _ = make(slm_reply="\\boxed{4}\nConfidence: 0.1")
    events, _ = run(cascade)
    order = [SLMStarted, SLMDelta, SLMDone, Decision, LLMStarted, LLMDelta, LLMDone, Final]
    seen = []
    for e in events:
        if not seen or not isinstance(e, seen[-1]):
            seen.append(next(t for t in order if isinstance(e, t)))
    assert seen == order


def test_single_model_steps_for_evaluation():
    cascade, _, _ = make(slm_reply="\\boxed{4}", continuations=[" 70%"])
    slm = cascade.slm_output("What is 2+2?")
    assert (slm.answer, slm.confidence, slm.confidence_method) == ("4", 0.7, "forced")
    llm = cascade.llm_output("What is 2+2?")
    assert llm.answer == "5" and llm.model == "llm" and llm.completion_tokens == 3
    settings = Settings(prices=PRICES, db_url="sqlite://")
    broken = Cascade(FakeBackend(["x"], model_name="slm"),
                     FakeBackend(model_name="llm", error=BackendError("timeout", "slow")), settings)
    out = broken.llm_output("q")
    assert out.error.startswith("timeout") and out.answer is None
