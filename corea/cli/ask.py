"""``corea ask "question"``: one question through the cascade.

Streams the text of every tier that runs (stderr) under a heading per tier, and each decision;
then prints the final result as JSON on stdout (:meth:`corea.events.CascadeResult.to_dict`).
Exit status: 0 answered, 1 the cascade failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from ..config import load_settings
from ..events import Decision, Final, TierDelta, TierDone, TierStarted
from ..types import SOLVE_MODES
from ..validation import InvalidQuestion

HELP = "answer one question through the cascade"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea ask`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea ask", description=HELP)
    p.add_argument("question", help="the question ('-' reads it from stdin)")
    p.add_argument("--threshold", "-t", type=float, default=None,
                   help="τ in [0, 1] (default: COREA_THRESHOLD or 0.7)")
    p.add_argument("--choices", nargs="+", default=None,
                   help="option texts of a multiple-choice question")
    p.add_argument("--config", default=None, help="YAML settings file")
    p.add_argument("--quiet", "-q", action="store_true", help="don't stream text to stderr")
    p.add_argument("--session", default="cli", help="session id stored with the log row")
    p.add_argument("--solve", choices=SOLVE_MODES, default=None,
                   help="how every tier solves: cot (step-by-step text), pot (a Python program "
                        "run in the sandbox; its output is the answer) or mot (both, with their "
                        "agreement); default: each tier's configured solve (cot)")
    return p


def run(args: argparse.Namespace) -> int:
    """Answer ``args.question`` (exit status as in the module docstring)."""
    from ..service import CoreaService  # deferred so --help stays instant

    try:
        settings = load_settings(args.config)
        if args.solve:
            settings = settings.with_solve(args.solve)
    except (ValidationError, FileNotFoundError) as exc:
        print(f"error: invalid settings: {_one_line(exc)}", file=sys.stderr)
        return 2
    service = CoreaService(settings)
    if service.logging_error:  # turns and ratings wait in the local journal
        print(f"[warning] {service.log_status().message(owner=True)}", file=sys.stderr)
    question = sys.stdin.read() if args.question == "-" else args.question
    err = (lambda s: None) if args.quiet else (lambda s: print(s, end="", file=sys.stderr, flush=True))
    try:
        events = service.ask(question, threshold=args.threshold, choices=args.choices,
                             session_id=args.session)
    except (InvalidQuestion, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = None
    for ev in events:
        if isinstance(ev, TierStarted):
            err(f"── {_tier_title(ev, settings)} ──\n")
        elif isinstance(ev, TierDelta):
            err(ev.text)
        elif isinstance(ev, TierDone) and ev.output.solve:
            err(_program_lines(ev.output))
        elif isinstance(ev, Decision):
            err(f"\n── {ev.info.message} ──\n")
        elif isinstance(ev, Final):
            result = ev.result
    err("\n")
    for warning in result.warnings:
        print(f"[warning] {warning}", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    return 0 if result.status == "ok" else 1


def _tier_title(ev: TierStarted, settings) -> str:
    """The heading of a tier's streamed text: the first and last tier with their engine (and
    the last tier's URL), a middle tier by its 1-based number."""
    if ev.role == "slm":
        return f"SLM ({ev.model}, {settings.slm.backend})"
    if ev.role == "llm":
        where = f" @ {settings.llm.base_url}" if settings.llm.base_url else ""
        return f"LLM ({ev.model}, {settings.llm.backend}{where})"
    return f"tier {ev.tier + 1} ({ev.model})"


def _program_lines(out) -> str:
    """What a tier's program printed, or why it gave no answer, and for ``mot`` whether the two
    answers agreed (streamed after its text)."""
    if out.program_error:
        line = f"\n[program] no answer: {out.program_error}\n"
    else:
        printed = (out.program_output or "").strip()
        if len(printed) > 500:
            printed = printed[:500] + " …"
        line = f"\n[program] printed: {printed}\n"
    if out.solve == "mot":
        line += {True: "[mot] the CoT and program answers agree\n",
                 False: f"[mot] the CoT answer ({out.cot_answer}) and the program's disagree\n",
                 None: "[mot] agreement unknown (a solution failed)\n"}[out.agreement]
    return line


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                         for e in exc.errors())
    return str(exc)

