"""Tests for corea.grading: the equivalence rules, multiple choice, statuses, timeouts, threads."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from corea import grading
from corea.grading import Grade, grade, last_boxed


@pytest.fixture(autouse=True, scope="module")
def _process_backend():
    grading.configure(backend="process", max_workers=2)
    yield
    grading.shutdown()


# ----------------------------------------------------------------------------- math: required cases

@pytest.mark.parametrize("gold,pred", [
    ("0.5", r"\frac{1}{2}"),
    (r"\frac{1}{2}", "0.5"),
    ("13", r"\text{13}"),
    (r"\text{13}", "13"),
    ("1234", "1,234"),
    ("1,234", "1234"),
    (r"10,\!080", "10080"),
    ("18", "18.00"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"),
    (r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}", r"\begin{pmatrix} -\frac{1}{3} \\ \frac{2}{3} \end{pmatrix}"),
    ("3, 5, 7", "7, 5, 3"),
    (r"\text{Evelyn}", "Evelyn"),
])
def test_math_equal(gold, pred):
    g = grade(pred, gold)
    assert g == Grade(True, "correct", g.note)


@pytest.mark.parametrize("gold,pred", [
    ("3", "-3"),
    ("-3", "3"),
    ("0.0000002", "0.0000001"),
    (r"\frac{1}{2^{98}}", r"\frac{1}{2^{99}}"),   # math-verify defaults call these equal (absolute chop)
    (r"\frac{1}{2^{200}}", r"2^{-199}"),
    (r"10^{-7}", "0.0000002"),
    (r"\text{Evelyn}", "Navin"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi)"),
])
def test_math_not_equal(gold, pred):
    g = grade(pred, gold)
    assert (g.status, g.correct) == ("incorrect", False)


def test_truncated_decimal_of_non_terminating_value_is_wrong():
    # Documented choice: numbers compare exactly, no rounding tolerance.
    assert grade("0.33333", r"\frac{1}{3}").status == "incorrect"
    assert grade("0.333333", r"\frac{1}{3}").status == "incorrect"
    assert grade(r"\frac{1}{3}", r"\frac{2}{6}").status == "correct"
    assert grade("0.25", r"\frac{1}{4}").status == "correct"  # terminating decimals are exact


def test_percent_sign_is_dropped_on_both_sides():
    # Documented choice: 28\% = 28 (unit label, as in the MATH normalisers), but 28\% != 0.28.
    assert grade(r"28\%", "28").correct is True
    assert grade("28", r"28\%").correct is True
    assert grade("28%", "28").correct is True
    assert grade("0.28", r"28\%").correct is False
    assert grade(r"28\%", "0.28").correct is False
    assert grade(r"12.5\%", r"\frac{25}{2}").correct is True


def test_full_completion_uses_last_box_and_ignores_confidence_line():
    text = "First I got \\boxed{4}, but that is wrong.\nSo the answer is \\boxed{\\frac{1}{2}}.\nConfidence: 0.9"
    assert grade(text, "0.5").correct is True
    assert grade(text, "4").correct is False
    assert grade("The answer is 18.\nConfidence: 0.9", "18").correct is True
    assert grade("The answer is 17.\nConfidence: 18", "18").correct is False
    assert grade("She pays 18 dollars", "18").correct is True


def test_ungradable_gold_is_never_true():
    for gold in [r"\frac{", "", "   "]:
        g = grade("1", gold)
        assert g.status == "ungradable" and g.correct is None and g.reward == 0.0


def test_no_prediction():
    for pred in [None, "", "  \n"]:
        g = grade(pred, "18")
        assert (g.status, g.correct) == ("no_prediction", False)
    assert grade(r"\frac{", "1").status == "no_prediction"


def test_grade_is_frozen():
    g = grade("1", "1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.correct = False  # type: ignore[misc]


def test_last_boxed_matches_braces():
    assert last_boxed(r"a \boxed{\frac{1}{2}} b \boxed{x^{2}}") == "x^{2}"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{unclosed") is None


# ----------------------------------------------------------------------------- multiple choice

CHOICES = ["Planetary density will decrease.", "Planetary years will become longer.",
           "Planetary days will become shorter.", "Planetary gravity will become stronger."]


@pytest.mark.parametrize("gold", ["C", "c", "(C)", 2, "2", "Planetary days will become shorter."])
def test_mc_gold_normalisation(gold):
    assert grade("C", gold, CHOICES).correct is True
    assert grade("B", gold, CHOICES).correct is False


@pytest.mark.parametrize("pred", ["C", "(C)", "c", r"\boxed{C}", r"The answer is \boxed{(C)}.\nConfidence: 0.8",
                                  "C. Planetary days will become shorter.", "Answer: C",
                                  "The answer is (C).", "planetary days will become shorter"])
def test_mc_prediction_forms(pred):
    assert grade(pred, "C", CHOICES).status == "correct"


def test_mc_edge_cases():
    assert grade("E", "C", CHOICES).status == "incorrect"            # letter not among 4 options
    assert grade("I am not sure", "C", CHOICES).status == "no_prediction"
    assert grade("C", "Z", CHOICES).status == "ungradable"           # gold maps to no option
    assert grade("C", 7, CHOICES).correct is None
    # Numeric option texts: the text wins over a 0-based index reading of a digit gold.
    assert grade("B", "47", ["46", "47", "48"]).correct is True
    assert grade("A", "0", ["x", "y"]).correct is True


# ----------------------------------------------------------------------------- time bound and threads

def test_timeout_kills_stuck_worker_and_pool_recovers():
    t0 = time.monotonic()
    g = grade("3", r"9^{9^{9^{9}}}", timeout_s=0.5)   # sympy evalf hangs on this
    assert (g.status, g.correct) == ("timeout", None)
    assert time.monotonic() - t0 < 15
    assert grade(r"\frac{2}{4}", "0.5").correct is True      # a fresh worker takes over


EIGHT_THREAD_CASES = [
    (r"\frac{1}{2}", "0.5", True), ("1,234", "1234", True), ("-3", "3", False),
    (r"\frac{1}{2^{99}}", r"\frac{1}{2^{98}}", False), (r"\sqrt{8}", r"2\sqrt{2}", True),
    (r"\boxed{(1, 2)}", "(1,2)", True), ("0.0000001", "0.0000002", False), (r"x^2", "x^{2}", True),
]


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_grading_from_eight_threads(backend):
    grading.configure(backend=backend, max_workers=2)
    try:
        barrier = threading.Barrier(8)

        def work(case):
            pred, gold, want = case
            barrier.wait()
            return grade(pred, gold, timeout_s=30).correct, want

        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(work, EIGHT_THREAD_CASES))
        for got, want in results:
            assert got is want
    finally:
        grading.configure(backend="process", max_workers=2)


def test_configure_rejects_unknown_backend():
    with pytest.raises(ValueError):
        grading.configure(backend="fork")  # type: ignore[arg-type]


def test_thread_backend_timeout(monkeypatch):
    def slow(gold, pred):
        time.sleep(3)
        return "correct", ""

    monkeypatch.setattr(grading, "_grade_math_core", slow)
    grading.configure(backend="thread")
    try:
        t0 = time.monotonic()
        g = grade(r"\frac{1}{2}", "0.5", timeout_s=0.2)
        assert g.status == "timeout" and g.correct is None
        assert time.monotonic() - t0 < 1.5
    finally:
        grading.configure(backend="process")
