"""One manager for every child process the app starts: calibration-RL runs (``python -m
train.grpo``) and evaluations of their checkpoints (``corea evaluate``).

A job is a child process of the app (``start_new_session``, so the UI stays responsive and a Stop
reaches the whole process group), recorded in the database (:class:`corea.store.storage.Job`:
kind, name, config, status, start/end, return code, and for training the checkpoint folders and
final metrics). Every job writes its stdout and stderr to one log file (``log_tail`` reads it).

A training job's output folder holds ``train.log``, ``metrics.jsonl`` (one line per logged step,
written by ``train.grpo``), ``checkpoint-*`` folders and, at the end, the final model or LoRA
adapter. An evaluation job writes a run folder that the threshold explorer lists, and its log
next to it (``<run folder>.log``).

Stop sends SIGTERM: ``train.grpo`` finishes the current step, saves a checkpoint and the final
model, and exits with status 128 + the signal (``train.grpo.stop_exit_code``; so does a signal
sent from outside the app, which is how the record tells it from a run that completed); an
evaluation keeps every finished item (a second Stop kills either). A training
run stopped before its first step finishes (while the model loads) has nothing to save; its record
says so. Jobs still marked ``running`` whose process is gone (the app restarted) are marked
``interrupted``; a training run's last checkpoint can be resumed with
``--resume_from_checkpoint last``, an evaluation resumes by running it again.

One job of each kind at a time (a second training run or evaluation is refused while one is
active: they would share the cores and an evaluation's run folder). Each child is waited for by a
watcher thread (never a zombie), and its record says truthfully how it ended: ``stopped`` after
Stop or when a signal (SIGTERM, SIGINT, SIGKILL from outside) ended it, ``completed`` only for
exit code 0 without a stop, ``failed`` otherwise.

The device, recipes and run-folder readers (metrics, confidences, log tail, checkpoints) are in
:mod:`corea.job_files`, importable from here too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

# the names of job_files stay importable from here
from .job_files import (CONFIDENCES_FILE, PLOT_METRICS, RECIPES_DIR, REPO,  # noqa: F401
                        DeviceInfo, JobError, checkpoints, device_info, log_tail, needs_gpu,
                        read_confidences, read_metrics, recipe_trainer, recipes)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (never reaps it)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


ACTIVE = ("starting", "running", "stopping")


class JobManager:
    """Starts training and evaluation jobs as child processes and tracks them in the database.

    Args:
        store: an open :class:`corea.store.Store` (jobs are recorded there).
        runs_root: parent folder of training output folders (``<runs_root>/<id>-<recipe>``).
        eval_root: parent folder of evaluation run folders (default: ``runs_root``'s parent,
            the folder the threshold explorer scans).
        python: the interpreter to launch (default: this one).
        device: override :func:`device_info` (tests).
        extra_env: environment added to the children's.
    """

    def __init__(self, store, runs_root: str | Path = "runs/train",
                 eval_root: str | Path | None = None, python: str | None = None,
                 device: DeviceInfo | None = None, extra_env: dict | None = None,
                 recipes_dir: Path = RECIPES_DIR):
        self.store = store
        self.runs_root = Path(runs_root).expanduser().resolve()  # children run in REPO
        self.eval_root = (Path(eval_root).expanduser().resolve() if eval_root is not None
                          else self.runs_root.parent)
        self.python = python or sys.executable
        self._device = device
        self.extra_env = dict(extra_env or {})
        self.recipes_dir = Path(recipes_dir)
        self._lock = threading.Lock()
        self._mark_orphans()

    @property
    def device(self) -> DeviceInfo:
        if self._device is None:
            self._device = device_info()
        return self._device

    def _mark_orphans(self) -> None:
        for r in self.store.list_jobs(limit=None):
            if r["status"] in ACTIVE and not _alive(r["pid"]):
                resume = ("resume with --resume_from_checkpoint last" if r["kind"] == "train"
                          else "run it again to resume")
                self.store.update_job(
                    r["id"], status="interrupted", ended_at=_now(),
                    checkpoints=checkpoints(r["output_dir"]) if r["kind"] == "train" else [],
                    message=f"the process was gone when the app started ({resume})")

    # ------------------------------------------------------------------ commands
    def command(self, recipe: str, output_dir: str | Path, max_steps: int | None = None,
                num_generations: int | None = None, reward_weights: Sequence[float] | None = None,
                model: str | None = None, extra_args: Sequence[str] = ()) -> list[str]:
        """The ``python -m train.grpo`` (or the recipe's ``trainer``) command line for these
        choices. For ``train.confidence`` ``num_generations`` is the GRPO estimator's G and there
        are no reward weights."""
        paths = recipes(self.recipes_dir)
        if recipe not in paths:
            raise JobError(f"unknown recipe {recipe!r}; available: {', '.join(paths)}")
        trainer = recipe_trainer(paths[recipe])
        cmd = [self.python, "-m", trainer, "--config", str(paths[recipe]),
               "--output_dir", str(output_dir)]
        if model:
            cmd += ["--model", model]
        if max_steps is not None:
            if int(max_steps) < 1:
                raise JobError("steps must be at least 1")
            cmd += ["--max_steps", str(int(max_steps))]
        if num_generations is not None:
            if int(num_generations) < 2:
                raise JobError("G (completions per prompt) must be at least 2: GRPO "
                               "compares completions within a group")
            g = int(num_generations)
            cmd += ["--num_generations", str(g)]
            if trainer == "train.grpo":
                cmd += ["--per_device_train_batch_size", str(g)]
        if reward_weights and trainer == "train.grpo":
            cmd += ["--reward_weights", *[str(float(w)) for w in reward_weights]]
        return cmd + list(extra_args)

    def evaluation_command(self, checkpoint: str | Path, backend: str, n_items: int,
                           run_dir: str | Path) -> list[str]:
        """The ``corea evaluate`` command line of a checkpoint as the SLM on GSM8K test items."""
        return [self.python, "-m", "corea", "evaluate", "--dataset", "gsm8k", "--split", "test",
                "--limit", str(int(n_items)), "--slm-backend", backend, "--slm", str(checkpoint),
                "--run-dir", str(run_dir), "--no-progress"]

    # ------------------------------------------------------------------ start / stop
    def start_training(self, recipe: str, max_steps: int | None = None,
                       num_generations: int | None = None,
                       reward_weights: Sequence[float] | None = None, model: str | None = None,
                       extra_args: Sequence[str] = ()) -> int:
        """Launch a ``train.grpo`` run; returns its job id.

        Raises:
            JobError: unknown recipe, a GPU recipe without a GPU, bad values, or another
                training run still running (one at a time: they would share the same cores/GPU).
        """
        if needs_gpu(recipe) and not self.device.has_gpu:
            raise JobError(f"{recipe} needs a GPU (vLLM, bf16) and this machine has none: "
                           f"{self.device.message}. Use cpu-smoke or cpu-lora-0.5b here.")
        with self._lock:
            self._one_at_a_time("train")
            # placeholder output dir until the id is known
            job_id = self.store.add_job("train", recipe, {}, "", None, status="starting")
            out = self.runs_root / f"{job_id:04d}-{recipe}"
            try:
                cmd = self.command(recipe, out, max_steps, num_generations, reward_weights,
                                   model, extra_args)
            except JobError as exc:
                self.store.update_job(job_id, status="failed", message=str(exc),
                                      ended_at=_now())
                raise
            config = {"recipe": recipe, "max_steps": max_steps,
                      "num_generations": num_generations,
                      "reward_weights": list(reward_weights) if reward_weights else None,
                      "model": model, "command": cmd, "device": self.device.message}
            proc = self._spawn(job_id, cmd, out, out / "train.log", config)
        self._watch_in_background(job_id, proc)
        return job_id

    def start_evaluation(self, checkpoint: str | Path, backend: str, n_items: int = 50) -> int:
        """Launch ``corea evaluate`` of a checkpoint as the SLM on ``n_items`` GSM8K test items
        into ``<eval_root>/gsm8k-test-<n>-<run>-<checkpoint>``; returns its job id.

        Raises:
            JobError: the process cannot be started.
        """
        n = int(n_items or 50)
        ck = Path(checkpoint).expanduser().resolve()
        name = (f"gsm8k-test-{n}-{ck.parent.name}-{ck.name}" if ck.name.startswith("checkpoint")
                else f"gsm8k-test-{n}-{ck.name}")
        run_dir = self.eval_root / name
        cmd = self.evaluation_command(ck, backend, n, run_dir)
        with self._lock:
            self._one_at_a_time("evaluate")
            job_id = self.store.add_job("evaluate", name, {}, str(run_dir), None,
                                        status="starting")
            config = {"checkpoint": str(ck), "backend": backend, "n_items": n, "command": cmd}
            proc = self._spawn(job_id, cmd, run_dir, run_dir.parent / f"{name}.log", config)
        self._watch_in_background(job_id, proc)
        return job_id

    def _one_at_a_time(self, kind: str) -> None:
        """Raise :class:`JobError` when a job of ``kind`` is still active (call under the lock)."""
        for r in self.store.list_jobs(kind=kind, limit=20):
            if r["status"] in ACTIVE and (r["status"] == "starting" or _alive(r["pid"])):
                what = "run" if kind == "train" else "evaluation"
                raise JobError(f"{what} {r['id']} ({r['name']}) is still {r['status']}; one "
                               f"{what} at a time: wait for it or stop it first")

    def _spawn(self, job_id: int, cmd: list[str], out: Path, log_path: Path,
               config: dict) -> subprocess.Popen:
        """Start ``cmd`` with its output in ``log_path``; record it as running."""
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        config = {**config, "log": str(log_path)}
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
        except OSError as exc:
            self.store.update_job(job_id, status="failed", output_dir=str(out), config=config,
                                  message=f"could not start: {exc}", ended_at=_now())
            raise JobError(f"could not start the job: {exc}") from exc
        self.store.update_job(job_id, status="running", pid=proc.pid, output_dir=str(out),
                              config=config)
        return proc

    def _watch_in_background(self, job_id: int, proc: subprocess.Popen) -> None:
        threading.Thread(target=self._watch, args=(job_id, proc), daemon=True,
                         name=f"corea-job-{job_id}").start()

    def _watch(self, job_id: int, proc: subprocess.Popen) -> None:
        rc = proc.wait()  # reaps the child: no zombie, whatever happens below
        try:
            self._finish(job_id, rc)
        except Exception:  # noqa: BLE001 — the database may be away; the log says so
            import logging

            logging.getLogger(__name__).exception("could not record the end of job %s (exit "
                                                  "code %s)", job_id, rc)

    def _finish(self, job_id: int, rc: int) -> None:
        job = self.store.get_job(job_id) or {}
        out = job.get("output_dir", "")
        log_path = (job.get("config") or {}).get("log") or out
        signalled = rc is not None and (rc < 0 or rc in (128 + signal.SIGTERM,
                                                         128 + signal.SIGINT,
                                                         128 + signal.SIGKILL))
        stopped = job.get("status") == "stopping" or signalled
        status = "stopped" if stopped else ("completed" if rc == 0 else "failed")
        fields: dict[str, Any] = {}
        if job.get("kind") == "train":
            last: dict = {}
            for m in read_metrics(out):
                last.update({k: v for k, v in m.items() if v is not None})
            fields = {"checkpoints": checkpoints(out), "final_metrics": last}
        msg = None
        if signalled and job.get("status") != "stopping":
            sig = -rc if rc < 0 else rc - 128
            msg = f"ended by signal {sig} ({signal.Signals(sig).name}) from outside the app"
        elif status == "failed":
            msg = f"exit code {rc}; last log lines:\n" + log_tail(log_path, 8)
        elif status == "stopped" and job.get("kind") == "train" and not fields["checkpoints"]:
            msg = ("stopped before the first training step finished (model loading or the first "
                   "generation): no checkpoint was saved")
        self.store.update_job(job_id, status=status, return_code=rc, ended_at=_now(),
                              message=msg, **fields)

    def stop(self, job_id: int, timeout_s: float = 0.0) -> str:
        """Ask a running job to stop (SIGTERM to its process group: it saves and exits); a
        second call kills it. Returns a message for the user.

        Raises:
            JobError: no such job, or it is not running."""
        job = self.store.get_job(job_id)
        if job is None:
            raise JobError(f"no job {job_id}")
        if job["status"] not in ("running", "stopping") or not _alive(job["pid"]):
            raise JobError(f"run {job_id} is not running ({job['status']})")
        sig = signal.SIGKILL if job["status"] == "stopping" else signal.SIGTERM
        if job["status"] == "running":
            self.store.update_job(job_id, status="stopping")
        try:
            os.killpg(job["pid"], sig)
        except ProcessLookupError:
            pass
        if timeout_s:
            self.wait(job_id, timeout_s)
        if sig == signal.SIGKILL:
            return "Killed"
        return ("Stopping: the run finishes its current step and saves a checkpoint"
                if job["kind"] == "train" else "Stopping: finished items are kept")

    def wait(self, job_id: int, timeout_s: float) -> dict | None:
        """Block until the job is no longer active (or the timeout); returns its record."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            job = self.store.get_job(job_id)
            if job is None or job["status"] not in ACTIVE:
                return job
            time.sleep(0.2)
        return self.store.get_job(job_id)

    # ------------------------------------------------------------------ views
    def jobs(self, kind: str | None = None, limit: int = 20) -> list[dict]:
        """Jobs (of one ``kind``: ``train`` or ``evaluate``), newest first."""
        return self.store.list_jobs(kind=kind, limit=limit)

    def get(self, job_id: int) -> dict | None:
        """One job's record; a running training job's checkpoints are listed afresh."""
        job = self.store.get_job(job_id)
        if job is not None and job["kind"] == "train" and job["status"] in ("running",
                                                                             "stopping"):
            job["checkpoints"] = checkpoints(job["output_dir"])
        return job

    def log(self, job_id: int, n_lines: int = 40) -> str:
        """The tail of a job's log."""
        job = self.store.get_job(job_id) or {}
        return log_tail((job.get("config") or {}).get("log") or job.get("output_dir") or "",
                        n_lines)
