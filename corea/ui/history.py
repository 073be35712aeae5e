"""The History tab: the logged interactions (filtered by rating, decision, model) and the export
of rated ones as JSONL. :class:`HistoryHandlers` are free of widgets (tests call them directly);
:func:`build_tab` lays the tab out.
"""

from __future__ import annotations

import logging
import os
import tempfile

import gradio as gr

from ..service import CoreaService

log = logging.getLogger("corea.app")

__all__ = ["HistoryHandlers", "build_tab", "HEADERS"]

HEADERS = ["id", "time (UTC)", "status", "question", "SLM answer", "confidence", "decision",
           "final model", "final answer", "rating", "correction"]


class HistoryHandlers:
    """Args:
        service: the cascade + log whose interactions are listed.
    """

    def __init__(self, service: CoreaService):
        self.service = service

    def history_table(self, rated: str, deferred: str, model: str):
        """Rows for the History tab and a status line."""
        store = self.service.store
        if store is None:
            return [], f"Logging is off: {self.service.logging_error}"
        try:
            rows = store.list_interactions(
                limit=200, rated={"Rated": True, "Unrated": False}.get(rated),
                deferred={"Deferred": True, "Kept by SLM": False}.get(deferred),
                model=(model or "").strip() or None)
        except Exception as exc:
            log.exception("history failed")
            return [], f"⚠️ Could not read the log: {exc}"
        table = [[r["id"], str(r["created_at"])[:19], r["status"], r["question"][:80],
                  r["slm_answer"], None if r["confidence"] is None else round(r["confidence"], 2),
                  r["decision_reason"], r["final_model"], r["final_answer"],
                  r.get("rating_thumbs"), r.get("rating_correction")] for r in rows]
        return table, f"{len(rows)} interaction(s), newest first."

    def export_jsonl(self):
        """Write rated interactions to a temporary JSONL file; returns ``(path, status)``."""
        store = self.service.store
        if store is None:
            return None, f"Logging is off: {self.service.logging_error}"
        fd, path = tempfile.mkstemp(prefix="corea-rated-", suffix=".jsonl")
        os.close(fd)
        try:
            n = store.export_rated_jsonl(path)
        except Exception as exc:
            log.exception("export failed")
            return None, f"⚠️ Export failed: {exc}"
        return path, f"Exported {n} rated interaction(s)."


def build_tab(h: HistoryHandlers, demo: gr.Blocks) -> None:
    """The History tab's widgets and events (call inside ``gr.Tab("History")``)."""
    with gr.Row():
        f_rated = gr.Radio(["All", "Rated", "Unrated"], value="All", label="Rating")
        f_deferred = gr.Radio(["All", "Deferred", "Kept by SLM"], value="All", label="Decision")
        f_model = gr.Textbox(label="Model name contains / equals", value="")
        refresh = gr.Button("Refresh")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True)
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
    demo.load(h.history_table, filters, [table, table_status])
