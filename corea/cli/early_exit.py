"""``corea early-exit``: fit the checkpoint probe on train, choose τ_r / τ_e / τ, report on test.

    corea early-exit --train data/generations/gsm8k-train-1000 \\
        --test gsm8k-test=data/generations/gsm8k-test-200 \\
        --md data/generations/early-exit-gsm8k.md --json data/generations/early-exit-gsm8k.json \\
        --probe-out runs/early-exit-probe

The runs need their checkpoint states (``corea checkpoints RUN_DIR``, the side file
``checkpoints.jsonl``); only rows that have them take part. Everything is fit and chosen on the
train run (its ``run.json`` must record a train split); the test runs are only measured
(:mod:`corea.eval.early_exit_report`). ``--probe-out`` saves the checkpoint probe fit on all
train rows (a tier's ``early_exit.probe``).

Exit status: 0 written, 2 bad arguments or data.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HELP = "early exit: fit the checkpoint probe on train, choose thresholds, report held out"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea early-exit`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea early-exit", description=HELP)
    p.add_argument("--train", required=True, metavar="RUN_DIR", help="a train run folder")
    p.add_argument("--test", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="a held-out run to report on (repeatable)")
    p.add_argument("--max-drop", type=float, default=0.02,
                   help="pass@1 points (0-1) below LLM-only allowed when choosing (default 0.02)")
    p.add_argument("--time-model", default=None, metavar="JSON",
                   help="seconds per call per model (default: the shipped estimate)")
    p.add_argument("--probe-out", default=None, metavar="DIR",
                   help="save the checkpoint probe fit on all train rows here")
    p.add_argument("--md", default=None, help="write the Markdown report here")
    p.add_argument("--json", default=None, help="write the JSON report here")
    return p


def run(args: argparse.Namespace) -> int:
    """Build and write the report (exit status as in the docstring)."""
    from ..eval.checkpoints import attach_checkpoints
    from ..eval.early_exit_report import early_exit_lines, early_exit_report
    from ..eval.runs import clean, load_results, require_train_split
    from ..timing import load_time_model, shipped_time_model
    from .heldout import named_runs, slm_and_price

    try:
        tests = named_runs(args.test)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run_rec = require_train_split(args.train, "the checkpoint probe is fit and τ chosen")
        train = attach_checkpoints(load_results(args.train), args.train)
        test_rows = {n: attach_checkpoints(load_results(p), p) for n, p in tests.items()}
        slm, llm_price = slm_and_price(run_rec)
        tm = load_time_model(args.time_model) if args.time_model else shipped_time_model()
        rep, probe = early_exit_report(train, test_rows, slm, llm_price, tm, args.max_drop)
        if args.probe_out:
            probe.card.data = [str(args.train)]
            probe.save(args.probe_out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep["runs"] = {"train": str(args.train), "tests": tests}
    rep["command"] = " ".join(["corea early-exit", *map(shlex.quote, sys.argv[2:])]) \
        if sys.argv[1:2] == ["early-exit"] else None
    md = "\n".join(([f"Made by `{rep['command']}`.", ""] if rep["command"] else [])
                   + early_exit_lines(rep))
    print(md)
    if args.md:
        Path(args.md).write_text(md + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(clean(rep), indent=2) + "\n", encoding="utf-8")
    return 0
