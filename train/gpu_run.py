"""One command: evaluate the base SLM, train it with a GRPO recipe, evaluate the trained model on
the same items, and write the card.

    python -m train.gpu_run --config train/recipes/gpu-1.5b.yaml \\
        [--items 200] [--dataset gsm8k] [--eval-split test] [--out runs/gpu-run-gpu-1.5b] \\
        [--backend auto|vllm|transformers] [--dry-run] [-- any train.grpo flag, e.g. --max_steps 50]

Stages, each a subprocess so the GPU memory of one is free for the next:

1. ``corea evaluate --slm-only`` of the recipe's model on the first ``--items`` items of
   ``--dataset``/``--eval-split`` (default GSM8K test 200) into ``<out>/eval-before``;
2. ``python -m train.grpo --config RECIPE --output_dir <out>/train`` plus any unknown flags (they
   are train.grpo's); a LoRA result is merged into its base (``<out>/merged``) so that vLLM and
   transformers load it alike;
3. the same evaluation of the trained model into ``<out>/eval-after``;
4. ``<out>/card.json`` and ``<out>/README.md`` (:mod:`train.gpu_card`): paired before/after
   metrics (:func:`corea.eval.beforeafter.compare`), the recipe, machine, GPU, wall times and this
   command.

The evaluation backend (``--backend auto``): vLLM when it is installed and a CUDA GPU is present,
else transformers. The evaluation budget is the recipe's ``max_completion_length`` (tokens) unless
``--max-new-tokens`` says otherwise. ``model: tiny-random`` (train/recipes/cpu-smoke.yaml) is first
saved to ``<out>/base`` so that the evaluated and the trained starting weights are the same.

A recipe with ``use_vllm`` or ``bf16`` needs a GPU: without one the command exits 2 with one line,
unless ``--allow-cpu`` and the model is ``tiny-random`` (then both are turned off).

Exit status: 0 done (card written), 1 a stage failed, 2 bad arguments or no GPU for the recipe.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_RANDOM = "tiny-random"  # = train.grpo.TINY_RANDOM (not imported: that pulls in TRL)
BACKENDS = ("auto", "vllm", "transformers")


class RunError(Exception):
    """A stage failed or the arguments cannot run here; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class Plan:
    """What one run does (all paths absolute).

    Attributes:
        model: the recipe's model after overrides (``tiny-random``, a hub id, a folder, ...).
        base_model: what is evaluated before and trained: ``model``, or ``<out>/base`` for
            ``tiny-random``.
        gpu: the CUDA device's name, None when there is none.
        backend: the evaluation backend (``vllm`` | ``transformers``).
        train_overrides: flags passed on to ``train.grpo`` after the recipe (the user's, then
            the CPU fallback's).
        refusal: why this machine cannot run the plan (no GPU for the recipe), or None.
    """

    recipe: Path
    recipe_values: dict[str, Any]
    out: Path
    model: str
    base_model: str
    gpu: str | None
    backend: str
    dataset: str
    split: str
    items: int
    seed: int | None
    data_dir: str | None
    max_new_tokens: int
    workers: int
    torch_threads: int | None
    train_overrides: list[str] = field(default_factory=list)
    refusal: str | None = None

    @property
    def train_dir(self) -> Path:
        return self.out / "train"


