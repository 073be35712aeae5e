"""The "Threshold explorer" tab: widget-free handlers (tests call them directly) and the metrics
table at τ. The charts are :mod:`corea.eval.charts`; rated interactions are labelled by
:mod:`corea.store.labels`.

An N-tier run (``tiers.jsonl``, :mod:`corea.eval.tier_runs`) also gets the N-tier view: one τ
slider per tier but the last, the metrics at that τ vector (:func:`tier_metrics_table`) and the
accuracy-vs-cost chart of the swept τ vectors with its Pareto front; its two-tier view (the
charts and table above) is its first tier against its last. Two-tier runs look as before.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import gradio as gr

from .. import metrics
from ..auth import Roles, session_of
from ..eval import tiers as tiermod
from ..eval.charts import (calibration_rows, confidence_histogram, frontier_chart, label_counts,
                           flat_rows, reliability_chart, tier_pareto_chart)
from ..eval.deciders import SIGNALS, available
from ..eval.routing import break_even_text, pair_break_even
from ..eval.runs import TIERS_FILE, load_tier_rows, read_run
from ..eval.summary import recorded_taus
from ..eval.scored import ScoredSet, flat_row
from ..eval.thresholds import (certified_threshold, min_items_to_certify, paper_threshold,
                               target_deferral_threshold)
from ..redact import redact
from ..store.labels import rows_from_interactions
from ..threshold_split import dead_threshold_warning, threshold_split
from ..timing import shipped_time_model
from .run_sources import COMMITTED_RUNS, RunSources

log = logging.getLogger(__name__)

__all__ = ["ExplorerHandlers", "metrics_table", "slider_value", "build_tab", "INTERACTIONS",
           "COMMITTED_RUNS",
           "METRICS_HEADERS", "tier_metrics_table", "MAX_TIER_SLIDERS"]

INTERACTIONS = "__interactions__"
INTERACTIONS_LABEL = "Logged interactions (rated)"
METRICS_HEADERS = ["metric", "value"]
MAX_TIER_SLIDERS = 5
"""τ sliders of the N-tier view: cascades of up to ``MAX_TIER_SLIDERS + 1`` tiers."""
RESCAN_S = 20.0
"""Seconds between two rescans of the runs while the page is open (a new run appears by
itself; selecting the tab rescans too)."""


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
    scored = ScoredSet.from_rows(rows)
    s, l_ = scored.slm_correct, scored.llm_correct
    cur = rr = None
    if s.size:
        cur = scored.at(float(threshold))
        rr = scored.random_routing(cur["deferral_rate"])
    cconf, cy = calibration_rows(rows)
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


def _tau_vector(values: Sequence, n: int) -> tuple[list[float] | None, str | None]:
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


def _label_notes(rows: Sequence[dict], counts: dict) -> list[str]:
    """Why a source with graded small-model answers has no cascade metrics (``counts``:
    :func:`corea.eval.charts.label_counts` of ``rows``); [] when it has them."""
    if counts["n_both"] or not counts["n_slm"]:
        return []
    if not any(flat_row(r)["llm_correct"] is not None for r in rows):
        return ["This run has no large-model answers (the small model only), so the cascade "
                "metrics and the frontier are undefined; the calibration metrics use its "
                f"{counts['n_slm']} graded small-model answers."]
    return ["No item has both models' answers graded, so the cascade metrics are undefined."]


def _split(rows: Sequence[dict], tau: float):
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


class ExplorerHandlers:
    """Handlers of the "Threshold explorer" tab, free of widgets so tests can call them directly.
    They never raise: every failure becomes a status message (charts None, table empty).

    A source is one of the listed runs (the evaluation runs under ``runs_root`` and the
    committed ones under ``committed_root``, packed or not, by name) or the rated interactions: an
    owner's are every session's, a visitor's their own session's (:mod:`corea.auth`); any other
    path is refused.

    Args:
        service: a :class:`corea.service.CoreaService` (for its interaction log), or None.
        runs_root: folder scanned for evaluation runs.
        roles: who is an owner (default from the environment).
        committed_root: a second folder scanned for runs, those committed with the code (the
            app passes :data:`COMMITTED_RUNS`); None: ``runs_root`` only.
    """

    def __init__(self, service=None, runs_root: str | os.PathLike = "runs",
                 roles: Roles | None = None,
                 committed_root: str | os.PathLike | None = None):
        self.service = service
        self.sources = RunSources(runs_root, committed_root)
        self.roles = roles or Roles.from_env()
        self._tier_cache: dict[str, tuple[tuple, SimpleNamespace]] = {}  # path -> (stat, data)
        self._memo: dict = {}
        self.time_model = shipped_time_model()  # seconds of the break-even line

    # -- sources

    @property
    def runs_root(self) -> Path:
        return self.sources.runs_root

    def source_choices(self) -> list[tuple[str, str]]:
        """Dropdown choices ``(label, value)``: each listed run by name
        (:meth:`corea.ui.run_sources.RunSources.choices`), then the rated interactions."""
        return self.sources.choices() + [(INTERACTIONS_LABEL, INTERACTIONS)]

    def default_source(self) -> str:
        """:meth:`corea.ui.run_sources.RunSources.default`, else the rated interactions."""
        return self.sources.default() or INTERACTIONS

    def refresh(self, current: str | None = None, request: gr.Request | None = None):
        """Rescan the runs: a dropdown update (choices; ``current`` stays chosen while it is
        listed, else the default) and a status line."""
        try:
            choices = self.source_choices()
            n = len(choices) - 1
            where = f" in `{self.runs_root}/`" if self.roles.is_owner(request) else ""
            n_committed = sum(1 for label, _ in choices if label.endswith("(committed)"))
            also = f" ({n_committed} committed with the code)" if n_committed else ""
            keep = current if current in {v for _, v in choices} else self.default_source()
            return (gr.update(choices=choices, value=keep),
                    f"{n} evaluation run(s) found{where}{also}.")
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer refresh failed")
            return gr.update(), f"⚠️ Could not list runs: {exc}"

    def rescan(self, current: str | None, shown: list | None):
        """Timer / tab-select rescan: ``(dropdown update, choices now shown)``; a no-op update
        when the runs did not change (an open dropdown is left alone), else the new choices with
        ``current`` kept while it is listed. Never raises."""
        try:
            choices = self.source_choices()
        except Exception:  # noqa: BLE001 — the next rescan tries again
            log.exception("explorer rescan failed")
            return gr.update(), shown
        pairs = [list(c) for c in choices]
        if shown is not None and [list(c) for c in shown] == pairs:
            return gr.update(), shown
        values = {v for _, v in choices}
        if current in values:
            return gr.update(choices=choices), pairs
        return gr.update(choices=choices, value=self.default_source()), pairs

    def _session(self, request) -> str | None:
        """``None`` (every session) for an owner, else the visitor's session."""
        if self.roles.is_owner(request):
            return None
        return session_of(request) or "anonymous"

    def _fitted(self, signal: str):
        """The fitted model a learned signal needs: the service's probe or calibrator."""
        if signal == "probe":
            return getattr(self.service, "probe", None)
        if signal == "calibrator":
            return getattr(self.service, "calibrator", None)
        return None

    def signal_choices(self, source: str | None) -> list[tuple[str, str]]:
        """Dropdown choices ``(label, name)``: the deferral signals the source's rows carry the
        inputs for (a learned one only when the service has it fitted for this SLM); rated
        interactions carry the stated confidence only."""
        out = [(SIGNALS["verbal"].label, "verbal")]
        if not source or source == INTERACTIONS:
            return out
        try:
            items = self.sources.items(source)
        except Exception:  # noqa: BLE001 — an unreadable run offers the stated confidence
            return out
        for name in available(items):
            sig = SIGNALS[name]
            if name == "verbal" or sig.when == "oracle" or \
                    (sig.learned and self._fitted(name) is None):
                continue
            if sig.learned and name == "probe" and self._fitted(name).card.position != "end":
                continue
            out.append((sig.label, name))
        return out

    def signal_update(self, source: str | None, current: str | None = None):
        """The signal dropdown for a (new) source: its choices, the current one kept if
        offered, else the stated confidence."""
        choices = self.signal_choices(source)
        names = [n for _, n in choices]
        return gr.update(choices=choices, value=current if current in names else "verbal")

    def rows(self, source: str | None, session_id: str | None = None,
             signal: str = "verbal") -> tuple[list[dict], str | None]:
        """``(rows, problem)`` for a source; ``problem`` is a message when there is nothing to show.
        ``session_id``: the rated interactions of that session only (None: every session's).
        ``signal``: the deferral signal shown as the rows' confidence (runs only).
        May raise on an unreadable run or database (the public handlers catch it)."""
        if not source:
            return [], self._empty_message()
        if source == INTERACTIONS:
            store = getattr(self.service, "store", None)
            if store is None:
                why = getattr(self.service, "logging_error", None) or "no interaction log"
                return [], f"Logging is off, so there are no rated interactions ({why})."
            rows = rows_from_interactions(store, memo=self._memo, session_id=session_id)
            if not rows:
                return [], ("No rated interactions yet: rate answers in the Ask tab (👍, 👎 or a "
                            "corrected answer), or pick an evaluation run.")
            return rows, None
        path = self.sources.path(source)
        if path is None:  # only listed runs, by name
            return [], "Choose one of the listed evaluation runs."
        items = self.sources.items(path.name)
        if not items:
            return [], f"`{source}` has no items yet."
        signal = self.effective_signal(path.name, signal)
        return flat_rows(items, signal, self._fitted(signal)), None

    def effective_signal(self, source: str | None, signal: str | None) -> str:
        """The signal a view of ``source`` decides with: ``signal`` when the source offers it
        (:meth:`signal_choices`), else the stated confidence."""
        if signal not in SIGNALS or signal not in {n for _, n in self.signal_choices(source)}:
            return "verbal"
        return signal

    def _empty_message(self) -> str:
        return (f"No evaluation runs in `{self.runs_root}/` and no source selected. Run "
                "`corea evaluate --dataset gsm8k --limit 200` to create one, or rate "
                "answers in the Ask tab and pick “Logged interactions (rated)”.")

    def _status(self, source: str, rows: Sequence[dict], notes: Sequence[str],
                signal: str = "verbal", tau: float | None = None) -> str:
        """The status line: the source's rows and labels, the deciding signal, why there are no
        cascade metrics when there are none, a dead-threshold warning at ``tau``, then
        ``notes``."""
        k = label_counts(rows)
        name = INTERACTIONS_LABEL if source == INTERACTIONS else Path(source).name
        signal = "verbal" if source == INTERACTIONS else self.effective_signal(source, signal)
        txt = [f"**{name}**: {k['n']} row(s); {k['n_both']} with both labels (cascade), "
               f"{k['n_slm']} with an SLM label (calibration), {k['n_unlabelled']} excluded "
               f"(no label). **Deciding signal:** {SIGNALS[signal].label}.",
               *_label_notes(rows, k)]
        if tau is not None:
            warning = dead_threshold_warning(_split(rows, tau), "items"
                                             if source != INTERACTIONS else "rated turns")
            txt += [warning] if warning else []
        return " ".join([*txt, *notes])

    def _frontier_and_table(self, rows, tau, notes: list[str]):
        fig = None
        try:
            fig = frontier_chart(rows, tau)
        except ValueError as exc:
            notes.append(f"Frontier: {exc}.")
        return fig, metrics_table(rows, tau)

    def break_even(self, source: str | None, request: gr.Request | None = None) -> str:
        """The break-even deferral rate of a run's pair in money and seconds, shown next to the
        slider (:func:`corea.eval.routing.break_even_text`); "" for rated interactions, an
        unlisted source or an unreadable run (never a traceback)."""
        if not source or source == INTERACTIONS:
            return ""
        try:
            path = self.sources.path(source)
            if path is None:
                return ""
            return break_even_text(pair_break_even(self.sources.items(path.name),
                                                   self.time_model))
        except Exception:  # noqa: BLE001 - an optional line; never a traceback in the UI
            log.exception("break-even line failed")
            return ""

    def _say(self, text: str, request) -> str:
        return text if self.roles.is_owner(request) else redact(text)

    def view(self, source: str | None, tau: float, request: gr.Request | None = None,
             signal: str = "verbal"):
        """Everything for a source: ``(frontier, reliability, histogram, table, status)``, with
        ``signal`` as the deciding confidence."""
        try:
            rows, problem = self.rows(source, self._session(request), signal)
            if problem:
                return None, None, None, [], self._say(problem, request)
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
            return fig, rel, hist, table, self._status(source, rows, notes, signal, tau)
        except Exception as exc:  # noqa: BLE001 - never a traceback in the UI
            log.exception("explorer view failed")
            return None, None, None, [], self._say(f"⚠️ Could not load `{source}`: {exc}",
                                                   request)

    def update_tau(self, source: str | None, tau: float, request: gr.Request | None = None,
                   signal: str = "verbal"):
        """The τ-dependent outputs only: ``(frontier, table, status)``."""
        try:
            rows, problem = self.rows(source, self._session(request), signal)
            if problem:
                return None, [], self._say(problem, request)
            notes: list[str] = []
            fig, table = self._frontier_and_table(rows, float(tau), notes)
            return fig, table, self._status(source, rows, notes, signal, tau)
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer update failed")
            return None, [], self._say(f"⚠️ Could not update: {exc}", request)

    def _suggest(self, source, current, name: str, fn, fallback: float | None = None,
                 request=None, signal: str = "verbal"):
        try:
            rows, problem = self.rows(source, self._session(request), signal)
            if problem:
                return current, self._say(problem, request)
            scored = ScoredSet.from_rows(rows)
            if len(scored) == 0:
                return current, f"{name}: no items with both labels in this source."
            tau, note = fn(scored)
            if tau is None:
                if fallback is not None:
                    return fallback, f"{name}: {note} Slider set to {fallback:.2f}."
                return current, f"{name}: {note}"
            v = slider_value(tau)
            cur = scored.at(v)
            return v, (f"{name}: τ = {tau:.4g} → slider {v:.2f} (pass@1 "
                       f"{cur['pass_at_1']:.1%}, deferral {cur['deferral_rate']:.1%}, on "
                       f"{len(scored)} item(s)). {note}").strip()
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer suggestion failed")
            return current, self._say(f"⚠️ {name}: {exc}", request)

    def paper_tau(self, source, current, request: gr.Request | None = None,
                  signal: str = "verbal"):
        """Slider value τ = LLM pass@1 (COREA paper rule) and a status line."""
        return self._suggest(source, current, "Paper rule (τ = LLM pass@1)",
                             lambda ss: (paper_threshold(ss.llm_correct), ""), request=request,
                             signal=signal)

    def deferral_tau(self, source, current, rate: float = 0.3,
                     request: gr.Request | None = None, signal: str = "verbal"):
        """Slider value deferring ``rate`` of the items and a status line."""
        return self._suggest(source, current, f"{rate:.0%} deferral",
                             lambda ss: (target_deferral_threshold(ss.confidence_list(), rate),
                                         ""), request=request, signal=signal)

    def certified_tau(self, source, current, alpha: float = 0.02, delta: float = 0.1,
                      request: gr.Request | None = None, signal: str = "verbal"):
        """Slider value certified by Learn-then-Test (drop ≤ α with prob. ≥ 1 − δ) and a status
        line. The whole source is used as the calibration set; the one-sided "harm" loss is
        tested (its guarantee implies the accuracy-drop one, with far more power). When nothing
        is certified the slider goes to 1.0 (defer everything short of a stated certainty)."""
        def fn(ss: ScoredSet):
            res = certified_threshold(ss.confidence_list(), ss.slm_correct, ss.llm_correct,
                                      alpha=alpha, delta=delta, loss="harm")
            if res.threshold is None:
                return None, (f"no τ certified on {res.n} item(s) (p = {res.p_values[0]:.3g} "
                              f"> δ at τ = {res.taus[0]:.2f}): only LLM-only is safe (about "
                              f"{min_items_to_certify(alpha, delta)} items with "
                              "no observed harm are needed at this α and δ).")
            nxt = len(res.certified)
            more = (f" Stopped at τ = {res.taus[nxt]:.2f} (p = {res.p_values[nxt]:.3g})."
                    if nxt < len(res.taus) else "")
            return res.threshold, (f"Accuracy drop ≤ {alpha:g} with probability ≥ "
                                   f"{1 - delta:g} (Learn then Test, fixed sequence).{more}")
        return self._suggest(source, current, f"Certified τ (α={alpha:g}, δ={delta:g})", fn,
                             fallback=1.0, request=request, signal=signal)

    # -- N tiers

    def _tier_data(self, source: str | None) -> tuple[SimpleNamespace | None, str | None]:
        """``(data, problem)`` of a source's N-tier rows: ``data`` has ``items`` (the gradable
        :class:`corea.eval.tiers.TierItem`), ``models``, ``taus`` (the run's configured vector),
        ``swept`` (the default sweep), ``n_rows``; ``(None, None)`` for a source without
        N-tier rows (a two-tier run, the rated interactions). Cached by the file's size and
        time. May raise on an unreadable file (the public handlers catch it)."""
        if not source or source == INTERACTIONS:
            return None, None
        path = self.sources.path(source)
        if path is None:  # only listed runs, by name
            return None, "Choose one of the listed evaluation runs."
        f = path / TIERS_FILE
        if not f.is_file():
            f = path / (TIERS_FILE + ".gz")
            if not f.is_file():
                return None, None
        st = f.stat()
        key = (st.st_mtime_ns, st.st_size)
        hit = self._tier_cache.get(str(path))
        if hit is None or hit[0] != key:
            rows = load_tier_rows(path)
            data = None
            if rows:
                n = len(rows[0]["tiers"])
                items = [x for x in map(tiermod.tier_item, rows) if x is not None
                         and len(x.tiers) == n]
                swept = (tiermod.sweep(items, tiermod.tau_grid(tiermod.default_tau_values(n), n))
                         if items else [])
                data = SimpleNamespace(items=items, models=[t.get("model") for t in
                                                            rows[0]["tiers"]],
                                       taus=recorded_taus(read_run(path), n), swept=swept,
                                       n_rows=len(rows), n_tiers=n)
            hit = (key, data)
            self._tier_cache[str(path)] = hit
        return hit[1], None

    def tier_controls(self, source: str | None, request: gr.Request | None = None):
        """The N-tier view's widgets for a source: ``(group update, *slider updates)`` — for a
        run with N-tier rows the group shows and one slider per tier but the last (label: the
        tier's model; value: the run's configured τ), else the group hides (a two-tier run
        looks as before). :data:`MAX_TIER_SLIDERS` slider updates."""
        hidden = [gr.update(visible=False) for _ in range(MAX_TIER_SLIDERS)]
        try:
            data, _ = self._tier_data(source)
        except Exception:  # noqa: BLE001 - tiers_view reports the problem
            log.exception("explorer tier controls failed")
            return (gr.update(visible=False), *hidden)
        if data is None or data.n_tiers - 1 > MAX_TIER_SLIDERS:
            return (gr.update(visible=data is not None), *hidden)
        sliders = []
        for k in range(MAX_TIER_SLIDERS):
            if k < data.n_tiers - 1:
                sliders.append(gr.update(visible=True, value=slider_value(data.taus[k]),
                                         label=f"τ of tier {k + 1} ({data.models[k]})"))
            else:
                sliders.append(gr.update(visible=False))
        return (gr.update(visible=True), *sliders)

    def tiers_view(self, source: str | None, taus: Sequence = (),
                   request: gr.Request | None = None):
        """The N-tier view at a τ vector: ``(Pareto chart, metrics table, status)``. ``taus``:
        the sliders' values (one per tier but the last; extra values are ignored); a missing,
        non-numeric or out-of-range τ gives a message instead. Never raises."""
        try:
            data, problem = self._tier_data(source)
            if problem:
                return None, [], self._say(problem, request)
            if data is None:
                return None, [], "This source has no N-tier rows (a two-tier run)."
            n = data.n_tiers
            if n - 1 > MAX_TIER_SLIDERS:
                return None, [], (f"This run has {n} tiers; the explorer shows cascades of up "
                                  f"to {MAX_TIER_SLIDERS + 1} (see `corea report`).")
            vec, why = _tau_vector(taus, n - 1)
            if why:
                return None, [], why
            if not data.items:
                return None, [], (f"No item scored by every tier is gradable yet "
                                  f"({data.n_rows} row(s)).")
            fig = tier_pareto_chart(data.items, vec, data.models, data.swept)
            table = tier_metrics_table(data.items, vec, data.models)
            name = Path(str(source)).name
            return fig, table, (
                f"**{name}**: {n} tiers (" + " → ".join(f"`{m}`" for m in data.models)
                + f"), {len(data.items)} gradable item(s) of {data.n_rows}; "
                f"{len(data.swept)} τ vectors swept. The charts above compare the first tier "
                "with the last.")
        except Exception as exc:  # noqa: BLE001 - never a traceback in the UI
            log.exception("explorer tier view failed")
            return None, [], self._say(f"⚠️ Could not show the tiers of `{source}`: {exc}",
                                       request)

    @staticmethod
    def use_tau(tau, current=None):
        """``(value for the Ask tab's threshold slider, status line)``; ``current`` is kept when
        ``tau`` is not a number."""
        try:
            v = slider_value(float(tau))
        except (TypeError, ValueError) as exc:
            return current, f"⚠️ Invalid τ: {exc}"
        return v, f"The Ask tab now uses τ = {v:.2f}."


