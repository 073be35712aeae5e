"""The scored set (corea.eval.scored): the cascade at τ, sweeps, random routing, and the deferral
rule's vector form against corea.policy.decide."""

from __future__ import annotations

import numpy as np
import pytest

from corea.eval.scored import (ScoredSet, best_saving_within, cascade_at, random_routing_baseline,
                               sweep)
from corea.policy import decide

# ----------------------------------------------------------------------------- cascade

CONF = [0.9, 0.5, None, 0.7]
SLM = [True, False, False, True]
LLM = [True, True, True, False]
SC = [0.001] * 4
LC = [0.01] * 4


def test_cascade_at_strict_threshold_and_none_defers():
    r = cascade_at(0.7, CONF, SLM, LLM, SC, LC)
    # Deferred: 0.5 (< .7) and None; 0.7 is NOT deferred (strict).
    assert r["deferral_rate"] == pytest.approx(0.5)
    assert r["pass_at_1"] == pytest.approx((1 + 1 + 1 + 1) / 4)
    assert r["cost"] == pytest.approx(0.004 + 0.02)
    assert r["cost_fraction_of_llm_only"] == pytest.approx(0.024 / 0.04)
    r0 = cascade_at(0.0, CONF, SLM, LLM, SC, LC)
    assert r0["deferral_rate"] == pytest.approx(0.25)  # only the None item


def test_sweep_covers_all_thresholds():
    rows = sweep(CONF, SLM, LLM, SC, LC)
    taus = [r["threshold"] for r in rows]
    assert taus[:4] == [0.0, 0.5, 0.7, 0.9] and taus[4] > 0.9 and len(taus) == 5
    assert [r["deferral_rate"] for r in rows] == [0.25, 0.25, 0.5, 0.75, 1.0]
    assert rows[-1]["pass_at_1"] == pytest.approx(np.mean(LLM))
    assert rows[-1]["cost"] == pytest.approx(0.044)


def test_random_routing_baseline():
    r = random_routing_baseline(0.5, SLM, LLM, SC, LC)
    assert r["pass_at_1"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.75)
    assert r["cost"] == pytest.approx(0.004 + 0.5 * 0.04)
    with pytest.raises(ValueError):
        random_routing_baseline(1.5, SLM, LLM, SC, LC)


def test_best_saving_within_two_points():
    rows = [
        {"threshold": 0.0, "pass_at_1": 0.70, "deferral_rate": 0.0, "cost": 1.0, "cost_fraction_of_llm_only": 0.1},
        {"threshold": 0.5, "pass_at_1": 0.78, "deferral_rate": 0.3, "cost": 4.0, "cost_fraction_of_llm_only": 0.4},
        {"threshold": 0.8, "pass_at_1": 0.79, "deferral_rate": 0.6, "cost": 7.0, "cost_fraction_of_llm_only": 0.7},
        {"threshold": 1.1, "pass_at_1": 0.80, "deferral_rate": 1.0, "cost": 11.0, "cost_fraction_of_llm_only": 1.1},
    ]
    best = best_saving_within(rows, llm_only_pass=0.80, max_drop=0.02)
    assert best["threshold"] == 0.5 and best["saving"] == pytest.approx(0.6)  # 0.78 >= 0.80 - 0.02
    assert best_saving_within(rows, llm_only_pass=0.95) is None


def test_cascade_validates_lengths():
    with pytest.raises(ValueError):
        cascade_at(0.5, [0.5], [True, False], [True], [0.0], [0.0])


# ----------------------------------------------------------------------------- one rule, twice

@pytest.mark.parametrize("seed", range(20))
def test_defer_agrees_with_policy_decide_on_random_inputs(seed):
    """ScoredSet.defer (vectorised) and policy.decide (one item) are the same rule: random
    confidences on a coarse grid (so exact ties with τ are frequent), missing ones included."""
    rng = np.random.default_rng(seed)
    n = 200
    grid = np.round(np.arange(0, 1.0001, 0.05), 2)
    conf = [None if rng.random() < 0.15 else float(rng.choice(grid)) for _ in range(n)]
    scored = ScoredSet.from_arrays(conf, rng.random(n) < 0.5, rng.random(n) < 0.5)
    taus = [0.0, 1.0, *rng.choice(grid, 8), *conf[:5]]
    for tau in [t for t in taus if t is not None]:
        want = [decide(c, float(tau)).defer for c in conf]
        assert scored.defer(float(tau)).tolist() == want, tau
    ties = [c for c in conf if c is not None][:3]
    assert all(not decide(c, c).defer for c in ties)  # a confidence equal to τ is kept
    many = scored.defer(np.array([0.0, 0.5, 1.0]))
    assert many.shape == (3, n)
    assert many[1].tolist() == scored.defer(0.5).tolist()


