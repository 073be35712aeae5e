"""The "Threshold explorer": charts and tables of the cascade as τ moves (pure functions + the
widget-free handlers of the app tab).

Rows
    Every function takes *rows*, either the item rows of an evaluation run (``items.jsonl``, see
    :mod:`corea.evaluate`) or the flat rows built here: ``{id, confidence, slm_correct,
    llm_correct, slm_cost, llm_cost, label_basis}`` (:func:`corea.thresholds.flat_row`).
    Confidence is the SLM's verbalized probability (None: not stated, always deferred); labels are
    bool or None (unknown); costs are USD per item.

Which rows feed what
    * cascade numbers (frontier, pass@1, deferral, cost) need **both** labels: rows with
      ``slm_correct`` or ``llm_correct`` None are left out;
    * calibration (reliability diagram, histogram, ECE, Brier, AUROC) needs only ``slm_correct``;
    * rows with no label at all are "unlabelled" and excluded everywhere; the counts are reported
      (:func:`label_counts`).

Labels of an evaluation run come from the grader (:func:`corea.grading.grade`): ungradable items
have None labels. Labels of **logged interactions** come from the user's latest rating
(:func:`label_interaction`):

1. a non-blank **correction** is the gold answer (it wins over the thumbs);
2. otherwise **👍** makes the shown final answer the gold answer;
3. with a gold answer, each model that answered is graded against it: ``slm_correct`` from the
   SLM's answer; ``llm_correct`` from the LLM's answer if the LLM ran without error, else None (a
   question the SLM kept never reached the LLM, so its LLM label is unknown);
4. **👎** without a correction only says the final answer is wrong: the model that gave it gets
   False, and the other model too if its answer matches the final one; otherwise unknown;
5. a rating with only a comment gives no label.

"Matches" means equal after trimming/case-folding, or judged equal by :func:`corea.grading.grade`
(math equivalence); an empty answer is wrong; an undecidable comparison is unknown (None). Rated
interactions therefore mostly give SLM labels; cascade metrics use the deferred ones that have
both.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import metrics
from .thresholds import (certified_threshold, flat_row, paper_threshold,
                         target_deferral_threshold)

log = logging.getLogger(__name__)

__all__ = ["frontier_chart", "reliability_chart", "confidence_histogram", "metrics_table",
           "rows_from_run", "rows_from_interactions", "label_interaction", "label_counts",
           "list_runs", "slider_value", "ExplorerHandlers", "INTERACTIONS", "METRICS_HEADERS"]

INTERACTIONS = "__interactions__"
INTERACTIONS_LABEL = "Logged interactions (rated)"
METRICS_HEADERS = ["metric", "value"]

_COLORS = {"cascade (sweep)": "#4c78a8", "token probability": "#b279a2",
           "random routing": "#9d9d9d", "SLM only": "#f58518", "LLM only": "#54a24b",
           "current τ": "#e45756"}


# ----------------------------------------------------------------------------- rows

def rows_from_run(run_dir: str | os.PathLike) -> list[dict]:
    """Flat rows of an evaluation run folder (``label_basis`` ``"grader"``).

    Raises:
        FileNotFoundError: no ``items.jsonl``; ValueError: a corrupt line (not the last).
    """
    from .eval.runs import load_results

    return [{**flat_row(r), "label_basis": "grader"} for r in load_results(run_dir)]


def list_runs(root: str | os.PathLike = "runs") -> list[str]:
    """Run folders (paths as strings, sorted by name) directly under ``root`` that hold a non-empty
    ``items.jsonl``; ``[]`` if ``root`` does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        f = d / "items.jsonl"
        try:
            if d.is_dir() and f.is_file() and f.stat().st_size > 0:
                out.append(str(d))
        except OSError:
            continue
    return out


def _norm(s: Any) -> str:
    return " ".join(str(s).strip().casefold().split()).rstrip(".")


