"""``corea heldout``: every deferral signal fit and tuned on a train run, measured on test runs.

    corea heldout --train data/generations/gsm8k-train-1000 \\
        --test gsm8k-test=data/generations/gsm8k-test-200 --test svamp=data/generations/svamp-test-100 \\
        [--signals verbal probe p_true sc4 ...] [--max-drop 0.02] [--fixed-threshold 0.7] [--time-model tm.json] [--route-first] [--delegation] [--md report.md] [--json report.json]

Learned signals (calibrator, probes) are fit on the train rows only; τ is chosen on the train rows
(cross-fitted values) and applied unchanged to each test run (:mod:`corea.eval.heldout`).
Test runs are read, never fit or tuned on. ``--route-first`` adds pre-generation routing (the
prompt probe in front of the answer-first default signal, both thresholds chosen on train;
:mod:`corea.eval.route_first`) against answer-first and the oracles: chosen in seconds with a free
SLM, and in USD with the SLM at 1/3 of the LLM's prices. ``--delegation`` adds the
delegation-value policy (:mod:`corea.eval.delegation_route`: route when P(LLM right and SLM wrong)
read before the SLM writes is high, else let the SLM answer and defer when the same value with its
calibrator says the LLM likely fixes it; needs the LLM's prompt states, ``corea llm-states``),
against answer-first, today's route-first, random routing and the oracles. The LLM's price comes from the train run's ``run.json``; seconds from ``--time-model`` (default: the
shipped estimate, :data:`corea.timing.SHIPPED_TIME_MODEL`) applied to each row's token counts.

With ``--mode MODE TRAIN_DIR TEST_DIR`` (repeatable, one per solve mode; instead of ``--train`` /
``--test``) it chooses the solve mode too: every (mode, signal, τ) is chosen on the train runs, in
USD and in seconds, and every mode × signal, the chosen configuration and today's default (cot, the
default signal) are measured on the test runs (:mod:`corea.eval.heldout_modes`)::

    corea heldout --mode cot data/generations/gsm8k-train-1000 data/generations/gsm8k-test-200 \\
        --mode pot TRAIN_POT data/generations/gsm8k-test-200-pot \\
        --mode mot TRAIN_MOT data/generations/gsm8k-test-200-mot [--md modes.md] [--json modes.json]

Exit status: 0 written, 2 bad input (missing run, no gradable train rows, unknown signal, a train
run whose split is not train).
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
    p.add_argument("--train", default=None,
                   help="evaluation run folder of a train split (required without --mode)")
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
    p.add_argument("--delegation", action="store_true",
                   help="also measure the delegation-value policy (needs corea llm-states on the "
                        "runs) against answer-first, route-first, random routing and the oracles")
    p.add_argument("--mode", action="append", nargs=3, default=[],
                   metavar=("MODE", "TRAIN_DIR", "TEST_DIR"),
                   help="one solve mode's train and test runs (repeatable: cot, pot, mot; instead "
                        "of --train/--test): choose the mode, signal and τ on train, in USD and "
                        "in seconds, and compare with today's default (cot) on test")
    p.add_argument("--md", default=None, help="write the markdown tables here")
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    return p


def run(args: argparse.Namespace) -> int:
    """Build the report; print the markdown (exit status as in the module docstring)."""
    from ..eval.heldout import format_report, heldout_report
    from ..eval.route_first import route_first_lines, route_first_variants
    from ..eval.runs import load_results, read_run, require_train_split
    from ..timing import load_time_model, shipped_time_model

    if args.mode:
        return _run_modes(args)
    if args.train is None:
        print("error: give --train RUN_DIR (or one --mode MODE TRAIN_DIR TEST_DIR per solve mode)",
              file=sys.stderr)
        return 2
    if args.fixed_threshold is not None:
        try:
            check_threshold(args.fixed_threshold, "--fixed-threshold (a confidence τ)")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        tests = named_runs(args.test)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    slm, llm_price = slm_and_price(run)
    try:
        tm = load_time_model(args.time_model) if args.time_model else shipped_time_model()
        rep = heldout_report(train, test_rows, slm, llm_price, args.signals,
                             max_drop=args.max_drop, fixed_threshold=args.fixed_threshold,
                             time_model=tm)
        if args.route_first:
            rep["route_first"] = route_first_variants(train, test_rows, slm, llm_price, tm,
                                                      args.max_drop)
        if args.delegation:
            from ..eval.delegation_route import delegation_variants

            rep["delegation"] = delegation_variants(train, test_rows, slm, llm_price, tm,
                                                    args.max_drop)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep["runs"] = {"train": str(args.train), "tests": tests}
    md = format_report(rep)
    for variant in rep.get("route_first") or ():
        md += "\n\n" + "\n".join(route_first_lines(variant))
    if rep.get("delegation"):
        from ..eval.delegation_route import delegation_lines

        md += "\n\n## Delegation value\n\n" + "\n\n".join(
            "\n".join(delegation_lines(v)) for v in rep["delegation"])
    return _emit(md, rep, args)


def _emit(md: str, rep: dict, args: argparse.Namespace) -> int:
    """Print the report's Markdown and write ``--md`` / ``--json`` when asked; exit status 0."""
    from ..eval.runs import clean

    print(md)
    if args.md:
        Path(args.md).write_text(md + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(clean(rep), indent=2) + "\n", encoding="utf-8")
    return 0


