"""Handlers of the app's "Training" tab, free of widgets so tests can call them directly.

They wire :class:`corea.jobs.JobManager` (start / stop / watch calibration-RL runs) to
the UI, plot the run's metrics with Altair (:mod:`.training_charts`), and turn a finished
checkpoint into the Ask tab's SLM (:meth:`corea.service.CoreaService.use_slm`) or an evaluation
run for the threshold explorer.
Every handler returns messages instead of raising. Everything here is an owner action
(:mod:`corea.auth`): each handler checks the role itself, and the tab's endpoints are not in the
public API.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..auth import Roles
from ..jobs import (JobError, JobManager, log_tail, read_confidences, read_metrics,
                    recipes)
from ..backends.lora_gguf import checkpoint_backend
from .training_charts import RELIABILITY_STEPS, metrics_chart, reliability_panel  # noqa: F401

log = logging.getLogger(__name__)

_CALIBRATION_REWARDS = {"confidence_l1", "confidence_l2", "brier", "log_score"}


def recipe_rewards(recipe_path: Path) -> list[str]:
    """The ``rewards`` list of a recipe YAML."""
    import yaml

    with open(recipe_path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return list(data.get("rewards") or [])


def weights_for(rewards: list[str], w_correct: float, w_format: float,
                w_calibration: float) -> list[float]:
    """Reward weights in the recipe's order: correctness, format, the calibration reward; any
    other reward keeps weight 1."""
    out = []
    for r in rewards:
        if r == "correctness":
            out.append(float(w_correct))
        elif r == "format":
            out.append(float(w_format))
        elif r in _CALIBRATION_REWARDS:
            out.append(float(w_calibration))
        else:
            out.append(1.0)
    return out


_LOG_OFFLINE = ("Training runs are recorded in the database, which is offline right now; "
                "this tab works once it is back (reload the page).")


class TrainingHandlers:
    """Args:
        service: the app's :class:`corea.service.CoreaService` (its store records runs).
        manager: a :class:`corea.jobs.JobManager`; built from the service's store when None.
        runs_root: where evaluation runs of checkpoints are written (the explorer's folder).
        enabled: False refuses every action (the tab is hidden, but Gradio's API would still
            reach the handlers).
        roles: who is an owner (default from the environment); a visitor is refused everything.
    """

    def __init__(self, service, manager: JobManager | None = None,
                 runs_root: str | Path = "runs", enabled: bool = True,
                 roles: Roles | None = None):
        self.service = service
        self.enabled = enabled
        self.roles = roles or Roles.from_env()
        self.runs_root = Path(runs_root).expanduser().resolve()  # children run in REPO
        self._manager = manager
        self._problem: str | None = None
        self._seen: dict[int, str] = {}

    @property
    def manager(self) -> JobManager | None:
        if not self.enabled:
            self._problem = "Training is disabled on this deployment (COREA_TRAINING_TAB=false)."
            return None
        if self._manager is None and self._problem in (None, _LOG_OFFLINE):
            if self.service.store is None:  # asked again next time: the database may return
                self._problem = _LOG_OFFLINE  # (the page is everyone's: no path, no cause)
            else:
                self._problem = None
                try:
                    self._manager = JobManager(self.service.store,
                                               runs_root=self.runs_root / "train",
                                               eval_root=self.runs_root)
                except Exception as exc:  # noqa: BLE001
                    log.exception("training manager")
                    self._problem = f"Training is unavailable: {exc}"
        return self._manager

    # ------------------------------------------------------------------ static info
    def device_line(self) -> str:
        m = self.manager
        if m is None:
            return f"⚠️ {self._problem}"
        return f"**Device:** {m.device.message}"

    def recipe_choices(self) -> list[str]:
        return list(recipes())

    def run_choices(self, request: gr.Request | None = None) -> list[tuple[str, int]]:
        """The runs recorded in the database, newest first (none for a visitor)."""
        if not self.roles.is_owner(request):
            return []
        m = self.manager
        if m is None:
            return []
        return [(f"#{r['id']} {r['name']} — {r['status']}", r["id"])
                for r in m.jobs(kind="train")]

    # ------------------------------------------------------------------ actions
    def runs_dropdown(self, run_id=None, request: gr.Request | None = None):
        """The runs dropdown read again from the database (on every page view), keeping the
        chosen run when it is still listed."""
        choices = self.run_choices(request)
        ids = {i for _, i in choices}
        try:
            keep = int(run_id) if run_id not in (None, "") and int(run_id) in ids else None
        except (TypeError, ValueError):
            keep = None
        return gr.update(choices=choices, value=keep)

    def runs_tick(self, run_id, shown: list | None, request: gr.Request | None = None):
        """Timer tick: ``(runs dropdown update, choices now shown)``; a no-op update while the
        list is unchanged (an open dropdown is left alone), the new list (the chosen run kept
        while listed) when a run was added or changed status. Never raises."""
        try:
            choices = self.run_choices(request)
        except Exception:  # noqa: BLE001 — the database may be away; the next tick tries again
            log.exception("runs list")
            return gr.update(), shown
        pairs = [list(c) for c in choices]
        if shown is not None and [list(c) for c in shown] == pairs:
            return gr.update(), shown
        return self.runs_dropdown(run_id, request), pairs

    def role_view(self, run_id, request: gr.Request | None = None):
        """After a sign-in or sign-out: ``(runs dropdown update, status, log, chart, checkpoint
        dropdown update, action line, checkpoint action line)`` read again for this session's
        role, so an owner who signed in after the page loaded (as a visitor) sees the runs, and
        no message left over from the visitor's view (a refusal) stays on the tab."""
        dropdown = self.runs_dropdown(run_id, request)
        if not self.roles.is_owner(request):  # the tab is hidden again: leave nothing on it
            return dropdown, "", "", None, gr.update(choices=[], value=None), "", ""
        return (dropdown, *self.view(dropdown["value"], request), "", "")

    def start(self, recipe: str, model: str, steps, generations, w_correct, w_format, w_cal,
              request: gr.Request | None = None):
        """Start a run; returns ``(status markdown, runs dropdown update)``."""
        refused = self.roles.refuse(request)
        if refused:
            return refused, gr.update()
        m = self.manager
        if m is None:
            return f"⚠️ {self._problem}", gr.update()
        try:
            available = recipes()
            path = available.get(recipe)
            if path is None:
                raise JobError(f"choose a recipe ({', '.join(available)})")
            weights = weights_for(recipe_rewards(path), w_correct, w_format, w_cal)
            rid = m.start_training(recipe, max_steps=int(steps) if steps else None,
                          num_generations=int(generations) if generations else None,
                          reward_weights=weights, model=(model or "").strip() or None)
        except JobError as exc:
            return f"⚠️ {exc}", gr.update()
        except Exception as exc:  # noqa: BLE001
            log.exception("start failed")
            return f"⚠️ Could not start the run: {exc}", gr.update()
        return (f"Started run #{rid} ({recipe}) in a separate process.",
                gr.update(choices=self.run_choices(), value=rid))

    def stop(self, run_id, request: gr.Request | None = None) -> str:
        refused = self.roles.refuse(request)
        if refused:
            return refused
        m = self.manager
        if m is None:
            return f"⚠️ {self._problem}"
        if run_id in (None, ""):
            return "Choose a run first."
        try:
            return m.stop(int(run_id)) + "."
        except JobError as exc:
            return f"⚠️ {exc}"
        except Exception as exc:  # noqa: BLE001
            log.exception("stop failed")
            return f"⚠️ Could not stop the run: {exc}"

    def view(self, run_id, request: gr.Request | None = None):
        """``(status markdown, log tail, chart, checkpoint dropdown update)`` of a run."""
        refused = self.roles.refuse(request)
        if refused:
            return refused, "", None, gr.update(choices=[], value=None)
        m = self.manager
        if m is None:
            return f"⚠️ {self._problem}", "", None, gr.update()
        if run_id in (None, ""):
            return "No run selected.", "", None, gr.update(choices=[], value=None)
        try:
            run = m.get(int(run_id))
            if run is None:
                return f"⚠️ No run #{run_id}.", "", None, gr.update(choices=[], value=None)
            metrics = read_metrics(run["output_dir"])
            last = metrics[-1] if metrics else {}
            steps = run["config"].get("max_steps") or "recipe default"
            lines = [f"**Run #{run['id']}** · {run['name']} · status **{run['status']}** · "
                     f"step {last.get('step', 0)} of {steps} · output `{run['output_dir']}`"]
            if run.get("message"):
                lines.append(f"> {run['message'].splitlines()[0]}")
            cks = run.get("checkpoints") or []
            lines.append(f"{len(cks)} checkpoint(s)" + (f"; latest `{cks[-1]}`" if cks else ""))
            choices = [(Path(c).name if Path(c).name.startswith("checkpoint") else
                        f"final ({Path(c).name})", c) for c in cks]
            chart = metrics_chart(metrics, read_confidences(run["output_dir"],
                                                            RELIABILITY_STEPS))
            return ("  \n".join(lines), log_tail(run["output_dir"], 30), chart,
                    gr.update(choices=choices, value=cks[-1] if cks else None))
        except Exception as exc:  # noqa: BLE001
            log.exception("view failed")
            return f"⚠️ Could not read the run: {exc}", "", None, gr.update()

    def live(self, run_id, request: gr.Request | None = None):
        """Timer tick: the run's view and the runs dropdown while it runs (and once more when it
        ends); no-op updates otherwise, so a user's checkpoint choice is not reset."""
        skip = (gr.update(),) * 5
        if not self.roles.is_owner(request):
            return skip
        m = self.manager
        if m is None or run_id in (None, ""):
            return skip
        try:
            run = m.store.get_job(int(run_id))
        except Exception:  # noqa: BLE001
            return skip
        if run is None:
            return skip
        key = (getattr(request, "session_hash", None), int(run_id))  # per browser session
        changed = self._seen.get(key) != run["status"]
        self._seen[key] = run["status"]
        if run["status"] not in ("running", "stopping", "starting") and not changed:
            return skip
        return (*self.view(run_id, request),
                gr.update(choices=self.run_choices(request), value=int(run_id)))

    def _checkpoint_refusal(self, checkpoint: str | None, request: gr.Request | None) -> str | None:
        """Why a handler that acts on a checkpoint must not run (not an owner, training off, no
        checkpoint chosen), as the message to show; None when it may run."""
        refused = self.roles.refuse(request)
        if refused:
            return refused
        if not self.enabled:
            return "⚠️ Training is disabled on this deployment (COREA_TRAINING_TAB=false)."
        if not checkpoint:
            return "Choose a checkpoint first."
        return None

    def use_as_slm(self, checkpoint: str | None, request: gr.Request | None = None) -> str:
        """Make a checkpoint the Ask tab's SLM (llama.cpp for a LoRA adapter on the embedded GGUF,
        else transformers) — for every session, so owners only."""
        refused = self._checkpoint_refusal(checkpoint, request)
        if refused:
            return refused
        try:
            name = self.service.use_slm(checkpoint)
        except Exception as exc:  # noqa: BLE001
            log.exception("use_slm failed")
            return f"⚠️ Could not switch the SLM: {exc}"
        engine = "llama.cpp" if self.service.settings.slm.backend == "llamacpp" else "transformers"
        return f"The Ask tab now answers with **{name}** ({engine}, loaded on the next question)."

    def evaluate(self, checkpoint: str | None, n_items, request: gr.Request | None = None) -> str:
        """Launch ``corea evaluate`` of a checkpoint as the SLM on GSM8K test items, in
        the background; the run appears in the threshold explorer by itself as it fills."""
        refused = self._checkpoint_refusal(checkpoint, request)
        if refused:
            return refused
        m = self.manager
        if m is None:
            return f"⚠️ {self._problem}"
        try:
            backend = checkpoint_backend(checkpoint, self.service.settings.cache_dir)
            job_id = m.start_evaluation(checkpoint, backend, int(n_items or 50))
        except (JobError, OSError, ValueError) as exc:
            return f"⚠️ Could not start the evaluation: {exc}"
        job = m.get(job_id) or {}
        return (f"Evaluating on {int(n_items or 50)} GSM8K test items in the background (job "
                f"#{job_id}) → `{job.get('output_dir')}`; it appears in the Threshold explorer "
                "as it fills.")


RUNS_REFRESH_S = 10.0
"""Seconds between two reads of the runs list while the Training tab is open."""


def build_tab(tr: TrainingHandlers, ask: SimpleNamespace,
              demo: gr.Blocks | None = None) -> SimpleNamespace:
    """The Training tab's widgets and events (call inside its ``gr.Tab``); "Use as SLM in Ask"
    refreshes the Ask tab's models line (``ask.model_md`` via ``ask.model_info``). With ``demo``
    the runs list is read from the database on every page view (a run started before a reload
    can still be chosen and stopped); it is read again every :data:`RUNS_REFRESH_S` seconds.
    No endpoint of the tab is in the public API.

    Returns ``role_view``, ``inputs`` and ``outputs``: the event the app chains on sign-in and
    sign-out (:meth:`TrainingHandlers.role_view`)."""
    gr.Markdown("Calibration RL (GRPO): correctness + format + a confidence-calibration reward. "
                "`cpu-calibrate-0.5b` trains only the confidence the SLM states after its own "
                "(already generated) train-split solutions, with an adapter that runs on the "
                "confidence line only (the solutions stay the base model's): about 20 minutes on "
                "a CPU, no generation; "
                "the reward weights do not apply to it, and G only to its `grpo` estimator. "
                "A run is a separate process; the app keeps answering.")
    gr.Markdown(tr.device_line(), elem_id="corea-train-device")
    with gr.Row():
        recipe_names = tr.recipe_choices()
        tr_recipe = gr.Dropdown(recipe_names, label="Recipe", elem_id="corea-train-recipe",
                                value="cpu-smoke" if "cpu-smoke" in recipe_names else None)
        tr_model = gr.Textbox(label="Model (blank: the recipe's)", value="",
                              placeholder="embedded:slm, a hub id or a folder")
        tr_steps = gr.Number(label="Steps", value=3, precision=0, minimum=1)
        tr_g = gr.Number(label="G (completions per prompt)", value=2, precision=0, minimum=2)
    with gr.Row():
        tr_wc = gr.Slider(0, 2, value=1.0, step=0.1, label="weight: correctness")
        tr_wf = gr.Slider(0, 2, value=1.0, step=0.1, label="weight: format")
        tr_wk = gr.Slider(0, 2, value=1.0, step=0.1, label="weight: calibration")
    with gr.Row():
        tr_start = gr.Button("Start run", variant="primary", elem_id="corea-train-start")
        tr_run = gr.Dropdown([], label="Run", elem_id="corea-train-run", scale=2)
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

    tr_view = [tr_status, tr_log, tr_plot, tr_ckpt]
    private = {"api_visibility": "private"}
    tr_start.click(tr.start, [tr_recipe, tr_model, tr_steps, tr_g, tr_wc, tr_wf, tr_wk],
                   [tr_action, tr_run], **private).then(tr.view, [tr_run], tr_view, **private)
    tr_stop.click(tr.stop, [tr_run], [tr_action], **private)
    tr_run.change(tr.view, [tr_run], tr_view, **private)
    tr_timer.tick(tr.live, [tr_run], tr_view + [tr_run], **private)
    tr_use.click(tr.use_as_slm, [tr_ckpt], [tr_ck_action], **private).then(
        ask.model_info, None, [ask.model_md], **private)
    tr_eval.click(tr.evaluate, [tr_ckpt, tr_n], [tr_ck_action], **private)
    shown = gr.State(None)
    gr.Timer(RUNS_REFRESH_S).tick(tr.runs_tick, [tr_run, shown], [tr_run, shown],
                                  show_progress="hidden", **private)
    if demo is not None:
        demo.load(tr.runs_dropdown, [tr_run], [tr_run], **private)
    return SimpleNamespace(role_view=tr.role_view, inputs=[tr_run],
                           outputs=[tr_run, *tr_view, tr_action, tr_ck_action])
