"""Token-probability signals (corea.signals) and their plumbing through the cascade."""

from __future__ import annotations

import math

import pytest

from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Settings
from corea.signals import answer_span, compute_signals, span_logprobs


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