@pytest.mark.parametrize("seed", range(10))
def test_defer_agrees_with_the_cascade_rule_including_unusable_outputs(seed):
    """With outputs that are not answers (cut at the budget, nothing parsable), the vector rule
    still matches the scalar one: policy.unusable first, then policy.decide."""
    from corea.policy import unusable

    rng = np.random.default_rng(100 + seed)
    n = 150
    grid = np.round(np.arange(0, 1.0001, 0.1), 1)
    conf = [None if rng.random() < 0.1 else float(rng.choice(grid)) for _ in range(n)]
    answers = [None if rng.random() < 0.1 else "42" for _ in range(n)]
    finish = ["length" if rng.random() < 0.1 else "stop" for _ in range(n)]
    usable = [unusable(a, f) is None for a, f in zip(answers, finish)]
    scored = ScoredSet.from_arrays(conf, rng.random(n) < 0.5, rng.random(n) < 0.5,
                                   usable=usable)
    for tau in [0.0, 0.5, 1.0, *grid[::3]]:
        want = [unusable(a, f) is not None or decide(c, float(tau)).defer
                for a, f, c in zip(answers, finish, conf)]
        assert scored.defer(float(tau)).tolist() == want, tau


def test_scored_set_from_rows_and_subset():
    rows = [{"id": "a", "slm": {"confidence": 0.4, "cost_usd": 1.0}, "llm": {"cost_usd": 3.0},
             "slm_correct": True, "llm_correct": False},
            {"id": "b", "confidence": None, "slm_correct": False, "llm_correct": True,
             "slm_cost": 1, "llm_cost": 3},
            {"id": "c", "confidence": 0.9, "slm_correct": None, "llm_correct": True}]
    s = ScoredSet.from_rows(rows)
    assert len(s) == 2 and s.n_dropped == 1 and s.ids == ("a", "b")
    assert s.confidence_list() == [0.4, None]
    assert s.defer(0.4).tolist() == [False, True]
    assert s.at(0.5) == {"threshold": 0.5, "pass_at_1": 0.5, "deferral_rate": 1.0, "cost": 8.0,
                         "cost_fraction_of_llm_only": 8.0 / 6.0}
    assert s.subset([1]).ids == ("b",) and len(s.subset([1])) == 1
    with pytest.raises(ValueError):
        ScoredSet.from_arrays([1.5], [True], [True])
    with pytest.raises(ValueError):
        ScoredSet.from_rows([]).at(0.5)


def test_a_cut_off_llm_answer_is_not_graded_the_slm_answer_is():
    """Offline scoring grades the cascade's final answer (corea.policy.final_tier): a deferred
    item whose LLM answer was cut off at its budget keeps the SLM's usable answer, as the live
    cascade shows it. Before, the cut-off LLM answer was graded (here: wrong, so 0.5 not 1.0)."""
    rows = [{"id": "cut", "slm": {"answer": "3", "confidence": 0.2, "finish_reason": "stop"},
             "llm": {"answer": "30", "finish_reason": "length"},
             "slm_correct": True, "llm_correct": False},
            {"id": "ok", "slm": {"answer": "4", "confidence": 0.2, "finish_reason": "stop"},
             "llm": {"answer": "5", "finish_reason": "stop"},
             "slm_correct": False, "llm_correct": True}]
    s = ScoredSet.from_rows(rows)
    assert s.llm_usable.tolist() == [False, True]
    assert s.final_at(0.5).tolist() == [0, 1]
    assert s.at(0.5)["pass_at_1"] == 1.0
    assert s.at(0.1)["pass_at_1"] == 0.5                      # both kept: SLM answers
    assert s.llm_pass == 0.5                                  # LLM-only still grades the LLM
    assert s.correct_at(np.array([0.1, 0.5])).tolist() == [[True, False], [True, True]]


def test_no_usable_answer_at_all_is_wrong_even_if_the_cut_off_text_was_right():
    rows = [{"id": "x", "slm": {"answer": None, "finish_reason": "length", "confidence": 0.9},
             "llm": {"answer": "7", "finish_reason": "length"},
             "slm_correct": False, "llm_correct": True}]
    s = ScoredSet.from_rows(rows)
    assert s.final_at(0.5).tolist() == [-1] and s.at(0.5)["pass_at_1"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_final_at_agrees_with_the_scalar_final_answer_rule(seed):
    from corea.policy import TierRun, final_tier

    rng = np.random.default_rng(300 + seed)
    n = 200
    conf = [None if rng.random() < 0.1 else float(rng.random()) for _ in range(n)]
    u, lu = rng.random(n) < 0.8, rng.random(n) < 0.8
    s = ScoredSet.from_arrays(conf, rng.random(n) < 0.5, rng.random(n) < 0.5, usable=u,
                              llm_usable=lu)
    for tau in (0.0, 0.3, 0.7, 1.0):
        d = s.defer(tau)
        for i in range(n):
            ran = [TierRun(bool(u[i]), deferred=bool(d[i]))] + \
                ([TierRun(bool(lu[i]))] if d[i] else [])
            want = final_tier(ran, 2)
            assert s.final_at(tau)[i] == (-1 if want is None else want)
