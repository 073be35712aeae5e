"""The "Threshold explorer" tab: widget-free handlers (tests call them directly) and its layout.
:class:`ExplorerHandlers` loads and chooses the runs and draws the charts; its τ rules are
:mod:`corea.ui.explorer_tau`, its N-tier view :mod:`corea.ui.explorer_tiers`, the metrics tables
:mod:`corea.ui.explorer_tables`. The charts are :mod:`corea.eval.charts`; rated interactions are
labelled by :mod:`corea.store.labels`.

A run of three tiers or more (its rows' tier records, :mod:`corea.eval.records`) also gets the
N-tier view: one τ
slider per tier but the last, the metrics at that τ vector (:func:`tier_metrics_table`) and the
accuracy-vs-cost chart of the swept τ vectors with its Pareto front; its two-tier view (the
charts and table above) is its first tier against its last. Two-tier runs look as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import gradio as gr

from ..auth import Roles, session_of
from ..eval.charts import (confidence_histogram, frontier_chart, label_counts, flat_rows,
                           reliability_chart)
from ..signals.registry import SIGNALS, available
from ..eval.routing import break_even_text, pair_break_even
from ..redact import redact
from ..store.labels import rows_from_interactions
from ..threshold_split import dead_threshold_warning
from ..timing import shipped_time_model
from .explorer_tables import (INTERACTIONS, INTERACTIONS_LABEL, MAX_TIER_SLIDERS,
                              METRICS_HEADERS, label_notes, metrics_table, slider_value,
                              tau_split, tier_metrics_table)
from .explorer_tau import TauRules
from .explorer_tiers import TierViews, tier_section
from .run_sources import COMMITTED_RUNS, RunSources

log = logging.getLogger(__name__)

__all__ = ["ExplorerHandlers", "metrics_table", "slider_value", "build_tab", "INTERACTIONS",
           "COMMITTED_RUNS",
           "METRICS_HEADERS", "tier_metrics_table", "MAX_TIER_SLIDERS"]

RESCAN_S = 20.0
"""Seconds between two rescans of the runs while the page is open (a new run appears by
itself; selecting the tab rescans too)."""


class ExplorerHandlers(TauRules, TierViews):
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
        """Dropdown choices ``(label, name)``: the registry's signals that decide after solving
        whose inputs the source's rows carry (a learned one only when the service has it fitted
        for this SLM); rated interactions carry the stated confidence only."""
        out = [(SIGNALS["verbal"].label, "verbal")]
        if not source or source == INTERACTIONS:
            return out
        try:
            items = self.sources.items(source)
        except Exception:  # noqa: BLE001 — an unreadable run offers the stated confidence
            return out
        for name in available(items):
            sig = SIGNALS[name]
            if name == "verbal" or sig.when != "after" or \
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
               *label_notes(rows, k)]
        if tau is not None:
            warning = dead_threshold_warning(tau_split(rows, tau), "items"
                                             if source != INTERACTIONS else "rated turns")
            txt += [warning] if warning else []
        return " ".join([*txt, *notes])

    def _frontier_and_table(self, rows, tau, notes: list[str]):
        fig = None
        try:
            fig = frontier_chart(rows, tau)
        except ValueError as exc:
            notes.append(f"Frontier: {exc}.")
        return fig, metrics_table(rows, tau, self.time_model)

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
    tier_section(ex, demo, ex_source, tau0)

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
