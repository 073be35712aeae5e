"""The stated confidence read as a distribution (corea.signals.stated): the expected confidence and its
spread from the digit token's alternatives, live in the cascade, in the API and the log."""

from __future__ import annotations

import math

import pytest

from corea.api.translate import corea_object
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Price, Settings
from corea.eval.harness import LLM_DROP, output_dict
from corea.signals.stated import moments, reading_from_probs, read_digits
from corea.store.tiers import tier_values

PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}
ALTERNATIVES = [("1", math.log(0.5)), ("2", math.log(0.3)), ("x", math.log(0.1)),
                ("0", math.log(0.1))]
"""Three digits among the alternatives: renormalised p = (1/9, 5/9, 3/9) for 0, 1, 2."""


def chars(text):
    return [(c, -0.1) for c in text]


# ------------------------------------------------------------------------------ reading

def test_moments_of_a_peaked_and_a_flat_distribution():
    e, s = moments([0] * 7 + [1.0] + [0, 0])
    assert e == pytest.approx(0.7) and s == pytest.approx(0.0)
    e, s = moments([0.1] * 10)
    assert e == pytest.approx(0.45) and s == pytest.approx(math.sqrt(0.0825))


def test_reading_at_the_digit_after_confidence_renormalised_over_the_digits_present():
    text = "So 4.\nConfidence: 0.1"
    top = [()] * (len(text) - 1) + [tuple(ALTERNATIVES)]
    r = read_digits(chars(text), top)
    assert r.n_digits == 3 and r.mass == pytest.approx(0.9)
    assert r.probs[:3] == pytest.approx((1 / 9, 5 / 9, 3 / 9)) and sum(r.probs) == pytest.approx(1)
    assert r.expected == pytest.approx((5 / 9) * 0.1 + (3 / 9) * 0.2)
    assert r.spread == pytest.approx(moments(r.probs)[1])


def test_a_forced_line_is_read_with_its_prefix_and_unreadable_lines_give_none():
    top = [(), (), tuple(ALTERNATIVES)]
    assert read_digits(chars("0.1"), top, "\nConfidence: ").expected > 0
    assert read_digits(chars("0.1"), top) is None                 # no "Confidence:" before it
    assert read_digits(chars("Confidence: 1.0"), [tuple(ALTERNATIVES)] * 15) is None
    assert read_digits(chars("Confidence: 0.1"), [()] * 15) is None  # no alternatives
    assert read_digits(chars("Confidence: 0.1"), [(("a", 0.0),)] * 15) is None  # no digit
    assert read_digits(chars("Confidence: 0.1"), [()] * 3) is None  # misaligned
    with pytest.raises(ValueError):
        reading_from_probs([0.0] * 10)


# ------------------------------------------------------------------------------ cascade

def run(slm, threshold=0.5):
    settings = Settings(threshold=threshold, prices=PRICES, db_url="sqlite://")
    cascade = Cascade(slm, FakeBackend(["It is \\boxed{5}"], model_name="llm"), settings)
    results = []
    list(cascade.run("What is 2+2?", on_result=results.append))
    return results[0]


def test_the_adapter_line_carries_its_expected_confidence_and_spread():
    slm = FakeBackend(["Two plus two. \\boxed{4}"], continuations=[" 4"], model_name="slm",
                      stated_confidence=["\nConfidence: 0.1"], chunk_chars=1,
                      top_logprobs=lambda piece: ALTERNATIVES)
    r = run(slm)
    assert r.slm.confidence == 0.1 and r.slm.confidence_method == "adapter"
    want = (5 / 9) * 0.1 + (3 / 9) * 0.2
    assert r.slm.confidence_expected == pytest.approx(want, abs=1e-4)
    assert r.slm.confidence_spread == pytest.approx(
        moments((1 / 9, 5 / 9, 3 / 9) + (0,) * 7)[1], abs=1e-4)
    assert r.slm.confidence_digits == 3
    tier = r.tiers[0].to_dict()
    assert tier["confidence_expected"] == r.slm.confidence_expected
    assert tier["confidence_spread"] == r.slm.confidence_spread
    api = corea_object(r)
    assert api["confidence_expected"] == r.slm.confidence_expected
    assert api["tiers"][0]["confidence_spread"] == r.slm.confidence_spread
    assert api["tiers"][1]["confidence_expected"] is None  # the LLM states none
    assert tier_values(r.tiers[0])["extra"]["confidence_expected"] == r.slm.confidence_expected
    row = output_dict(r.slm)
    assert row["confidence_expected"] == r.slm.confidence_expected
    assert "confidence_expected" not in output_dict(r.llm, LLM_DROP)


