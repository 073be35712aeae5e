"""COREA web app (Gradio 6): a thin UI over :class:`corea.service.CoreaService`.

Run ``python app.py`` and open http://127.0.0.1:7860. Nothing heavy happens at import: models load
on the first question, once, shared by all sessions. The module-level ``demo`` is what Hugging Face
Spaces serves.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Any

import gradio as gr

from corea.config import load_settings
from corea.ui.explorer import METRICS_HEADERS, ExplorerHandlers
from corea.events import (CascadeResult, Decision, Final, LLMDelta, LLMDone, LLMStarted,
                          SLMDelta, SLMDone, SLMStarted)
from corea.service import CoreaService
from corea.ui.calibration import CalibrationHandlers
from corea.ui.training import TrainingHandlers
from corea.validation import InvalidQuestion
from corea.zerogpu import gpu

log = logging.getLogger("corea.app")

# --------------------------------------------------------------------------- presentation helpers


def confidence_badge(confidence: float | None, threshold: float) -> str:
    """Markdown badge for a confidence in [0, 1]: 🟢 kept (≥ τ), 🟠 below τ, ⚪ none."""
    if confidence is None:
        return "⚪ **confidence: none stated**"
    dot = "🟢" if confidence >= threshold else "🟠"
    return f"{dot} **stated confidence {confidence * 100:.0f}%**"


def decision_icon(reason: str) -> str:
    return {"confident": "✅", "low_confidence": "↪️", "no_confidence": "↪️",
            "slm_error": "⚠️", "llm_error": "⚠️"}.get(reason, "")


def turn_details(result: CascadeResult) -> str:
    """One-line summary of a finished turn: final model, tokens, latency (s), cost (USD)."""
    parts = [f"**Final answer:** {result.final_answer if result.final_answer is not None else '—'}",
             f"by **{result.final_model or 'no model'}**",
             f"tokens in/out {result.prompt_tokens}/{result.completion_tokens}",
             f"latency {result.latency_s:.1f} s",
             f"cost ${result.cost_usd:.6f}"]
    if result.interaction_id is not None:
        parts.append(f"logged as #{result.interaction_id}")
    if result.status != "ok":
        parts.append(f"status: {result.status}")
    return " · ".join(parts)


def _snapshot(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the chat for one streamed update (later deltas must not change sent updates)."""
    return [{**m, "metadata": dict(m.get("metadata") or {})} for m in history]


