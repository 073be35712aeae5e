"""``corea evaluate``: score both models once per item, then summarize any threshold τ.

    corea evaluate --dataset gsm8k --split test --limit 200 [--seed 0] \\
        [--slm-backend llamacpp --slm embedded:slm --llm-backend llamacpp --llm embedded:llm] \\
        [--max-new-tokens 512] [--run-dir runs/NAME] [--workers 1] [--threshold 0.7] \\
        [--solve cot|pot|mot]

With a settings file whose ``tiers:`` has three tiers or more (``--config
config/three-tiers.yaml``), every tier is scored once per item by the same harness (one record
per tier in ``items.jsonl``, :mod:`corea.eval.records`) and the summary adds the N-tier view
(τ vectors). ``--slm-first`` (one phase per tier), ``--verify`` (every deciding tier),
``--samples`` (every deciding tier) and ``--hidden-states`` (every deciding tier) work for any
number of tiers.

Exit status: 0 done, 1 aborted/interrupted, 2 bad arguments or a mismatching run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..backends import make_backend
from ..config import Settings, load_settings
from ..costs import missing_prices, priced_like
from ..policy import check_threshold
from ..types import SOLVE_MODES
from ..eval.runs import ITEMS_FILE, PRIORS_FILE, SUMMARY_FILE, SWEEP_FILE, default_run_dir, read_run

HELP = "score both models once per item on a benchmark, then summarize any τ"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea evaluate`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(
        prog="corea evaluate",
        description="Score both models once per item, then evaluate any threshold τ.")
    p.add_argument("--dataset", required=True,
                   help="gsm8k, math500, arc_challenge, bbh_mc, svamp, a .jsonl path or hf:<id>")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="number of items (default: all)")
    p.add_argument("--seed", type=int, default=None,
                   help="with --limit, a random subset with this seed (default: the first items)")
    p.add_argument("--data-dir", default=None, help="benchmark root (default: COREA_DATA_DIR)")
    p.add_argument("--config", default=None, help="YAML settings file")
    backends = ["llamacpp", "transformers", "openai", "vllm", "fake"]
    p.add_argument("--slm-backend", choices=backends, default=None)
    p.add_argument("--slm", default=None, help="SLM model (embedded:slm, hub id, .gguf, API name, "
                   "checkpoint folder: llama.cpp for a LoRA adapter of a GGUF, else transformers, "
                   "unless --slm-backend says)")
    p.add_argument("--llm-backend", choices=backends, default=None)
    p.add_argument("--llm", default=None, help="LLM model")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation budget of both models (tokens)")
    p.add_argument("--solve", choices=SOLVE_MODES, default=None,
                   help="how every tier solves: cot (step-by-step text), pot (a Python program "
                        "run in the sandbox) or mot (both, with their agreement); default: each "
                        "tier's configured solve (cot)")
    p.add_argument("--run-dir", default=None,
                   help="results folder (default: runs/<dataset>-<split>-<limit>-<slm>-<llm>)")
    p.add_argument("--workers", type=int, default=1,
                   help="items in flight at once: concurrent requests for HTTP backends, "
                        "sequences decoded together (continuous batching) for llamacpp, "
                        "batched generate calls for transformers and vllm")
    p.add_argument("--threshold", type=float, default=None,
                   help="τ for the headline cascade row (default: settings threshold, 0.7)")
    p.add_argument("--slm-only", action="store_true",
                   help="run only the SLM (pass@1 and calibration of one model, e.g. a trained "
                        "checkpoint; no cascade metrics)")
    p.add_argument("--slm-first", action="store_true",
                   help="one phase per tier: the SLM on every item first (its rows wait for "
                        "the LLM, marked pending), then each next tier; an interrupted run "
                        "keeps SLM rows for the probes and signals, and any rerun completes them")
    p.add_argument("--phase", choices=("both", "slm", "llm"), default="both",  # harness.PHASES
                   help="with --slm-first: do only one phase now: 'slm' (pending rows for every "
                        "item not yet run, no LLM call) or 'llm' (complete the pending rows "
                        "only, start no new item); default both")
    p.add_argument("--confidence-first", action="store_true",
                   help="also run the confidence-first turn (the SLM states its confidence "
                        "before solving) on every item, into priors.jsonl")
    p.add_argument("--hidden-states", action="store_true",
                   help="llama.cpp SLM (and every middle tier): also record its final-layer "
                        "hidden states after the question and at the end of its solution "
                        "(inputs of the probe signals)")
    p.add_argument("--verify", action="store_true",
                   help="also ask the SLM (and every middle tier) whether its own answer is "
                        "right: P(True) (self-verification), stored as slm_verify (a middle "
                        "tier's in its tier record)")
    p.add_argument("--samples", type=int, default=0, metavar="K",
                   help="after the greedy pass, draw K sampled SLM (and middle-tier) solutions "
                        "per item into samples.jsonl (self-consistency, group accuracy); "
                        "default 0")
    p.add_argument("--samples-limit", type=int, default=None, metavar="N",
                   help="sample only the first N items of the run (default: all)")
    p.add_argument("--samples-first", action="store_true",
                   help="draw the samples before the greedy pass (they are what calibration "
                        "training needs first); default: after it")
    p.add_argument("--sample-temperature", type=float, default=0.7,
                   help="temperature of the sampled solutions (default 0.7; top-p 0.95)")
    p.add_argument("--summarize-only", action="store_true",
                   help="don't generate; summarize the existing run folder")
    p.add_argument("--overwrite", action="store_true",
                   help="discard existing results in the run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _settings_from_args(args) -> Settings:
    settings = load_settings(args.config)
    if getattr(args, "solve", None):
        settings = settings.with_solve(args.solve)
    for side in ("slm", "llm"):
        ms = getattr(settings, side)
        upd = {}
        if getattr(args, f"{side}_backend"):
            upd["backend"] = getattr(args, f"{side}_backend")
        if getattr(args, side):
            upd["model"] = getattr(args, side)
            if not getattr(args, f"{side}_backend") and Path(upd["model"]).expanduser().is_dir():
                from ..backends.lora_gguf import checkpoint_backend  # the folder's engine

                upd["backend"] = checkpoint_backend(upd["model"], settings.cache_dir)
        if args.max_new_tokens is not None:
            upd["max_new_tokens"] = args.max_new_tokens
        if upd:
            new = type(ms).model_validate({**ms.model_dump(), **upd})
            prices = settings.prices
            if Path(new.model).expanduser().is_dir():  # a checkpoint folder: its base's price
                prices = priced_like(prices, new.name, ms.name)
            settings = settings.model_copy(update={side: new, "prices": prices})
    missing = missing_prices([m.name for m in settings.tier_models()], settings.prices)
    if missing:
        print(f"[eval] no price for {', '.join(missing)}: costed at $0 "
              "(set COREA_PRICES or `prices:` in the YAML config)", file=sys.stderr)
    return settings


def _summary_mismatch(run_dir: Path, args) -> str | None:
    """With --summarize-only: the run folder must hold what --dataset/--split/--limit/--seed
    name (its run.json records them); returns the problem, or None."""
    rec = read_run(run_dir)
    if rec is None:
        return None
    want = {"dataset": args.dataset, "split": args.split, "limit": args.limit, "seed": args.seed}
    diffs = [f"{k}: run has {rec.get(k)!r}, arguments say {v!r}" for k, v in want.items()
             if k in rec and rec.get(k) != v]
    if diffs:
        return (f"{run_dir} holds another run than the arguments name:\n  " + "\n  ".join(diffs)
                + "\nPass the run's own arguments (or another --run-dir).")
    return None


def _run_solve(settings: Settings) -> str:
    """The run's solve mode for its default folder name: the tiers' one mode, or ``mixed``."""
    modes = set(settings.tier_solves())
    return modes.pop() if len(modes) == 1 else "mixed"


def _n_tiers(settings: Settings) -> int:
    return len(settings.tier_models())


def _tier_taus(settings: Settings, run_dir: Path, first: float | None) -> list[float] | None:
    """The τ vector of an N-tier summary: the settings' (when they describe the run's tiers),
    else those its run.json records; ``first`` (``--threshold``) replaces the first tier's.
    ``None``: not an N-tier run."""
    from ..eval.summary import recorded_taus

    rec = read_run(run_dir) or {}
    n = len((rec.get("identity") or {}).get("tiers") or [])
    if n < 3:
        return None
    taus = settings.tier_thresholds()
    if len(taus) != n - 1:
        taus = recorded_taus(rec, n)
    if first is not None:
        taus[0] = first
    return taus


def with_hidden_states(settings: Settings) -> Settings:
    """``settings`` with ``hidden_states`` on for every deciding tier (all but the last): the
    first (``slm``) and each middle tier of ``tiers``."""
    upd: dict = {"slm": settings.slm.model_copy(update={"hidden_states": True})}
    if settings.tiers:
        upd["tiers"] = [t.model_copy(update={"hidden_states": True}) if k < len(settings.tiers) - 1
                        else t for k, t in enumerate(settings.tiers)]
    return settings.model_copy(update=upd)


def _sigterm_as_interrupt() -> None:
    """SIGTERM (``kill``, a container stop) ends a run like Ctrl-C: the session is recorded in
    run.json and completed items are kept."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def _samples(args, items, cascade, run_dir: Path, workers: int) -> int | None:
    """The sampled-solutions stage; an exit status when interrupted, else None."""
    from ..eval.samples import SAMPLES_FILE, score_samples

    try:
        score_samples(items[:args.samples_limit], cascade, run_dir, args.samples,
                      args.sample_temperature, workers=workers, progress=not args.no_progress)
    except RuntimeError as exc:  # another process writes the folder
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: completed samples are saved in {run_dir / SAMPLES_FILE}; rerun "
              "the same command to resume", file=sys.stderr)
        return 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``corea evaluate`` with these arguments (exit status as in the module docstring)."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run, resume or summarize an evaluation (exit status as in the module docstring)."""
    from ..eval.summary import format_summary, write_summary

    _sigterm_as_interrupt()
    problem = _argument_problem(args)
    if problem:
        return _fail(problem)
    try:
        settings = _settings_from_args(args)
    except Exception as exc:  # bad YAML / env / values
        return _fail(exc)
    threshold = settings.threshold if args.threshold is None else args.threshold
    n_tiers = 2 if args.slm_only else _n_tiers(settings)  # --slm-only: the first tier alone
    problem = _phase_problem(args, n_tiers)
    if problem:
        return _fail(problem)
    middle_names = [m.name for m in settings.tier_models()[1:-1]] if n_tiers > 2 else []
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(
        args.dataset, args.split, args.limit, settings.slm.name, settings.llm.name, args.seed,
        middle=middle_names, solve=_run_solve(settings))

    if args.summarize_only:
        problem = _summary_mismatch(run_dir, args)
        if problem:
            return _fail(problem)
    if not args.summarize_only:
        code = _generate(args, settings, n_tiers, run_dir)
        if code is not None:
            return code
    try:
        summary = write_summary(run_dir, threshold,
                                taus=_tier_taus(settings, run_dir, args.threshold))
    except FileNotFoundError as exc:
        return _fail(exc)
    print(format_summary(summary))
    print(f"\nwrote {run_dir / SUMMARY_FILE} and {run_dir / SWEEP_FILE}")
    return 0


