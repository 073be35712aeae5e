"""The command line: one entry point, ``corea <command>`` (also ``python -m corea <command>``).

Each command lives in its own module here, with ``HELP`` (one line), ``build_parser(p)`` (its
options) and ``run(args) -> exit status``; the library modules have no command line of their own.
Heavy imports (models, torch, scikit-learn) happen inside ``run``, so ``corea --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: command name -> module under corea.cli (in the order ``corea --help`` lists them)
COMMANDS = {
    "ask": "ask",
    "evaluate": "evaluate",
    "report": "report",
    "beforeafter": "beforeafter",
    "calibrate": "calibrate",
    "lora-gguf": "lora_gguf",
    "heldout": "heldout",
    "probe": "probe",
    "llm-states": "llm_states",
    "delegation": "delegation",
    "llm-verify": "llm_verify",
    "pack": "pack",
    "combine-mot": "combine_mot",
    "checkpoints": "checkpoints",
    "early-exit": "early_exit",
    "sandbox": "sandbox",
    "serve": "serve",
    "push-ratings": "push_ratings",
}


def build_parser() -> argparse.ArgumentParser:
    """``corea`` with one sub-parser per command."""
    p = argparse.ArgumentParser(prog="corea", description="COREA: a small model answers first "
                                "with a verbalized confidence; below τ a large model answers.")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"{__name__}.{module}")
        sp = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.build_parser(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its exit status."""
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