def _matches(pred: Any, gold: Any) -> bool | None:
    """True/False/None (undecided) for "``pred`` is the answer ``gold``" (see module docstring)."""
    if pred is None or not str(pred).strip():
        return False
    if _norm(pred) == _norm(gold):
        return True
    try:
        from .grading import grade

        return grade(str(pred), str(gold)).correct
    except Exception:  # noqa: BLE001 - a grader fault leaves the label unknown
        log.exception("grading a rated interaction failed")
        return None


def _llm_ok(row: dict) -> bool:
    """The LLM ran on this interaction and did not fail."""
    if row.get("llm_model") is None:
        return False
    return not any(str(e).startswith("llm error") for e in (row.get("errors") or []))


def label_interaction(row: dict) -> dict:
    """A flat row (labels, costs, ``label_basis``) for one logged interaction with its rating
    (a :meth:`corea.storage.Store.list_interactions` dict); rules in the module docstring."""
    extra = row.get("extra") or {}
    llm_ok = _llm_ok(row)
    thumbs = row.get("rating_thumbs")
    correction = (row.get("rating_correction") or "").strip() or None
    final = row.get("final_answer")
    slm_c: bool | None = None
    llm_c: bool | None = None
    if correction is not None:
        gold, basis = correction, "correction"
    elif thumbs == "up" and final is not None and str(final).strip():
        gold, basis = final, "thumbs up"
    else:
        gold, basis = None, None
    if gold is not None:
        slm_c = _matches(row.get("slm_answer"), gold)
        llm_c = _matches(row.get("llm_answer"), gold) if llm_ok else None
    elif thumbs == "down":
        basis = "thumbs down"
        if llm_ok:
            llm_c = False
            slm_c = False if (final is not None and _matches(row.get("slm_answer"), final)) \
                else None
        elif final is not None:
            slm_c = False
    slm_cost = extra.get("slm_cost_usd")
    if slm_cost is None:
        slm_cost = 0.0 if row.get("llm_model") else (row.get("cost_usd") or 0.0)
    return {"id": row.get("id"), "confidence": row.get("confidence"),
            "slm_correct": slm_c, "llm_correct": llm_c,
            "slm_cost": float(slm_cost or 0.0),
            "llm_cost": float(extra.get("llm_cost_usd") or 0.0),
            "label_basis": basis if (slm_c is not None or llm_c is not None) else None}


def rows_from_interactions(store, limit: int | None = None,
                           memo: dict | None = None) -> list[dict]:
    """Flat rows of the rated interactions in ``store`` (newest first), labelled by
    :func:`label_interaction`. Unlabelled ones are kept with None labels (see
    :func:`label_counts`).

    Args:
        store: a :class:`corea.storage.Store`.
        limit: at most this many rated interactions (None: all).
        memo: optional dict reused between calls to skip re-grading unchanged ratings.
    """
    out = []
    for r in store.list_interactions(limit=limit, rated=True):
        key = (r.get("id"), str(r.get("rating_created_at")), r.get("rating_thumbs"),
               r.get("rating_correction"))
        if memo is not None and key in memo:
            out.append(memo[key])
            continue
        row = label_interaction(r)
        if memo is not None:
            memo[key] = row
        out.append(row)
    return out


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


def _cascade_arrays(rows: Sequence[dict]):
    ok = [r for r in map(flat_row, rows)
          if r["slm_correct"] is not None and r["llm_correct"] is not None]
    return ([r["confidence"] for r in ok],
            np.array([bool(r["slm_correct"]) for r in ok], dtype=bool),
            np.array([bool(r["llm_correct"]) for r in ok], dtype=bool),
            np.array([r["slm_cost"] for r in ok], dtype=float),
            np.array([r["llm_cost"] for r in ok], dtype=float))


def _calibration_rows(rows: Sequence[dict]) -> tuple[list, np.ndarray]:
    ok = [r for r in map(flat_row, rows) if r["slm_correct"] is not None]
    return [r["confidence"] for r in ok], np.array([bool(r["slm_correct"]) for r in ok], bool)


# ----------------------------------------------------------------------------- charts

def _alt():
    import altair as alt

    return alt


def _color(alt, series: Sequence[str]):
    return alt.Color("series:N", title=None,
                     scale=alt.Scale(domain=list(series), range=[_COLORS[s] for s in series]),
                     legend=alt.Legend(orient="bottom"))


