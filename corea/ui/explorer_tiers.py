"""The Threshold explorer's N-tier view: one τ slider per tier but the last, the metrics at that τ
vector and the Pareto chart of the swept vectors (:class:`TierViews`, a part of
:class:`corea.ui.explorer.ExplorerHandlers`, and its layout :func:`tier_section`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Sequence

import gradio as gr

from ..eval import tiers as tiermod
from ..eval.charts import tier_pareto_chart
from ..eval.records import is_pending, n_tiers_of
from ..eval.runs import items_file, read_run
from ..eval.summary import recorded_taus
from .explorer_tables import (INTERACTIONS, MAX_TIER_SLIDERS, METRICS_HEADERS, slider_value,
                              tau_vector, tier_metrics_table)

if TYPE_CHECKING:
    from .explorer import ExplorerHandlers

log = logging.getLogger("corea.ui.explorer")

__all__ = ["TierViews", "tier_section"]


class TierViews:
    """The N-tier handlers of :class:`corea.ui.explorer.ExplorerHandlers` (which provides
    ``sources``, ``_tier_cache`` and ``_say``). They never raise."""

    def _tier_data(self, source: str | None) -> tuple[SimpleNamespace | None, str | None]:
        """``(data, problem)`` of a source's N-tier view, from the tier records of its rows
        (:mod:`corea.eval.records`): ``data`` has ``items`` (the gradable
        :class:`corea.eval.tiers.TierItem`), ``models``, ``taus`` (the run's configured vector),
        ``swept`` (the default sweep), ``n_rows``; ``(None, None)`` for a source of two tiers
        (a two-tier run, the rated interactions). Cached by the rows' file size and time. May
        raise on an unreadable file (the public handlers catch it)."""
        if not source or source == INTERACTIONS:
            return None, None
        path = self.sources.path(source)
        if path is None:  # only listed runs, by name
            return None, "Choose one of the listed evaluation runs."
        f = items_file(path)
        if f is None:
            return None, None
        st = f.stat()
        key = (st.st_mtime_ns, st.st_size)
        hit = self._tier_cache.get(str(path))
        if hit is None or hit[0] != key:
            rows = [r for r in self.sources.items(source) if not is_pending(r)]
            n = n_tiers_of(rows[0]) if rows else 2
            data = None
            if n > 2:
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
            vec, why = tau_vector(taus, n - 1)
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


def tier_section(ex: ExplorerHandlers, demo: gr.Blocks, source: gr.Dropdown,
                 tau0: float) -> None:
    """The N-tier view (shown for a run of three tiers or more): one τ slider per tier but the last,
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
