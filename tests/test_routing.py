"""Seconds per item, random routing and RouteLLM's APGR / CPT for the held-out report
(corea.eval.routing), and their place in corea heldout's JSON and markdown."""

import numpy as np
import pytest

from corea.eval.heldout import format_report, heldout_report
from corea.eval.routing import (CurvePoint, apgr, call_performance_threshold, curve, item_seconds,
                                random_at, routing_summary)
from corea.eval.scored import ScoredSet
from corea.timing import TimeModel, TokenTime

TM = TimeModel(models={"s": TokenTime(overhead_s=1.0, prompt_s_per_token=0.01,
                                      completion_s_per_token=0.05),
                       "l": TokenTime(overhead_s=2.0, completion_s_per_token=0.1)},
               source="test")


def row(ok=True, llm_ok=True, slm_tokens=(100, 200), llm_tokens=(100, 300)):
    return {"slm_correct": ok, "llm_correct": llm_ok,
            "slm": {"model": "s", "answer": "1", "prompt_tokens": slm_tokens[0],
                    "completion_tokens": slm_tokens[1], "confidence": 0.9 if ok else 0.1},
            "llm": {"model": "l", "answer": "1", "prompt_tokens": llm_tokens[0],
                    "completion_tokens": llm_tokens[1]}}


def test_item_seconds_follow_the_cost_accounting():
    rows = [row()]
    after = item_seconds(rows, TM, lambda r: (10, 20), before=False)
    slm = 1.0 + 100 * 0.01 + 200 * 0.05          # 12 s
    extra = 10 * 0.01 + 20 * 0.05                 # the signal's own tokens, no second overhead
    llm = 2.0 + 300 * 0.1                         # 32 s
    assert after.kept[0] == pytest.approx(slm + extra)
    assert after.deferred[0] == pytest.approx(slm + extra + llm)
    assert after.llm[0] == pytest.approx(llm)
    before = item_seconds(rows, TM, lambda r: (0, 0), before=True)
    assert before.deferred[0] == pytest.approx(1.0 + 100 * 0.01 + llm)  # only the SLM's prompt


def test_random_routing_is_the_expected_mixture():
    s = ScoredSet.from_arrays([0.9, 0.1, 0.5, 0.2], [True, False, True, False],
                              [True, True, False, True], [1.0] * 4, [3.0] * 4)
    kept, deferred, llm = np.ones(4), np.full(4, 4.0), np.full(4, 3.0)
    secs = item_seconds([row()] * 4, TM, lambda r: (0, 0), before=False)
    r = random_at(s, 0.25, kept, deferred, llm, secs)
    assert r["pass_at_1"] == pytest.approx(0.75 * 0.5 + 0.25 * 0.75)
    assert r["cost_fraction_of_llm_only"] == pytest.approx((0.75 * 4 + 0.25 * 16) / 12)
    assert r["time_fraction_of_llm_only"] == pytest.approx((0.75 * 12 + 0.25 * 44) / 32)


def test_apgr_and_cpt_follow_routellm():
    weak, strong = 0.2, 0.6
    linear = [CurvePoint(0.0, 0.2), CurvePoint(1.0, 0.6)]  # random routing
    assert apgr(linear, weak, strong) == pytest.approx(0.5)
    assert call_performance_threshold(linear, weak, strong, 0.5) == pytest.approx(0.5)
    assert call_performance_threshold(linear, weak, strong, 0.8) == pytest.approx(0.8)
    ideal = [CurvePoint(0.0, 0.2), CurvePoint(0.2, 0.6), CurvePoint(1.0, 0.6)]
    assert apgr(ideal, weak, strong) == pytest.approx(0.9)  # 1 − 0.2/2
    assert call_performance_threshold(ideal, weak, strong, 0.5) == pytest.approx(0.1)
    assert call_performance_threshold([CurvePoint(0.0, 0.2), CurvePoint(1.0, 0.3)], weak,
                                      strong, 0.5) is None
    assert apgr(linear, 0.5, 0.5) is None


def test_curve_reaches_both_endpoints():
    s = ScoredSet.from_arrays([0.9, 0.8, 0.2, 0.1], [True, True, False, False],
                              [True, True, True, True], [1.0] * 4, [3.0] * 4)
    pts = curve(s)
    assert pts[0] == CurvePoint(0.0, 0.5) and pts[-1].deferral_rate == 1.0
    # a perfect signal: deferring its two errors recovers the whole gap at half the calls
    assert CurvePoint(0.5, 1.0) in pts
    assert routing_summary(s)["cpt80"] == pytest.approx(0.4)


def test_heldout_carries_time_fractions_and_random_routing_for_every_price():
    rng = np.random.default_rng(0)
    rows = [row(bool(rng.random() < 0.4), bool(rng.random() < 0.8),
                (int(rng.integers(50, 150)), int(rng.integers(50, 400))))
            for _ in range(80)]
    for r in rows:
        r["slm"]["confidence"] = float(np.clip(rng.normal(0.7 if r["slm_correct"] else 0.4, 0.2),
                                               0, 1))
    rep = heldout_report(rows[:50], {"t": rows[50:]}, "s", (1.0, 2.0), signals=["verbal"],
                         time_model=TM)
    assert rep["time_model"]["source"] == "test"
    sig = rep["signals"][0]
    for ratio, b in sig["tests"]["t"]["by_ratio"].items():
        tau = b["threshold"]  # recompute the time fraction by hand at the chosen τ
        test = rows[50:]
        secs = item_seconds(test, TM, lambda r: (0, 0), before=False)
        defer = np.array([(r["slm"]["confidence"] < tau) for r in test])
        d = np.where(defer, secs.deferred, secs.kept).sum() / secs.llm.sum()
        assert b["time_fraction_of_llm_only"] == pytest.approx(d)
        assert b["random"]["deferral_rate"] == b["deferral_rate"]
        assert b["pass_vs_random"] == pytest.approx(b["pass_at_1"] - b["random"]["pass_at_1"])
    for at in sig["train"]["at"].values():
        assert at["time_fraction_of_llm_only"] > 0
    assert 0.0 <= sig["tests"]["t"]["routing"]["apgr"] <= 1.5
    md = format_report(rep)
    assert "*t: seconds and random routing*" in md and "Seconds: a time model" in md
    # without a time model the report is as before: no seconds anywhere
    plain = heldout_report(rows[:50], {"t": rows[50:]}, "s", (1.0, 2.0), signals=["verbal"])
    assert "time_model" not in plain
    assert "time_fraction_of_llm_only" not in plain["signals"][0]["tests"]["t"]["by_ratio"]["0"]
    assert "seconds and random routing" not in format_report(plain)
