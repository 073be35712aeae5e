"""``corea sandbox``: run a program in the sandbox exactly as the cascade would.

    corea sandbox program.py              # print what it printed, or why it was refused
    echo 'print(6 * 7)' | corea sandbox -  # read the program from stdin
    corea sandbox --completion reply.txt  # a model's whole reply: the program is extracted
                                          # from it and the answer read as program-of-thought does
    corea sandbox --json program.py       # the full result as JSON
    corea sandbox --layers                # which OS layers are active on this machine

The program's printed output goes to stdout; one status line goes to stderr: ``answer: 42
(0.004 s)`` (the answer read from it, as the cascade reads it), or ``refused: import of 'os' is
not allowed`` (the error kind, then the reason).
Limits default to the cascade's (:class:`corea.sandbox.SandboxLimits`); ``--timeout``, ``--cpu``
and ``--memory`` override them.

Exit status: 0 the program ran (printed something or set ``answer``); 1 it was refused or failed
(syntax, exception, timeout, memory, output_too_large, refused, no_output, or no program found in
a completion); 2 bad input (no such file, not UTF-8 text, bad limits, no FILE).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "run a Python program in the program-of-thought sandbox and say what it printed or why not"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea sandbox`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea sandbox", description=HELP)
    p.add_argument("file", nargs="?", metavar="FILE", help="the program ('-' reads stdin)")
    p.add_argument("--completion", action="store_true",
                   help="FILE is a model's reply: extract the program from it first")
    p.add_argument("--timeout", type=float, default=None, help="wall-clock seconds")
    p.add_argument("--cpu", type=int, default=None, help="CPU seconds")
    p.add_argument("--memory", type=int, default=None, help="address space in MiB")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--layers", action="store_true",
                   help="print which OS layers are active here (and run FILE if given)")
    return p


def _read(name: str) -> str:
    """The text of FILE or stdin; raises ValueError with a clear message."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None


def _limits(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from ..sandbox import SandboxLimits

    given = {k: v for k, v in (("timeout_s", args.timeout), ("cpu_s", args.cpu),
                               ("memory_mb", args.memory)) if v is not None}
    return replace(SandboxLimits(), **given)


def run(args: argparse.Namespace) -> int:
    """Run the program (exit status as in the module docstring)."""
    from ..sandbox import SandboxUnavailable, layers

    try:
        if args.layers:
            for name, what in layers().items():
                print(f"{name}: {what}")
            if args.file is None:
                return 0
        if args.file is None:
            print("error: give a FILE ('-' for stdin), or --layers", file=sys.stderr)
            return 2
        text = _read(args.file)
        limits = _limits(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from ..pot import run_completion, run_pot_program

    pot = run_completion(text, limits) if args.completion else run_pot_program(text, limits)
    if args.json:
        print(json.dumps(pot.as_dict(), indent=2, ensure_ascii=False))
    else:
        res = pot.result
        if res is not None and res.output:
            sys.stdout.write(res.output if res.output.endswith("\n") else res.output + "\n")
        print(pot.status_line(), file=sys.stderr)
    return 0 if pot.ok else 1
