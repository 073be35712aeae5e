"""Calibration and cascade metrics (numpy + scikit-learn).

Conventions:

* ``confidences`` are verbalized probabilities in [0, 1]. ``correct`` is a boolean (or 0/1) per
  item. Arrays are 1-D and of equal length N. Values outside [0, 1], NaN, or length mismatches raise
  ``ValueError``.
* Items **without** a confidence (``None``) are never given a made-up value.
  :func:`calibration_report` keeps them out of ECE/Brier/AUROC/AURC and counts them separately. In
  the cascade they are always deferred.
* Equal-width bins on [0, 1]: bin ``i`` is ``[i/n, (i+1)/n)``, and the last bin is closed,
  ``[(n-1)/n, 1]``. So 0 falls in the first bin and 1 in the last (no extra bin). Edges are
  ``i/n``, computed exactly like the literal ``0.3``, so ``0.3`` falls in bin 3 when n=10.
* Costs are USD per item. A cascade's total cost is the sum over items.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "ece", "brier_score", "auroc", "reliability_bins", "risk_coverage", "aurc", "bootstrap_ci",
    "calibration_report", "cascade_at", "sweep", "random_routing_baseline", "best_saving_within",
]


# ----------------------------------------------------------------------------- validation

def _conf_array(confidences) -> np.ndarray:
    c = np.asarray(confidences, dtype=float).reshape(-1)
    if c.size and (not np.all(np.isfinite(c)) or c.min() < 0.0 or c.max() > 1.0):
        raise ValueError("confidences must be finite and in [0, 1]")
    return c


def _bool_array(correct, name: str = "correct") -> np.ndarray:
    vals = list(correct) if not isinstance(correct, np.ndarray) else correct.tolist()
    if any(v is None for v in vals):
        raise ValueError(f"{name} contains None; drop ungradable items before computing metrics")
    a = np.asarray(vals, dtype=float).reshape(-1)
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name} must be boolean / 0-1")
    return a.astype(bool)


def _pair(confidences, correct) -> tuple[np.ndarray, np.ndarray]:
    c, y = _conf_array(confidences), _bool_array(correct)
    if c.shape != y.shape:
        raise ValueError(f"length mismatch: {c.size} confidences vs {y.size} correctness labels")
    return c, y


def _bin_index(c: np.ndarray, n_bins: int) -> np.ndarray:
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
    idx = _bin_index(c, n_bins)
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
    idx = _bin_index(c, n_bins) if c.size else np.zeros(0, dtype=int)
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
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            stats.append(float(v))
    if not stats:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


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
    y_all = _bool_array(correct)
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


# ----------------------------------------------------------------------------- cascade

def _cascade_arrays(confidences, slm_correct, llm_correct, slm_cost, llm_cost):
    conf = list(confidences)
    n = len(conf)
    has = np.array([x is not None for x in conf], dtype=bool)
    c = np.full(n, np.nan)
    if has.any():
        c[has] = _conf_array([x for x in conf if x is not None])
    s, l = _bool_array(slm_correct, "slm_correct"), _bool_array(llm_correct, "llm_correct")
    sc = np.asarray(slm_cost, dtype=float).reshape(-1)
    lc = np.asarray(llm_cost, dtype=float).reshape(-1)
    if not (s.size == l.size == sc.size == lc.size == n):
        raise ValueError("confidences, slm_correct, llm_correct, slm_cost and llm_cost must have "
                         "equal length")
    if n == 0:
        raise ValueError("cascade metrics of an empty set are undefined")
    if not (np.all(np.isfinite(sc)) and np.all(np.isfinite(lc))) or sc.min() < 0 or lc.min() < 0:
        raise ValueError("costs must be finite and >= 0 (USD per item)")
    return c, has, s, l, sc, lc


def _cascade_row(threshold, c, has, s, l, sc, lc) -> dict:
    defer = ~has | (np.where(has, c, np.inf) < threshold)
    cost = float(sc.sum() + lc[defer].sum())
    llm_only = float(lc.sum())
    return {"threshold": float(threshold),
            "pass_at_1": float(np.where(defer, l, s).mean()),
            "deferral_rate": float(defer.mean()),
            "cost": cost,
            "cost_fraction_of_llm_only": cost / llm_only if llm_only > 0 else None}


def cascade_at(threshold: float, confidences: Sequence[float | None], slm_correct, llm_correct,
               slm_cost, llm_cost) -> dict:
    """The SLM-to-LLM cascade at threshold tau.

    An item is deferred to the LLM iff its confidence is None or ``confidence < tau`` (strictly
    less). Every item pays the SLM cost, and deferred items also pay the LLM cost. Deferred items
    are graded by ``llm_correct``, the others by ``slm_correct``.

    Args:
        threshold: tau.
        confidences: shape (N,), floats in [0, 1] or None.
        slm_correct, llm_correct: shape (N,), bool.
        slm_cost, llm_cost: shape (N,), USD per item (the cost of running that model on the item).

    Returns:
        dict with ``threshold``, ``pass_at_1`` (fraction in [0, 1]), ``deferral_rate`` (fraction),
        ``cost`` (total USD), and ``cost_fraction_of_llm_only``, which is cost / sum(llm_cost), or
        None when the LLM-only cost is 0.

    Raises:
        ValueError: N = 0, length mismatch, confidences outside [0, 1], negative or NaN costs.
    """
    return _cascade_row(threshold, *_cascade_arrays(confidences, slm_correct, llm_correct,
                                                    slm_cost, llm_cost))


def sweep(confidences: Sequence[float | None], slm_correct, llm_correct, slm_cost,
          llm_cost) -> list[dict]:
    """:func:`cascade_at` at every distinct useful threshold, in ascending order.

    The thresholds are 0 (never defer, except None), every distinct confidence value, and the float
    just above the largest confidence (always defer). These cover every distinct deferral set.

    Returns:
        a list of :func:`cascade_at` dicts, one per threshold.
    """
    arrs = _cascade_arrays(confidences, slm_correct, llm_correct, slm_cost, llm_cost)
    c, has = arrs[0], arrs[1]
    vals = np.unique(c[has]) if has.any() else np.zeros(0)
    top = float(vals.max()) if vals.size else 0.0
    taus = np.unique(np.concatenate([[0.0], vals, [np.nextafter(top, np.inf)]]))
    return [_cascade_row(t, *arrs) for t in taus]


def random_routing_baseline(rate: float, slm_correct, llm_correct, slm_cost, llm_cost) -> dict:
    """Expected result of deferring each item independently with probability ``rate``.

    This is the no-information router to compare a confidence threshold with at the same deferral
    rate. ``pass_at_1 = (1-rate)*mean(slm_correct) + rate*mean(llm_correct)``;
    ``cost = sum(slm_cost) + rate*sum(llm_cost)`` (USD).

    Returns:
        dict with ``deferral_rate``, ``pass_at_1``, ``cost``, ``cost_fraction_of_llm_only``.

    Raises:
        ValueError: ``rate`` not in [0, 1], and as for :func:`cascade_at`.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError("rate must be in [0, 1]")
    slm_correct = list(slm_correct)
    _, _, s, l, sc, lc = _cascade_arrays([None] * len(slm_correct), slm_correct, llm_correct,
                                         slm_cost, llm_cost)
    cost = float(sc.sum() + rate * lc.sum())
    llm_only = float(lc.sum())
    return {"deferral_rate": float(rate),
            "pass_at_1": float((1 - rate) * s.mean() + rate * l.mean()),
            "cost": cost,
            "cost_fraction_of_llm_only": cost / llm_only if llm_only > 0 else None}


