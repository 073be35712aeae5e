"""Launch, watch and stop calibration-RL runs (``python -m train.grpo``) as separate processes.

What the app's training tab calls (and any script can): a run is a child process of the app
(``start_new_session``, so the UI stays responsive and a Stop reaches the whole process group),
recorded in the database (:class:`corea.store.storage.TrainingRun`: config, status, start/end, checkpoint
folders, final metrics). Its output folder holds ``train.log`` (stdout + stderr),
``metrics.jsonl`` (one line per logged step, written by ``train.grpo``), ``checkpoint-*`` folders
and, at the end, the final model or LoRA adapter.

Stop sends SIGTERM: ``train.grpo`` finishes the current step, saves a checkpoint and the final
model, and exits (a second Stop kills it). A run stopped before its first step finishes (while the
model loads) has nothing to save; its record says so. Runs still marked ``running`` whose process is gone
(the app restarted) are marked ``interrupted``; their last checkpoint can be resumed with
``--resume_from_checkpoint last``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
RECIPES_DIR = REPO / "train" / "recipes"

PLOT_METRICS = ("reward", "calibration/accuracy", "calibration/mean_confidence",
                "calibration/ece", "calibration/brier", "calibration/no_confidence_share")


@dataclass(frozen=True)
class DeviceInfo:
    """Where training would run. ``kind``: ``cuda`` or ``cpu``; ``name``: GPU name or ``CPU``;
    ``message``: one line for the UI."""

    kind: str
    name: str
    message: str

    @property
    def has_gpu(self) -> bool:
        return self.kind == "cuda"


def device_info() -> DeviceInfo:
    """The training device: the first CUDA GPU if torch sees one, else the CPU."""
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            n = torch.cuda.device_count()
            mem = torch.cuda.get_device_properties(0).total_memory / 2**30
            return DeviceInfo("cuda", name, f"GPU: {name} ({mem:.0f} GiB)"
                              + (f" × {n}" if n > 1 else "") + " — every recipe can run")
    except Exception:  # noqa: BLE001 — no/broken torch: CPU
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return DeviceInfo("cpu", "CPU", f"CPU ({cores} cores) — only the smoke and LoRA recipes are "
                                    "practical here; GPU recipes are refused")


def recipes(recipes_dir: Path = RECIPES_DIR) -> dict[str, Path]:
    """Recipe name → YAML path (``train/recipes/*.yaml``)."""
    return {p.stem: p for p in sorted(Path(recipes_dir).glob("*.yaml"))}


def needs_gpu(recipe: str) -> bool:
    """GPU recipes are named ``gpu-*`` (they use vLLM and bf16)."""
    return recipe.startswith("gpu")


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` lines (a torn last line is skipped)."""
    path = Path(output_dir) / "metrics.jsonl"
    out = []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


_NOISE = ("FutureWarning", "UserWarning", "warnings.warn(")


def log_tail(output_dir: str | Path, n_lines: int = 40) -> str:
    """The last ``n_lines`` of the run's ``train.log``, without Python warning lines (libraries
    repeat the same deprecation warning at every step)."""
    path = Path(output_dir) / "train.log"
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    lines = [ln for ln in text.replace("\r", "\n").splitlines()
             if not any(n in ln for n in _NOISE)]
    return "\n".join(lines[-n_lines:])


def checkpoints(output_dir: str | Path) -> list[str]:
    """Usable model folders of a run, oldest first: ``checkpoint-*`` and the final output folder
    (when it holds a model or an adapter)."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = sorted((p for p in d.glob("checkpoint-*") if p.is_dir() and _is_model_dir(p)),
                   key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit()
                   else 0)
    out = [str(p) for p in found]
    if _is_model_dir(d):
        out.append(str(d))
    return out


def _is_model_dir(d: Path) -> bool:
    return (d / "adapter_config.json").is_file() or (d / "config.json").is_file() and any(
        d.glob("*.safetensors"))


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


class TrainingError(RuntimeError):
    """A run cannot be started or stopped (the message is shown to the user)."""


class TrainingManager:
    """Starts ``train.grpo`` runs as child processes and tracks them in the database.

    Args:
        store: an open :class:`corea.store.Store` (runs are recorded there).
        runs_root: parent folder of run output folders (``<runs_root>/<id>-<recipe>``).
        python: the interpreter to launch (default: this one).
        device: override :func:`device_info` (tests).
        extra_env: environment added to the child's.
    """

    def __init__(self, store, runs_root: str | Path = "runs/train", python: str | None = None,
                 device: DeviceInfo | None = None, extra_env: dict | None = None,
                 recipes_dir: Path = RECIPES_DIR):
        self.store = store
        self.runs_root = Path(runs_root).expanduser().resolve()  # children run in REPO
        self.python = python or sys.executable
        self._device = device
        self.extra_env = dict(extra_env or {})
        self.recipes_dir = Path(recipes_dir)
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._mark_orphans()

    @property
    def device(self) -> DeviceInfo:
        if self._device is None:
            self._device = device_info()
        return self._device

    def _mark_orphans(self) -> None:
        for r in self.store.list_training_runs(limit=None):
            if r["status"] in ("running", "starting", "stopping") and not _alive(r["pid"]):
                self.store.update_training_run(
                    r["id"], status="interrupted", ended_at=_now(),
                    checkpoints=checkpoints(r["output_dir"]),
                    message="the process was gone when the app started (resume with "
                            "--resume_from_checkpoint last)")

    # ------------------------------------------------------------------ start / stop
    def command(self, recipe: str, output_dir: str | Path, max_steps: int | None = None,
                num_generations: int | None = None, reward_weights: Sequence[float] | None = None,
                model: str | None = None, extra_args: Sequence[str] = ()) -> list[str]:
        """The ``python -m train.grpo`` command line for these choices."""
        paths = recipes(self.recipes_dir)
        if recipe not in paths:
            raise TrainingError(f"unknown recipe {recipe!r}; available: {', '.join(paths)}")
        cmd = [self.python, "-m", "train.grpo", "--config", str(paths[recipe]),
               "--output_dir", str(output_dir)]
        if model:
            cmd += ["--model", model]
        if max_steps is not None:
            if int(max_steps) < 1:
                raise TrainingError("steps must be at least 1")
            cmd += ["--max_steps", str(int(max_steps))]
        if num_generations is not None:
            if int(num_generations) < 2:
                raise TrainingError("G (completions per prompt) must be at least 2: GRPO "
                                    "compares completions within a group")
            g = int(num_generations)
            cmd += ["--num_generations", str(g), "--per_device_train_batch_size", str(g)]
        if reward_weights is not None:
            cmd += ["--reward_weights", *[str(float(w)) for w in reward_weights]]
        return cmd + list(extra_args)

    def start(self, recipe: str, max_steps: int | None = None,
              num_generations: int | None = None, reward_weights: Sequence[float] | None = None,
              model: str | None = None, extra_args: Sequence[str] = ()) -> int:
        """Launch a run; returns its database id.

        Raises:
            TrainingError: unknown recipe, a GPU recipe without a GPU, bad values, or another
                run still running (one at a time: they would share the same cores/GPU).
        """
        if needs_gpu(recipe) and not self.device.has_gpu:
            raise TrainingError(f"{recipe} needs a GPU (vLLM, bf16) and this machine has none: "
                                f"{self.device.message}. Use cpu-smoke or cpu-lora-0.5b here.")
        with self._lock:
            for r in self.store.list_training_runs(limit=20):
                if r["status"] == "running" and _alive(r["pid"]):
                    raise TrainingError(f"run {r['id']} ({r['recipe']}) is still running; stop "
                                        "it first")
            # placeholder output dir until the id is known
            run_id = self.store.add_training_run(recipe, {}, "", None, status="starting")
            out = self.runs_root / f"{run_id:04d}-{recipe}"
            try:
                cmd = self.command(recipe, out, max_steps, num_generations, reward_weights,
                                   model, extra_args)
            except TrainingError as exc:
                self.store.update_training_run(run_id, status="failed", message=str(exc),
                                               ended_at=_now())
                raise
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / "train.log", "ab")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
            try:
                proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
            except OSError as exc:
                self.store.update_training_run(run_id, status="failed", output_dir=str(out),
                                               message=f"could not start: {exc}", ended_at=_now())
                raise TrainingError(f"could not start the run: {exc}") from exc
            finally:
                log.close()
            config = {"recipe": recipe, "max_steps": max_steps, "num_generations": num_generations,
                      "reward_weights": list(reward_weights) if reward_weights else None,
                      "model": model, "command": cmd, "device": self.device.message}
            self.store.update_training_run(run_id, status="running", pid=proc.pid,
                                           output_dir=str(out), config=config)
            self._procs[run_id] = proc
        threading.Thread(target=self._watch, args=(run_id, proc), daemon=True,
                         name=f"corea-train-{run_id}").start()
        return run_id

    def _watch(self, run_id: int, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        run = self.store.get_training_run(run_id) or {}
        out = run.get("output_dir", "")
        stopped = run.get("status") == "stopping"
        status = "stopped" if stopped else ("completed" if rc == 0 else "failed")
        metrics = read_metrics(out)
        last = {}
        for m in metrics:
            last.update({k: v for k, v in m.items() if v is not None})
        msg = None
        cks = checkpoints(out)
        if status == "failed":
            msg = f"exit code {rc}; last log lines:\n" + log_tail(out, 8)
        elif status == "stopped" and not cks:
            msg = ("stopped before the first training step finished (model loading or the first "
                   "generation): no checkpoint was saved")
        self.store.update_training_run(run_id, status=status, return_code=rc, ended_at=_now(),
                                       checkpoints=cks, final_metrics=last, message=msg)
        with self._lock:
            self._procs.pop(run_id, None)

    def stop(self, run_id: int, timeout_s: float = 0.0) -> str:
        """Ask a running run to stop (SIGTERM to its process group: it saves and exits); a
        second call kills it. Returns a message for the user.

        Raises:
            TrainingError: no such run, or it is not running."""
        run = self.store.get_training_run(run_id)
        if run is None:
            raise TrainingError(f"no training run {run_id}")
        if run["status"] not in ("running", "stopping") or not _alive(run["pid"]):
            raise TrainingError(f"run {run_id} is not running ({run['status']})")
        sig = signal.SIGKILL if run["status"] == "stopping" else signal.SIGTERM
        if run["status"] == "running":
            self.store.update_training_run(run_id, status="stopping")
        try:
            os.killpg(run["pid"], sig)
        except ProcessLookupError:
            pass
        if timeout_s:
            self.wait(run_id, timeout_s)
        return ("Stopping: the run finishes its current step and saves a checkpoint"
                if sig == signal.SIGTERM else "Killed")

    def wait(self, run_id: int, timeout_s: float) -> dict | None:
        """Block until the run is no longer running (or the timeout); returns its record."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            run = self.store.get_training_run(run_id)
            if run is None or run["status"] not in ("running", "stopping", "starting"):
                return run
            time.sleep(0.2)
        return self.store.get_training_run(run_id)

    # ------------------------------------------------------------------ views
    def runs(self, limit: int = 20) -> list[dict]:
        return self.store.list_training_runs(limit=limit)

    def get(self, run_id: int) -> dict | None:
        run = self.store.get_training_run(run_id)
        if run is not None and run["status"] in ("running", "stopping"):
            run["checkpoints"] = checkpoints(run["output_dir"])
        return run
