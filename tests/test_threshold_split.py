"""corea.threshold_split: whether τ splits a set of turns, and which τ would (pure)."""

from __future__ import annotations

import doctest

import pytest

import corea.threshold_split as ts
from corea.threshold_split import dead_threshold_warning, logged_confidence, threshold_split


def test_doctests():
    assert doctest.testmod(ts).failed == 0


@pytest.mark.parametrize("confs, tau, verdict, deferred", [
    ([0.2, 0.4, 0.6], 0.7, "all", 3),
    ([0.2, 0.4, 0.6], 0.2, "none", 0),  # c >= τ keeps: 0.2 at τ 0.2 is kept
    ([0.2, 0.4, 0.6], 0.4, "split", 1),
    ([0.9, None], 0.5, "split", 1),  # no confidence: deferred at every τ
    ([None, None], 0.0, "all", 2),
    ([], 0.5, "empty", 0),
])
def test_verdict_follows_the_cascade_rule(confs, tau, verdict, deferred):
    s = threshold_split(confs, tau)
    assert (s.verdict, s.n_deferred, s.n) == (verdict, deferred, len(confs))


def test_the_splitting_range():
    s = threshold_split([0.6, 0.2, 0.4], 0.9)
    assert (s.lo, s.lo_inclusive, s.hi) == (0.2, False, 0.6)
    # every τ in (lo, hi] splits them, the ends outside do not
    for tau in (0.21, 0.4, 0.6):
        assert threshold_split([0.6, 0.2, 0.4], tau).verdict == "split"
    for tau in (0.2, 0.61):
        assert threshold_split([0.6, 0.2, 0.4], tau).verdict != "split"
    with_none = threshold_split([0.5, None], 1.0)
    assert (with_none.lo, with_none.lo_inclusive, with_none.hi) == (0.0, True, 0.5)
    assert threshold_split([0.5, None], 0.0).verdict == "split"
    same = threshold_split([0.65, 0.65], 0.7)
    assert not same.splittable and same.lo is None and same.hi is None and same.top == 0.65


def test_warning_text():
    assert dead_threshold_warning(threshold_split([0.1, 0.3], 0.2), "turns") is None
    none = dead_threshold_warning(threshold_split([0.8, 0.9], 0.7), "items")
    assert none.startswith("⚠️ **Dead threshold:** at τ = 0.70 none of the 2 items")
    assert "always be kept" in none and "τ in (0.8, 0.9] splits them." in none
    same = dead_threshold_warning(threshold_split([0.65, 0.65], 0.7), "turns")
    assert "same confidence (0.65), so no τ splits them" in same
    blind = dead_threshold_warning(threshold_split([None, None], 0.7), "turns")
    assert "None has a usable confidence" in blind
    assert dead_threshold_warning(threshold_split([], 0.7), "turns") is None


def test_logged_confidence_is_the_number_that_decided():
    assert logged_confidence({"decision_reason": "low_confidence", "confidence": 0.1,
                              "extra": {"decision_confidence": 0.65}}) == 0.65
    assert logged_confidence({"decision_reason": "confident", "confidence": 0.9,
                              "extra": {}}) == 0.9  # logged before the decision's was kept
    assert logged_confidence({"decision_reason": "truncated", "confidence": 0.9,
                              "extra": {"decision_confidence": 0.9}}) is None
    assert logged_confidence({"decision_reason": "no_confidence", "confidence": None,
                              "extra": {"decision_confidence": None}}) is None
