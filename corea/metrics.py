"""Calibration metrics of a confidence against correctness (numpy + scikit-learn).

The cascade's own numbers (pass@1, cost and deferral at τ, sweeps, RouteLLM's APGR) are computed on
a :class:`corea.eval.scored.ScoredSet`.

Conventions:

* ``confidences`` are verbalized probabilities in [0, 1]. ``correct`` is a boolean (or 0/1) per
  item. Arrays are 1-D and of equal length N. Values outside [0, 1], NaN, or length mismatches raise
  ``ValueError``.
* Items **without** a confidence (``None``) are never given a made-up value.
  :func:`calibration_report` keeps them out of ECE/Brier/AUROC/AURC and counts them separately. In
  the cascade they are always deferred (:meth:`corea.eval.scored.ScoredSet.defer`).
* Equal-width bins on [0, 1]: bin ``i`` is ``[i/n, (i+1)/n)``, and the last bin is closed,
  ``[(n-1)/n, 1]``. So 0 falls in the first bin and 1 in the last (no extra bin). Edges are
  ``i/n``, computed exactly like the literal ``0.3``, so ``0.3`` falls in bin 3 when n=10.
* Costs are USD per item. A cascade's total cost is the sum over items.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = [
    "ece", "brier_score", "auroc", "reliability_bins", "risk_coverage", "aurc", "bootstrap_ci",
    "auroc_ci", "paired_auroc_ci", "calibration_report", "as_bool_array", "bin_index",
]


# ----------------------------------------------------------------------------- validation

def _conf_array(confidences) -> np.ndarray:
    c = np.asarray(confidences, dtype=float).reshape(-1)
    if c.size and (not np.all(np.isfinite(c)) or c.min() < 0.0 or c.max() > 1.0):
        raise ValueError("confidences must be finite and in [0, 1]")
    return c


def as_bool_array(correct, name: str = "correct") -> np.ndarray:
    """``correct`` as a bool array (1-D).

    Raises:
        ValueError: a None (an ungradable item) or a value other than 0/1/False/True.
    """
    vals = list(correct) if not isinstance(correct, np.ndarray) else correct.tolist()
    if any(v is None for v in vals):
        raise ValueError(f"{name} contains None; drop ungradable items before computing metrics")
    a = np.asarray(vals, dtype=float).reshape(-1)
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name} must be boolean / 0-1")
    return a.astype(bool)


def _pair(confidences, correct) -> tuple[np.ndarray, np.ndarray]:
    c, y = _conf_array(confidences), as_bool_array(correct)
    if c.shape != y.shape:
        raise ValueError(f"length mismatch: {c.size} confidences vs {y.size} correctness labels")
    return c, y


def bin_index(c: np.ndarray, n_bins: int) -> np.ndarray:
    """The equal-width bin of each confidence (see the module docstring)."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    edges = np.arange(n_bins + 1) / n_bins
    return np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n_bins - 1)


# ----------------------------------------------------------------------------- calibration

def ece(confidences, correct, n_bins: int = 10) -> float:
    """Expected calibration error with equal-width bins.

    ``ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)|`` (Guo et al. 2017, "On Calibration of Modern
    Neural Networks", Sec. 2, eq. 3; Naeini et al. 2015). Bins as in the module docstring: exactly 0
    goes in the first bin and exactly 1 in the last.

    Args:
        confidences: shape (N,), values in [0, 1].
        correct: shape (N,), bool.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        ECE in [0, 1].

    Raises:
        ValueError: empty input, length mismatch, values outside [0, 1], ``n_bins < 1``.
    """
    c, y = _pair(confidences, correct)
    if c.size == 0:
        raise ValueError("ece of an empty set is undefined")
    idx = bin_index(c, n_bins)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.sum() / c.size * abs(y[m].mean() - c[m].mean())
    return float(total)


def reliability_bins(confidences, correct, n_bins: int = 10) -> list[dict]:
    """Per-bin data for a reliability diagram (DeGroot & Fienberg 1983; Guo et al. 2017 Fig. 1).

    Returns:
        ``n_bins`` dicts ``{lo, hi, count, mean_conf, accuracy}`` in bin order. Empty bins have
        ``count=0`` and ``mean_conf = accuracy = None``.
    """
    c, y = _pair(confidences, correct)
    idx = bin_index(c, n_bins) if c.size else np.zeros(0, dtype=int)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": n,
                    "mean_conf": float(c[m].mean()) if n else None,
                    "accuracy": float(y[m].mean()) if n else None})
    return out