def frontier_chart(rows: Sequence[dict], threshold: float, width: int = 460,
                   height: int = 320):
    """Accuracy vs cost of the cascade over every τ, with baselines and the current τ.

    Layers (``name``): ``cascade`` (line over :func:`corea.metrics.sweep`), ``random`` (dashed:
    :func:`corea.metrics.random_routing_baseline` at deferral 0, 0.1, ..., 1), ``baselines``
    (points: SLM only, LLM only), ``tokprob`` (the same sweep deciding on the token-probability
    signal instead, when the rows carry it: the paper's AvgProb baseline), ``current`` (the
    cascade at ``threshold``, highlighted) and
    ``current_label`` (its τ as text). x is the cost as a share of LLM-only cost when the LLM-only
    cost is > 0, else the deferral rate (share of items sent to the LLM).

    Raises:
        ValueError: no row has both labels.
    """
    alt = _alt()
    conf, s, l_, sc, lc = _cascade_arrays(rows)
    if s.size == 0:
        raise ValueError("no items with both an SLM and an LLM label")
    llm_only = float(lc.sum())
    by_cost = llm_only > 0

    def x_of(row: dict) -> float:
        return row["cost"] / llm_only if by_cost else row["deferral_rate"]

    sweep = [{**r, "x": x_of(r), "series": "cascade (sweep)"}
             for r in metrics.sweep(conf, s, l_, sc, lc)]
    rnd = [{**metrics.random_routing_baseline(k / 10, s, l_, sc, lc), "series": "random routing"}
           for k in range(11)]
    for r in rnd:
        r["x"] = x_of(r)
    base = [{"series": "SLM only", "pass_at_1": float(s.mean()), "deferral_rate": 0.0,
             "cost": float(sc.sum()), "x": float(sc.sum()) / llm_only if by_cost else 0.0},
            {"series": "LLM only", "pass_at_1": float(l_.mean()), "deferral_rate": 1.0,
             "cost": llm_only, "x": 1.0}]
    cur = metrics.cascade_at(float(threshold), conf, s, l_, sc, lc)
    cur = {**cur, "x": x_of(cur), "series": "current τ", "label": f"τ = {threshold:.2f}"}
    labelled = [r for r in rows if r.get("slm_correct") is not None
                and r.get("llm_correct") is not None]
    tp = [r.get("tokprob") for r in labelled]
    has_tp = any(v is not None for v in tp) and len(tp) == s.size
    tok = [{**r, "x": x_of(r), "series": "token probability"}
           for r in metrics.sweep(tp, s, l_, sc, lc)] if has_tp else []
    series = [k for k in _COLORS if has_tp or k != "token probability"]
    color = _color(alt, series)
    x = alt.X("x:Q", title="cost (share of LLM-only)" if by_cost else
              "deferral rate (share sent to the LLM)", axis=alt.Axis(format="%"))
    y = alt.Y("pass_at_1:Q", title="pass@1", axis=alt.Axis(format="%"),
              scale=alt.Scale(zero=False))
    tip = [alt.Tooltip("series:N"), alt.Tooltip("pass_at_1:Q", format=".1%", title="pass@1"),
           alt.Tooltip("deferral_rate:Q", format=".1%", title="deferral"),
           alt.Tooltip("cost:Q", format="$.6f", title="cost (USD)")]
    line = alt.Chart(alt.Data(values=sweep), name="cascade").mark_line(point=True).encode(
        x=x, y=y, color=color, tooltip=[alt.Tooltip("threshold:Q", format=".3f", title="τ")] + tip,
        order="threshold:Q")
    random_line = alt.Chart(alt.Data(values=rnd), name="random").mark_line(
        strokeDash=[6, 4]).encode(x=x, y=y, color=color, tooltip=tip)
    points = alt.Chart(alt.Data(values=base), name="baselines").mark_point(
        filled=True, size=140, shape="square").encode(x=x, y=y, color=color, tooltip=tip)
    current = alt.Chart(alt.Data(values=[cur]), name="current").mark_point(
        filled=True, size=320, shape="diamond", stroke="black", strokeWidth=1).encode(
        x=x, y=y, color=color,
        tooltip=[alt.Tooltip("threshold:Q", format=".3f", title="τ")] + tip)
    label = alt.Chart(alt.Data(values=[cur]), name="current_label").mark_text(
        dx=12, dy=-12, align="left", fontWeight="bold").encode(x=x, y=y, text="label:N")
    layers = [line, random_line, points, current, label]
    if tok:
        layers.insert(1, alt.Chart(alt.Data(values=tok), name="tokprob").mark_line(
            strokeDash=[2, 2]).encode(x=x, y=y, color=color, order="threshold:Q",
                                      tooltip=[alt.Tooltip("threshold:Q", format=".3f",
                                                           title="τ (token prob.)")] + tip))
    c = _counts_note(rows)
    return alt.layer(*layers).properties(
        width=width, height=height,
        title=alt.TitleParams("Accuracy vs cost over τ", subtitle=c))


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
    conf, y = _calibration_rows(rows)
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
    conf, y = _calibration_rows(rows)
    if y.size == 0:
        raise ValueError("no items with an SLM label")
    has = np.array([c is not None for c in conf], dtype=bool)
    c = np.array([x for x in conf if x is not None], dtype=float)
    yy = y[has]
    data = []
    if c.size:
        idx = metrics._bin_index(c, n_bins)
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


