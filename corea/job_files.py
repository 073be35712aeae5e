"""What a job needs and leaves behind, without the processes: the training device
(:func:`device_info`), the recipes and their trainers, and the files of a run folder (metrics,
per-example confidences, the log's tail, checkpoints). Part of :mod:`corea.jobs`, where every
name here is importable too; :class:`corea.jobs.JobManager` starts and watches the processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["REPO", "RECIPES_DIR", "PLOT_METRICS", "DeviceInfo", "device_info", "recipes",
           "recipe_trainer", "needs_gpu", "read_metrics", "CONFIDENCES_FILE", "read_confidences",
           "log_tail", "checkpoints", "JobError"]

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


class JobError(RuntimeError):
    """A job cannot be started or stopped (the message is shown to the user)."""


def recipes(recipes_dir: Path = RECIPES_DIR) -> dict[str, Path]:
    """Recipe name → YAML path (``train/recipes/*.yaml``)."""
    return {p.stem: p for p in sorted(Path(recipes_dir).glob("*.yaml"))}


def recipe_trainer(path: Path) -> str:
    """The training module a recipe runs: its ``trainer`` key (``train.grpo`` by default;
    ``train.confidence`` for confidence-only calibration training)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    trainer = str(data.get("trainer") or "train.grpo")
    if trainer not in ("train.grpo", "train.confidence"):
        raise JobError(f"{path.name}: unknown trainer {trainer!r}")
    return trainer


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


CONFIDENCES_FILE = "confidences.jsonl"
"""Per-example confidences a ``train.confidence`` run logs (written by
:func:`train.confidence.write_confidences`)."""


def read_confidences(output_dir: str | Path, last_steps: int | None = None
                     ) -> tuple[list[float], list[bool], list[int]]:
    """The per-example ``(confidences, correct, steps)`` a confidence-training run logged to
    ``<output_dir>/confidences.jsonl`` (``train.confidence``), of its last ``last_steps`` log
    steps (all when None); empty lists when there is no such file. Confidence in [0, 1]."""
    path = Path(output_dir) / CONFIDENCES_FILE
    recs = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and len(r.get("confidence") or []) == len(r.get("correct") or []):
                recs.append(r)
    if last_steps is not None:
        recs = recs[-last_steps:] if last_steps > 0 else []
    conf = [float(c) for r in recs for c in r["confidence"]]
    y = [bool(v) for r in recs for v in r["correct"]]
    steps = [int(r.get("step", 0)) for r in recs]
    return conf, y, steps


_NOISE = ("FutureWarning", "UserWarning", "warnings.warn(")


def log_tail(output: str | Path, n_lines: int = 40) -> str:
    """The last ``n_lines`` of a job's log (a file, or a training run's folder: its
    ``train.log``), without Python warning lines (libraries repeat the same deprecation warning at
    every step)."""
    path = Path(output)
    if path.is_dir():
        path = path / "train.log"
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
