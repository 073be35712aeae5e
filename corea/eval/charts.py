"""Charts of a scored run or of rated interactions (Altair, no Gradio): the accuracy-vs-cost
frontier over τ, the reliability diagram and the confidence histogram; for an N-tier run, the
accuracy-vs-cost chart over τ vectors with its Pareto front (:func:`tier_pareto_chart`).

The threshold explorer tab (:mod:`corea.ui.explorer`) shows them live, and the report
(:mod:`corea.eval.report`) saves them as HTML; they live here, below both.

Rows
    Every function takes *rows*, either the item rows of an evaluation run (``items.jsonl``) or
    flat rows ``{id, confidence, slm_correct, llm_correct, slm_cost, llm_cost, label_basis}``
    (:func:`corea.eval.scored.flat_row`; rated interactions:
    :func:`corea.store.labels.rows_from_interactions`). Confidence is the SLM's verbalized
    probability (None: not stated, always deferred); labels are bool or None (unknown); costs are
    USD per item.

Which rows feed what
    * cascade numbers (frontier, pass@1, deferral, cost) need **both** labels: rows with
      ``slm_correct`` or ``llm_correct`` None are left out (:meth:`ScoredSet.from_rows`);
    * calibration (reliability diagram, histogram, ECE, Brier, AUROC) needs only ``slm_correct``;
    * rows with no label at all are "unlabelled" and excluded everywhere; the counts are reported
      (:func:`label_counts`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .. import metrics
from ..signals.tokens import TOKPROB
from .runs import load_results
from .scored import ScoredSet, flat_row

__all__ = ["frontier_chart", "reliability_chart", "confidence_histogram", "label_counts",
           "calibration_rows", "rows_from_run", "tier_pareto_chart"]

_COLORS = {"cascade (sweep)": "#4c78a8", "token probability": "#b279a2",
           "random routing": "#9d9d9d", "SLM only": "#f58518", "LLM only": "#54a24b",
           "current τ": "#e45756"}



def rows_from_run(run_dir: str | os.PathLike) -> list[dict]:
    """Flat rows of an evaluation run folder (``label_basis`` ``"grader"``).

    Raises:
        FileNotFoundError: no ``items.jsonl``; ValueError: a corrupt line (not the last).
    """
    return flat_rows(load_results(run_dir))


def flat_rows(items: Sequence[dict], signal: str = "verbal", fitted=None) -> list[dict]:
    """Flat rows of evaluation item rows whose ``confidence`` is the deferral signal ``signal``
    (:data:`corea.signals.registry.SIGNALS`; ``fitted``: the fitted model of a learned one, e.g. the
    service's probe), so every chart, sweep and τ rule shows that signal.

    Raises:
        KeyError: unknown signal; ValueError: a learned signal without ``fitted``.
    """
    from ..signals.registry import get

    flat = [{**flat_row(r), "label_basis": "grader"} for r in items]
    if signal != "verbal":
        for row, v in zip(flat, get(signal).values(items, fitted)):
            row["confidence"] = v
    return flat


def label_counts(rows: Sequence[dict]) -> dict:
    """``{n, n_both, n_slm, n_unlabelled, n_no_confidence}``: all rows, rows with both labels
    (cascade metrics), with an SLM label (calibration), with no label, and SLM-labelled rows
    without a confidence."""
    flat = [flat_row(r) for r in rows]
    slm = [r for r in flat if r["slm_correct"] is not None]
    return {"n": len(flat),
            "n_both": sum(1 for r in slm if r["llm_correct"] is not None),
            "n_slm": len(slm),
            "n_unlabelled": sum(1 for r in flat
                                if r["slm_correct"] is None and r["llm_correct"] is None),
            "n_no_confidence": sum(1 for r in slm if r["confidence"] is None)}


def calibration_rows(rows: Sequence[dict]) -> tuple[list, np.ndarray]:
    ok = [r for r in map(flat_row, rows) if r["slm_correct"] is not None]
    return [r["confidence"] for r in ok], np.array([bool(r["slm_correct"]) for r in ok], bool)



# ----------------------------------------------------------------------------- charts

def _alt():
    import altair as alt

    return alt


def frontier_chart(rows: Sequence[dict], threshold: float, width: int = 460,
                   height: int = 320):
    """Accuracy vs cost of the cascade over every τ, with baselines and the current τ.

    Layers (``name``): ``cascade`` (line over :meth:`ScoredSet.sweep`), ``random`` (dashed:
    :meth:`ScoredSet.random_routing` at deferral 0, 0.1, ..., 1), ``baselines``
    (points: SLM only, LLM only), ``tokprob`` (the same sweep deciding on the token-probability
    signal instead, when the rows carry it: the paper's AvgProb baseline), ``current`` (the
    cascade at ``threshold``, highlighted) and
    ``current_label`` (its τ as text). x is the cost as a share of LLM-only cost when the LLM-only
    cost is > 0, else the deferral rate (share of items sent to the LLM).

    Raises:
        ValueError: no row has both labels.
    """
    alt = _alt()
    scored = ScoredSet.from_rows(rows)
    if len(scored) == 0:
        raise ValueError("no items with both an SLM and an LLM label")
    s, l_, sc = scored.slm_correct, scored.llm_correct, scored.slm_cost
    llm_only = scored.llm_only_cost
    by_cost = llm_only > 0

    def x_of(row: dict) -> float:
        return row["cost"] / llm_only if by_cost else row["deferral_rate"]

    sweep = [{**r, "x": x_of(r), "series": "cascade (sweep)"}
             for r in scored.sweep()]
    rnd = [{**scored.random_routing(k / 10), "series": "random routing"} for k in range(11)]
    for r in rnd:
        r["x"] = x_of(r)
    base = [{"series": "SLM only", "pass_at_1": float(s.mean()), "deferral_rate": 0.0,
             "cost": float(sc.sum()), "x": float(sc.sum()) / llm_only if by_cost else 0.0},
            {"series": "LLM only", "pass_at_1": float(l_.mean()), "deferral_rate": 1.0,
             "cost": llm_only, "x": 1.0}]
    cur = scored.at(float(threshold))
    cur = {**cur, "x": x_of(cur), "series": "current τ", "label": f"τ = {threshold:.2f}"}
    tokprob = ScoredSet.from_rows(rows, confidence=TOKPROB)  # the paper's AvgProb baseline
    has_tp = bool(tokprob.has_confidence.any())
    tok = [{**r, "x": x_of(r), "series": "token probability"}
           for r in tokprob.sweep()] if has_tp else []
    series = [k for k in _COLORS if has_tp or k != "token probability"]
    tip = [alt.Tooltip("series:N"), alt.Tooltip("pass_at_1:Q", format=".1%", title="pass@1"),
           alt.Tooltip("deferral_rate:Q", format=".1%", title="deferral"),
           alt.Tooltip("cost:Q", format="$.6f", title="cost (USD)")]
    tau_tip = [alt.Tooltip("threshold:Q", format=".3f", title="τ")] + tip
    lines = [("cascade", sweep, lambda c: c.mark_line(point=True),
              {"tooltip": tau_tip, "order": "threshold:Q"})]
    if tok:
        lines.append(("tokprob", tok, lambda c: c.mark_line(strokeDash=[2, 2]),
                      {"order": "threshold:Q",
                       "tooltip": [alt.Tooltip("threshold:Q", format=".3f",
                                               title="τ (token prob.)")] + tip}))
    lines.append(("random", rnd, lambda c: c.mark_line(strokeDash=[6, 4]), {"tooltip": tip}))
    return cost_chart(
        lines, ("baselines", base), cur, {k: _COLORS[k] for k in series},
        "cost (share of LLM-only)" if by_cost else "deferral rate (share sent to the LLM)",
        tip, tau_tip, alt.TitleParams("Accuracy vs cost over τ", subtitle=_counts_note(rows)),
        width, height)


def cost_chart(lines: Sequence[tuple], alone: tuple[str, list[dict]], current: dict,
               colors: dict[str, str], x_title: str, tip: list, current_tip: list, title,
               width: int, height: int):
    """The accuracy-vs-cost chart of a cascade of any number of tiers, the one code path of
    :func:`frontier_chart` (two tiers, over τ) and :func:`tier_pareto_chart` (N tiers, over τ
    vectors): x is each point's ``x`` (a share, shown in %), y its ``pass_at_1``, the colour
    its ``series``.

    Args:
        lines: ``(name, values, mark, encodings)`` per layer drawn first, in order: ``mark``
            turns an ``alt.Chart`` into a marked one, ``encodings`` are extra ``encode``
            arguments (tooltip, order).
        alone: ``(name, values)``: the tiers alone, drawn as squares.
        current: the cascade at the current τ (or τ vector), drawn as a diamond with its
            ``label`` beside it (layers ``current`` and ``current_label``).
        colors: series -> colour, in legend order.
        x_title: the x axis' title.
        tip / current_tip: the tooltips of the squares and of the current point.
        title: the chart's title (text or ``alt.TitleParams``).
        width, height: pixels.
    """
    alt = _alt()
    color = alt.Color("series:N", title=None,
                      scale=alt.Scale(domain=list(colors), range=list(colors.values())),
                      legend=alt.Legend(orient="bottom"))
    x = alt.X("x:Q", title=x_title, axis=alt.Axis(format="%"))
    y = alt.Y("pass_at_1:Q", title="pass@1", axis=alt.Axis(format="%"),
              scale=alt.Scale(zero=False))
    layers = [mark(alt.Chart(alt.Data(values=values), name=name)).encode(
        x=x, y=y, color=color, **enc) for name, values, mark, enc in lines]
    layers += [
        alt.Chart(alt.Data(values=alone[1]), name=alone[0]).mark_point(
            filled=True, size=140, shape="square").encode(x=x, y=y, color=color, tooltip=tip),
        alt.Chart(alt.Data(values=[current]), name="current").mark_point(
            filled=True, size=320, shape="diamond", stroke="black", strokeWidth=1).encode(
            x=x, y=y, color=color, tooltip=current_tip),
        alt.Chart(alt.Data(values=[current]), name="current_label").mark_text(
            dx=12, dy=-12, align="left", fontWeight="bold").encode(x=x, y=y, text="label:N"),
    ]
    return alt.layer(*layers).properties(width=width, height=height, title=title)


def _counts_note(rows: Sequence[dict]) -> str:
    k = label_counts(rows)
    note = f"{k['n_both']} item(s) with both labels"
    if k["n_both"] < k["n"]:
        note += f"; {k['n'] - k['n_both']} left out (a label unknown)"
    return note


def reliability_chart(rows: Sequence[dict], n_bins: int = 10, width: int = 320,
                      height: int = 320):
    """Reliability diagram of the SLM's confidence (:func:`corea.metrics.reliability_bins`).

    Layers (``name``): ``diagonal`` (perfect calibration), ``bins`` (bars: accuracy per
    equal-width bin, non-empty bins only), ``points`` (accuracy vs mean confidence per bin, size =
    count). Uses rows with an SLM label and a stated confidence; the title gives ECE.

    Raises:
        ValueError: no row has an SLM label and a confidence.
    """
    alt = _alt()
    conf, y = calibration_rows(rows)
    has = np.array([c is not None for c in conf], dtype=bool)
    c = np.array([x for x in conf if x is not None], dtype=float)
    y = y[has] if y.size else y
    if c.size == 0:
        raise ValueError("no items with an SLM label and a stated confidence")
    bins = [b for b in metrics.reliability_bins(c, y, n_bins) if b["count"]]
    e = metrics.ece(c, y, n_bins)
    diag = alt.Chart(alt.Data(values=[{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}]),
                     name="diagonal").mark_line(strokeDash=[4, 4], color="#888").encode(
        x=alt.X("x:Q", title="confidence", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("y:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])))
    tip = [alt.Tooltip("lo:Q", format=".2f", title="from"),
           alt.Tooltip("hi:Q", format=".2f", title="to"), alt.Tooltip("count:Q"),
           alt.Tooltip("mean_conf:Q", format=".3f", title="mean confidence"),
           alt.Tooltip("accuracy:Q", format=".3f")]
    bars = alt.Chart(alt.Data(values=bins), name="bins").mark_bar(
        opacity=0.35, color="#4c78a8", stroke="white").encode(
        x=alt.X("lo:Q", bin="binned"), x2="hi:Q", y=alt.Y("accuracy:Q"), tooltip=tip)
    pts = alt.Chart(alt.Data(values=bins), name="points").mark_circle(color="#e45756").encode(
        x=alt.X("mean_conf:Q"), y=alt.Y("accuracy:Q"),
        size=alt.Size("count:Q", legend=None, scale=alt.Scale(range=[30, 400])), tooltip=tip)
    return alt.layer(diag, bars, pts).properties(
        width=width, height=height,
        title=alt.TitleParams("Reliability of the SLM's confidence",
                              subtitle=f"{c.size} item(s), ECE-{n_bins} = {e:.3f}"))


def confidence_histogram(rows: Sequence[dict], n_bins: int = 20, width: int = 320,
                         height: int = 320):
    """Histogram of the SLM's confidence, stacked by correct / incorrect SLM answer.

    One layer-less bar chart (``name`` ``histogram``) over pre-binned, pre-stacked data ``{lo, hi,
    outcome, count, y0, y1}`` (equal-width bins as in :mod:`corea.metrics`; incorrect stacked
    below correct; empty counts omitted). Items without a
    confidence are counted in the subtitle.

    Raises:
        ValueError: no row has an SLM label.
    """
    alt = _alt()
    conf, y = calibration_rows(rows)
    if y.size == 0:
        raise ValueError("no items with an SLM label")
    has = np.array([c is not None for c in conf], dtype=bool)
    c = np.array([x for x in conf if x is not None], dtype=float)
    yy = y[has]
    data = []
    if c.size:
        idx = metrics.bin_index(c, n_bins)
        for b in range(n_bins):
            base = 0  # stacked by hand (incorrect below correct): y0..y1
            for outcome, mask in (("incorrect", ~yy), ("correct", yy)):
                k = int(((idx == b) & mask).sum())
                if k:
                    data.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "outcome": outcome,
                                 "count": k, "y0": base, "y1": base + k})
                    base += k
    n_none = int((~has).sum())
    sub = f"{c.size} item(s) with a confidence"
    if n_none:
        sub += f"; {n_none} without one (always deferred, not shown)"
    return alt.Chart(alt.Data(values=data), name="histogram").mark_bar(stroke="white").encode(
        x=alt.X("lo:Q", bin="binned", title="confidence", scale=alt.Scale(domain=[0, 1])),
        x2="hi:Q",
        y=alt.Y("y1:Q", title="items", axis=alt.Axis(tickMinStep=1, format="d")), y2="y0:Q",
        color=alt.Color("outcome:N", title="SLM answer",
                        scale=alt.Scale(domain=["correct", "incorrect"],
                                        range=["#54a24b", "#e45756"]),
                        legend=alt.Legend(orient="bottom")),
        tooltip=["outcome:N", "count:Q", alt.Tooltip("lo:Q", format=".2f", title="from"),
                 alt.Tooltip("hi:Q", format=".2f", title="to")],
    ).properties(width=width, height=height,
                 title=alt.TitleParams("SLM confidence by outcome", subtitle=sub))


_TIER_COLORS = {"swept τ vectors": "#c7c7c7", "Pareto front": "#4c78a8",
                "one tier alone": "#f58518", "current τ": "#e45756"}


def tier_pareto_chart(items: Sequence, taus: Sequence[float], models: Sequence[str] = (),
                      swept: Sequence | None = None, width: int = 460, height: int = 320):
    """Accuracy vs cost of an N-tier cascade over a grid of τ vectors
    (:mod:`corea.eval.tiers`), with its Pareto front, each tier alone and the current vector.

    Args:
        items: the gradable :class:`corea.eval.tiers.TierItem` of a run.
        taus: the current τ vector (one τ per tier but the last).
        models: tier names for the tooltips and labels (default ``tier 1`` …).
        swept: :class:`corea.eval.tiers.TierOutcome` of a sweep (default: the
            :func:`corea.eval.tiers.default_tau_values` grid).

    Layers (``name``): ``swept`` (every vector, faint points), ``pareto`` (the front, a line),
    ``single`` (each tier alone, squares), ``current`` (the cascade at ``taus``) and
    ``current_label``. x is the cost as a share of the last tier alone when that is > 0, else the
    share of items the first tier passes on.

    Raises:
        ValueError: no items, or a bad τ vector.
    """
    from . import tiers as tm

    alt = _alt()
    if not items:
        raise ValueError("no gradable items scored by every tier")
    n = len(items[0].tiers)
    names = list(models) if len(models) == n else [f"tier {k + 1}" for k in range(n)]
    if swept is None:
        swept = tm.sweep(items, tm.tau_grid(tm.default_tau_values(n), n))
    last = tm.single_tier(items, n - 1)["cost_usd"]
    by_cost = last > 0

    def row(o, series: str) -> dict:
        return {"series": series, "pass_at_1": o.pass_at_1, "cost": o.cost_usd,
                "x": o.cost_usd / last if by_cost else o.deferral_rate[0],
                "taus": "(" + ", ".join(f"{t:.2f}" for t in o.taus) + ")",
                "answered": " / ".join(f"{a:.0%}" for a in o.answered)}

    cur_o = tm.evaluate_taus(items, taus)
    cur = {**row(cur_o, "current τ"), "label": "τ = " + row(cur_o, "")["taus"]}
    dots = [row(o, "swept τ vectors") for o in swept]
    front = [row(o, "Pareto front") for o in tm.pareto(swept)]
    alone = []
    for k in range(n):
        s = tm.single_tier(items, k)
        alone.append({"series": "one tier alone", "pass_at_1": s["pass_at_1"],
                      "cost": s["cost_usd"], "taus": f"{names[k]} only",
                      "x": s["cost_usd"] / last if by_cost else float(k > 0), "answered": "",
                      "label": names[k]})
    tip = [alt.Tooltip("taus:N", title="τ vector"),
           alt.Tooltip("pass_at_1:Q", format=".1%", title="pass@1"),
           alt.Tooltip("cost:Q", format="$.6f", title="cost (USD)"),
           alt.Tooltip("answered:N", title="answered per tier")]
    lines = [("swept", dots, lambda c: c.mark_point(size=25, opacity=0.5), {"tooltip": tip}),
             ("pareto", front, lambda c: c.mark_line(point=True),
              {"tooltip": tip, "order": "x:Q"})]
    return cost_chart(
        lines, ("single", alone), cur, _TIER_COLORS,
        "cost (share of the last tier alone)" if by_cost else
        "share passed on by the first tier", tip, tip,
        alt.TitleParams(f"Accuracy vs cost over τ vectors ({n} tiers)",
                        subtitle=f"{len(items)} gradable item(s); {len(swept)} τ vectors swept"),
        width, height)