def _rescan_by_itself(ex: ExplorerHandlers, source: gr.Dropdown, tab: gr.Tab | None) -> None:
    """A run added later (an evaluation, a training job's) appears without "Rescan runs": the
    source dropdown is rescanned every :data:`RESCAN_S` seconds and when ``tab`` is selected."""
    shown = gr.State(None)
    rescan = {"fn": ex.rescan, "inputs": [source, shown], "outputs": [source, shown],
              "api_visibility": "private", "show_progress": "hidden"}
    gr.Timer(RESCAN_S).tick(**rescan)
    if tab is not None:
        tab.select(**rescan)


def _tier_section(ex: ExplorerHandlers, demo: gr.Blocks, source: gr.Dropdown,
                  tau0: float) -> None:
    """The N-tier view (shown for a run with tiers.jsonl): one τ slider per tier but the last,
    its status, chart and table, and their events."""
    with gr.Group(visible=False, elem_id="corea-explorer-tiers") as ex_tiers:
        gr.Markdown("#### N tiers: one τ per tier but the last")
        ex_tier_taus = [gr.Slider(0.0, 1.0, value=tau0, step=0.01, label=f"τ of tier {k + 1}",
                                  visible=False, elem_id=f"corea-explorer-tier-tau-{k + 1}")
                        for k in range(MAX_TIER_SLIDERS)]
        ex_tier_status = gr.Markdown(elem_id="corea-explorer-tier-status")
        with gr.Row():
            ex_tier_chart = gr.Plot(label="Accuracy vs cost over τ vectors")
            ex_tier_table = gr.Dataframe(headers=METRICS_HEADERS, interactive=False,
                                         label="Metrics at the τ vector",
                                         elem_id="corea-explorer-tier-table")

    def tiers_view(source, t1, t2, t3, t4, t5, request: gr.Request):
        return ex.tiers_view(source, [t1, t2, t3, t4, t5], request)

    tier_inputs = [source, *ex_tier_taus]
    tier_outputs = [ex_tier_chart, ex_tier_table, ex_tier_status]
    source.change(ex.tier_controls, source, [ex_tiers, *ex_tier_taus]).then(
        tiers_view, tier_inputs, tier_outputs)
    for s in ex_tier_taus:
        s.change(tiers_view, tier_inputs, tier_outputs, trigger_mode="always_last")
    demo.load(ex.tier_controls, source, [ex_tiers, *ex_tier_taus]).then(
        tiers_view, tier_inputs, tier_outputs)


