"""The N-tier block of a run's summary (:func:`corea.eval.summary.summarize` adds it for a run of
three tiers or more): from the rows' tier records (:mod:`corea.eval.records`), pass@1, cost and
deferral per tier at the configured τ vector, each tier alone, and the Pareto front (cost vs pass@1) of a τ-vector sweep
(:func:`summarize_tiers`), printed as markdown by :func:`format_tiers`. Importable from
:mod:`corea.eval.summary` too, which adds the block to a run's summary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import metrics
from ..policy import check_threshold
from . import tiers as tiermod
from .cells import pct, usd
from .runs import clean

__all__ = ["recorded_taus", "summarize_tiers", "format_tiers"]


def recorded_taus(run: dict | None, n_tiers: int) -> list[float]:
    """The τ vector an N-tier run was configured with (its run.json ``settings``: each tier's
    ``threshold``, else the global one); the global τ (0.7 when unrecorded) for every deciding
    tier when the record does not describe ``n_tiers`` tiers."""
    st = (run or {}).get("settings") or {}
    glob = st.get("threshold")
    glob = 0.7 if glob is None else float(glob)
    tiers = st.get("tiers") or []
    if len(tiers) != n_tiers:
        return [glob] * (n_tiers - 1)
    return [glob if (t or {}).get("threshold") is None else float(t["threshold"])
            for t in tiers[:-1]]


def summarize_tiers(rows: Sequence[dict], taus: Sequence[float],
                    values: Sequence[float] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """The N-tier view of a run's completed rows (:func:`corea.eval.runs.load_results`).

    Args:
        rows: rows with tier records (every one with the same number of tiers).
        taus: the τ vector of the headline cascade (one τ per tier but the last).
        values: candidate τ of each deciding tier for the sweep (default
            :func:`corea.eval.tiers.default_tau_values`).
        n_boot: bootstrap resamples of the 95% interval of pass@1 at ``taus``.
        seed: bootstrap seed.

    Returns:
        ``n_tiers``, ``models``, ``n_rows``, ``n`` (gradable items), ``n_ungradable`` /
        ``ungradable_ids`` (a tier's grade undecided: excluded), ``taus``, ``at_taus`` (the
        cascade at ``taus``: :class:`corea.eval.tiers.TierOutcome` fields plus
        ``pass_at_1_ci95`` and ``cost_fraction_of_last_only``), ``per_tier`` (per tier: model,
        τ, share reached / answered, deferral rate, pass@1 of its own answers, its cost at τ,
        and alone: pass@1 and cost, errors, cut off), ``last_only_cost``, ``n_swept`` and
        ``values`` of the sweep, ``pareto`` (the front, cheapest first) and ``best_within_2pt``
        (the cheapest swept vector within 2 points of the last tier alone). Metrics are None
        when no item is gradable.

    Raises:
        ValueError: rows with different tier counts, or a τ vector of the wrong length or
            outside [0, 1].
    """
    rows = list(rows)
    n_tiers, taus = _check_rows(rows, taus)
    pairs = [(r, tiermod.tier_item(r)) for r in rows]
    ok = [it for _, it in pairs if it is not None]
    bad = [str(r["id"]) for r, it in pairs if it is None]
    models = [t.get("model") for t in rows[0]["tiers"]] if rows else []
    out: dict = {"n_tiers": n_tiers, "models": models, "n_rows": len(rows), "n": len(ok),
                 "n_ungradable": len(bad), "ungradable_ids": bad, "taus": taus,
                 "at_taus": None, "per_tier": [], "last_only_cost": None, "n_swept": 0,
                 "values": None, "pareto": [], "best_within_2pt": None}
    if not ok:
        return out
    o = tiermod.evaluate_taus(ok, taus)
    routed = [tiermod.route(it, taus) for it in ok]
    finals = [tiermod.final(it, taus) for it in ok]  # the graded answer (none: wrong)
    y = np.array([k is not None and bool(it.tiers[k].correct) for it, k in zip(ok, finals)])
    lo, hi = metrics.bootstrap_ci(lambda idx: float(y[idx].mean()), len(ok), n_boot=n_boot,
                                  seed=seed)
    alone = [tiermod.single_tier(ok, k) for k in range(n_tiers)]
    last_cost = alone[-1]["cost_usd"]

    def frac(cost: float):
        return cost / last_cost if last_cost > 0 else None

    at = {**tiermod.outcome_dict(o), "pass_at_1_ci95": [lo, hi],
          "cost_fraction_of_last_only": frac(o.cost_usd)}
    per = [_tier_block(k, rows, ok, o, routed, finals, alone, models, taus)
           for k in range(n_tiers)]
    values = list(values) if values is not None else tiermod.default_tau_values(n_tiers)
    swept = tiermod.sweep(ok, tiermod.tau_grid(values, n_tiers))
    front = [{**tiermod.outcome_dict(x), "cost_fraction_of_last_only": frac(x.cost_usd)}
             for x in tiermod.pareto(swept)]
    target = alone[-1]["pass_at_1"] - 0.02
    within = [x for x in front if x["pass_at_1"] >= target - 1e-12]
    out.update({"at_taus": at, "per_tier": per, "last_only_cost": last_cost,
                "n_swept": len(swept), "values": values, "pareto": front,
                "best_within_2pt": within[0] if within else None})
    return clean(out)


def _tier_block(k: int, rows: list[dict], ok: list, o, routed: list[int],
                finals: list[int | None], alone: list[dict], models: list, taus: list) -> dict:
    """Tier ``k``'s row of :func:`summarize_tiers`'s ``per_tier``: ``o`` the cascade at
    ``taus`` (:class:`corea.eval.tiers.TierOutcome`), ``routed`` / ``finals`` each gradable
    item's last tier reached and tier whose answer is final, ``alone`` each tier on its own."""
    n_tiers = len(models)
    mine = [it for it, j in zip(ok, finals) if j == k]
    outs = [(r["tiers"][k].get("output") or {}) for r in rows]
    return {
        "tier": k, "model": models[k], "tau": taus[k] if k < n_tiers - 1 else None,
        "reached": o.reached[k], "answered": o.answered[k],
        "deferral_rate": o.deferral_rate[k] if k < n_tiers - 1 else None,
        "pass_at_1_of_answers": (sum(bool(it.tiers[k].correct) for it in mine) / len(mine)
                                 if mine else None),
        "cost_usd": sum(it.tiers[k].cost_usd for it, j in zip(ok, routed) if j >= k),
        "alone_pass_at_1": alone[k]["pass_at_1"], "alone_cost_usd": alone[k]["cost_usd"],
        "errors": sum(1 for x in outs if x.get("error")),
        "truncated": sum(1 for x in outs if x.get("finish_reason") == "length"),
    }


