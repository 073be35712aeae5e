"""Threshold rules (corea.eval.thresholds) on small synthetic tables with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corea.eval.scored import ScoredSet, cascade_at, flat_row
from corea.eval.thresholds import (DEFAULT_GRID, certified_threshold,
                                   conformal_risk_control_threshold, hoeffding_bentkus_pvalue,
                                   paper_threshold, target_deferral_threshold, validate_guarantee)

# ----------------------------------------------------------------------------- paper rule


def test_paper_threshold_is_llm_pass_at_1():
    assert paper_threshold([True, True, False, True]) == 0.75
    assert paper_threshold(np.array([1, 0])) == 0.5
    with pytest.raises(ValueError):
        paper_threshold([])
    with pytest.raises(ValueError):
        paper_threshold([True, None])


# ----------------------------------------------------------------------------- target deferral


def test_target_deferral_example_from_the_brief():
    conf = [k / 10 for k in range(1, 11)]  # 0.1 ... 1.0
    tau = target_deferral_threshold(conf, 0.3)
    assert tau == np.nextafter(0.3, 1.0)  # just above 0.3
    assert 0.3 < tau < 0.4
    n = len(conf)
    row = cascade_at(tau, conf, [True] * n, [True] * n, [0] * n, [1] * n)
    assert row["deferral_rate"] == pytest.approx(0.3)


def test_target_deferral_counts_none_and_ties():
    conf = [None, 0.2, 0.4, 0.6, 0.8]
    assert target_deferral_threshold(conf, 0.4) == np.nextafter(0.2, 1.0)  # None + 0.2
    assert target_deferral_threshold(conf, 0.2) == 0.0  # the None item alone reaches 20%
    assert target_deferral_threshold(conf, 0.0) == 0.0
    assert target_deferral_threshold(conf, 1.0) == np.nextafter(0.8, 1.0)
    # ties at the cut are all deferred: 25% requested, 75% deferred
    assert target_deferral_threshold([0.5, 0.5, 0.5, 0.9], 0.25) == np.nextafter(0.5, 1.0)
    with pytest.raises(ValueError):
        target_deferral_threshold(conf, 1.5)
    with pytest.raises(ValueError):
        target_deferral_threshold([], 0.3)


# ----------------------------------------------------------------------------- LTT


def test_hoeffding_bentkus_pvalue_by_hand():
    # R̂ = 0, n = 10, t = 0.2: Hoeffding exp(-10 log(1/0.8)) = 0.8^10; Bentkus e * 0.8^10
    assert hoeffding_bentkus_pvalue(0.0, 10, 0.2) == pytest.approx(0.8 ** 10)
    # R̂ = 0.3 > t: Hoeffding term is 1; Bentkus e * P(Bin(10, .2) <= 3) = e * 0.8791 > 1 -> 1
    assert hoeffding_bentkus_pvalue(0.3, 10, 0.2) == 1.0
    # R̂ = 0.1, n = 100, t = 0.2: Hoeffding exp(-100 h1(0.1, 0.2))
    h1 = 0.1 * math.log(0.1 / 0.2) + 0.9 * math.log(0.9 / 0.8)
    bentkus = math.e * sum(math.comb(100, k) * 0.2 ** k * 0.8 ** (100 - k) for k in range(11))
    assert hoeffding_bentkus_pvalue(0.1, 100, 0.2) == pytest.approx(
        min(math.exp(-100 * h1), bentkus))
    np.testing.assert_allclose(hoeffding_bentkus_pvalue([0.0, 0.3], 10, 0.2), [0.8 ** 10, 1.0])


def _separable(n_each: int):
    """n_each items at confidence 0.9 where the SLM is right, n_each at 0.1 where it is wrong;
    the LLM is always right."""
    conf = [0.9] * n_each + [0.1] * n_each
    slm = [True] * n_each + [False] * n_each
    llm = [True] * (2 * n_each)
    return conf, slm, llm


def test_ltt_harm_loss_certifies_the_safe_region_and_stops_at_the_risky_tau():
    conf, slm, llm = _separable(100)
    res = certified_threshold(conf, slm, llm, alpha=0.1, delta=0.1, loss="harm")
    # every grid τ in (0.1, 1.0] accepts only the 0.9 items (zero harm); τ = 0.10 accepts the
    # wrong ones too (harm 0.5): the cheapest certified τ is the grid point 0.11
    assert res.threshold == pytest.approx(0.11)
    assert res.taus == sorted(DEFAULT_GRID, reverse=True)
    assert res.certified == res.taus[:90]
    assert res.p_values[0] == pytest.approx(float(hoeffding_bentkus_pvalue(0.0, 200, 0.1)))
    assert res.p_values[90] > 0.1  # τ = 0.10 is rejected
    assert res.risks[90] == pytest.approx(0.5)
    assert res.risks[0] == 0.0 and res.n == 200


def test_ltt_drop_loss_certifies_with_enough_items_and_refuses_a_tight_alpha():
    conf, slm, llm = _separable(1000)
    res = certified_threshold(conf, slm, llm, alpha=0.1, delta=0.1)  # loss="drop"
    # shifted loss 1/2 on every item vs target 0.55: exp(-2000 h1(.5, .55)) ~ 4e-5 <= δ
    assert res.loss == "drop" and res.threshold == pytest.approx(0.11)
    # α = 0.02: exp(-2000 h1(.5, .51)) ~ 0.67 > δ already at the safest τ -> refuse
    tight = certified_threshold(conf, slm, llm, alpha=0.02, delta=0.1)
    assert tight.threshold is None and tight.certified == []
    assert tight.p_values[0] > 0.1


def test_ltt_refuses_when_the_risk_is_clearly_above_alpha():
    n = 300
    # every confidence is 1.0 and half of the SLM answers are wrong (LLM right): any τ <= 1
    # accepts them all, drop 0.5 >> α
    res = certified_threshold([1.0] * n, [True, False] * (n // 2), [True] * n, alpha=0.05,
                              delta=0.1, loss="harm")
    assert res.threshold is None
    # overconfident at 0.9: only τ above 0.9 (accepting nothing here) is certified
    res = certified_threshold([0.9] * n, [True, False] * (n // 2), [True] * n, alpha=0.05,
                              delta=0.1, loss="harm")
    assert res.threshold == pytest.approx(0.91)


def test_ltt_custom_grid_and_bad_inputs():
    conf, slm, llm = _separable(100)
    res = certified_threshold(conf, slm, llm, alpha=0.1, delta=0.1, loss="harm",
                              grid=[0.05, 0.5, 0.95])
    assert res.taus == [0.95, 0.5, 0.05] and res.threshold == 0.5
    with pytest.raises(ValueError):
        certified_threshold(conf, slm, llm, alpha=0.0)
    with pytest.raises(ValueError):
        certified_threshold(conf, slm, llm, loss="other")
    with pytest.raises(ValueError):
        certified_threshold(conf, slm[:-1], llm)
    with pytest.raises(ValueError):
        certified_threshold([], [], [])


# ----------------------------------------------------------------------------- CRC


def test_conformal_risk_control_example():
    conf = [k / 10 for k in range(1, 10)]  # 0.1 ... 0.9
    slm = [False, False, True, False, True, True, False, True, True]
    # accepted-and-wrong counts: τ=0 -> 4 (0.1, 0.2, 0.4, 0.7); τ in (0.1, 0.2] -> 3;
    # τ in (0.2, 0.4] -> 2. Condition (9/10) R̂ + 1/10 <= 0.35  <=>  R̂ <= 5/18 (2 wrong of 9)
    tau = conformal_risk_control_threshold(conf, slm, 0.35)
    assert tau == np.nextafter(0.2, 1.0)
    assert conformal_risk_control_threshold(conf, slm, 0.6) == 0.0  # 0.9*4/9 + 0.1 = 0.5
    assert conformal_risk_control_threshold(conf, slm, 0.05) is None  # 1/(n+1) = 0.1 > α
    # items without confidence are never accepted (no loss): at τ=0, R̂ = 1/10 and
    # (10/11)(1/10) + 1/11 = 2/11 ≈ 0.18 <= 0.2, but > 0.15 (then reject the 0.5 item too)
    mixed = [None] * 9 + [0.5]
    assert conformal_risk_control_threshold(mixed, [False] * 10, 0.2) == 0.0
    assert conformal_risk_control_threshold(mixed, [False] * 10, 0.15) == np.nextafter(0.5, 1)


# ----------------------------------------------------------------------------- validation


def _synthetic_rows(n=200, seed=0, nested=False):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = float(np.round(rng.uniform(), 2))
        s, l_ = bool(rng.uniform() < c), bool(rng.uniform() < 0.9)  # informative confidence
        if nested:
            out.append({"id": str(i), "slm": {"confidence": c, "cost_usd": 0.001},
                        "llm": {"cost_usd": 0.01}, "slm_correct": s, "llm_correct": l_})
        else:
            out.append({"id": i, "confidence": c, "slm_correct": s, "llm_correct": l_,
                        "slm_cost": 0.001, "llm_cost": 0.01})
    return out


def test_validate_guarantee_holds_at_the_promised_frequency():
    rows = _synthetic_rows()
    v = validate_guarantee(rows, alpha=0.1, delta=0.1, n_splits=100, loss="harm")
    assert v["n"] == 200 and v["n_splits"] == 100 and v["target"] == pytest.approx(0.9)
    assert v["coverage"] >= 0.9
    assert v["mean_saving"] > 0.1 and v["refused_share"] < 0.5  # not vacuous
    assert 0.0 < v["mean_threshold"] < 1.0
    # the default (drop) loss at α=0.02 is valid but refuses at this size: LLM only
    d = validate_guarantee(_synthetic_rows(nested=True), alpha=0.02, delta=0.1, n_splits=20)
    assert d["coverage"] == 1.0 and d["refused_share"] == 1.0 and d["mean_saving"] == 0.0
    assert d["mean_threshold"] is None


def test_rows_helpers_accept_both_shapes_and_drop_unlabelled():
    nested = {"id": "a", "slm": {"confidence": 0.4, "cost_usd": 0.5}, "llm": None,
              "slm_correct": True, "llm_correct": None}
    assert flat_row(nested) == {"id": "a", "confidence": 0.4, "slm_correct": True,
                                "llm_correct": None, "slm_cost": 0.5, "llm_cost": 0.0,
                                "tokprob": None, "usable": True, "llm_usable": True,
                                "slm_call": {"model": None, "prompt_tokens": None,
                                             "completion_tokens": None},
                                "llm_call": {"model": None, "prompt_tokens": None,
                                             "completion_tokens": None}}
    a = ScoredSet.from_rows([nested, {"confidence": None, "slm_correct": False,
                                      "llm_correct": True, "llm_cost": 2}])
    assert a.n_dropped == 1 and a.confidence_list() == [None]
    assert a.llm_cost.tolist() == [2.0] and a.slm_cost.tolist() == [0.0]
    with pytest.raises(ValueError):
        validate_guarantee([nested], 0.1, 0.1)


def test_min_items_to_certify_is_where_the_harm_loss_first_certifies():
    """114 items at α = 0.02, δ = 0.1 (0.98^114 <= 0.1 < 0.98^113); with no harm observed the
    harm-loss LTT certifies a τ from there, not one item before."""
    from corea.eval.thresholds import certified_threshold, min_items_to_certify

    n = min_items_to_certify(0.02, 0.1)
    assert n == 114
    for m, certifies in ((n - 1, False), (n, True)):
        res = certified_threshold([0.9] * m, [True] * m, [True] * m, alpha=0.02, delta=0.1,
                                  loss="harm")
        assert (res.threshold is not None) == certifies
    with pytest.raises(ValueError):
        min_items_to_certify(0.0, 0.1)