def _break_even_line(ex: ExplorerHandlers, demo: gr.Blocks, source: gr.Dropdown) -> None:
    """The break-even deferral line under the slider (:meth:`ExplorerHandlers.break_even`),
    rewritten when the source changes and on page load."""
    line = gr.Markdown(elem_id="corea-explorer-break-even")
    source.change(ex.break_even, [source], line)
    demo.load(ex.break_even, [source], line)


def build_tab(ex: ExplorerHandlers, demo: gr.Blocks, ask: SimpleNamespace,
              tab: gr.Tab | None = None) -> None:
    """The explorer tab's widgets and events (call inside its ``gr.Tab``); ``ask.threshold`` is
    the Ask tab's slider that "Use this τ" moves. The runs are rescanned every :data:`RESCAN_S`
    seconds and when ``tab`` (the explorer's ``gr.Tab``) is selected."""
    settings = ex.service.settings if ex.service is not None else None
    tau0 = settings.threshold if settings is not None else 0.7
    with gr.Row():
        ex_source = gr.Dropdown(ex.source_choices(), value=ex.default_source(),
                                label="Data: an evaluation run or rated interactions",
                                elem_id="corea-explorer-source", scale=4)
        ex_refresh = gr.Button("Rescan runs", scale=1)
    ex_signal = gr.Dropdown(ex.signal_choices(ex.default_source()), value="verbal",
                            label="Deciding signal: the number compared with τ",
                            elem_id="corea-explorer-signal")
    with gr.Row():
        ex_tau = gr.Slider(0.0, 1.0, value=tau0, step=0.01, label="Threshold τ",
                           elem_id="corea-explorer-threshold",
                           info="Defer iff confidence < τ or none stated", scale=4)
        ex_use = gr.Button("Use this τ", variant="primary", scale=1, elem_id="corea-explorer-use")
    _break_even_line(ex, demo, ex_source)
    with gr.Row():
        ex_paper = gr.Button("τ = LLM pass@1 (paper)")
        ex_defer = gr.Button("τ for 30% deferral")
        ex_cert = gr.Button("certified τ (α=0.02, δ=0.1)")
    # a τ rule's explanation has its own place: the slider's change event rewrites the status
    # line, which used to wipe the explanation about 0.2 s after it appeared
    ex_rule = gr.Markdown(elem_id="corea-explorer-rule")
    ex_status = gr.Markdown(elem_id="corea-explorer-status")
    with gr.Row():
        ex_frontier = gr.Plot(label="Accuracy vs cost")
        ex_table = gr.Dataframe(headers=METRICS_HEADERS, interactive=False, label="Metrics at τ",
                                elem_id="corea-explorer-table")
    with gr.Row():
        ex_reliability = gr.Plot(label="Reliability diagram")
        ex_hist = gr.Plot(label="Confidence histogram")
    _tier_section(ex, demo, ex_source, tau0)

    ex_all = [ex_frontier, ex_reliability, ex_hist, ex_table, ex_status]
    inputs = [ex_source, ex_tau, ex_signal]

    # the signal travels with each call (one visitor's choice never changes another's view)
    def view(source, tau, signal, request: gr.Request):
        return ex.view(source, tau, request, signal=signal)

    def update_tau(source, tau, signal, request: gr.Request):
        return ex.update_tau(source, tau, request, signal=signal)

    def paper_tau(source, current, signal, request: gr.Request):
        return ex.paper_tau(source, current, request=request, signal=signal)

    def deferral_tau(source, current, signal, request: gr.Request):
        return ex.deferral_tau(source, current, request=request, signal=signal)

    def certified_tau(source, current, signal, request: gr.Request):
        return ex.certified_tau(source, current, request=request, signal=signal)

    ex_source.change(ex.signal_update, [ex_source, ex_signal], ex_signal).then(
        view, inputs, ex_all)
    ex_signal.change(view, inputs, ex_all)
    def refresh(current, request: gr.Request):
        return ex.refresh(current, request)

    ex_refresh.click(refresh, [ex_source], [ex_source, ex_status]).then(
        view, inputs, ex_all)
    _rescan_by_itself(ex, ex_source, tab)
    ex_tau.change(update_tau, inputs, [ex_frontier, ex_table, ex_status],
                  trigger_mode="always_last")
    ex_paper.click(paper_tau, inputs, [ex_tau, ex_rule])
    ex_defer.click(deferral_tau, inputs, [ex_tau, ex_rule])
    ex_cert.click(certified_tau, inputs, [ex_tau, ex_rule])
    def clear_rule():
        return ""

    # a rule's τ belongs to the data and the signal it came from
    ex_source.change(clear_rule, None, ex_rule, api_visibility="private")
    ex_signal.change(clear_rule, None, ex_rule, api_visibility="private")
    ex_use.click(ex.use_tau, [ex_tau, ask.threshold], [ask.threshold, ex_status])
    demo.load(ex.signal_update, [ex_source, ex_signal], ex_signal).then(view, inputs, ex_all)