def brier_score(confidences, correct) -> float:
    """Brier score: mean of ``(confidence - correct)^2`` (Brier 1950).

    Computed with ``sklearn.metrics.brier_score_loss``.

    Args:
        confidences: shape (N,), in [0, 1]; correct: shape (N,), bool. N >= 1.

    Raises:
        ValueError: empty input, length mismatch, values outside [0, 1].
    """
    c, y = _pair(confidences, correct)
    if c.size == 0:
        raise ValueError("brier score of an empty set is undefined")
    from sklearn.metrics import brier_score_loss  # lazy: sklearn takes seconds to import

    return float(brier_score_loss(y.astype(int), c, labels=[0, 1]))


def auroc(confidences, correct) -> float | None:
    """AUROC of confidence as a predictor of correctness.

    Computed with ``sklearn.metrics.roc_auc_score``.

    Returns:
        AUROC in [0, 1] (ties count half), or None when ``correct`` has only one class (or N = 0).
    """
    c, y = _pair(confidences, correct)
    if c.size == 0 or y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y.astype(int), c))


def risk_coverage(confidences, correct) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve of selective prediction (Geifman & El-Yaniv 2017).

    Items are accepted in order of decreasing confidence. At coverage ``k/N`` the risk is the error
    rate among the ``k`` accepted items. Within a group of tied confidences the order is
    unknowable, so the risk there is the **expectation over random tie-breaking**,
    ``(E0 + j*e/g) / (n0 + j)`` at the group's j-th item. Here ``n0`` and ``E0`` are the items and
    errors accepted before the group, and the group has ``g`` items and ``e`` errors.

    Returns:
        ``(coverage, risk)``: both shape (N,), with ``coverage = [1/N, 2/N, ..., 1]``.
    """
    c, y = _pair(confidences, correct)
    n = c.size
    cov = np.arange(1, n + 1) / n if n else np.zeros(0)
    risk = np.zeros(n)
    order = np.argsort(-c, kind="stable")
    cs, errs = c[order], (~y[order]).astype(float)
    start, e0 = 0, 0.0
    while start < n:
        end = start
        while end < n and cs[end] == cs[start]:
            end += 1
        g, e = end - start, errs[start:end].sum()
        j = np.arange(1, g + 1)
        risk[start:end] = (e0 + j * e / g) / (start + j)
        e0 += e
        start = end
    return cov, risk


def aurc(confidences, correct) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019). Lower is better.

    It is the mean selective risk over coverages k/N of :func:`risk_coverage`.

    Raises:
        ValueError: empty input (and as for :func:`ece`).
    """
    _, risk = risk_coverage(confidences, correct)
    if risk.size == 0:
        raise ValueError("aurc of an empty set is undefined")
    return float(risk.mean())


def bootstrap_ci(values_fn: Callable[[np.ndarray], float | None], n_items: int, n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap confidence interval over item indices (Efron & Tibshirani 1993, ch. 13).

    Args:
        values_fn: maps an index array of shape (n_items,) (drawn with replacement) to a statistic.
            Resamples where it returns None or NaN (e.g. AUROC with one class) are skipped.
        n_items: number of items N (> 0).
        n_boot: number of bootstrap resamples.
        seed: seed for ``numpy.random.default_rng``. The same seed gives the same interval.
        alpha: two-sided level, so the result is the ``(alpha/2, 1 - alpha/2)`` percentiles.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no resample gave a value.

    Raises:
        ValueError: ``n_items < 1``, ``n_boot < 1`` or ``alpha`` not in (0, 1).
    """
    if n_items < 1 or n_boot < 1 or not 0 < alpha < 1:
        raise ValueError("need n_items >= 1, n_boot >= 1 and 0 < alpha < 1")
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        v = values_fn(rng.integers(0, n_items, size=n_items))
        stats.append(np.nan if v is None else float(v))
    return _percentiles(np.asarray(stats, dtype=float), alpha)


def _bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Shape (n_boot, n): how often each item is drawn in each resample, from the exact draws of
    :func:`bootstrap_ci` (one ``rng.integers(0, n, size=n)`` per resample)."""
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, n, size=n) for _ in range(n_boot)])
    w = np.zeros((n_boot, n))
    np.add.at(w, (np.repeat(np.arange(n_boot), n), idx.reshape(-1)), 1.0)
    return w


