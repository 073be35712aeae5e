"""``corea report RUN_DIR``: write ``report.md`` and the charts of an evaluation run
(:mod:`corea.eval.report`).

    corea report runs/gsm8k-test-200 [--out DIR] [--threshold 0.7] [--n-boot 1000]

Exit status: 0 done, 2 a missing or unreadable run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..policy import check_threshold

HELP = "write report.md and charts for an evaluation run"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea report`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea report", description=HELP)
    p.add_argument("run_dir", help="run folder holding items.jsonl")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report)")
    p.add_argument("--threshold", type=float, default=0.7, help="τ of the headline cascade row")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``corea report`` with these arguments."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Write the report (exit status as in the module docstring)."""
    from ..eval.report import write_report

    try:
        check_threshold(args.threshold, "--threshold")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        path = write_report(args.run_dir, args.out, args.threshold, args.n_boot)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
