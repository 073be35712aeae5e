"""``corea combine-mot``: a ``mot`` run made from a ``cot`` run and a ``pot`` run of the same items.

    corea combine-mot --cot data/generations/gsm8k-test-200 \\
        --pot data/generations/gsm8k-test-200-pot --run-dir runs/gsm8k-test-200-mot

A ``mot`` tier solves by chain of thought and, independently, by a program; under greedy
decoding each half is what the ``cot`` and ``pot`` runs wrote, so the ``mot`` run is their
merge with the live tier's merge rule (:mod:`corea.eval.mot_rows`). Items in both runs only;
an item's LLM tier is merged where both runs have it.

Exit status: 0 written, 2 the runs differ, share no item, or the output exists.
"""

from __future__ import annotations

import argparse
import sys

HELP = "make a mot run (CoT and program, with their agreement) from a cot run and a pot run"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea combine-mot`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea combine-mot", description=HELP)
    p.add_argument("--cot", required=True, metavar="RUN_DIR", help="the chain-of-thought run")
    p.add_argument("--pot", required=True, metavar="RUN_DIR", help="the program-of-thought run")
    p.add_argument("--run-dir", required=True, metavar="OUT", help="the new mot run folder")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the ``mot`` run; print what was written (exit status as in the docstring)."""
    from ..eval.mot_rows import SourceMismatch, combine_runs

    try:
        rep = combine_runs(args.cot, args.pot, args.run_dir)
    except (SourceMismatch, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{rep.n_items} items -> {rep.out_dir} ({rep.n_with_llm} with the LLM tier; "
          f"SLM CoT and program agree on {rep.n_agree})")
    return 0
