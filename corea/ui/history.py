"""The History tab: the logged interactions (filtered by rating, decision, model) and the export
of rated ones as JSONL. A visitor sees and exports their own browser session's turns only; an
owner (:mod:`corea.auth`) every session's. :class:`HistoryHandlers` are free of widgets (tests call them directly);
:func:`build_tab` lays the tab out.
"""

from __future__ import annotations

import logging
import os
import tempfile
from types import SimpleNamespace

import gradio as gr

from ..auth import Roles, session_of
from ..policy import shown
from ..redact import plain_logging_off
from ..service import CoreaService

log = logging.getLogger("corea.app")

__all__ = ["HistoryHandlers", "build_tab", "HEADERS"]

HEADERS = ["id", "time (UTC)", "status", "question", "SLM answer", "deciding confidence", "decision",
           "final model", "final answer", "rating", "correction", "tiers"]


def solved_by(tier: dict) -> str:
    """How a logged tier solved, for the tiers cell: "" for chain of thought (``cot``, the
    default), " · by a program" (``pot``), " · words + program, agreed" / "disagreed"
    (``mot``). Read from the record's ``extra["solve"]`` and ``extra["agreement"]``
    (:class:`corea.events.ModelOutput` fields without a column)."""
    extra = tier.get("extra") or {}
    mode = extra.get("solve")
    if mode == "pot":
        return " · by a program"
    if mode == "mot":
        agreed = {True: ", agreed", False: ", disagreed"}.get(extra.get("agreement"), "")
        return f" · words + program{agreed}"
    return ""


def tiers_cell(tiers: list[dict]) -> str:
    """Every tier that ran, in order: its model, its answer, how it solved when not in words
    (:func:`solved_by`) and its decision; ✓ marks the one that answered (``tiers``:
    :data:`corea.store.tiers.TIER_KEYS` records)."""
    return " → ".join(f"{t['model']}: {t['answer'] if t['answer'] is not None else '—'}"
                      + solved_by(t) + (f" ({t['decision']})" if t["decision"] else "")
                      + (" ✓" if t["answered"] else "") for t in tiers)


def confidence_cell(row: dict) -> str | None:
    """The turn's one confidence, as its badge shows it: the number that decided (the first
    tier's ``signal_value``, :func:`corea.policy.shown` in percent against its τ), else — for a
    turn logged without a decision — the stated confidence; ``None`` when there is neither."""
    first = (row.get("tiers") or [{}])[0]
    value, tau = first.get("signal_value"), first.get("threshold")
    if first.get("signal") is None or tau is None:
        value, tau = row.get("confidence"), 0.5
    return None if value is None else shown(value, tau, percent=True)


class HistoryHandlers:
    """Args:
        service: the cascade + log whose interactions are listed.
        roles: who is an owner (default from the environment).
    """

    def __init__(self, service: CoreaService, roles: Roles | None = None):
        self.service = service
        self.roles = roles or Roles.from_env()

    def _scope(self, request) -> tuple[str | None, str, bool]:
        """``(session filter, words, owner)``: ``None`` (all sessions) for an owner."""
        if self.roles.is_owner(request):
            return None, "all sessions", True
        return session_of(request) or "anonymous", "this browser session", False

    def _off(self, owner: bool) -> str:
        waiting = self.service.log_status().message(owner)  # turns kept in the journal
        return waiting or (f"Logging is off: {self.service.logging_error}" if owner
                           else plain_logging_off())

    def history_table(self, rated: str, deferred: str, model: str,
                      request: gr.Request | None = None):
        """Rows for the History tab and a status line (a visitor's own session only)."""
        sid, words, owner = self._scope(request)
        store = self.service.store
        if store is None:
            return [], self._off(owner)
        try:
            rows = store.list_interactions(
                limit=200, rated={"Rated": True, "Unrated": False}.get(rated),
                deferred={"Deferred": True, "Kept by SLM": False}.get(deferred),
                model=(model or "").strip() or None, session_id=sid)
        except Exception as exc:
            log.exception("history failed")
            return [], "⚠️ Could not read the log" + (f": {exc}" if owner else ".")
        table = [[r["id"], str(r["created_at"])[:19], r["status"], r["question"][:80],
                  r["slm_answer"], confidence_cell(r),
                  r["decision_reason"], r["final_model"], r["final_answer"],
                  r.get("rating_thumbs"), r.get("rating_correction"),
                  tiers_cell(r.get("tiers") or [])] for r in rows]
        return table, f"{len(rows)} interaction(s) of {words}, newest first."

    def export_jsonl(self, request: gr.Request | None = None):
        """Write rated interactions (a visitor's own session's only) to a temporary JSONL file;
        returns ``(path, status)``."""
        sid, words, owner = self._scope(request)
        store = self.service.store
        if store is None:
            return None, self._off(owner)
        fd, path = tempfile.mkstemp(prefix="corea-rated-", suffix=".jsonl")
        os.close(fd)
        try:
            n = store.export_rated_jsonl(path, session_id=sid)
        except Exception as exc:
            log.exception("export failed")
            return None, "⚠️ Export failed" + (f": {exc}" if owner else ".")
        return path, f"Exported {n} rated interaction(s) of {words}."


def build_tab(h: HistoryHandlers, demo: gr.Blocks) -> SimpleNamespace:
    """The History tab's widgets and events (call inside ``gr.Tab("History")``). Returns
    ``refresh`` (the table handler), ``inputs`` and ``outputs`` for the app to refresh the table
    when the role changes."""
    with gr.Row():
        f_rated = gr.Radio(["All", "Rated", "Unrated"], value="All", label="Rating")
        f_deferred = gr.Radio(["All", "Deferred", "Kept by SLM"], value="All", label="Decision")
        f_model = gr.Textbox(label="Model name contains / equals", value="")
        refresh = gr.Button("Refresh")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="corea-history")
    table_status = gr.Markdown()
    with gr.Row():
        export = gr.Button("Export rated interactions (JSONL)")
        export_file = gr.File(label="Export", interactive=False)
    export_status = gr.Markdown()

    filters = [f_rated, f_deferred, f_model]
    refresh.click(h.history_table, filters, [table, table_status])
    for f in filters:
        f.change(h.history_table, filters, [table, table_status])
    export.click(h.export_jsonl, None, [export_file, export_status])
    demo.load(h.history_table, filters, [table, table_status], api_visibility="private")
    return SimpleNamespace(refresh=h.history_table, inputs=filters,
                           outputs=[table, table_status])
