"""Choosing the deferral threshold τ on a calibration split.

The cascade keeps the SLM's answer iff its verbalized confidence ``c >= τ`` and defers to the LLM
otherwise (also when ``c`` is None): every rule here asks :meth:`corea.eval.scored.ScoredSet.defer`,
the one vectorised copy of that rule. Every rule looks at a *calibration* split only, given as
parallel arrays of length N:

* ``confidences``: floats in [0, 1] or None (no stated confidence: always deferred);
* ``slm_correct`` / ``llm_correct``: bool per item;
* ``slm_cost`` / ``llm_cost``: USD per item.

Rules:

* :func:`paper_threshold`: τ = LLM pass@1 (the COREA paper's rule).
* :func:`target_deferral_threshold`: the smallest τ that defers at least a requested share.
* :func:`certified_threshold`: Learn-then-Test (LTT; Angelopoulos, Bates, Candès, Jordan & Lei,
  2021/2022, "Learn then Test: Calibrating Predictive Algorithms to Achieve Risk Control"):
  the cheapest τ for which, with probability ≥ 1 − δ over the calibration draw, the expected
  accuracy drop versus LLM-only is at most α.
* :func:`conformal_risk_control_threshold`: Conformal Risk Control (CRC; Angelopoulos, Bates,
  Fisch, Lei & Schuster, 2022, "Conformal Risk Control") for the monotone risk "answer accepted
  from the SLM and wrong": ``E[loss] <= α`` in expectation over calibration and test draw.
* :func:`validate_guarantee`: re-splits a labelled set many times and checks how often the
  certified τ meets the guarantee on the held-out half.

The ``rows`` of :func:`validate_guarantee` are evaluation item rows or flat rows
(:meth:`corea.eval.scored.ScoredSet.from_rows`); rows with an undecided label (None) are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..metrics import as_bool_array
from .scored import ScoredSet, confidence_array

__all__ = ["paper_threshold", "target_deferral_threshold", "certified_threshold",
           "CertifiedThreshold", "hoeffding_bentkus_pvalue", "conformal_risk_control_threshold",
           "validate_guarantee", "min_items_to_certify", "DEFAULT_GRID"]

#: The fixed LTT grid: τ = 1.00, 0.99, ..., 0.00 (most-deferring first). LTT needs the candidate
#: set fixed before looking at the calibration data; verbalized confidences are (nearly always)
#: multiples of 0.01, so this grid loses nothing.
DEFAULT_GRID: tuple[float, ...] = tuple(round(1.0 - k / 100, 2) for k in range(101))

_NEVER = float(np.nextafter(1.0, np.inf))  # τ above every confidence: always defer


# ----------------------------------------------------------------------------- simple rules

def paper_threshold(llm_correct) -> float:
    """τ = the LLM's pass@1 on the calibration split (the COREA paper's rule).

    Raises:
        ValueError: empty input or a None label.
    """
    y = as_bool_array(llm_correct, "llm_correct")
    if y.size == 0:
        raise ValueError("paper_threshold of an empty set is undefined")
    return float(y.mean())


def target_deferral_threshold(confidences: Sequence[float | None], rate: float) -> float:
    """The smallest τ whose deferral share is at least ``rate``.

    Items without a confidence are always deferred and count toward the rate. With ``k =
    ceil(rate * N)`` items to defer and ``m`` of them without confidence, τ is the float just above
    the ``(k - m)``-th smallest confidence (``numpy.nextafter(c, inf)``), so exactly the items with
    ``c <= that value`` are deferred; ties at that value are all deferred, so the share can exceed
    ``rate``. τ = 0 when the None items alone reach the rate (or ``rate == 0``).

    Example: confidences 0.1, 0.2, ..., 1.0 and ``rate=0.3`` defer 0.1, 0.2 and 0.3: τ is just
    above 0.3.

    Raises:
        ValueError: ``rate`` outside [0, 1], empty input, confidences outside [0, 1].
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError("rate must be in [0, 1]")
    c = confidence_array(confidences)
    has = ~np.isnan(c)
    n = c.size
    if n == 0:
        raise ValueError("target_deferral_threshold of an empty set is undefined")
    k = math.ceil(rate * n - 1e-9)
    need = k - int((~has).sum())
    if need <= 0:
        return 0.0
    vals = np.sort(c[has])
    return float(np.nextafter(vals[need - 1], np.inf))


# ----------------------------------------------------------------------------- Learn then Test

