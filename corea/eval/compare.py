"""Deferral signals side by side, on one scored run: which signal ranks, and what it saves.

For every signal that can decide a deferral (by default :data:`DEFAULT_SIGNALS`: entries of the
registry :mod:`corea.signals.registry`, which gives their values and labels) — the verbalized
confidence (the COREA paper's), token probabilities (:mod:`corea.signals.tokens`), a calibrator's
P(correct) (:mod:`corea.signals.calibrator`),
the confidence stated *before* solving (confidence-first), and the **oracle** that defers exactly
the items the SLM gets wrong, and the one that defers only the items where the LLM fixes an SLM
error (the true upper bound for the model pair: deferring an item both get wrong costs without
helping) — this reports AUROC, ECE and
Brier score of the signal against SLM correctness, and, sweeping τ, the largest cost saving
versus LLM-only with pass@1 within ``max_drop`` of LLM-only, and RouteLLM's APGR.

Costs are recomputed from the logged token counts under a chosen SLM price: a ratio of the LLM's
per-token prices (1/3 ≈ the parameter ratio of the embedded pair; 0 = a free local SLM in front of
a paid API). Answer-first cascades always pay the SLM, so no such cascade can save anything unless
``SLM cost + LLM cost × deferral rate < LLM cost``; :func:`cost_bound` reports that bound.

Confidence-first (``slm_prior``, :meth:`corea.cascade.Cascade.prior_output`): the SLM first states its confidence in
one short turn; below τ the question goes to the LLM without the SLM solving it (cost: the short
turn + the LLM); otherwise the SLM solves it and its answer is kept.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .. import metrics
from ..signals.registry import extra_cost, get
from ..signals.tokens import TOKPROB
from .scored import ScoredSet, apgr, best_saving_within

DEFAULT_SIGNALS = ("verbal", TOKPROB, "answer_prob", "min_prob", "calibrator", "prior", "oracle",
                   "oracle_gain")
"""What :func:`compare_signals` reports by default (names in
:data:`corea.signals.registry.SIGNALS`)."""


def _price_cost(out: dict | None, p_in: float, p_out: float) -> float:
    out = out or {}
    return (int(out.get("prompt_tokens") or 0) * p_in
            + int(out.get("completion_tokens") or 0) * p_out) / 1e6


def costs_at_ratio(rows: Sequence[dict], llm_price: tuple[float, float], ratio: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item USD costs ``(slm, llm, prior)`` with the SLM priced at ``ratio`` × the LLM's
    per-token prices ``llm_price = (input, output)`` USD per 1M tokens."""
    pi, po = llm_price
    slm = np.array([_price_cost(r.get("slm"), pi * ratio, po * ratio) for r in rows])
    llm = np.array([_price_cost(r.get("llm"), pi, po) for r in rows])
    prior = np.array([_price_cost(r.get("slm_prior"), pi * ratio, po * ratio) for r in rows])
    return slm, llm, prior


def signal_values(rows: Sequence[dict], name: str,
                  values: Mapping[str, Sequence] | None = None) -> list[float | None]:
    """The signal ``name`` (:func:`corea.signals.registry.get`) per row, None where the row has
    none; a learned signal's values come from ``values[name]`` (e.g. cross-fitted predictions,
    one per row), or are all None without them."""
    sig = get(name)
    if sig.learned:
        given = (values or {}).get(sig.name)
        return [None if v is None else float(v) for v in given] if given is not None \
            else [None] * len(rows)
    return sig.values(rows)


def _confidence_first_sweep(scored: ScoredSet, prior_cost: np.ndarray) -> list[dict]:
    """The sweep when the confidence is stated before solving: every item pays the short prior
    turn, a deferred item then pays the LLM only (the SLM never solves it), a kept one the SLM."""
    llm_only = scored.llm_only_cost
    rows = []
    for t in scored.thresholds():
        defer = scored.defer(t)
        cost = float(prior_cost.sum() + np.where(defer, scored.llm_cost, scored.slm_cost).sum())
        rows.append({"threshold": float(t), "deferral_rate": float(defer.mean()),
                     "pass_at_1": float(scored.correct_at(t).mean()), "cost": cost,
                     "cost_fraction_of_llm_only": cost / llm_only if llm_only > 0 else None})
    return rows


def cost_bound(slm_cost: np.ndarray, llm_cost: np.ndarray) -> dict:
    """The answer-first bound: SLM-always cost as a share of LLM-only, and the largest deferral
    rate that can still save anything (``1 - share``; negative means no cascade can save)."""
    llm_only = float(llm_cost.sum())
    share = float(slm_cost.sum()) / llm_only if llm_only > 0 else None
    return {"slm_cost_share_of_llm_only": share,
            "max_deferral_rate_that_saves": (1.0 - share) if share is not None else None}