# ------------------------------------------------------------------------------- arguments

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.gpu_run", description=__doc__,
                                 allow_abbrev=False,  # the unknown flags are train.grpo's
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a train.grpo recipe (train/recipes/*.yaml)")
    ap.add_argument("--items", type=int, default=200, help="evaluation items (default 200)")
    ap.add_argument("--dataset", default="gsm8k", help="evaluation dataset (corea.datasets name)")
    ap.add_argument("--eval-split", default="test", help="evaluation split (default test)")
    ap.add_argument("--eval-seed", type=int, default=None,
                    help="a random subset with this seed (default: the first --items items)")
    ap.add_argument("--data-dir", default=None, help="benchmark root (default: COREA_DATA_DIR)")
    ap.add_argument("--out", default=None, help="run folder (default runs/gpu-run-<recipe>)")
    ap.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="evaluation backend (auto: vllm with a GPU when installed, else "
                         "transformers)")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="evaluation budget in tokens (default: the recipe's "
                         "max_completion_length)")
    ap.add_argument("--workers", type=int, default=None,
                    help="evaluation items in flight (default 64 with vllm, 8 on a GPU, 1 on CPU)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch CPU threads of every stage (train.grpo's --torch_threads, "
                         "OMP_NUM_THREADS of the evaluations)")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="run a GPU recipe on CPU (only with model tiny-random)")
    ap.add_argument("--dry-run", action="store_true", help="print the stages, run nothing")
    return ap


def recipe_values(path: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe's YAML with the ``--key value`` / ``--key=value`` overrides applied (values
    parsed as YAML scalars; a flag without a value is ``True``, one with several a list)."""
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    key = None
    for tok in overrides:
        if tok.startswith("--"):
            key, eq, val = tok[2:].partition("=")
            values[key] = yaml.safe_load(val) if eq else True
        elif key is not None:  # a value: the first replaces True, more make a list
            old, new = values[key], yaml.safe_load(tok)
            values[key] = new if old is True else [*old, new] if isinstance(old, list) \
                else [old, new]
    return values


def gpu_name() -> str | None:
    """The first CUDA device's name, None without one (or without torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def choose_backend(wanted: str, gpu: str | None, model: str) -> str:
    """``vllm`` or ``transformers`` for the evaluations (see the module docstring)."""
    if wanted != "auto":
        return wanted
    vllm_ok = importlib.util.find_spec("vllm") is not None
    return "vllm" if gpu and vllm_ok and not model.startswith("embedded:") else "transformers"


def make_plan(args: argparse.Namespace, extra: list[str]) -> Plan:
    """The run these arguments describe.

    Raises:
        RunError: (code 2) a bad argument. A recipe that needs a GPU where there is none is a
            plan with a ``refusal`` (``--dry-run`` still shows it).
    """
    recipe = Path(args.config)
    if not recipe.is_file():
        raise RunError(f"no recipe at {recipe}", 2)
    bad = [x for x in extra if x.startswith("-") and not x.startswith("--")]
    if bad or (extra and not extra[0].startswith("--")):
        raise RunError(f"unrecognized arguments: {' '.join(bad or extra[:1])}", 2)
    if "--output_dir" in extra or any(x.startswith("--output_dir=") for x in extra):
        raise RunError("set the run folder with --out (training goes to <out>/train)", 2)
    if args.items < 1 or (args.workers is not None and args.workers < 1):
        raise RunError("--items and --workers must be >= 1", 2)
    values = recipe_values(recipe, extra)
    model = str(values.get("model", "embedded:slm"))
    gpu = gpu_name()
    overrides, refusal = list(extra), None
    if (values.get("use_vllm") or values.get("bf16")) and gpu is None:
        if not args.allow_cpu:
            refusal = (f"{recipe} needs a GPU (use_vllm/bf16) and none is present; "
                       "--allow-cpu runs it on CPU with --model tiny-random")
        elif model != TINY_RANDOM:
            refusal = f"--allow-cpu runs only the tiny model, not {model} (add --model tiny-random)"
        else:
            overrides += ["--use_vllm", "false", "--bf16", "false", "--use_cpu", "true"]
    if args.torch_threads:
        overrides += ["--torch_threads", str(args.torch_threads)]
    out = Path(args.out or REPO / "runs" / f"gpu-run-{recipe.stem}").resolve()
    backend = choose_backend(args.backend, gpu, model)
    workers = args.workers or (64 if backend == "vllm" else 8 if gpu else 1)
    max_new = args.max_new_tokens or int(values.get("max_completion_length") or 512)
    return Plan(recipe=recipe.resolve(), recipe_values=values, out=out, model=model,
                base_model=str(out / "base") if model == TINY_RANDOM else model, gpu=gpu,
                backend=backend, dataset=args.dataset, split=args.eval_split, items=args.items,
                seed=args.eval_seed, data_dir=args.data_dir, max_new_tokens=max_new,
                workers=workers, torch_threads=args.torch_threads, train_overrides=overrides,
                refusal=refusal)


# ---------------------------------------------------------------------------------- stages

def eval_command(plan: Plan, model: str, run_dir: Path) -> list[str]:
    """``corea evaluate --slm-only`` of ``model`` on the plan's items into ``run_dir``."""
    cmd = [sys.executable, "-m", "corea", "evaluate", "--dataset", plan.dataset,
           "--split", plan.split, "--limit", str(plan.items), "--slm-only", "--slm", model,
           "--slm-backend", plan.backend, "--llm-backend", "fake",
           "--max-new-tokens", str(plan.max_new_tokens), "--workers", str(plan.workers),
           "--run-dir", str(run_dir), "--overwrite", "--no-progress"]
    if plan.seed is not None:
        cmd += ["--seed", str(plan.seed)]
    if plan.data_dir:
        cmd += ["--data-dir", plan.data_dir]
    return cmd


def train_command(plan: Plan) -> list[str]:
    """``python -m train.grpo`` with the recipe, the plan's base model and overrides."""
    cmd = [sys.executable, "-m", "train.grpo", "--config", str(plan.recipe),
           "--output_dir", str(plan.train_dir)]
    if plan.model == TINY_RANDOM:
        cmd += ["--model", plan.base_model]
    return cmd + plan.train_overrides


def _env(plan: Plan) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    if plan.torch_threads:
        env["OMP_NUM_THREADS"] = str(plan.torch_threads)
    return env


def run_stage(name: str, cmd: list[str], plan: Plan) -> float:
    """Run one stage's command; returns its wall time (s).

    Raises:
        RunError: the command exited non-zero.
    """
    print(f"[gpu_run] {name}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    code = subprocess.run(cmd, env=_env(plan), cwd=str(REPO)).returncode
    if code != 0:
        raise RunError(f"{name} failed (exit {code}): {shlex.join(cmd)}")
    return time.perf_counter() - t0


def save_tiny_base(plan: Plan) -> None:
    """Save the seeded tiny random model and the Qwen tokenizer to ``plan.base_model``."""
    from train.grpo import ScriptArguments, load_model_and_tokenizer

    sargs = ScriptArguments(model=TINY_RANDOM)
    if plan.recipe_values.get("corea_cache_dir"):
        sargs.corea_cache_dir = str(plan.recipe_values["corea_cache_dir"])
    model, tokenizer = load_model_and_tokenizer(sargs, seed=int(plan.recipe_values.get("seed", 0)))
    model.save_pretrained(plan.base_model)
    tokenizer.save_pretrained(plan.base_model)


def trained_model(plan: Plan) -> str:
    """The folder to evaluate after training: ``<out>/train``, or for a LoRA adapter its merge
    into the base saved to ``<out>/merged`` (vLLM loads full weights only)."""
    train = plan.train_dir
    if not (train / "adapter_config.json").is_file():
        return str(train)
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    dest = plan.out / "merged"
    dtype = torch.bfloat16 if plan.recipe_values.get("bf16") and plan.gpu else torch.float32
    merged = AutoPeftModelForCausalLM.from_pretrained(str(train), dtype=dtype).merge_and_unload()
    merged.save_pretrained(str(dest))
    AutoTokenizer.from_pretrained(str(train)).save_pretrained(str(dest))
    return str(dest)


def describe(plan: Plan) -> str:
    """The plan as text (``--dry-run``)."""
    need = plan.recipe_values.get("use_vllm") or plan.recipe_values.get("bf16")
    lines = [f"recipe {plan.recipe}: model {plan.model}, GPU {plan.gpu or 'none'}"
             + (" (the recipe needs one)" if need else ""),
             f"evaluation: {plan.dataset} {plan.split} {plan.items} items, backend {plan.backend},"
             f" {plan.max_new_tokens} new tokens, {plan.workers} workers",
             f"1. {shlex.join(eval_command(plan, plan.base_model, plan.out / 'eval-before'))}",
             f"2. {shlex.join(train_command(plan))}",
             f"3. {shlex.join(eval_command(plan, '<trained model>', plan.out / 'eval-after'))}",
             f"4. write {plan.out / 'card.json'} and {plan.out / 'README.md'}"]
    if plan.model == TINY_RANDOM:
        lines.insert(2, f"0. save the tiny random model to {plan.base_model}")
    if plan.refusal:
        lines.append(f"not runnable here (exit 2): {plan.refusal}")
    return "\n".join(lines)


def execute(plan: Plan, command: str) -> Path:
    """Run every stage and write the card; returns the card.json path.

    Raises:
        RunError: a stage failed.
    """
    from train.gpu_card import build_card, write_card

    t0 = time.perf_counter()
    plan.out.mkdir(parents=True, exist_ok=True)
    if plan.model == TINY_RANDOM:
        save_tiny_base(plan)
    before, after = plan.out / "eval-before", plan.out / "eval-after"
    wall = {"before_eval": run_stage("evaluate base", eval_command(plan, plan.base_model, before),
                                     plan)}
    wall["train"] = run_stage("train", train_command(plan), plan)
    model = trained_model(plan)
    wall["after_eval"] = run_stage("evaluate trained", eval_command(plan, model, after), plan)
    wall["total"] = time.perf_counter() - t0
    run = {"command": command, "recipe": str(plan.recipe), "recipe_values": plan.recipe_values,
           "train_overrides": plan.train_overrides, "model": plan.model,
           "base_model": plan.base_model, "trained_model": model, "train_dir": str(plan.train_dir),
           "eval": {"dataset": plan.dataset, "split": plan.split, "items": plan.items,
                    "seed": plan.seed, "backend": plan.backend,
                    "max_new_tokens": plan.max_new_tokens}}
    js, md = write_card(plan.out, build_card(run, before, after, plan.gpu, wall))
    print(f"[gpu_run] wrote {js} and {md}", file=sys.stderr)
    return js


def main(argv: Sequence[str] | None = None) -> int:
    """The command (exit status as in the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = build_parser().parse_known_args(argv)
    extra = [x for x in extra if x != "--"]
    try:
        plan = make_plan(args, extra)
        if args.dry_run:
            print(describe(plan))
            return 0
        if plan.refusal:
            raise RunError(plan.refusal, 2)
        execute(plan, shlex.join(["python", "-m", "train.gpu_run", *argv]))
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
