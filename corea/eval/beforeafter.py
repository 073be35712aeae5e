"""Before/after: the SLM of two evaluation runs compared on the same items (e.g. the base model and
a trained checkpoint).

Items are matched by id; only items graded in both runs count. For each SLM metric — pass@1, ECE
(10 equal-width bins), Brier score, AUROC, mean stated confidence, share without a confidence,
share whose confidence the SLM wrote itself (not elicited by the forced suffix) — the table gives
the value before, after, the difference and a **paired** percentile-bootstrap 95% interval of the
difference (the same resampled items in both runs; Efron & Tibshirani 1993,
ch. 13). pass@1 also gets the exact McNemar test on the discordant items (McNemar 1947;
``scipy.stats.binomtest``). Calibration metrics are computed, as in :mod:`corea.eval.summary`, on the
items that stated a confidence — in each run its own such items, so for them only the resampling
is paired (the item sets can differ by the items without a confidence, reported in the last row).

    corea beforeafter runs/gsm8k-test-200 runs/gsm8k-test-200-lora [--json out.json]
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .. import metrics

METRICS: dict[str, str] = {
    "pass_at_1": "pass@1",
    "ece_10": "ECE (10 bins)",
    "brier": "Brier score",
    "auroc": "AUROC",
    "mean_confidence": "mean stated confidence",
    "share_no_confidence": "share without confidence",
    "share_self_written": "share with a self-written confidence",
}


def _arrays(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(correct, confidence, self-written)``: arrays of shape (N,); confidence NaN where not
    stated; self-written 1.0 where the SLM wrote its confidence line itself
    (``confidence_method`` ``"free"``, or ``"adapter"`` — written by its confidence-scoped
    adapter —, not elicited by the forced suffix or a second turn)."""
    y = np.array([bool(r["slm_correct"]) for r in rows], dtype=float)
    c = np.array([np.nan if (r.get("slm") or {}).get("confidence") is None
                  else float(r["slm"]["confidence"]) for r in rows], dtype=float)
    w = np.array([(r.get("slm") or {}).get("confidence_method") in ("free", "adapter")
                  for r in rows], dtype=float)
    return y, c, w


def _stat(name: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], float | None]:
    def f(y: np.ndarray, c: np.ndarray, w: np.ndarray) -> float | None:
        if name == "pass_at_1":
            return float(y.mean())
        if name == "share_self_written":
            return float(w.mean())
        if name == "share_no_confidence":
            return float(np.isnan(c).mean())
        has = ~np.isnan(c)
        if not has.any():
            return None
        cc, yy = c[has], y[has].astype(bool)
        if name == "mean_confidence":
            return float(cc.mean())
        if name == "ece_10":
            return metrics.ece(cc, yy, 10)
        if name == "brier":
            return metrics.brier_score(cc, yy)
        return metrics.auroc(cc, yy)  # None with one class
    return f


def match(before: Sequence[dict], after: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The rows of both runs for the items graded in both, in the same order (by id).

    Raises:
        ValueError: no item is graded in both runs.
    """
    a = {r["id"]: r for r in after if r.get("slm_correct") is not None}
    pairs = [(r, a[r["id"]]) for r in before if r.get("slm_correct") is not None and r["id"] in a]
    if not pairs:
        raise ValueError("the two runs have no graded item in common")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def mcnemar_p(before_correct: np.ndarray, after_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant items (1.0 if none)."""
    from scipy.stats import binomtest

    b = int(((before_correct == 1) & (after_correct == 0)).sum())
    c = int(((before_correct == 0) & (after_correct == 1)).sum())
    return 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)


def compare(before: Sequence[dict], after: Sequence[dict], n_boot: int = 2000,
            seed: int = 0) -> dict:
    """Paired before/after comparison of the SLM on the items graded in both runs.

    Args:
        before / after: evaluation rows (:func:`corea.eval.runs.load_results`).
        n_boot: bootstrap resamples for the intervals of the differences.
        seed: bootstrap seed (same seed, same intervals).

    Returns:
        ``{"n": matched items, "n_before": ..., "n_after": ..., "metrics": {name: {"before",
        "after", "delta", "delta_ci": [low, high]}}, "mcnemar_p": float, "discordant":
        {"fixed": wrong->right, "broken": right->wrong}}``; a metric is None where undefined
        (no stated confidence, AUROC with one class).

    Raises:
        ValueError: no item graded in both runs.
    """
    b_rows, a_rows = match(before, after)
    yb, cb, wb = _arrays(b_rows)
    ya, ca, wa = _arrays(a_rows)
    out: dict = {"n": len(b_rows), "n_before": len(before), "n_after": len(after), "metrics": {}}
    for name in METRICS:
        f = _stat(name)
        vb, va = f(yb, cb, wb), f(ya, ca, wa)

        def delta(idx, f=f):
            x, y = f(yb[idx], cb[idx], wb[idx]), f(ya[idx], ca[idx], wa[idx])
            return None if x is None or y is None else y - x

        ci = metrics.bootstrap_ci(delta, len(b_rows), n_boot=n_boot, seed=seed)
        out["metrics"][name] = {
            "before": vb, "after": va,
            "delta": None if vb is None or va is None else va - vb,
            "delta_ci": None if any(math.isnan(x) for x in ci) else list(ci)}
    out["mcnemar_p"] = mcnemar_p(yb, ya)
    out["discordant"] = {"fixed": int(((yb == 0) & (ya == 1)).sum()),
                         "broken": int(((yb == 1) & (ya == 0)).sum())}
    return out


_PERCENT = ("pass_at_1", "share_no_confidence", "share_self_written")


def _fmt(name: str, x) -> str:
    if x is None:
        return "–"
    if name in _PERCENT:
        return f"{100 * x:.1f}%"
    return f"{x:.3f}"


def _fmt_delta(name: str, x, ci) -> str:
    if x is None:
        return "–"
    pct = name in _PERCENT
    scale, unit = (100, " pt") if pct else (1, "")
    s = f"{scale * x:+.1f}{unit}" if pct else f"{x:+.3f}"
    if ci:
        s += (f" [{scale * ci[0]:+.1f}, {scale * ci[1]:+.1f}]" if pct
              else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]")
    return s


def format_table(result: dict, before_name: str = "before", after_name: str = "after") -> str:
    """The comparison as a Markdown table (Δ with its paired 95% bootstrap interval)."""
    lines = [f"| SLM metric ({result['n']} matched items) | {before_name} | {after_name} | "
             "Δ [95% CI] |", "|---|---:|---:|---|"]
    for name, label in METRICS.items():
        m = result["metrics"][name]
        lines.append(f"| {label} | {_fmt(name, m['before'])} | {_fmt(name, m['after'])} | "
                     f"{_fmt_delta(name, m['delta'], m['delta_ci'])} |")
    d = result["discordant"]
    lines.append("")
    lines.append(f"pass@1 changes: {d['fixed']} items wrong → right, {d['broken']} right → wrong; "
                 f"exact McNemar p = {result['mcnemar_p']:.3g}.")
    return "\n".join(lines)
