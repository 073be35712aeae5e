"""``corea beforeafter BEFORE AFTER``: the SLM of two evaluation runs on the same items (e.g. the
base model and a trained checkpoint), with paired bootstrap intervals and McNemar's test
(:mod:`corea.eval.beforeafter`).

    corea beforeafter runs/gsm8k-test-200 runs/gsm8k-test-200-lora [--json out.json]

Exit status: 0 done, 2 a missing or unreadable run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..eval.beforeafter import compare, format_table
from ..eval.runs import load_results

HELP = "the SLM of two runs compared on the same items (paired)"


def build_parser(ap: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea beforeafter`` (added to ``ap`` when given)."""
    ap = ap or argparse.ArgumentParser(prog="corea beforeafter", description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", help="run folder of the base SLM (runs/<name>)")
    ap.add_argument("after", help="run folder of the trained SLM")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the result to this file")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``corea beforeafter`` with these arguments."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Print the before/after table of two run folders (exit 2 on a bad run)."""
    try:
        result = compare(load_results(args.before), load_results(args.after), args.n_boot,
                         args.seed)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["before_run"], result["after_run"] = args.before, args.after
    print(format_table(result, Path(args.before).name, Path(args.after).name))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0

