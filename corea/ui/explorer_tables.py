"""The Threshold explorer's tables and τ helpers, free of widgets and handlers: the metrics table
at τ (two tiers) and at a τ vector (N tiers), the slider value of a τ, and the source constants
(:mod:`corea.ui.explorer`).
"""

from __future__ import annotations

import math
from typing import Sequence

from .. import metrics
from ..eval import tiers as tiermod
from ..eval.charts import calibration_rows, label_counts
from ..eval.routing import item_seconds
from ..eval.scored import ScoredSet, flat_row
from ..eval.seconds import seconds_at
from ..threshold_split import threshold_split

__all__ = ["INTERACTIONS", "INTERACTIONS_LABEL", "MAX_TIER_SLIDERS", "METRICS_HEADERS",
           "label_notes", "metrics_table", "slider_value", "tau_split", "tau_vector",
           "tier_metrics_table"]

INTERACTIONS = "__interactions__"
INTERACTIONS_LABEL = "Logged interactions (rated)"
METRICS_HEADERS = ["metric", "value"]
MAX_TIER_SLIDERS = 5
"""τ sliders of the N-tier view: cascades of up to ``MAX_TIER_SLIDERS + 1`` tiers."""


# ----------------------------------------------------------------------------- table

def _r(x, digits: int = 4):
    return None if x is None else round(float(x), digits)


def _seconds(rows: Sequence[dict], scored: ScoredSet, threshold: float, tm) -> dict:
    """The cascade's seconds at τ from the time model ``tm`` on the rows with both labels (the
    order :meth:`ScoredSet.from_rows` keeps); empty without a time model, or when a row's model
    has no fit in it."""
    ok = [{"slm": r.get("slm_call") or r.get("slm"), "llm": r.get("llm_call") or r.get("llm")}
          for r in rows if r.get("slm_correct") is not None and r.get("llm_correct") is not None]
    models = {(r.get(k) or {}).get("model") or "" for r in ok for k in ("slm", "llm")}
    if tm is None or not ok or len(ok) != len(scored) or tm.missing(sorted(models)):
        return {}
    return seconds_at(scored, item_seconds(ok, tm, lambda r: (0, 0), before=False), threshold)


def metrics_table(rows: Sequence[dict], threshold: float, time_model=None) -> list[list]:
    """``[[metric, value], ...]`` for the metrics table (fractions on the 0-1 scale, USD,
    seconds).

    Cascade rows (pass@1, deferral rate, cost, cost vs LLM-only, seconds per item and time vs
    LLM-only from ``time_model`` (:class:`corea.timing.TimeModel` on each row's token counts),
    and the SLM-only / LLM-only / random-routing pass@1 at the same deferral) use rows with both
    labels; ECE-10, Brier and AUROC use rows with an SLM label and a confidence. A value is None
    when it is undefined (no such rows, AUROC with one class, zero LLM-only cost, no time model
    for a row's model). Values are rounded to 4 decimals (costs to 8, seconds to 2).
    """
    k = label_counts(rows)
    scored = ScoredSet.from_rows(rows)
    s, l_ = scored.slm_correct, scored.llm_correct
    cur = rr = None
    if s.size:
        cur = scored.at(float(threshold))
        rr = scored.random_routing(cur["deferral_rate"])
    cconf, cy = calibration_rows(rows)
    cal = metrics.calibration_report(cconf, cy) if cy.size else {}
    g = (cur or {}).get
    secs = _seconds(rows, scored, float(threshold), time_model) if s.size else {}
    return [
        ["threshold τ", _r(threshold)],
        ["items with both labels (cascade metrics)", k["n_both"]],
        ["items with an SLM label (calibration)", k["n_slm"]],
        ["excluded: no label", k["n_unlabelled"]],
        ["pass@1 (cascade at τ)", _r(g("pass_at_1"))],
        ["deferral rate", _r(g("deferral_rate"))],
        ["cost (USD)", _r(g("cost"), 8)],
        ["cost vs LLM-only", _r(g("cost_fraction_of_llm_only"))],
        ["seconds per item (time model)", _r(secs.get("seconds_per_item"), 2)],
        ["time vs LLM-only (time model)", _r(secs.get("time_fraction_of_llm_only"))],
        ["SLM-only pass@1", _r(s.mean()) if s.size else None],
        ["LLM-only pass@1", _r(l_.mean()) if s.size else None],
        ["random routing pass@1 (same deferral)", _r((rr or {}).get("pass_at_1"))],
        ["ECE-10 (SLM)", _r(cal.get("ece_10"))],
        ["Brier (SLM)", _r(cal.get("brier"))],
        ["AUROC (SLM)", _r(cal.get("auroc"))],
        ["SLM answers without confidence", cal.get("n_no_confidence", 0)],
    ]