# ----------------------------------------------------------------------------- table

def _r(x, digits: int = 4):
    return None if x is None else round(float(x), digits)


def metrics_table(rows: Sequence[dict], threshold: float) -> list[list]:
    """``[[metric, value], ...]`` for the metrics table (fractions on the 0-1 scale, USD).

    Cascade rows (pass@1, deferral rate, cost, cost vs LLM-only, and the SLM-only / LLM-only /
    random-routing pass@1 at the same deferral) use rows with both labels; ECE-10, Brier and AUROC
    use rows with an SLM label and a confidence. A value is None when it is undefined (no such
    rows, AUROC with one class, zero LLM-only cost). Values are rounded to 4 decimals (costs to 8).
    """
    k = label_counts(rows)
    conf, s, l_, sc, lc = _cascade_arrays(rows)
    cur = rr = None
    if s.size:
        cur = metrics.cascade_at(float(threshold), conf, s, l_, sc, lc)
        rr = metrics.random_routing_baseline(cur["deferral_rate"], s, l_, sc, lc)
    cconf, cy = _calibration_rows(rows)
    cal = metrics.calibration_report(cconf, cy) if cy.size else {}
    g = (cur or {}).get
    return [
        ["threshold τ", _r(threshold)],
        ["items with both labels (cascade metrics)", k["n_both"]],
        ["items with an SLM label (calibration)", k["n_slm"]],
        ["excluded: no label", k["n_unlabelled"]],
        ["pass@1 (cascade at τ)", _r(g("pass_at_1"))],
        ["deferral rate", _r(g("deferral_rate"))],
        ["cost (USD)", _r(g("cost"), 8)],
        ["cost vs LLM-only", _r(g("cost_fraction_of_llm_only"))],
        ["SLM-only pass@1", _r(s.mean()) if s.size else None],
        ["LLM-only pass@1", _r(l_.mean()) if s.size else None],
        ["random routing pass@1 (same deferral)", _r((rr or {}).get("pass_at_1"))],
        ["ECE-10 (SLM)", _r(cal.get("ece_10"))],
        ["Brier (SLM)", _r(cal.get("brier"))],
        ["AUROC (SLM)", _r(cal.get("auroc"))],
        ["SLM answers without confidence", cal.get("n_no_confidence", 0)],
    ]


# ----------------------------------------------------------------------------- handlers

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