def _h1(a: np.ndarray | float, b: float) -> np.ndarray:
    """Bernoulli KL ``h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))`` (0 log 0 = 0)."""
    from scipy.special import xlogy

    a = np.asarray(a, dtype=float)
    return xlogy(a, a / b) + xlogy(1 - a, (1 - a) / (1 - b))


def hoeffding_bentkus_pvalue(risk_hat, n: int, target: float) -> np.ndarray:
    """Hoeffding–Bentkus p-value for ``H0: R > target`` with a loss bounded in [0, 1].

    LTT paper (Angelopoulos et al. 2021), Sec. 3 / Appendix B ("Hoeffding-Bentkus p-value"):
    ``p = min( exp(-n h1(R̂ ∧ t, t)),  e · P(Binom(n, t) <= ceil(n R̂)) )`` with
    ``h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))``. The first term is Hoeffding's inequality
    (tight form), the second Bentkus' inequality; each gives a valid p-value, so does their minimum.

    Args:
        risk_hat: empirical risk(s) R̂ in [0, 1] (scalar or array).
        n: calibration size (> 0).
        target: the risk level t in (0, 1).

    Returns:
        p-value(s) in [0, 1], same shape as ``risk_hat``.
    """
    from scipy.special import bdtr  # P(Binom(n, p) <= k); lighter to import than scipy.stats

    if n < 1 or not 0.0 < target < 1.0:
        raise ValueError("need n >= 1 and 0 < target < 1")
    r = np.asarray(risk_hat, dtype=float)
    hoeffding = np.exp(-n * _h1(np.minimum(r, target), target))
    bentkus = math.e * bdtr(np.ceil(n * r - 1e-9), n, target)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


@dataclass
class CertifiedThreshold:
    """Result of :func:`certified_threshold`.

    Attributes:
        threshold: the cheapest certified τ, or None when even the first (safest) τ of the grid is
            not certified: then only "always defer" (LLM only) is safe.
        taus: the grid, from most-deferring (safest) to cheapest.
        p_values: one p-value per τ in ``taus`` (all are computed; the test stops at the first
            p > δ).
        certified: the τs certified by fixed-sequence testing (a prefix of ``taus``).
        risks: empirical accuracy drop vs LLM-only per τ (unshifted, in [-1, 1]).
        alpha, delta, n, loss: the inputs.
    """

    threshold: float | None
    taus: list[float]
    p_values: list[float]
    certified: list[float]
    risks: list[float]
    alpha: float
    delta: float
    n: int
    loss: str


def min_items_to_certify(alpha: float, delta: float) -> int:
    """The fewest calibration items with which the harm-loss Learn-then-Test
    (:func:`certified_threshold`, ``loss="harm"``) can certify any τ below "always defer": even
    with no harm observed, the binomial tail ``(1 - α)^n`` must reach δ, so
    ``n = ceil(log δ / log(1 - α))`` (114 at α = 0.02, δ = 0.1).

    Raises:
        ValueError: α or δ not in (0, 1)."""
    if not (0.0 < alpha < 1.0 and 0.0 < delta < 1.0):
        raise ValueError("alpha and delta must be in (0, 1)")
    return math.ceil(math.log(delta) / math.log(1 - alpha))