def compare_signals(rows: Sequence[dict], llm_price: tuple[float, float],
                    ratios: Sequence[float] = (1 / 3, 1 / 10, 0.0), max_drop: float = 0.02,
                    signals: Sequence[str] = DEFAULT_SIGNALS,
                    values: Mapping[str, Sequence] | None = None) -> dict:
    """Every signal's ranking quality and cost saving on one scored run.

    Args:
        rows: gradable item rows (``slm_correct``/``llm_correct`` not None) of an evaluation run
            (optional ``slm_prior``: the confidence-first turn).
        llm_price: the LLM's ``(input, output)`` USD per 1M tokens.
        ratios: SLM price per token as fractions of the LLM's.
        max_drop: tolerated pass@1 drop versus LLM-only (0-1 scale).
        signals: which to report (names of :data:`corea.signals.registry.SIGNALS`; old names of
            ``tokprob`` read as it); ones no row has are skipped.
        values: per-row values of learned signals, by name (one per row of ``rows``, e.g. a
            calibrator's cross-fitted predictions); a learned signal without them is skipped.

    Returns:
        dict with ``n``, ``slm_pass_at_1``, ``llm_pass_at_1``, ``signals`` (one dict per signal:
        ``name``, ``label``, ``n_with_value``, ``auroc``, ``ece``, ``brier``, and ``by_ratio``:
        per price ratio the ``saving`` at ≤ ``max_drop`` (None if no τ qualifies), its
        ``deferral_rate`` and ``pass_at_1``, and ``apgr``) and ``bounds`` per ratio.
    """
    rows = [r for r in rows if r.get("slm_correct") is not None
            and r.get("llm_correct") is not None]
    s = np.array([bool(r["slm_correct"]) for r in rows])
    l_ = np.array([bool(r["llm_correct"]) for r in rows])
    out = {"n": len(rows), "max_drop": max_drop, "ratios": list(ratios),
           "llm_price_per_mtok": list(llm_price),
           "slm_pass_at_1": float(s.mean()) if rows else None,
           "llm_pass_at_1": float(l_.mean()) if rows else None, "signals": [], "bounds": {}}
    if not rows:
        return out
    llm_pass, slm_pass = float(l_.mean()), float(s.mean())
    priced = {r: costs_at_ratio(rows, llm_price, r) for r in ratios}
    for ratio, (sc, lc, _) in priced.items():
        out["bounds"][f"{ratio:.4g}"] = cost_bound(sc, lc)
    for name in signals:
        sig = get(name)
        vals = signal_values(rows, name, values)
        idx = [i for i, v in enumerate(vals) if v is not None]
        if not idx:
            continue
        c = np.array([vals[i] for i in idx])
        y = s[idx]
        probability = sig.when != "oracle"
        entry = {"name": sig.name, "label": sig.label, "n_with_value": len(idx),
                 "auroc": metrics.auroc(c, y),
                 "ece": metrics.ece(c, y, 10) if probability else None,
                 "brier": metrics.brier_score(c, y) if probability else None,
                 "by_ratio": {}}
        for ratio, (sc, lc, _) in priced.items():
            scored = ScoredSet.from_arrays(vals, s, l_, sc, lc)
            before = extra_cost(sig, rows, llm_price[0] * ratio, llm_price[1] * ratio)
            sw = _confidence_first_sweep(scored, before) if sig.when == "before" \
                else scored.sweep()
            best = best_saving_within(sw, llm_pass, max_drop)
            entry["by_ratio"][f"{ratio:.4g}"] = {
                "saving": best["saving"] if best else None,
                "deferral_rate": best["deferral_rate"] if best else None,
                "pass_at_1": best["pass_at_1"] if best else None,
                "threshold": best["threshold"] if best else None,
                "apgr": apgr(sw, slm_pass, llm_pass),
            }
        out["signals"].append(entry)
    return out


def _f(x, pct=False) -> str:
    if x is None:
        return "—"
    if pct:
        return "±0%" if round(x * 100) == 0 else f"{x:+.0%}".replace("-", "−")
    return f"{x:.2f}"


def format_table(cmp: dict) -> str:
    """Markdown table of :func:`compare_signals` (saving shown as the cost change vs LLM-only)."""
    ratios = list(cmp["ratios"])
    head = "| signal | AUROC | ECE | Brier | " + " | ".join(
        f"cost vs LLM-only, SLM price {_ratio_name(r)}" for r in ratios) + " |"
    lines = [head, "|" + "---|" * (4 + len(ratios))]
    for e in cmp["signals"]:
        cells = []
        for r in ratios:
            b = e["by_ratio"][f"{r:.4g}"]
            if b["saving"] is None:
                cells.append("no τ within the drop")
            else:
                cells.append(f"{_f(-b['saving'], True)} (LLM {b['deferral_rate']:.0%})")
        lines.append(f"| {e['label']} | {_f(e['auroc'])} | {_f(e['ece'])} | {_f(e['brier'])} | "
                     + " | ".join(cells) + " |")
    bounds = "; ".join(
        f"SLM price {_ratio_name(r)}: the SLM alone costs "
        f"{cmp['bounds'][f'{r:.4g}']['slm_cost_share_of_llm_only']:.0%} of LLM-only"
        for r in ratios if cmp["bounds"][f"{r:.4g}"]["slm_cost_share_of_llm_only"] is not None)
    return "\n".join(lines) + ("\n\nBound (answer-first): " + bounds if bounds else "")


def _ratio_name(r: float) -> str:
    if r == 0:
        return "0"
    inv = 1 / r
    return f"1/{inv:.0f}" if abs(inv - round(inv)) < 1e-9 else f"{r:.3g}"