def _fail(problem, code: int = 2) -> int:
    """Print ``error: <problem>`` on stderr; returns ``code``."""
    print(f"error: {problem}", file=sys.stderr)
    return code


def _argument_problem(args) -> str | None:
    """What is wrong with the numeric options on their own, or None."""
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        return "--max-new-tokens must be >= 1"
    if args.threshold is not None:
        try:
            check_threshold(args.threshold, "--threshold")
        except ValueError as exc:
            return str(exc)
    if args.workers < 1:
        return "--workers must be >= 1"
    if args.samples < 0 or (args.samples and args.sample_temperature <= 0):
        return "--samples must be >= 0 and --sample-temperature > 0"
    return None


def _phase_problem(args, n_tiers: int) -> str | None:
    """What is wrong with --phase / --slm-first / --verify for a run of ``n_tiers``, or None."""
    if args.phase != "both" and (args.slm_only or not args.slm_first):
        return "--phase goes with --slm-first (and not --slm-only)"
    return None


def _make_cascade(settings: Settings, n_tiers: int, workers: int):
    """The cascade of every tier's backend, each batched for ``workers`` items in flight."""
    from ..cascade import Cascade
    from ..eval.harness import batched

    slm = batched(make_backend(settings.slm, settings.cache_dir), settings.slm, workers)
    llm = batched(make_backend(settings.llm, settings.cache_dir), settings.llm, workers)
    middle = []
    for ms in settings.tier_models()[1:-1] if n_tiers > 2 else []:
        if workers > 1 and ms.backend == "llamacpp" and ms.n_parallel < workers:
            ms = ms.model_copy(update={"n_parallel": workers})
        middle.append(batched(make_backend(ms, settings.cache_dir), ms, workers))
    return Cascade(slm, llm, settings, middle=middle)