def certified_threshold(confidences: Sequence[float | None], slm_correct, llm_correct,
                        slm_cost=None, llm_cost=None, alpha: float = 0.02, delta: float = 0.1,
                        grid: Sequence[float] | None = None,
                        loss: str = "drop", usable=None, llm_usable=None) -> CertifiedThreshold:
    """Learn-then-Test: the cheapest τ with ``P(R(τ) <= α) >= 1 - δ`` (Angelopoulos et al. 2021).

    Risk (``loss="drop"``, the default): the accuracy drop versus LLM-only,
    ``R(τ) = E[llm_correct - cascade_correct(τ)]``, whose per-item loss is in {-1, 0, 1}. To use a
    p-value for losses in [0, 1] it is shifted, ``L' = (1 + llm - cascade) / 2``, and tested against
    ``(1 + α) / 2`` (``R <= α  <=>  E[L'] <= (1 + α)/2``). Each null ``H_τ: R(τ) > α`` gets the
    Hoeffding–Bentkus p-value (:func:`hoeffding_bentkus_pvalue`; LTT Sec. 3, "p-values for bounded
    losses"). The family-wise error is controlled at δ by **fixed-sequence testing** (LTT Sec. 4,
    "Fixed sequence testing"): walk the grid from the safest τ (most deferral) to the cheapest,
    reject ``H_τ`` while ``p_τ <= δ`` and stop at the first ``p_τ > δ``. Every rejected τ then has
    ``R(τ) <= α`` simultaneously with probability ≥ 1 - δ (LTT Theorem 1), and the cheapest of them
    (lowest τ: fewest deferrals) is returned.

    ``loss="harm"`` uses the one-sided loss ``1[the cascade's final answer wrong, LLM right]`` in
    {0, 1} instead (with usable answers: accepted from the SLM, SLM wrong, LLM right). It bounds the drop from above (it ignores items where the SLM fixes an LLM
    error), so its guarantee implies the same ``R(τ) <= α`` with far more power: the shifted drop
    loss has a variance floor and, at α = 0.02 and δ = 0.1, needs on the order of 10^4 items
    before any τ below "always defer" can be certified; the harm loss, with no observed harm,
    certifies from 114 items upward (``0.98^n <= 0.1``).

    The grid is fixed in advance (:data:`DEFAULT_GRID`: 1.00, 0.99, ..., 0.00), as LTT requires;
    a data-dependent grid (e.g. the calibration confidences themselves) would void the guarantee.
    "Always defer" (τ above 1) has zero risk by construction and is the implicit fallback.

    Args:
        confidences, slm_correct, llm_correct: calibration arrays (see module docstring).
        slm_cost, llm_cost: unused by the test; accepted for a uniform signature (cost is monotone
            in τ, so "cheapest" is "lowest τ").
        alpha: tolerated accuracy drop (0-1 scale; 0.02 = 2 points).
        delta: error level of the guarantee.
        grid: candidate τs (any order; tested from highest to lowest).
        loss: ``"drop"`` (default) or ``"harm"``.
        usable, llm_usable: per item, whether the SLM's / LLM's output is an answer
            (:class:`ScoredSet`; None: all are). The cascade's correctness is that of its final
            answer (:meth:`ScoredSet.correct_at`), so an unusable SLM answer always defers and a
            deferred item whose LLM output is no answer keeps the SLM's.

    Returns:
        :class:`CertifiedThreshold` (``threshold`` None when nothing is certified).

    Raises:
        ValueError: empty input, length mismatch, α or δ not in (0, 1), unknown loss.
    """
    if not (0.0 < alpha < 1.0 and 0.0 < delta < 1.0):
        raise ValueError("alpha and delta must be in (0, 1)")
    if loss not in ("drop", "harm"):
        raise ValueError("loss must be 'drop' or 'harm'")
    scored = ScoredSet.from_arrays(confidences, slm_correct, llm_correct, usable=usable,
                                   llm_usable=llm_usable)
    l_, n = scored.llm_correct, len(scored)
    if n == 0:
        raise ValueError("certified_threshold needs at least one calibration item")
    taus = sorted({float(t) for t in (DEFAULT_GRID if grid is None else grid)}, reverse=True)
    cascade = scored.correct_at(np.asarray(taus, dtype=float))     # (G, N): final answer right
    drop = l_[None, :].astype(float) - cascade.astype(float)       # llm - cascade, in {-1, 0, 1}
    risks = drop.mean(axis=1)
    if loss == "drop":
        p = hoeffding_bentkus_pvalue((1.0 + drop).mean(axis=1) / 2.0, n, (1.0 + alpha) / 2.0)
    else:
        harm = (l_[None, :] & ~cascade).mean(axis=1)
        p = hoeffding_bentkus_pvalue(harm, n, alpha)
    certified: list[float] = []
    for tau, pv in zip(taus, p):
        if pv > delta:
            break
        certified.append(tau)
    return CertifiedThreshold(threshold=certified[-1] if certified else None, taus=taus,
                              p_values=[float(x) for x in p], certified=certified,
                              risks=[float(x) for x in risks], alpha=float(alpha),
                              delta=float(delta), n=int(n), loss=loss)


# ----------------------------------------------------------------------------- CRC

