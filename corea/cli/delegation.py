"""``corea delegation``: fit the delegation model on a train run and save it for the live cascade.

    corea delegation --train data/generations/gsm8k-train-1000 --out DIR \\
        (--threshold 0.664 | --from-report data/generations/delegation-gsm8k.json [--unit seconds])

The run must be a **train** split with both prompt states (``corea evaluate --hidden-states``,
then ``corea llm-states`` for the LLM's). The model
(:func:`corea.signals.delegation.fit_delegation`) is saved with its route threshold τ_r (:mod:`corea.signals.delegation_files`): given, or the one
``corea heldout --delegation`` chose **on train** in the report's variant of ``--unit`` (``seconds``
or ``usd``, the SLM free). ``--out`` to ``corea/assets/probes/<slm>/delegation`` makes it the one
``slm.route: {by: delegation}`` uses by default.

Exit status: 0 saved, 2 bad input (no run, not a train split, too few rows, no τ_r).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HELP = "fit the delegation model (P(LLM right and SLM wrong)) on train and save it"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea delegation`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea delegation", description=HELP)
    p.add_argument("--train", required=True, metavar="RUN_DIR", help="a train run folder")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the model to")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--threshold", type=float, default=None,
                     help="τ_r in [0, 1] on 1 - P(delegation): below it the question is routed")
    how.add_argument("--from-report", default=None, metavar="JSON",
                     help="take τ_r chosen on train from a `corea heldout --delegation` JSON")
    p.add_argument("--unit", choices=["seconds", "usd"], default="seconds",
                   help="which of the report's variants (SLM free) to take τ_r from")
    p.add_argument("--version", default="", help="a label for the card, e.g. v1")
    return p


def report_threshold(path: str, unit: str) -> float:
    """τ_r of the delegation policy chosen on train in ``unit`` with a free SLM, from a
    ``corea heldout --delegation`` JSON report.

    Raises:
        OSError: the file cannot be read.
        ValueError: not JSON, or no such variant in it.
    """
    rep = json.loads(Path(path).read_text(encoding="utf-8"))
    for v in rep.get("delegation") or ():
        if v.get("unit") == unit and not v.get("ratio"):
            tau = ((v.get("train") or {}).get("delegation") or {}).get("route_threshold")
            if tau is not None:
                return float(tau)
    raise ValueError(f"{path}: no delegation policy chosen in {unit} with a free SLM "
                     f"(make it with `corea heldout --delegation --json ...`)")


def run(args: argparse.Namespace) -> int:
    """Fit and save (exit status as in the module docstring)."""
    from ..eval.runs import load_results, require_train_split
    from ..policy import check_threshold
    from ..signals.delegation import fit_delegation
    from ..signals.delegation_files import make_card, save_delegation

    try:
        rec = require_train_split(args.train, "the delegation model is fit")
        if args.from_report:
            tau = report_threshold(args.from_report, args.unit)
            source = f"{args.from_report} ({args.unit}, SLM free: chosen on train)"
        else:
            tau, source = check_threshold(args.threshold, "--threshold (τ_r)"), "given"
        rows = load_results(args.train)
        models = rec.get("models") or {}
        slm, llm = models.get("slm"), models.get("llm")
        if not slm or not llm:
            raise ValueError(f"{args.train}: its run.json names no SLM and LLM")
        model = fit_delegation(rows, slm)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = " ".join(["corea delegation", *map(shlex.quote, sys.argv[2:])]) \
        if sys.argv[1:2] == ["delegation"] else ""
    card = make_card(model, rows, slm, llm, tau,
                     [f"{args.train} ({rec.get('dataset')}/{rec.get('split')}, {len(rows)} rows)"],
                     source, args.version, command)
    save_delegation(model, card, args.out)
    print(f"delegation model for {slm} -> {llm}: {card.n_train} rows ({card.n_helps} where the "
          f"LLM fixes the SLM), C {card.c_slm:g} / {card.c_llm:g}, τ_r {tau:.3f} ({source}) "
          f"-> {args.out}")
    return 0