def _generate(args, settings: Settings, n_tiers: int, run_dir: Path) -> int | None:
    """Load the items and run every generating stage (samples before or after the greedy pass,
    the confidence-first priors); an exit status when one fails or is interrupted, else None."""
    from ..datasets import load_dataset
    from ..eval.harness import score_priors, with_parallel

    try:
        items = load_dataset(args.dataset, args.split, args.limit, args.seed, args.data_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return _fail(exc)
    workers = args.workers
    if workers > 1:
        settings = with_parallel(settings, workers)
    if args.hidden_states:
        settings = with_hidden_states(settings)
    cascade = _make_cascade(settings, n_tiers, workers)
    print(f"[eval] {len(items)} items -> {run_dir}", file=sys.stderr)
    if args.samples and args.samples_first:
        if (code := _samples(args, items, cascade, run_dir, workers)) is not None:
            return code
    if (code := _greedy(args, items, cascade, run_dir, n_tiers, workers)) is not None:
        return code
    if args.samples and not args.samples_first:
        if (code := _samples(args, items, cascade, run_dir, workers)) is not None:
            return code
    if args.confidence_first:
        try:
            score_priors(items, cascade, run_dir, workers, progress=not args.no_progress)
        except KeyboardInterrupt:
            print(f"\ninterrupted: completed priors are saved in {run_dir / PRIORS_FILE}",
                  file=sys.stderr)
            return 1
    return None


def _greedy(args, items, cascade, run_dir: Path, n_tiers: int, workers: int) -> int | None:
    """The greedy pass: every tier once per item (:func:`corea.eval.harness.evaluate`); an exit
    status when it fails or is interrupted, else None."""
    from ..eval.harness import EvaluationAborted, RunMismatch, evaluate

    info = {"dataset": args.dataset, "split": args.split, "limit": args.limit,
            "seed": args.seed}
    if n_tiers > 2:
        print(f"[eval] {n_tiers} tiers: each scored once per item into "
              f"{run_dir / ITEMS_FILE}", file=sys.stderr)
    try:
        evaluate(items, cascade, run_dir, workers=workers, progress=not args.no_progress,
                 run_info=info, overwrite=args.overwrite, slm_only=args.slm_only,
                 verify=args.verify, slm_first=args.slm_first, phase=args.phase)
    except RunMismatch as exc:
        return _fail(exc)
    except EvaluationAborted as exc:
        return _fail(exc, 1)
    except RuntimeError as exc:  # another process writes the folder
        return _fail(exc)
    except KeyboardInterrupt:
        print(f"\ninterrupted: completed items are saved in {run_dir / ITEMS_FILE}; rerun "
              "the same command to resume", file=sys.stderr)
        return 1
    return None