def conformal_risk_control_threshold(confidences: Sequence[float | None], slm_correct,
                                     alpha: float) -> float | None:
    """Conformal Risk Control for "accepted from the SLM and wrong" (Angelopoulos et al. 2022).

    Loss ``L_i(τ) = 1[c_i >= τ and the SLM is wrong]`` (items without confidence are never
    accepted: loss 0). It is in [0, B] with B = 1 and non-increasing in τ. CRC (eq. (4) of the
    paper) picks

        ``τ̂ = inf{ τ : (n / (n+1)) R̂_n(τ) + B / (n+1) <= α }``,   ``R̂_n(τ) = mean_i L_i(τ)``,

    which gives ``E[L_{n+1}(τ̂)] <= α`` for an exchangeable test item (Theorem 1). R̂ only changes
    just above each calibration confidence, so τ̂ is 0 or the float just above one of them
    (``numpy.nextafter(c, inf)``), the smallest float at which the condition holds.

    Returns:
        τ̂, or None when even "accept nothing" fails (``1/(n+1) > α``, i.e. too few items).

    Raises:
        ValueError: empty input, length mismatch, α not in (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    s = as_bool_array(slm_correct, "slm_correct")
    scored = ScoredSet.from_arrays(confidences, s, s)  # the LLM plays no part in this loss
    n = len(scored)
    if n == 0:
        raise ValueError("conformal_risk_control_threshold needs at least one item")
    has = scored.has_confidence
    vals = np.unique(scored.confidence[has]) if has.any() else np.zeros(0)
    cands = np.concatenate([[0.0], np.nextafter(vals, np.inf)])  # ascending
    wrong = has & ~s
    for tau in cands:
        r_hat = float((wrong & ~scored.defer(tau)).sum()) / n
        if n / (n + 1) * r_hat + 1.0 / (n + 1) <= alpha + 1e-12:
            return float(tau)
    return None


# ----------------------------------------------------------------------------- validation

def validate_guarantee(rows: Sequence[dict], alpha: float = 0.02, delta: float = 0.1,
                       n_splits: int = 100, cal_fraction: float = 0.5, seed: int = 0,
                       loss: str = "drop", grid: Sequence[float] | None = None) -> dict:
    """Empirical check of :func:`certified_threshold` by repeated random cal/test splits.

    For each split, τ is certified on the calibration part and applied to the test part; the
    guarantee is "met" when the test accuracy drop vs LLM-only, ``mean(llm - cascade)``, is
    ``<= α``. LTT promises ``P(R(τ̂) <= α) >= 1 - δ`` for the *population* risk, so the share of
    splits meeting it on a finite test half is only an estimate (test-sampling noise can push it
    slightly either way), and splits of one finite set are not independent draws.

    A refused split (nothing certified) sends everything to the LLM alone: drop 0, saving 0.

    Args:
        rows: labelled rows (see module docstring; unlabelled rows are dropped).
        alpha, delta, loss, grid: as in :func:`certified_threshold`.
        n_splits: number of random splits.
        cal_fraction: share of items in the calibration part.
        seed: ``numpy.random.default_rng`` seed.

    Returns:
        dict with ``n`` (labelled rows), ``n_splits``, ``coverage`` (share of splits with test drop
        <= α), ``target`` (1 - δ), ``mean_test_drop``, ``mean_saving`` (1 - cost / LLM-only cost
        on the test part, averaged; None if LLM-only costs 0), ``mean_threshold`` (over certified
        splits; None if none), ``refused_share`` (splits where nothing was certified).

    Raises:
        ValueError: fewer than 2 labelled rows, or ``cal_fraction`` not in (0, 1).
    """
    scored = ScoredSet.from_rows(rows)
    n = len(scored)
    if n < 2:
        raise ValueError("validate_guarantee needs at least 2 labelled rows")
    if not 0.0 < cal_fraction < 1.0:
        raise ValueError("cal_fraction must be in (0, 1)")
    n_cal = min(n - 1, max(1, int(round(cal_fraction * n))))
    rng = np.random.default_rng(seed)
    met, drops, savings, taus = 0, [], [], []
    for _ in range(n_splits):
        perm = rng.permutation(n)
        cal, test = scored.subset(perm[:n_cal]), scored.subset(perm[n_cal:])
        res = certified_threshold(cal.confidence_list(), cal.slm_correct, cal.llm_correct,
                                  alpha=alpha, delta=delta, grid=grid, loss=loss,
                                  usable=cal.usable, llm_usable=cal.llm_usable)
        tau = _NEVER if res.threshold is None else res.threshold
        if res.threshold is not None:
            taus.append(res.threshold)
        drop = test.llm_pass - float(test.correct_at(tau).mean())
        drops.append(drop)
        met += drop <= alpha + 1e-12
        llm_only = test.llm_only_cost
        if llm_only > 0:  # refused: run the LLM alone (no SLM call), saving 0
            cost = llm_only if res.threshold is None else test.at(tau)["cost"]
            savings.append(1.0 - cost / llm_only)
    return {"n": n, "n_splits": int(n_splits), "coverage": met / n_splits,
            "target": 1.0 - delta, "mean_test_drop": float(np.mean(drops)),
            "mean_saving": float(np.mean(savings)) if savings else None,
            "mean_threshold": float(np.mean(taus)) if taus else None,
            "refused_share": 1.0 - len(taus) / n_splits}