class ExplorerHandlers:
    """Handlers of the "Threshold explorer" tab, free of widgets so tests can call them directly.
    They never raise: every failure becomes a status message (charts None, table empty).

    Args:
        service: a :class:`corea.service.CoreaService` (for its interaction log), or None.
        runs_root: folder scanned for evaluation runs.
    """

    def __init__(self, service=None, runs_root: str | os.PathLike = "runs"):
        self.service = service
        self.runs_root = Path(runs_root)
        self._run_cache: dict[str, tuple[tuple, list[dict]]] = {}
        self._memo: dict = {}

    # -- sources

    def source_choices(self) -> list[tuple[str, str]]:
        """Dropdown choices ``(label, value)``: each run folder, then the rated interactions."""
        return [(Path(p).name, p) for p in list_runs(self.runs_root)] + \
            [(INTERACTIONS_LABEL, INTERACTIONS)]

    def default_source(self) -> str:
        runs = list_runs(self.runs_root)
        return runs[-1] if runs else INTERACTIONS

    def refresh(self):
        """Rescan ``runs/``: a dropdown update (choices, value) and a status line."""
        import gradio as gr

        try:
            choices = self.source_choices()
            n = len(choices) - 1
            return (gr.update(choices=choices, value=self.default_source()),
                    f"{n} evaluation run(s) found in `{self.runs_root}/`.")
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer refresh failed")
            return gr.update(), f"⚠️ Could not list runs: {exc}"

    def rows(self, source: str | None) -> tuple[list[dict], str | None]:
        """``(rows, problem)`` for a source; ``problem`` is a message when there is nothing to show.
        May raise on an unreadable run or database (the public handlers catch it)."""
        if not source:
            return [], self._empty_message()
        if source == INTERACTIONS:
            store = getattr(self.service, "store", None)
            if store is None:
                why = getattr(self.service, "logging_error", None) or "no interaction log"
                return [], f"Logging is off, so there are no rated interactions ({why})."
            rows = rows_from_interactions(store, memo=self._memo)
            if not rows:
                return [], ("No rated interactions yet: rate answers in the Ask tab (👍, 👎 or a "
                            "corrected answer), or pick an evaluation run.")
            return rows, None
        path = Path(source)
        items = path / "items.jsonl"
        if not items.is_file():
            return [], f"No results in `{source}` (missing items.jsonl)."
        st = items.stat()
        key = (st.st_mtime_ns, st.st_size)
        hit = self._run_cache.get(str(path))
        if hit is None or hit[0] != key:
            hit = (key, rows_from_run(path))
            self._run_cache[str(path)] = hit
        if not hit[1]:
            return [], f"`{source}` has no items yet."
        return hit[1], None

    def _empty_message(self) -> str:
        return (f"No evaluation runs in `{self.runs_root}/` and no source selected. Run "
                "`python -m corea.evaluate --dataset gsm8k --limit 200` to create one, or rate "
                "answers in the Ask tab and pick “Logged interactions (rated)”.")

    @staticmethod
    def _status(source: str, rows: Sequence[dict], notes: Sequence[str]) -> str:
        k = label_counts(rows)
        name = INTERACTIONS_LABEL if source == INTERACTIONS else Path(source).name
        txt = (f"**{name}**: {k['n']} row(s); {k['n_both']} with both labels (cascade), "
               f"{k['n_slm']} with an SLM label (calibration), {k['n_unlabelled']} excluded "
               "(no label).")
        return " ".join([txt, *notes])

    def _frontier_and_table(self, rows, tau, notes: list[str]):
        fig = None
        try:
            fig = frontier_chart(rows, tau)
        except ValueError as exc:
            notes.append(f"Frontier: {exc}.")
        return fig, metrics_table(rows, tau)

    def view(self, source: str | None, tau: float):
        """Everything for a source: ``(frontier, reliability, histogram, table, status)``."""
        try:
            rows, problem = self.rows(source)
            if problem:
                return None, None, None, [], problem
            notes: list[str] = []
            fig, table = self._frontier_and_table(rows, float(tau), notes)
            rel = hist = None
            try:
                rel = reliability_chart(rows)
            except ValueError as exc:
                notes.append(f"Reliability: {exc}.")
            try:
                hist = confidence_histogram(rows)
            except ValueError as exc:
                notes.append(f"Histogram: {exc}.")
            return fig, rel, hist, table, self._status(source, rows, notes)
        except Exception as exc:  # noqa: BLE001 - never a traceback in the UI
            log.exception("explorer view failed")
            return None, None, None, [], f"⚠️ Could not load `{source}`: {exc}"

    def update_tau(self, source: str | None, tau: float):
        """The τ-dependent outputs only: ``(frontier, table, status)``."""
        try:
            rows, problem = self.rows(source)
            if problem:
                return None, [], problem
            notes: list[str] = []
            fig, table = self._frontier_and_table(rows, float(tau), notes)
            return fig, table, self._status(source, rows, notes)
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer update failed")
            return None, [], f"⚠️ Could not update: {exc}"

    def _suggest(self, source, current, name: str, fn, fallback: float | None = None):
        try:
            rows, problem = self.rows(source)
            if problem:
                return current, problem
            conf, s, l_, sc, lc = _cascade_arrays(rows)
            if s.size == 0:
                return current, f"{name}: no items with both labels in this source."
            tau, note = fn(conf, s, l_, sc, lc)
            if tau is None:
                if fallback is not None:
                    return fallback, f"{name}: {note} Slider set to {fallback:.2f}."
                return current, f"{name}: {note}"
            v = slider_value(tau)
            cur = metrics.cascade_at(v, conf, s, l_, sc, lc)
            return v, (f"{name}: τ = {tau:.4g} → slider {v:.2f} (pass@1 "
                       f"{cur['pass_at_1']:.1%}, deferral {cur['deferral_rate']:.1%}, on "
                       f"{s.size} item(s)). {note}").strip()
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer suggestion failed")
            return current, f"⚠️ {name}: {exc}"

    def paper_tau(self, source, current):
        """Slider value τ = LLM pass@1 (COREA paper rule) and a status line."""
        return self._suggest(source, current, "Paper rule (τ = LLM pass@1)",
                             lambda c, s, l_, sc, lc: (paper_threshold(l_), ""))

    def deferral_tau(self, source, current, rate: float = 0.3):
        """Slider value deferring ``rate`` of the items and a status line."""
        return self._suggest(source, current, f"{rate:.0%} deferral",
                             lambda c, s, l_, sc, lc: (target_deferral_threshold(c, rate), ""))

    def certified_tau(self, source, current, alpha: float = 0.02, delta: float = 0.1):
        """Slider value certified by Learn-then-Test (drop ≤ α with prob. ≥ 1 − δ) and a status
        line. The whole source is used as the calibration set; the one-sided "harm" loss is
        tested (its guarantee implies the accuracy-drop one, with far more power). When nothing
        is certified the slider goes to 1.0 (defer everything short of a stated certainty)."""
        def fn(c, s, l_, sc, lc):
            res = certified_threshold(c, s, l_, sc, lc, alpha=alpha, delta=delta, loss="harm")
            if res.threshold is None:
                return None, (f"no τ certified on {res.n} item(s) (p = {res.p_values[0]:.3g} "
                              f"> δ at τ = {res.taus[0]:.2f}): only LLM-only is safe (about "
                              f"{math.ceil(math.log(delta) / math.log(1 - alpha))} items with "
                              "no observed harm are needed at this α and δ).")
            nxt = len(res.certified)
            more = (f" Stopped at τ = {res.taus[nxt]:.2f} (p = {res.p_values[nxt]:.3g})."
                    if nxt < len(res.taus) else "")
            return res.threshold, (f"Accuracy drop ≤ {alpha:g} with probability ≥ "
                                   f"{1 - delta:g} (Learn then Test, fixed sequence).{more}")
        return self._suggest(source, current, f"Certified τ (α={alpha:g}, δ={delta:g})", fn,
                             fallback=1.0)

    @staticmethod
    def use_tau(tau, current=None):
        """``(value for the Ask tab's threshold slider, status line)``; ``current`` is kept when
        ``tau`` is not a number."""
        try:
            v = slider_value(float(tau))
        except (TypeError, ValueError) as exc:
            return current, f"⚠️ Invalid τ: {exc}"
        return v, f"The Ask tab now uses τ = {v:.2f}."
