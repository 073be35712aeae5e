"""``corea heldout``: every deferral signal fit and tuned on a train run, measured on test runs.

    corea heldout --train data/generations/gsm8k-train-1000 \\
        --test gsm8k-test=data/generations/gsm8k-test-200 --test svamp=data/generations/svamp-test-100 \\
        [--signals verbal probe p_true sc4 ...] [--max-drop 0.02] [--fixed-threshold 0.7] [--time-model tm.json] [--route-first] [--md report.md] [--json report.json]

Learned signals (calibrator, probes) are fit on the train rows only; τ is chosen on the train rows
(cross-fitted values) and applied unchanged to each test run (:mod:`corea.eval.heldout`).
Test runs are read, never fit or tuned on. ``--route-first`` adds pre-generation routing (the
prompt probe in front of the answer-first default signal, both thresholds chosen on train;
:mod:`corea.eval.route_first`) against answer-first and the oracles: chosen in seconds with a free
SLM, and in USD with the SLM at 1/3 of the LLM's prices. The LLM's price comes from the train run's ``run.json``; seconds from ``--time-model`` (default: the
shipped estimate, :data:`corea.timing.SHIPPED_TIME_MODEL`) applied to each row's token counts.

Exit status: 0 written, 2 bad input (missing run, no gradable train rows, unknown signal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..policy import check_threshold

HELP = "fit and tune every deferral signal on a train run, measure it on test runs"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea heldout`` (added to ``p`` when given)."""
    from ..signals.registry import NAMES

    p = p or argparse.ArgumentParser(prog="corea heldout", description=HELP)
    p.add_argument("--train", required=True, help="evaluation run folder of a train split")
    p.add_argument("--test", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="a held-out run (repeatable); NAME labels its table")
    p.add_argument("--signals", nargs="+", default=None, choices=list(NAMES),
                   help="signals to compare (default: every one the runs have inputs for)")
    p.add_argument("--max-drop", type=float, default=0.02,
                   help="tolerated pass@1 drop versus LLM-only when choosing τ (default 0.02)")
    p.add_argument("--fixed-threshold", type=float, default=None, metavar="TAU",
                   help="also measure every signal at this τ on each test set, chosen on nothing "
                        "(e.g. the app's default 0.7)")
    p.add_argument("--time-model", default=None, metavar="JSON",
                   help="seconds per call per model (bench/time_model.py; default: the shipped "
                        "estimate, corea/assets/timing/time_model.json)")
    p.add_argument("--route-first", action="store_true",
                   help="also measure pre-generation routing (prompt probe, then answer-first) "
                        "against answer-first and the oracles, thresholds chosen on train")
    p.add_argument("--md", default=None, help="write the markdown tables here")
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    return p


def run(args: argparse.Namespace) -> int:
    """Build the report; print the markdown (exit status as in the module docstring)."""
    from ..config import load_settings
    from ..eval.heldout import format_report, heldout_report
    from ..eval.route_first import route_first_lines, route_first_variants
    from ..eval.runs import clean, load_results, read_run, require_train_split
    from ..timing import load_time_model, shipped_time_model

    if args.fixed_threshold is not None:
        try:
            check_threshold(args.fixed_threshold, "--fixed-threshold (a confidence τ)")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    tests = {}
    for spec in args.test:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            print(f"error: --test takes NAME=RUN_DIR, got {spec!r}", file=sys.stderr)
            return 2
        tests[name] = path
    try:
        train = load_results(args.train)
        test_rows = {k: load_results(v) for k, v in tests.items()}
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run = require_train_split(args.train, "signals are fit and τ is chosen")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in tests.items():
        rec = read_run(path) or {}
        if Path(path).resolve() == Path(args.train).resolve() or (
                rec.get("split") == "train" and rec.get("dataset") == run.get("dataset")):
            print(f"error: --test {name} is the train data itself; report on held-out runs",
                  file=sys.stderr)
            return 2
    slm = (run.get("models") or {}).get("slm") or load_settings().slm.name
    price = (run.get("prices") or {}).get("llm")
    if not price:
        settings = load_settings()
        p = settings.prices.get(settings.llm.name)
        price = p.model_dump() if p else {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
    llm_price = (float(price["input_per_mtok"]), float(price["output_per_mtok"]))
    try:
        tm = load_time_model(args.time_model) if args.time_model else shipped_time_model()
        rep = heldout_report(train, test_rows, slm, llm_price, args.signals,
                             max_drop=args.max_drop, fixed_threshold=args.fixed_threshold,
                             time_model=tm)
        if args.route_first:
            rep["route_first"] = route_first_variants(train, test_rows, slm, llm_price, tm,
                                                      args.max_drop)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep["runs"] = {"train": str(args.train), "tests": tests}
    md = format_report(rep)
    for variant in rep.get("route_first") or ():
        md += "\n\n" + "\n".join(route_first_lines(variant))
    print(md)
    if args.md:
        Path(args.md).write_text(md + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(clean(rep), indent=2) + "\n", encoding="utf-8")
    return 0