def _resampled_auroc(w: np.ndarray, c: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of ``c`` on each resample of draw counts ``w`` (B, N); NaN where a resample has one
    class. With ``M[i, j] = 1[c_i > c_j] + ½·1[c_i = c_j]`` over right items ``i`` and wrong
    items ``j`` (the Mann–Whitney kernel), a resample's AUROC is
    ``w_rightᵀ M w_wrong / (Σ w_right · Σ w_wrong)``."""
    pos, neg = c[y], c[~y]
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (P, Q)
    wp, wn = w[:, y], w[:, ~y]                                                # (B, P), (B, Q)
    denom = wp.sum(1) * wn.sum(1)
    num = np.einsum("bp,pq,bq->b", wp, kernel, wn)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), np.nan)


def _percentiles(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``(alpha/2, 1 - alpha/2)`` percentiles of the non-NaN bootstrap statistics; NaNs when
    there are none."""
    stats = stats[~np.isnan(stats)]
    if not stats.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def auroc_ci(confidences, correct, n_boot: int = 1000, seed: int = 0,
             alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile bootstrap interval of :func:`auroc`, vectorised.

    The same resamples as ``bootstrap_ci(lambda idx: auroc(c[idx], y[idx]), N, n_boot, seed,
    alpha)`` and the same interval (a test checks that they agree), without N × ``n_boot`` calls
    to scikit-learn (the Mann–Whitney form of AUROC on each resample's draw counts). Resamples
    with one class only are skipped, as :func:`bootstrap_ci` skips a None.

    Args:
        confidences: shape (N,), in [0, 1].
        correct: shape (N,), bool / 0-1.
        n_boot, seed, alpha: as in :func:`bootstrap_ci`.

    Returns:
        ``(low, high)``; None when :func:`auroc` is None (one class, or N = 0); ``(nan, nan)``
        when every resample has one class.

    Raises:
        ValueError: as :func:`auroc`, and ``n_boot < 1`` or ``alpha`` not in (0, 1).
    """
    c, y = _pair(confidences, correct)
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError("need n_boot >= 1 and 0 < alpha < 1")
    if auroc(c, y) is None:
        return None
    return _percentiles(_resampled_auroc(_bootstrap_counts(c.size, n_boot, seed), c, y), alpha)


def paired_auroc_ci(confidences_a, confidences_b, correct, n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> tuple[float, float, float] | None:
    """AUROC(a) − AUROC(b) on the same items, with its paired percentile bootstrap interval
    (both signals scored on each resample; the interval excludes 0 when one signal ranks better
    than the other beyond resampling noise).

    Args:
        confidences_a, confidences_b: shape (N,) each, in [0, 1], for the same N items.
        correct: shape (N,), bool / 0-1.
        n_boot, seed, alpha: as in :func:`bootstrap_ci`.

    Returns:
        ``(difference, low, high)``; None when :func:`auroc` is None (one class, or N = 0).

    Raises:
        ValueError: as :func:`auroc` (lengths must match), ``n_boot < 1`` or ``alpha`` not in
        (0, 1).
    """
    a, y = _pair(confidences_a, correct)
    b, _ = _pair(confidences_b, correct)
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError("need n_boot >= 1 and 0 < alpha < 1")
    if auroc(a, y) is None:
        return None
    w = _bootstrap_counts(a.size, n_boot, seed)
    lo, hi = _percentiles(_resampled_auroc(w, a, y) - _resampled_auroc(w, b, y), alpha)
    return auroc(a, y) - auroc(b, y), lo, hi


def calibration_report(confidences: Sequence[float | None], correct: Sequence[bool]) -> dict:
    """Calibration summary of a set of verbalized confidences.

    Items whose confidence is None (not stated or not parsed) are **kept out** of ECE, Brier, AUROC
    and AURC and reported separately. They are never replaced by a made-up value.

    Returns:
        dict with ``n`` (all items), ``n_no_confidence``, ``share_no_confidence``, ``accuracy`` (all
        items), ``accuracy_with_confidence``, ``mean_confidence``, ``ece_10``, ``ece_15``,
        ``brier``, ``auroc``, ``aurc`` (the last seven on items with a confidence; None if there
        are none, and ``auroc`` None with one class), and ``n_distinct_confidences``.

    Raises:
        ValueError: length mismatch, confidences outside [0, 1], or None in ``correct``.
    """
    conf = list(confidences)
    y_all = as_bool_array(correct)
    if len(conf) != y_all.size:
        raise ValueError(f"length mismatch: {len(conf)} confidences vs {y_all.size} labels")
    has = np.array([c is not None for c in conf], dtype=bool)
    c = _conf_array([x for x in conf if x is not None])
    y = y_all[has]
    n = len(conf)
    some = c.size > 0
    return {
        "n": n,
        "n_no_confidence": int((~has).sum()),
        "share_no_confidence": float((~has).mean()) if n else None,
        "accuracy": float(y_all.mean()) if n else None,
        "accuracy_with_confidence": float(y.mean()) if some else None,
        "mean_confidence": float(c.mean()) if some else None,
        "ece_10": ece(c, y, 10) if some else None,
        "ece_15": ece(c, y, 15) if some else None,
        "brier": brier_score(c, y) if some else None,
        "auroc": auroc(c, y) if some else None,
        "aurc": aurc(c, y) if some else None,
        "n_distinct_confidences": int(np.unique(c).size),
    }