def test_a_forced_confidence_is_read_too_and_an_engine_without_alternatives_gives_none():
    slm = FakeBackend(["Two plus two is \\boxed{4}."], continuations=[" 0.2"], model_name="slm",
                      chunk_chars=1, top_logprobs=lambda piece: ALTERNATIVES)
    r = run(slm)
    assert r.slm.confidence == 0.2 and r.slm.confidence_method == "forced"
    assert r.slm.confidence_expected == pytest.approx((5 / 9) * 0.1 + (3 / 9) * 0.2, abs=1e-4)
    plain = FakeBackend(["Two plus two is \\boxed{4}."], continuations=[" 0.2"],
                        model_name="slm", chunk_chars=1)
    r = run(plain)
    assert r.slm.confidence == 0.2
    assert r.slm.confidence_expected is None and r.slm.confidence_spread is None
    assert corea_object(r)["confidence_expected"] is None


def test_a_free_confidence_in_the_solution_has_no_reading():
    slm = FakeBackend(["So \\boxed{4}\nConfidence: 0.9"], continuations=[" 4"],
                      model_name="slm", chunk_chars=1, top_logprobs=lambda piece: ALTERNATIVES)
    r = run(slm)
    assert r.slm.confidence == 0.9 and r.slm.confidence_method == "free"
    assert r.slm.confidence_expected is None


@pytest.mark.model
def test_llamacpp_reports_the_top_alternatives_of_each_token():
    """One sequence and batched: one alternatives tuple per generated token, most likely first,
    the greedy token first with its own log-probability."""
    from corea.backends.base import GenerationParams, Message
    from corea.backends.llamacpp import LlamaCppBackend
    from corea.config import ModelSettings

    msgs = [Message("user", "State a number between 0 and 1.")]
    params = GenerationParams(max_new_tokens=4, temperature=0.0, top_logprobs=5)
    for n_parallel in (1, 2):
        be = LlamaCppBackend(ModelSettings(backend="llamacpp", model="embedded:slm",
                                           n_parallel=n_parallel, n_ctx=512),
                             "~/.cache/corea")
        chunks = list(be.continue_chat(msgs, "Confidence: 0.", params))
        lps = [p for c in chunks for p in c.logprobs]
        tops = [t for c in chunks for t in c.top_logprobs]
        assert len(tops) == len(lps) >= 1
        for (piece, lp), top in zip(lps, tops):
            assert len(top) == 5 and top[0][1] >= top[-1][1]
            assert top[0][1] == pytest.approx(lp, abs=1e-5)
        plain = list(be.continue_chat(msgs, "Confidence: 0.",
                                      GenerationParams(max_new_tokens=4, temperature=0.0)))
        assert not any(c.top_logprobs for c in plain)


def test_top_logprobs_are_the_k_most_likely_tokens_most_likely_first():
    import numpy as np

    from corea.backends.llamacpp_batch import log_partition, top_logprobs

    logits = np.array([0.5, 3.0, -1.0, 2.0, 2.5], dtype=np.float32)
    logz = log_partition(logits)
    top = top_logprobs(logits, logz, 3)
    assert [i for i, _ in top] == [1, 4, 3]
    assert top[0][1] == pytest.approx(3.0 - logz) and sum(np.exp([v for _, v in top])) < 1
    assert top_logprobs(logits, logz, 0) == () and len(top_logprobs(logits, logz, 9)) == 5
