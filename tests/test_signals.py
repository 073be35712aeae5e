"""Token-probability signals (corea.signals.tokens) and their plumbing through the cascade."""

from __future__ import annotations

import math

import pytest

from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Settings
from corea.signals.tokens import answer_span, compute_signals, span_logprobs


def test_signals_from_known_logprobs():
    toks = [("The answer is ", math.log(0.5)), ("\\boxed{", math.log(0.8)), ("4", math.log(0.25)),
            ("2", math.log(1.0)), ("}", math.log(0.9))]
    s = compute_signals(toks, "42", "stop")
    lps = [lp for _, lp in toks]
    assert s.solution_prob == pytest.approx(math.exp(sum(lps) / 5))
    assert s.answer_prob == pytest.approx(math.sqrt(0.25 * 1.0))  # the tokens "4" and "2"
    assert s.min_prob == pytest.approx(0.25)
    assert s.n_tokens == 5 and s.hit_length is False


def test_answer_span_takes_the_last_occurrence_and_overlapping_tokens():
    text = "7 apples; so \\boxed{7}"
    assert answer_span(text, "7") == (len(text) - 2, len(text) - 1)
    assert answer_span(text, "8") is None and answer_span(text, None) is None
    toks = [("ab", -1.0), ("cd", -2.0), ("ef", -3.0)]
    assert span_logprobs(toks, 1, 3) == [-1.0, -2.0]  # "b" and "c" straddle two tokens
    assert span_logprobs(toks, 4, 6) == [-3.0]


def test_no_logprobs_gives_none_not_a_made_up_value():
    s = compute_signals([], "42", "length")
    assert (s.solution_prob, s.answer_prob, s.min_prob) == (None, None, None)
    assert s.n_tokens == 0 and s.hit_length is True


def test_answer_absent_from_text_gives_no_answer_prob():
    s = compute_signals([("x = 5", -0.1)], "6", "stop")
    assert s.answer_prob is None and s.solution_prob == pytest.approx(math.exp(-0.1))


def test_forced_answer_uses_the_continuation_tokens():
    s = compute_signals([("long reasoning", -0.2)], "12", "length",
                        answer_tokens=[(" ", math.log(0.5)), ("12", math.log(0.64))])
    assert s.answer_prob == pytest.approx(0.64)
    # answer text not found in the continuation: all of its tokens
    s = compute_signals([("r", -0.2)], "12", "length", answer_tokens=[(" twelve", math.log(0.3))])
    assert s.answer_prob == pytest.approx(0.3)


def test_cascade_records_signals_on_the_slm_output():
    slm = FakeBackend(["So \\boxed{42}\nConfidence: 0.9"], chunk_chars=3, model_name="s",
                      token_logprob=lambda piece: -1.0 if "42" in piece or "4" in piece else -0.1)
    llm = FakeBackend(["\\boxed{1}"], model_name="l")
    out = Cascade(slm, llm, Settings()).slm_output("q?")
    sig = out.signals
    assert sig is not None and sig["n_tokens"] == len("So \\boxed{42}\nConfidence: 0.9") // 3 + 1
    assert sig["answer_prob"] == pytest.approx(math.exp(-1.0))
    assert 0 < sig["min_prob"] <= sig["solution_prob"] < 1


def test_cascade_forced_answer_signal_comes_from_the_answer_continuation():
    slm = FakeBackend(["I think it is big"], continuations=[" \\boxed{9}", " 0.4"], chunk_chars=50,
                      model_name="s", token_logprob=-0.5)
    out = Cascade(slm, FakeBackend(["\\boxed{9}"], model_name="l"), Settings()).slm_output("q")
    assert out.answer == "9" and out.answer_method == "forced"
    assert out.signals["answer_prob"] == pytest.approx(math.exp(-0.5))
    assert out.signals["n_tokens"] == 1  # the free completion only


def test_backend_without_logprobs_leaves_probabilities_none():
    slm = FakeBackend(["\\boxed{1}\nConfidence: 0.5"], model_name="s")
    out = Cascade(slm, FakeBackend(["x"], model_name="l"), Settings()).slm_output("q")
    assert out.signals["solution_prob"] is None and out.signals["n_tokens"] == 0


# ----------------------------------------------------------------------------- confidence-first

def _cf(prior: str, tau: float):
    from corea.events import Final, LLMStarted, SLMDelta

    slm = FakeBackend(["Work: 2+2=4 \\boxed{4}\nConfidence: 0.9"],
                      continuations=lambda msgs, prefix: prior, model_name="s", chunk_chars=100)
    llm = FakeBackend(["\\boxed{5}"], model_name="l")
    c = Cascade(slm, llm, Settings(deferral_order="confidence_first", prices={}))
    events = list(c.run("What is 2+2?", threshold=tau))
    res = [e for e in events if isinstance(e, Final)][0].result
    streamed = "".join(e.text for e in events if isinstance(e, SLMDelta))
    return res, slm, streamed, any(isinstance(e, LLMStarted) for e in events)


def test_confidence_first_defers_without_solving():
    res, slm, streamed, llm_ran = _cf(" 0.3", 0.5)
    assert llm_ran and res.final_answer == "5" and res.decision.defer
    assert res.decision.signal == "prior" and "stated before solving" in res.decision.message
    assert [k for k, *_ in slm.calls] == ["continue"]  # never asked to solve
    assert res.slm.text == "Confidence: 0.3" == streamed and res.slm.answer is None
    assert res.slm_prior.confidence == 0.3 and res.slm.completion_tokens == 1


def test_confidence_first_keeps_the_slm_when_confident_and_counts_both_turns():
    res, slm, streamed, llm_ran = _cf(" 0.8", 0.5)
    assert not llm_ran and res.final_answer == "4" and not res.decision.defer
    assert res.decision.confidence == 0.8 and res.decision.signal == "prior"
    assert [k for k, *_ in slm.calls] == ["continue", "chat"]
    assert res.slm.text == streamed and res.slm.text.startswith("Confidence: 0.8\n\nWork")
    # both turns' tokens: 1 word of prior + the solution's words
    assert res.slm.completion_tokens == 1 + len("Work: 2+2=4 \\boxed{4}\nConfidence: 0.9".split())


def test_confidence_first_unparsable_prior_defers():
    res, *_ = _cf(" very sure", 0.5)
    assert res.decision.defer and res.decision.reason == "no_confidence"
    assert "not a number" in res.slm_prior.confidence_note