def tier_metrics_table(items: Sequence[tiermod.TierItem], taus: Sequence[float],
                       models: Sequence[str] = ()) -> list[list]:
    """``[[metric, value], ...]`` of an N-tier cascade at the τ vector ``taus``
    (:func:`corea.eval.tiers.evaluate_taus`): pass@1, cost, cost vs the last tier alone, the share
    each tier answered, each deciding tier's deferral rate and each tier alone. Fractions on the
    0-1 scale rounded to 4 decimals, costs (USD) to 8.

    Raises:
        ValueError: no items or a bad τ vector.
    """
    o = tiermod.evaluate_taus(items, taus)
    n = len(items[0].tiers)
    names = list(models) if len(models) == n else [f"tier {k + 1}" for k in range(n)]
    alone = [tiermod.single_tier(items, k) for k in range(n)]
    last = alone[-1]["cost_usd"]
    table = [["τ vector", ", ".join(f"{t:.2f}" for t in o.taus)],
             ["items scored by every tier (gradable)", o.n_items],
             ["pass@1 (cascade at τ)", _r(o.pass_at_1)],
             ["cost (USD)", _r(o.cost_usd, 8)],
             ["cost vs last tier only", _r(o.cost_usd / last) if last > 0 else None],
             ["last tier only pass@1", _r(alone[-1]["pass_at_1"])]]
    for k in range(n):
        table.append([f"answered by tier {k + 1} ({names[k]})", _r(o.answered[k])])
    for k in range(n - 1):
        table.append([f"deferral rate of tier {k + 1}", _r(o.deferral_rate[k])])
    for k in range(n):
        table.append([f"tier {k + 1} alone: pass@1", _r(alone[k]["pass_at_1"])])
    return table


def tau_vector(values: Sequence, n: int) -> tuple[list[float] | None, str | None]:
    """The first ``n`` slider values as a τ vector, or ``(None, why)`` when one is not a number
    in [0, 1]."""
    values = list(values or ())
    if len(values) < n:
        return None, f"⚠️ Give one τ per tier but the last: {n} value(s), got {len(values)}."
    out = []
    for k, v in enumerate(values[:n]):
        try:
            t = float(v)
        except (TypeError, ValueError):
            return None, f"⚠️ Invalid τ of tier {k + 1}: {str(v)[:40]!r} is not a number."
        if not 0.0 <= t <= 1.0:  # also NaN
            return None, f"⚠️ Invalid τ of tier {k + 1}: {t} is not in [0, 1]."
        out.append(t)
    return out, None


def label_notes(rows: Sequence[dict], counts: dict) -> list[str]:
    """Why a source with graded small-model answers has no cascade metrics (``counts``:
    :func:`corea.eval.charts.label_counts` of ``rows``); [] when it has them."""
    if counts["n_both"] or not counts["n_slm"]:
        return []
    if not any(flat_row(r)["llm_correct"] is not None for r in rows):
        return ["This run has no large-model answers (the small model only), so the cascade "
                "metrics and the frontier are undefined; the calibration metrics use its "
                f"{counts['n_slm']} graded small-model answers."]
    return ["No item has both models' answers graded, so the cascade metrics are undefined."]


def tau_split(rows: Sequence[dict], tau: float):
    """How τ splits the items the deferral rate is computed on (those with both labels, or the
    SLM-labelled ones of a run without them) (:func:`corea.threshold_split.threshold_split`)."""
    flat = [flat_row(r) for r in rows]
    both = [r for r in flat if r["slm_correct"] is not None and r["llm_correct"] is not None]
    pool = both or [r for r in flat if r["slm_correct"] is not None]
    return threshold_split([r["confidence"] if r.get("usable", True) else None
                            for r in pool], float(tau))


def slider_value(tau: float, step: float = 0.01, lo: float = 0.0, hi: float = 1.0) -> float:
    """τ rounded **up** to the slider's step (so ``c >= value`` keeps no item that ``c >= τ``
    would defer), clamped to ``[lo, hi]``."""
    tau = float(tau)
    digits = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
    k = round(tau / step)
    v = round(k * step, digits)
    if v < tau:  # e.g. τ just above 0.3 (nextafter) -> 0.31, 0.8744 -> 0.88; 0.7 stays 0.7
        v = round((k + 1) * step, digits)
    return float(min(hi, max(lo, v)))
