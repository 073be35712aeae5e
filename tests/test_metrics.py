"""Tests for corea.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corea import metrics as M


# ----------------------------------------------------------------------------- ECE and bins

def test_ece_hand_computed():
    # Bins of width 0.5: [0, .5) holds 0.2, 0.4 (acc 1/2, conf .3 -> gap .2);
    # [.5, 1] holds 0.6, 0.8, 1.0 (acc 2/3, conf .8 -> gap 2/15).
    conf = [0.2, 0.4, 0.6, 0.8, 1.0]
    corr = [1, 0, 1, 1, 0]
    want = 2 / 5 * 0.2 + 3 / 5 * (0.8 - 2 / 3)
    assert M.ece(conf, corr, n_bins=2) == pytest.approx(want)


def test_ece_edges_zero_first_bin_one_last_bin():
    # 0 and 1 alone: 0 in bin 0 (acc 0 -> gap 0), 1 in bin 9 (acc 1 -> gap 0).
    assert M.ece([0.0, 1.0], [False, True], n_bins=10) == 0.0
    # If 1.0 fell in an extra bin or 0 were dropped, these would differ.
    assert M.ece([0.0, 1.0], [True, False], n_bins=10) == pytest.approx(1.0)
    bins = M.reliability_bins([0.0, 1.0, 0.95], [0, 1, 1], n_bins=10)
    assert len(bins) == 10
    assert bins[0]["count"] == 1 and bins[0]["mean_conf"] == 0.0
    assert bins[9]["count"] == 2 and bins[9]["mean_conf"] == pytest.approx(0.975)
    assert bins[9]["hi"] == 1.0 and sum(b["count"] for b in bins) == 3


def test_ece_bin_boundaries_are_left_closed():
    # 0.3 belongs to [0.3, 0.4) even though 0.3 is not exact in binary.
    bins = M.reliability_bins([0.3, 0.7, 0.1], [1, 1, 1], n_bins=10)
    assert bins[3]["count"] == 1 and bins[7]["count"] == 1 and bins[1]["count"] == 1
    assert bins[2]["count"] == 0 and bins[2]["accuracy"] is None


def test_ece_single_bin_is_abs_gap_of_means():
    conf, corr = [0.9, 0.8, 0.7], [1, 0, 0]
    assert M.ece(conf, corr, n_bins=1) == pytest.approx(abs(0.8 - 1 / 3))


def test_ece_validates():
    with pytest.raises(ValueError):
        M.ece([1.2], [1])
    with pytest.raises(ValueError):
        M.ece([0.5, 0.5], [1])
    with pytest.raises(ValueError):
        M.ece([], [])
    with pytest.raises(ValueError):
        M.ece([0.5], [None])


# ----------------------------------------------------------------------------- Brier, AUROC, AURC

def test_brier_and_auroc():
    conf, corr = [0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0]
    assert M.brier_score(conf, corr) == pytest.approx((0.01 + 0.04 + 0.09 + 0.36) / 4)
    assert M.auroc(conf, corr) == pytest.approx(1.0)
    assert M.auroc([0.9, 0.1], [0, 1]) == pytest.approx(0.0)
    assert M.auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert M.auroc([0.9, 0.8], [1, 1]) is None
    assert M.brier_score([0.9, 0.8], [1, 1]) == pytest.approx((0.01 + 0.04) / 2)


def test_risk_coverage_and_aurc():
    cov, risk = M.risk_coverage([0.9, 0.7, 0.5], [1, 0, 1])
    np.testing.assert_allclose(cov, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3])
    assert M.aurc([0.9, 0.7, 0.5], [1, 0, 1]) == pytest.approx((0 + 0.5 + 1 / 3) / 3)


def test_risk_coverage_ties_in_expectation():
    # All tied: expected risk at every k is the overall error rate.
    _, risk = M.risk_coverage([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 1])
    np.testing.assert_allclose(risk, [0.25] * 4)
    # Order of tied inputs must not matter.
    a = M.aurc([0.9, 0.5, 0.5], [1, 1, 0])
    b = M.aurc([0.9, 0.5, 0.5], [1, 0, 1])
    assert a == pytest.approx(b) == pytest.approx((0 + 0.25 + 1 / 3) / 3)


def test_bootstrap_ci_reproducible_and_covers_mean():
    y = np.array([1] * 70 + [0] * 30, dtype=float)
    lo, hi = M.bootstrap_ci(lambda idx: y[idx].mean(), len(y), n_boot=500, seed=1)
    assert (lo, hi) == M.bootstrap_ci(lambda idx: y[idx].mean(), len(y), n_boot=500, seed=1)
    assert lo < 0.7 < hi and 0.55 < lo and hi < 0.85
    nan_lo, nan_hi = M.bootstrap_ci(lambda idx: None, 5, n_boot=10)
    assert math.isnan(nan_lo) and math.isnan(nan_hi)
    with pytest.raises(ValueError):
        M.bootstrap_ci(lambda idx: 0.0, 0)


def test_auroc_ci_is_the_bootstrap_of_auroc():
    """The vectorised interval equals the generic bootstrap of sklearn's AUROC, ties included."""
    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.3
    c = np.round(np.clip(0.4 * y + rng.random(60) * 0.6, 0, 1), 1)  # rounded: many ties
    slow = M.bootstrap_ci(lambda idx: M.auroc(c[idx], y[idx]), len(y), n_boot=300, seed=5)
    fast = M.auroc_ci(c, y, n_boot=300, seed=5)
    assert fast == pytest.approx(slow, abs=1e-12)
    lo, hi = fast
    assert lo < M.auroc(c, y) < hi
    # tiny sets: resamples with one class are skipped, as the generic one skips a None
    tiny_c, tiny_y = [0.9, 0.2, 0.6], [1, 0, 0]
    assert M.auroc_ci(tiny_c, tiny_y, n_boot=50, seed=0) == pytest.approx(M.bootstrap_ci(
        lambda idx: M.auroc(np.array(tiny_c)[idx], np.array(tiny_y, bool)[idx]), 3,
        n_boot=50, seed=0))
    assert M.auroc_ci([0.9, 0.8], [1, 1]) is None
    with pytest.raises(ValueError):
        M.auroc_ci([0.9, 1.5], [1, 0])
    with pytest.raises(ValueError):
        M.auroc_ci([0.9, 0.1], [1, 0], n_boot=0)


