"""``corea checkpoints``: the SLM's hidden states every k tokens of a run's committed solutions.

    COREA_USE_SHIPPED_ADAPTER=false COREA_SLM__N_THREADS=1 \\
    corea checkpoints data/generations/gsm8k-test-200 --k 32

One llama.cpp prefill per item of the SLM's own chat and its solution, reading the final-layer
state at every k-th completion token and at the solution's end, into the run's side file
``checkpoints.jsonl`` (:mod:`corea.eval.checkpoints`): the data an early-exit probe is fit and
measured on, without generating again. Resumable (an item with a line is skipped); ``corea pack``
then compresses it. The run's SLM must be the one configured (``COREA_USE_SHIPPED_ADAPTER=false``
for the plain SLM's rows) and on llama.cpp.

Exit status: 0 done, 2 bad arguments (no run, another SLM, an engine without states).
"""

from __future__ import annotations

import argparse
import sys

HELP = "read the SLM's hidden states every k tokens of a run's solutions (early-exit data)"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea checkpoints`` (added to ``p`` when given)."""
    from ..eval.checkpoints import DEFAULT_K

    p = p or argparse.ArgumentParser(prog="corea checkpoints", description=HELP)
    p.add_argument("run_dir", metavar="RUN_DIR", help="an evaluation run folder")
    p.add_argument("--k", type=int, default=DEFAULT_K,
                   help=f"tokens between two reads (default {DEFAULT_K})")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N rows in id order (default: all with an SLM solution)")
    p.add_argument("--graded", action="store_true",
                   help="only rows where both models are graded (not pending)")
    return p


def run(args: argparse.Namespace) -> int:
    """Read and append the states (exit status as in the docstring)."""
    from ..backends import make_backend
    from ..config import load_settings
    from ..eval.checkpoints import score_checkpoints
    from ..eval.heldout_signal import gradable
    from ..eval.runs import load_results

    if args.k < 1 or (args.limit is not None and args.limit < 1):
        print("error: --k and --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        rows = load_results(args.run_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    names = {(r.get("slm") or {}).get("model") for r in rows} - {None}
    if names and names != {settings.slm.name}:
        print(f"error: the run's SLM is {', '.join(sorted(names))}, the configured one "
              f"{settings.slm.name} (COREA_USE_SHIPPED_ADAPTER=false for the plain SLM)",
              file=sys.stderr)
        return 2
    backend = make_backend(settings.slm, settings.cache_dir)
    if not hasattr(backend, "completion_states"):
        print(f"error: the {settings.slm.backend} engine reads no states (use llamacpp)",
              file=sys.stderr)
        return 2
    rows = gradable(rows) if args.graded else rows
    rows = rows[:args.limit] if args.limit else rows
    n = score_checkpoints(rows, backend, args.run_dir, args.k)
    print(f"{n} items read into {args.run_dir}/checkpoints.jsonl")
    return 0
