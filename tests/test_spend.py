"""Money and seconds against the large model alone (corea.spend)."""

import pytest

from corea.costs import Price
from corea.spend import Call, Turn, against_llm, change, spend_text, turns_of, why_more
from corea.timing import TimeModel, TokenTime

PRICES = {"s": Price(input_per_mtok=1.0, output_per_mtok=1.0),
          "l": Price(input_per_mtok=3.0, output_per_mtok=3.0)}
TM = TimeModel(models={"l": TokenTime(overhead_s=1.0, completion_s_per_token=0.1)})


def kept(p=100, c=100, s=5.0):
    return Turn((Call("slm", "s", p, c, (p + c) / 1e6, s),))


def deferred(slm_s=5.0, llm_s=10.0):
    return Turn((Call("slm", "s", 100, 100, 200 / 1e6, slm_s),
                 Call("llm", "l", 100, 50, 450 / 1e6, llm_s)))


def test_a_kept_turn_is_estimated_from_the_small_models_tokens():
    a = against_llm([kept()], PRICES, TM, "l")
    assert a.spent.usd == pytest.approx(200e-6) and a.spent.seconds == 5.0
    assert a.alone.usd == pytest.approx(600e-6)          # 200 tokens at the LLM's $3/M
    assert a.alone.seconds == pytest.approx(1.0 + 100 * 0.1)  # the LLM's time model
    assert a.estimated and a.n_deferred == 0
    assert why_more(a) == ""


def test_a_kept_turn_on_a_busy_machine_is_compared_on_the_same_footing():
    tm = TimeModel(models={"l": TokenTime(overhead_s=1.0, completion_s_per_token=0.1),
                           "s": TokenTime(completion_s_per_token=0.05)})
    at_rest = against_llm([kept(s=5.0)], PRICES, tm, "l")  # 100 tokens at 0.05 s: as predicted
    assert at_rest.alone.seconds == pytest.approx(11.0) and why_more(at_rest) == ""
    busy = against_llm([kept(s=20.0)], PRICES, tm, "l")  # 4x slower than its time model
    assert busy.alone.seconds == pytest.approx(44.0)       # the LLM would have been too
    assert why_more(busy) == ""  # not "slower than the large model alone"


def test_a_deferred_turn_uses_the_large_models_measured_figures():
    a = against_llm([deferred()], PRICES, TM, "l")
    assert a.alone.usd == pytest.approx(450e-6) and a.alone.seconds == 10.0
    assert a.spent.usd == pytest.approx(650e-6) and a.spent.seconds == 15.0
    assert not a.estimated
    assert a.before_llm.seconds == 5.0 and a.before_llm.usd == pytest.approx(200e-6)
    assert why_more(a).startswith("It cost more money and time than the large model alone: it "
                                  "was deferred, so it paid for both models (5.0 s")


def test_why_more_names_the_deferral_rate():
    a = against_llm([deferred()] * 9 + [kept(s=1.0)], PRICES, TM, "l")
    assert a.n == 10 and a.n_deferred == 9
    assert "deferred 9 of 10 question(s), and each deferred one paid for both models" in \
        why_more(a)


def test_a_slow_small_model_that_kept_everything_is_explained():
    a = against_llm([kept(s=50.0)], PRICES, TM, "l")
    assert why_more(a).startswith("It cost more time than the large model alone: the small model "
                                  "took more")


def test_without_a_time_model_kept_seconds_are_unknown():
    a = against_llm([kept(), deferred()], PRICES, None, "l")
    assert a.alone.seconds is None
    assert "no time model for the large model" in spend_text(a)
    assert "money" in why_more(a) or why_more(a) == ""


def test_spend_text_shows_both_units_and_changes():
    text = spend_text(against_llm([deferred()], PRICES, TM, "l"))
    assert text == "cost $0.000650 vs large model alone $0.000450 (+44%) · compute 15.0 s vs " \
                   "10.0 s (+50%)"
    assert change(1.0, 0.0) is None and change(1.0, None) is None


def test_turns_from_logged_rows_use_their_tier_records():
    rows = [{"decision_reason": "low_confidence",
             "tiers": [{"role": "slm", "model": "s", "prompt_tokens": 10, "completion_tokens": 20,
                        "cost_usd": 1e-6, "latency_s": 2.0},
                       {"role": "llm", "model": "l", "prompt_tokens": 10, "completion_tokens": 5,
                        "cost_usd": 3e-6, "latency_s": 4.0}]},
            {"decision_reason": None}]
    (t,) = turns_of(rows)
    assert t.deferred and [c.latency_s for c in t.calls] == [2.0, 4.0]
    legacy = Turn.from_row({"slm_model": "s", "slm_prompt_tokens": 1, "slm_completion_tokens": 2,
                            "slm_latency_s": 1.5, "cost_usd": 5e-6})
    assert not legacy.deferred and legacy.calls[0].cost_usd == pytest.approx(5e-6)