def _msg(content: str, title: str | None = None, status: str | None = None,
         duration: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if title is not None:
        meta["title"] = title
    if status is not None:
        meta["status"] = status
    if duration is not None:
        meta["duration"] = round(duration, 1)
    return {"role": "assistant", "content": content, "metadata": meta}


class TurnView:
    """Turns the cascade's events into Gradio chat messages for one question."""

    def __init__(self, history: list[dict[str, Any]], threshold: float):
        self.history = history
        self.threshold = threshold
        self.slm_idx: int | None = None
        self.llm_idx: int | None = None
        self.result: CascadeResult | None = None

    def apply(self, ev) -> None:
        h = self.history
        if isinstance(ev, SLMStarted):
            h.append(_msg("", title=f"🧠 Small model reasoning — {ev.model}", status="pending"))
            self.slm_idx = len(h) - 1
        elif isinstance(ev, SLMDelta):
            h[self.slm_idx]["content"] += ev.text
        elif isinstance(ev, SLMDone):
            out = ev.output
            m = h[self.slm_idx]
            m["metadata"].update(status="done", duration=round(out.latency_s, 1))
            if not m["content"]:
                m["content"] = "(no output)"
            answer = out.answer if out.answer is not None else "no answer found"
            how = " (elicited)" if out.answer_method == "forced" else ""
            conf_how = {"forced": " (elicited)", "prior": " (stated before solving)"}.get(
                out.confidence_method or "", "")
            err = f"\n\n⚠️ {out.error}" if out.error else ""
            h.append(_msg(f"**Small model's answer{how}:** {answer}\n\n"
                          f"{confidence_badge(out.confidence, self.threshold)}{conf_how}{err}"))
        elif isinstance(ev, Decision):
            note = f"\n\n_{ev.info.signal_note}_" if ev.info.signal_note else ""
            h.append(_msg(f"{decision_icon(ev.info.reason)} {ev.info.message}{note}"))
        elif isinstance(ev, LLMStarted):
            h.append(_msg(f"**Large model ({ev.model}):**\n\n"))
            self.llm_idx = len(h) - 1
        elif isinstance(ev, LLMDelta):
            h[self.llm_idx]["content"] += ev.text
        elif isinstance(ev, LLMDone):
            if ev.output.error:
                h[self.llm_idx]["content"] += f"\n\n⚠️ {ev.output.error}"
        elif isinstance(ev, Final):
            self.result = r = ev.result
            if r.decision is not None and r.decision.reason == "llm_error":
                h.append(_msg(f"{decision_icon('llm_error')} {r.decision.message}"))
            if r.status == "cancelled":
                for i in (self.slm_idx, self.llm_idx):
                    if i is not None and h[i]["metadata"].get("status") == "pending":
                        h[i]["metadata"]["status"] = "done"
                h.append(_msg("⏹ Stopped."))
            for w in r.warnings:
                if r.decision is None or w != r.decision.message:
                    h.append(_msg(f"⚠️ {w}"))


# --------------------------------------------------------------------------------- the app


class Handlers:
    """The app's event handlers, free of widgets so tests can call them directly.

    Args:
        service: the cascade + log the handlers use.
    """

    def __init__(self, service: CoreaService):
        self.service = service
        self._cancels: dict[str, threading.Event] = {}

    @property
    def settings(self):
        return self.service.settings  # follows use_slm() switches

    @staticmethod
    def _session(request) -> str:
        return getattr(request, "session_hash", None) or "anonymous"

    def model_info(self) -> str:
        s, service = self.settings, self.service
        db = f"`{s.db_url}`" if service.store is not None else f"**off** — {service.logging_error}"
        cal = service.calibrator
        source = s.confidence_source
        if source == "auto":
            source = ("calibrated (calibrator v%d beats the verbal confidence on held-out data)"
                      % cal.card.version) if cal is not None and cal.card.beats_verbal() \
                else "verbal (no calibrator that beats it yet)"
        order = "confidence first (stated before solving)" \
            if s.deferral_order == "confidence_first" else "answer first"
        return (f"**SLM:** {s.slm.name} (`{s.slm.backend}`)  \n**LLM:** {s.llm.name} "
                f"(`{s.llm.backend}`)  \n**Deciding signal:** {source}; {order}  \n"
                f"**Rule:** defer iff confidence < τ or none  \n**Log:** {db}")

    def respond(self, question: str, history: list, threshold: float, my_ids: list,
                request: gr.Request | None = None):
        """Stream one question through the cascade into the chat.

        Yields tuples ``(history, question_box, details_markdown, rating_target_update, my_ids)``.
        Bad input and faults become chat/warning messages, never exceptions.
        """
        session = self._session(request)
        history = list(history or [])
        my_ids = list(my_ids or [])
        cancel = self._cancels.setdefault(session, threading.Event())
        cancel.clear()
        try:
            events = self.service.ask(question, threshold=threshold, session_id=session,
                                      cancel=cancel)
        except (InvalidQuestion, ValueError) as exc:
            gr.Warning(str(exc))
            yield _snapshot(history), question, gr.update(), gr.update(), my_ids
            return
        except Exception as exc:  # e.g. a backend that cannot be built: never a traceback
            log.exception("cannot start the cascade")
            history.append(_msg(f"⚠️ The models could not be started: {exc}"))
            yield _snapshot(history), question, gr.update(), gr.update(), my_ids
            return
        history.append({"role": "user", "content": question})
        view = TurnView(history, threshold)
        yield _snapshot(history), "", "", gr.update(), my_ids
        try:
            for ev in events:
                view.apply(ev)
                if not isinstance(ev, Final):
                    yield _snapshot(history), "", gr.update(), gr.update(), my_ids
        except Exception as exc:  # never a traceback in the UI
            log.exception("cascade failed")
            history.append(_msg(f"⚠️ Something went wrong: {exc}"))
            yield _snapshot(history), "", gr.update(), gr.update(), my_ids
            return
        r = view.result
        if r is not None and r.interaction_id is not None:
            my_ids.append([r.interaction_id, r.question[:60]])
            yield (_snapshot(history), "", turn_details(r),
                   gr.update(choices=self.rating_choices(my_ids), value=r.interaction_id), my_ids)
        else:
            yield _snapshot(history), "", turn_details(r) if r else "", gr.update(), my_ids

    @staticmethod
    def rating_choices(my_ids: list) -> list[tuple[str, int]]:
        """Dropdown choices ``(label, interaction id)`` for this session's turns, newest first."""
        return [(f"#{i} — {q}", i) for i, q in reversed(my_ids)]

    def stop(self, request: gr.Request | None = None) -> None:
        """Ask the running turn of this session to stop (it is logged as cancelled)."""
        ev = self._cancels.get(self._session(request))
        if ev is not None:
            ev.set()

    def rate(self, thumbs: str, interaction_id, correction: str, comment: str) -> str:
        """Save a rating for the chosen interaction id; returns a status line."""
        if interaction_id in (None, ""):
            return "Ask a question first: there is nothing to rate yet."
        try:
            rid = self.service.rate(int(interaction_id), thumbs=thumbs,
                                    correction=(correction or "").strip() or None,
                                    comment=(comment or "").strip() or None)
        except (ValueError, RuntimeError) as exc:
            return f"⚠️ {exc}"
        except Exception as exc:  # database fault: say so, never a traceback
            log.exception("rating failed")
            return f"⚠️ Could not save the rating: {exc}"
        icon = {"up": "👍", "down": "👎"}.get(thumbs, "")
        return f"Saved rating {icon} (#{rid}) for interaction #{interaction_id}."

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


def build_demo(service: CoreaService, training_manager=None) -> gr.Blocks:
    """Wire a :class:`CoreaService` to Gradio widgets. Returns the (unlaunched) Blocks.

    ``training_manager``: a :class:`corea.training.TrainingManager` for the Training tab (default:
    one over the service's database)."""
    settings = service.settings
    h = Handlers(service)
    runs_root = os.environ.get("COREA_RUNS_DIR", "runs")
    ex = ExplorerHandlers(service, runs_root=runs_root)
    tr = TrainingHandlers(service, manager=training_manager, runs_root=runs_root,
                          enabled=settings.training_tab)
    cb = CalibrationHandlers(service, runs_root=runs_root)

    with gr.Blocks(title="COREA — small model first, large model when unsure") as demo:
        gr.Markdown("# COREA\nA small model answers first and states its confidence; "
                    "below the threshold τ the question goes to a large model.")
        my_ids = gr.State([])
        with gr.Tab("Ask"):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Conversation", height=520,
                                         elem_id="corea-chat", feedback_options=None,
                                         latex_delimiters=[
                                             {"left": "$$", "right": "$$", "display": True},
                                             {"left": "\\[", "right": "\\]", "display": True},
                                             {"left": "\\(", "right": "\\)", "display": False}])
                    # (no single-$ delimiter: word problems are full of dollar amounts)
                    with gr.Row():
                        question = gr.Textbox(placeholder="Ask a question…", show_label=False,
                                              scale=5, elem_id="corea-question",
                                              max_length=settings.max_question_chars)
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="corea-send")
                        stop_btn = gr.Button("Stop", scale=1, elem_id="corea-stop")
                    details = gr.Markdown(elem_id="corea-details")
                    with gr.Accordion("Rate an answer", open=True):
                        with gr.Row():
                            target = gr.Dropdown(label="Interaction", choices=[],
                                                 elem_id="corea-rate-target", scale=2)
                            up = gr.Button("👍 Correct", elem_id="corea-thumbs-up", scale=1)
                            down = gr.Button("👎 Wrong", elem_id="corea-thumbs-down", scale=1)
                        with gr.Row():
                            correction = gr.Textbox(label="Corrected answer (optional)")
                            comment = gr.Textbox(label="Comment (optional)")
                        rating_status = gr.Markdown(elem_id="corea-rating-status")
                with gr.Column(scale=1):
                    threshold = gr.Slider(0.0, 1.0, value=settings.threshold, step=0.01,
                                          label="Threshold τ", elem_id="corea-threshold",
                                          info="Keep the small model's answer iff its "
                                               "confidence ≥ τ")
                    model_md = gr.Markdown(h.model_info(), elem_id="corea-model-info")
                    gr.Examples([["Natalia sold clips to 48 of her friends in April, and then "
                                  "she sold half as many clips in May. How many clips did "
                                  "Natalia sell altogether in April and May?"],
                                 ["What is 17 * 23?"]], inputs=[question])
        with gr.Tab("History"):
            with gr.Row():
                f_rated = gr.Radio(["All", "Rated", "Unrated"], value="All", label="Rating")
                f_deferred = gr.Radio(["All", "Deferred", "Kept by SLM"], value="All",
                                      label="Decision")
                f_model = gr.Textbox(label="Model name contains / equals", value="")
                refresh = gr.Button("Refresh")
            table = gr.Dataframe(headers=["id", "time (UTC)", "status", "question", "SLM answer",
                                          "confidence", "decision", "final model", "final answer",
                                          "rating", "correction"], interactive=False, wrap=True)
            table_status = gr.Markdown()
            with gr.Row():
                export = gr.Button("Export rated interactions (JSONL)")
                export_file = gr.File(label="Export", interactive=False)
            export_status = gr.Markdown()
        with gr.Tab("Threshold explorer"):
            with gr.Row():
                ex_source = gr.Dropdown(ex.source_choices(), value=ex.default_source(),
                                        label="Data: an evaluation run or rated interactions",
                                        elem_id="corea-explorer-source", scale=4)
                ex_refresh = gr.Button("Rescan runs", scale=1)
            with gr.Row():
                ex_tau = gr.Slider(0.0, 1.0, value=settings.threshold, step=0.01,
                                   label="Threshold τ", elem_id="corea-explorer-threshold",
                                   info="Defer iff confidence < τ or none stated", scale=4)
                ex_use = gr.Button("Use this τ", variant="primary", scale=1,
                                   elem_id="corea-explorer-use")
            with gr.Row():
                ex_paper = gr.Button("τ = LLM pass@1 (paper)")
                ex_defer = gr.Button("τ for 30% deferral")
                ex_cert = gr.Button("certified τ (α=0.02, δ=0.1)")
            ex_status = gr.Markdown(elem_id="corea-explorer-status")
            with gr.Row():
                ex_frontier = gr.Plot(label="Accuracy vs cost")
                ex_table = gr.Dataframe(headers=METRICS_HEADERS, interactive=False,
                                        label="Metrics at τ", elem_id="corea-explorer-table")
            with gr.Row():
                ex_reliability = gr.Plot(label="Reliability diagram")
                ex_hist = gr.Plot(label="Confidence histogram")
            with gr.Accordion("Calibrator: learn P(SLM correct) from ratings and runs",
                              open=False):
                cb_current = gr.Markdown(cb.current(), elem_id="corea-calibrator-current")
                with gr.Row():
                    cb_ratings = gr.Checkbox(True, label="Use rated interactions")
                    cb_runs = gr.Dropdown(cb.run_choices(), multiselect=True,
                                          label="…and evaluation runs", scale=3)
                    cb_kind = gr.Radio(["logistic", "isotonic"], value="logistic",
                                       label="Model")
                with gr.Row():
                    cb_fit = gr.Button("Fit (held-out comparison)", elem_id="corea-calibrator-fit")
                    cb_switch = gr.Button("Switch to it", variant="primary",
                                          elem_id="corea-calibrator-switch")
                cb_out = gr.Markdown(elem_id="corea-calibrator-out")
                cb_token = gr.State("")
        with gr.Tab("Training", visible=settings.training_tab):
            gr.Markdown("Calibration RL (GRPO): correctness + format + a confidence-calibration "
                        "reward. A run is a separate process; the app keeps answering.")
            tr_device = gr.Markdown(tr.device_line(), elem_id="corea-train-device")
            with gr.Row():
                recipe_names = tr.recipe_choices()
                tr_recipe = gr.Dropdown(recipe_names, label="Recipe", elem_id="corea-train-recipe",
                                        value="cpu-smoke" if "cpu-smoke" in recipe_names
                                        else None)
                tr_model = gr.Textbox(label="Model (blank: the recipe's)", value="",
                                      placeholder="embedded:slm, a hub id or a folder")
                tr_steps = gr.Number(label="Steps", value=3, precision=0, minimum=1)
                tr_g = gr.Number(label="G (completions per prompt)", value=2, precision=0,
                                 minimum=2)
            with gr.Row():
                tr_wc = gr.Slider(0, 2, value=1.0, step=0.1, label="weight: correctness")
                tr_wf = gr.Slider(0, 2, value=1.0, step=0.1, label="weight: format")
                tr_wk = gr.Slider(0, 2, value=1.0, step=0.1, label="weight: calibration")
            with gr.Row():
                tr_start = gr.Button("Start run", variant="primary", elem_id="corea-train-start")
                tr_run = gr.Dropdown(tr.run_choices(), label="Run", elem_id="corea-train-run",
                                     scale=2)
                tr_stop = gr.Button("Stop run", elem_id="corea-train-stop")
            tr_action = gr.Markdown(elem_id="corea-train-action")
            tr_status = gr.Markdown(elem_id="corea-train-status")
            tr_plot = gr.Plot(label="Metrics")
            tr_log = gr.Textbox(label="Log (tail, newest last)", lines=10, max_lines=10,
                                interactive=False, autoscroll=True, elem_id="corea-train-log")
            with gr.Row():
                tr_ckpt = gr.Dropdown([], label="Checkpoint", elem_id="corea-train-ckpt", scale=3)
                tr_use = gr.Button("Use as SLM in Ask", elem_id="corea-train-use")
                tr_n = gr.Number(label="Eval items", value=50, precision=0, minimum=1)
                tr_eval = gr.Button("Evaluate (→ threshold explorer)")
            tr_ck_action = gr.Markdown(elem_id="corea-train-ck-action")
            tr_timer = gr.Timer(2.0)

        ask_inputs = [question, chatbot, threshold, my_ids]
        ask_outputs = [chatbot, question, details, target, my_ids]
        limit = settings.max_concurrency
        respond = gpu(h.respond)  # spaces.GPU on a ZeroGPU Space, unchanged elsewhere
        question.submit(respond, ask_inputs, ask_outputs, concurrency_limit=limit,
                        concurrency_id="cascade")
        send.click(respond, ask_inputs, ask_outputs, concurrency_limit=limit,
                   concurrency_id="cascade")
        stop_btn.click(h.stop, None, None, queue=False)
        up.click(lambda t, c, m: h.rate("up", t, c, m), [target, correction, comment],
                 [rating_status])
        down.click(lambda t, c, m: h.rate("down", t, c, m), [target, correction, comment],
                   [rating_status])
        filters = [f_rated, f_deferred, f_model]
        refresh.click(h.history_table, filters, [table, table_status])
        for f in filters:
            f.change(h.history_table, filters, [table, table_status])
        export.click(h.export_jsonl, None, [export_file, export_status])
        demo.load(h.history_table, filters, [table, table_status])
        ex_all = [ex_frontier, ex_reliability, ex_hist, ex_table, ex_status]
        ex_source.change(ex.view, [ex_source, ex_tau], ex_all)
        ex_refresh.click(ex.refresh, None, [ex_source, ex_status]).then(
            ex.view, [ex_source, ex_tau], ex_all)
        ex_tau.change(ex.update_tau, [ex_source, ex_tau], [ex_frontier, ex_table, ex_status],
                      trigger_mode="always_last")
        ex_paper.click(ex.paper_tau, [ex_source, ex_tau], [ex_tau, ex_status])
        ex_defer.click(ex.deferral_tau, [ex_source, ex_tau], [ex_tau, ex_status])
        ex_cert.click(ex.certified_tau, [ex_source, ex_tau], [ex_tau, ex_status])
        ex_use.click(ex.use_tau, [ex_tau, threshold], [threshold, ex_status])
        demo.load(ex.view, [ex_source, ex_tau], ex_all)
        demo.load(h.model_info, None, [model_md])  # the SLM / calibrator may have changed
        demo.load(cb.current, None, [cb_current])
        cb_fit.click(cb.fit, [cb_runs, cb_ratings, cb_kind], [cb_out, cb_token])
        cb_switch.click(cb.switch, [cb_token], [cb_current, cb_out, cb_token]).then(
            h.model_info, None, [model_md])
        tr_view = [tr_status, tr_log, tr_plot, tr_ckpt]
        tr_start.click(tr.start, [tr_recipe, tr_model, tr_steps, tr_g, tr_wc, tr_wf, tr_wk],
                       [tr_action, tr_run]).then(tr.view, [tr_run], tr_view)
        tr_stop.click(tr.stop, [tr_run], [tr_action])
        tr_run.change(tr.view, [tr_run], tr_view)
        tr_timer.tick(tr.live, [tr_run], tr_view + [tr_run])
        tr_use.click(tr.use_as_slm, [tr_ckpt], [tr_ck_action]).then(h.model_info, None,
                                                                     [model_md])
        tr_eval.click(tr.evaluate, [tr_ckpt, tr_n], [tr_ck_action])
    demo.queue(default_concurrency_limit=limit)
    return demo


demo = build_demo(CoreaService(load_settings()))

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