def named_runs(specs) -> dict[str, str]:
    """``--test NAME=RUN_DIR`` values (repeated) → ``{NAME: RUN_DIR}``, in order.

    Raises:
        ValueError: a value without a name, an ``=`` or a folder."""
    out = {}
    for spec in specs or ():
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--test takes NAME=RUN_DIR, got {spec!r}")
        out[name] = path
    return out


def slm_and_price(run: dict) -> tuple[str, tuple[float, float]]:
    """The SLM's name and the LLM's ``(input, output)`` USD per 1M tokens recorded in a train run
    (the configured ones where it records none)."""
    from ..config import load_settings

    slm = (run.get("models") or {}).get("slm") or load_settings().slm.name
    price = (run.get("prices") or {}).get("llm")
    if not price:
        settings = load_settings()
        p = settings.prices.get(settings.llm.name)
        price = p.model_dump() if p else {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
    return slm, (float(price["input_per_mtok"]), float(price["output_per_mtok"]))


def _run_modes(args: argparse.Namespace) -> int:
    """``--mode``: choose the solve mode, signal and τ on train (:mod:`corea.eval.heldout_modes`);
    print the markdown (exit status as in the module docstring)."""
    from ..eval.heldout_modes import MODES, format_modes_report, modes_report
    from ..eval.runs import load_results, read_run, require_train_split
    from ..timing import load_time_model, shipped_time_model

    if args.train is not None or args.test or args.route_first or args.delegation \
            or args.fixed_threshold is not None:
        print("error: --mode takes each mode's train and test runs; leave out --train, --test, "
              "--route-first and --fixed-threshold", file=sys.stderr)
        return 2
    runs = {}
    for mode, train_dir, test_dir in args.mode:
        if mode not in MODES or mode in runs:
            print(f"error: --mode takes each of {', '.join(MODES)} at most once, got {mode!r}",
                  file=sys.stderr)
            return 2
        runs[mode] = (train_dir, test_dir)
    try:
        train = {m: load_results(t) for m, (t, _) in runs.items()}
        test = {m: load_results(t) for m, (_, t) in runs.items()}
        recs = {m: require_train_split(t, f"the {m} signals are fit and τ and the mode are chosen")
                for m, (t, _) in runs.items()}
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = set()
    for mode, (train_dir, test_dir) in runs.items():
        rec = read_run(test_dir) or {}
        if rec.get("split") == "train" or any(Path(test_dir).resolve() == Path(t).resolve()
                                              for t, _ in runs.values()):
            print(f"error: the {mode} test run {test_dir} is train data; report on held-out runs",
                  file=sys.stderr)
            return 2
        names.add(f"{rec.get('dataset', 'test')}-{rec.get('split', 'test')}")
    test_name = names.pop() if len(names) == 1 else "test"
    slm, llm_price = slm_and_price(next(iter(recs.values())))
    try:
        tm = load_time_model(args.time_model) if args.time_model else shipped_time_model()
        rep = modes_report(train, test, slm, llm_price, tm, args.signals, args.max_drop)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep["runs"] = {m: {"train": t, "test": e} for m, (t, e) in runs.items()}
    rep["test_name"] = test_name
    md = format_modes_report(rep, test_name)
    return _emit(md, rep, args)