def test_paired_auroc_ci_is_the_paired_bootstrap_of_the_difference():
    rng = np.random.default_rng(4)
    y = rng.random(80) < 0.4
    good = np.clip(0.5 * y + 0.5 * rng.random(80), 0, 1)
    weak = np.clip(0.1 * y + 0.9 * rng.random(80), 0, 1)
    diff, lo, hi = M.paired_auroc_ci(good, weak, y, n_boot=300, seed=2)
    assert diff == pytest.approx(M.auroc(good, y) - M.auroc(weak, y))

    def delta(idx):
        a, b = M.auroc(good[idx], y[idx]), M.auroc(weak[idx], y[idx])
        return None if a is None else a - b

    assert (lo, hi) == pytest.approx(M.bootstrap_ci(delta, 80, n_boot=300, seed=2), abs=1e-12)
    assert 0 < lo < diff < hi  # the better signal is better beyond resampling noise
    d0, lo0, hi0 = M.paired_auroc_ci(good, good, y, n_boot=50)
    assert d0 == lo0 == hi0 == 0.0
    assert M.paired_auroc_ci([0.2, 0.3], [0.1, 0.4], [0, 0]) is None
    with pytest.raises(ValueError):
        M.paired_auroc_ci([0.2, 0.3], [0.1], [0, 1])


# ----------------------------------------------------------------------------- calibration report

def test_calibration_report_keeps_missing_confidence_out():
    conf = [0.9, None, 0.2, 0.9, None]
    corr = [True, True, False, False, False]
    r = M.calibration_report(conf, corr)
    assert r["n"] == 5 and r["n_no_confidence"] == 2 and r["share_no_confidence"] == pytest.approx(0.4)
    assert r["n_distinct_confidences"] == 2
    assert r["accuracy"] == pytest.approx(0.4)
    assert r["accuracy_with_confidence"] == pytest.approx(1 / 3)
    assert r["ece_10"] == pytest.approx(M.ece([0.9, 0.2, 0.9], [1, 0, 0], 10))
    assert r["ece_15"] == pytest.approx(M.ece([0.9, 0.2, 0.9], [1, 0, 0], 15))
    assert r["brier"] == pytest.approx((0.01 + 0.04 + 0.81) / 3)
    assert r["auroc"] == pytest.approx(0.75)
    assert r["aurc"] == pytest.approx(M.aurc([0.9, 0.2, 0.9], [1, 0, 0]))


def test_calibration_report_all_missing():
    r = M.calibration_report([None, None], [True, False])
    assert r["n_no_confidence"] == 2 and r["ece_10"] is None and r["brier"] is None
    assert r["auroc"] is None and r["n_distinct_confidences"] == 0
