"""The "Threshold explorer" tab: widget-free handlers (tests call them directly) and the metrics
table at τ. The charts are :mod:`corea.eval.charts`; rated interactions are labelled by
:mod:`corea.store.labels`.
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
from ..eval.charts import (calibration_rows, confidence_histogram, frontier_chart, label_counts,
                           flat_rows, reliability_chart)
from ..eval.deciders import SIGNALS, available
from ..eval.runs import load_results
from ..eval.runs import list_runs
from ..eval.scored import ScoredSet
from ..eval.thresholds import certified_threshold, paper_threshold, target_deferral_threshold
from ..redact import redact
from ..store.labels import rows_from_interactions

log = logging.getLogger(__name__)

__all__ = ["ExplorerHandlers", "metrics_table", "slider_value", "build_tab", "INTERACTIONS",
           "METRICS_HEADERS"]

INTERACTIONS = "__interactions__"
INTERACTIONS_LABEL = "Logged interactions (rated)"
METRICS_HEADERS = ["metric", "value"]


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

    A source is one of the listed runs (the published evaluation runs under ``runs_root``) or the
    rated interactions: an owner's are every session's, a visitor's their own session's
    (:mod:`corea.auth`); any other path is refused.

    Args:
        service: a :class:`corea.service.CoreaService` (for its interaction log), or None.
        runs_root: folder scanned for evaluation runs.
        roles: who is an owner (default from the environment).
    """

    def __init__(self, service=None, runs_root: str | os.PathLike = "runs",
                 roles: Roles | None = None):
        self.service = service
        self.runs_root = Path(runs_root)
        self.roles = roles or Roles.from_env()
        self._run_cache: dict[str, tuple[tuple, list[dict]]] = {}  # path -> (stat, item rows)
        self._memo: dict = {}

    # -- sources

    def source_choices(self) -> list[tuple[str, str]]:
        """Dropdown choices ``(label, value)``: each run folder (by name: no server path goes
        to the page), then the rated interactions."""
        return [(Path(p).name, Path(p).name) for p in list_runs(self.runs_root)] + \
            [(INTERACTIONS_LABEL, INTERACTIONS)]

    def default_source(self) -> str:
        runs = list_runs(self.runs_root)
        return Path(runs[-1]).name if runs else INTERACTIONS

    def refresh(self, request: gr.Request | None = None):
        """Rescan ``runs/``: a dropdown update (choices, value) and a status line."""
        try:
            choices = self.source_choices()
            n = len(choices) - 1
            where = f" in `{self.runs_root}/`" if self.roles.is_owner(request) else ""
            return (gr.update(choices=choices, value=self.default_source()),
                    f"{n} evaluation run(s) found{where}.")
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer refresh failed")
            return gr.update(), f"⚠️ Could not list runs: {exc}"

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
            items = self._items(source)
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

    def _items(self, source: str) -> list[dict]:
        """The item rows of a listed run (cached by the file's size and time)."""
        path = self.runs_root / Path(source).name
        items = path / "items.jsonl"
        st = items.stat()
        key = (st.st_mtime_ns, st.st_size)
        hit = self._run_cache.get(str(path))
        if hit is None or hit[0] != key:
            hit = (key, load_results(path))
            self._run_cache[str(path)] = hit
        return hit[1]

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
        path = Path(source)
        if not path.is_absolute() and len(path.parts) == 1:  # a run's name
            path = self.runs_root / path
        if path.resolve().parent != self.runs_root.resolve():  # only runs under runs_root
            return [], "Choose one of the listed evaluation runs."
        if not (path / "items.jsonl").is_file():
            return [], f"No results in `{source}` (missing items.jsonl)."
        items = self._items(path.name)
        if not items:
            return [], f"`{source}` has no items yet."
        if signal not in SIGNALS or signal not in dict((n, 1) for _, n in
                                                        self.signal_choices(path.name)):
            signal = "verbal"
        return flat_rows(items, signal, self._fitted(signal)), None

    def _empty_message(self) -> str:
        return (f"No evaluation runs in `{self.runs_root}/` and no source selected. Run "
                "`corea evaluate --dataset gsm8k --limit 200` to create one, or rate "
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
            return fig, rel, hist, table, self._status(source, rows, notes)
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
            return fig, table, self._status(source, rows, notes)
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
                              f"{math.ceil(math.log(delta) / math.log(1 - alpha))} items with "
                              "no observed harm are needed at this α and δ).")
            nxt = len(res.certified)
            more = (f" Stopped at τ = {res.taus[nxt]:.2f} (p = {res.p_values[nxt]:.3g})."
                    if nxt < len(res.taus) else "")
            return res.threshold, (f"Accuracy drop ≤ {alpha:g} with probability ≥ "
                                   f"{1 - delta:g} (Learn then Test, fixed sequence).{more}")
        return self._suggest(source, current, f"Certified τ (α={alpha:g}, δ={delta:g})", fn,
                             fallback=1.0, request=request, signal=signal)

    @staticmethod
    def use_tau(tau, current=None):
        """``(value for the Ask tab's threshold slider, status line)``; ``current`` is kept when
        ``tau`` is not a number."""
        try:
            v = slider_value(float(tau))
        except (TypeError, ValueError) as exc:
            return current, f"⚠️ Invalid τ: {exc}"
        return v, f"The Ask tab now uses τ = {v:.2f}."


def build_tab(ex: ExplorerHandlers, demo: gr.Blocks, ask: SimpleNamespace) -> None:
    """The explorer tab's widgets and events (call inside its ``gr.Tab``); ``ask.threshold`` is
    the Ask tab's slider that "Use this τ" moves."""
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
    ex_refresh.click(ex.refresh, None, [ex_source, ex_status]).then(
        view, inputs, ex_all)
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