def best_saving_within(sweep_rows: Sequence[dict], llm_only_pass: float,
                       max_drop: float = 0.02) -> dict | None:
    """The headline number: the largest cost saving with ``pass@1 >= LLM-only pass@1 - max_drop``.

    ``max_drop`` is on the 0-1 scale (0.02 = 2 percentage points). Among qualifying rows, the one
    with the lowest ``cost`` wins (ties: higher pass@1). A 1e-12 slack absorbs float error at the
    boundary.

    Returns:
        a copy of the winning row plus ``saving = 1 - cost_fraction_of_llm_only`` (None if that is
        None), ``llm_only_pass`` and ``max_drop``; None if no row qualifies.
    """
    ok = [r for r in sweep_rows if r["pass_at_1"] >= llm_only_pass - max_drop - 1e-12]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r["cost"], -r["pass_at_1"]))
    frac = best.get("cost_fraction_of_llm_only")
    return {**best, "saving": (1.0 - frac) if frac is not None else None,
            "llm_only_pass": float(llm_only_pass), "max_drop": float(max_drop)}


# ----------------------------------------------------------------------------- RouteLLM metrics

def _pgr_curve(sweep_rows: Sequence[dict], slm_pass: float, llm_pass: float):
    gap = llm_pass - slm_pass
    if abs(gap) < 1e-12:
        return None
    pts = {}
    for r in sweep_rows:
        x, y = float(r["deferral_rate"]), (float(r["pass_at_1"]) - slm_pass) / gap
        pts[x] = max(y, pts.get(x, -np.inf))  # several τ with one rate: the best
    xs = np.array(sorted(pts))
    ys = np.array([pts[x] for x in xs])
    return xs, ys


def apgr(sweep_rows: Sequence[dict], slm_pass: float, llm_pass: float) -> float | None:
    """Average performance gap recovered (RouteLLM; Ong et al., 2024, arXiv:2406.18665, §5.1).

    ``PGR(τ) = (pass@1(τ) - pass@1_SLM) / (pass@1_LLM - pass@1_SLM)``; APGR is the area under
    PGR as a function of the share of calls sent to the LLM (the deferral rate, 0..1), by the
    trapezoid rule over the sweep's points (plus 0 → PGR at the lowest deferral rate and 1 → 1 if
    the sweep misses the ends). 0.5 is what random routing gets; 1 is an oracle-like router.

    Args:
        sweep_rows: :func:`sweep` output (``deferral_rate``, ``pass_at_1``).
        slm_pass, llm_pass: pass@1 of SLM-only and LLM-only (0-1).

    Returns:
        APGR, or None when the two models tie (no gap to recover).
    """
    curve = _pgr_curve(sweep_rows, slm_pass, llm_pass)
    if curve is None:
        return None
    xs, ys = curve
    if xs[0] > 0:
        xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[ys[0]], ys])
    if xs[-1] < 1:
        xs, ys = np.concatenate([xs, [1.0]]), np.concatenate([ys, [1.0]])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def cpt(sweep_rows: Sequence[dict], slm_pass: float, llm_pass: float,
        target: float) -> float | None:
    """Call-performance threshold CPT(x) (RouteLLM §5.1): the smallest deferral rate (share of
    calls to the LLM, 0-1) whose cascade recovers at least ``target`` (e.g. 0.5, 0.8) of the
    SLM→LLM performance gap. None if the models tie or no τ reaches it."""
    curve = _pgr_curve(sweep_rows, slm_pass, llm_pass)
    if curve is None:
        return None
    xs, ys = curve
    ok = xs[ys >= target - 1e-12]
    return float(ok.min()) if ok.size else None
