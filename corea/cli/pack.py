"""``corea pack``: compress a run folder's JSONL files for committing.

    corea pack data/generations/gsm8k-train-1000

Writes ``X.jsonl.gz`` beside every ``X.jsonl`` (deterministic gzip; only complete lines). Readers
use the packed files where the plain ones are absent, and ``corea evaluate`` with the same
arguments continues a packed run (:func:`corea.eval.runs.pack_run`). Safe while a generation is
still appending to the folder: the pack holds the lines written so far.

Exit status: 0 packed, 2 a folder has no JSONL files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "compress a run folder's JSONL files (X.jsonl -> X.jsonl.gz) for committing"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea pack`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea pack", description=HELP)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders to pack")
    return p


def run(args: argparse.Namespace) -> int:
    """Pack each folder; print one line per packed file (exit status as in the docstring)."""
    from ..eval.runs import pack_run

    status = 0
    for d in args.run_dirs:
        packed = pack_run(d) if Path(d).is_dir() else []
        if not packed:
            print(f"error: no .jsonl files in {d}", file=sys.stderr)
            status = 2
        for path in packed:
            print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
    return status