def _check_rows(rows: list[dict], taus: Sequence[float]) -> tuple[int, list[float]]:
    """``(number of tiers, the checked τ vector)``; raises as :func:`summarize_tiers` says."""
    n_tiers = len(rows[0]["tiers"]) if rows else 0
    if any(len(r.get("tiers") or []) != n_tiers for r in rows):
        raise ValueError("every tiers row needs the same number of tiers")
    taus = [check_threshold(t, "τ") for t in taus]
    if rows and len(taus) != n_tiers - 1:
        raise ValueError(f"{len(taus)} thresholds for {n_tiers} tiers (one per tier but the "
                         f"last: {n_tiers - 1})")
    return n_tiers, taus


def _taus_text(taus) -> str:
    return "(" + ", ".join(f"{t:.2f}" for t in taus) + ")"


def format_tiers(block: dict | None, max_front: int = 20) -> str:
    """The N-tier block of a summary (:func:`summarize_tiers`) as markdown: the cascade at its
    τ vector, a table per tier and the Pareto front of the sweep (at most ``max_front`` rows)."""
    if not block:
        return ""
    b = block
    lines = [f"### N tiers ({b['n_tiers']}): " + " → ".join(f"`{m}`" for m in b["models"]), ""]
    ung = b.get("ungradable_ids") or []
    lines.append(f"Items (gradable / total): {b['n']} / {b['n_rows']}"
                 + (f"; ungradable (excluded): {', '.join(ung[:10])}"
                    + (", …" if len(ung) > 10 else "") if ung else "") + ".")
    at = b.get("at_taus")
    if not at:
        return "\n".join(lines)
    lo, hi = at.get("pass_at_1_ci95") or (None, None)
    ci = "" if lo is None else f" [{pct(lo)}, {pct(hi)}]"
    lines += ["", f"Cascade at τ = {_taus_text(b['taus'])}: pass@1 {pct(at['pass_at_1'])}{ci}, "
              f"cost {usd(at['cost_usd'])} ({pct(at.get('cost_fraction_of_last_only'))} of "
              f"the last tier alone), answered per tier "
              + " / ".join(pct(a) for a in at["answered"]) + ".", "",
              "| tier | model | τ | reached | answered | deferral | pass@1 of its answers | "
              "cost at τ | alone: pass@1 | alone: cost | errors / cut off |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in b["per_tier"]:
        lines.append(
            f"| {t['tier'] + 1} | `{t['model']}` | "
            f"{'–' if t['tau'] is None else format(t['tau'], '.2f')} | {pct(t['reached'])} | "
            f"{pct(t['answered'])} | {pct(t['deferral_rate'])} | "
            f"{pct(t['pass_at_1_of_answers'])} | {usd(t['cost_usd'])} | "
            f"{pct(t['alone_pass_at_1'])} | {usd(t['alone_cost_usd'])} | "
            f"{t['errors']} / {t['truncated']} |")
    front = b.get("pareto") or []
    best = b.get("best_within_2pt")
    lines += ["", f"Pareto front of {b['n_swept']} swept τ vectors (each deciding tier's τ in "
              f"{{{', '.join(f'{v:g}' for v in b.get('values') or [])}}}; cheapest first; no "
              "other vector is both cheaper and better):", "",
              "| τ vector | pass@1 | cost | cost vs last tier alone | answered per tier |",
              "|---|---|---|---|---|"]
    for x in front[:max_front]:
        lines.append(f"| {_taus_text(x['taus'])} | {pct(x['pass_at_1'])} | "
                     f"{usd(x['cost_usd'])} | {pct(x.get('cost_fraction_of_last_only'))} | "
                     + " / ".join(pct(a) for a in x["answered"]) + " |")
    if len(front) > max_front:
        lines.append(f"| … {len(front) - max_front} more in summary.json | | | | |")
    lines += ["", "Cheapest swept τ vector within 2 points of the last tier alone: "
              + ("none" if not best else
                 f"{_taus_text(best['taus'])}, pass@1 {pct(best['pass_at_1'])}, cost "
                 f"{pct(best.get('cost_fraction_of_last_only'))} of the last tier alone") + "."]
    return "\n".join(lines)
