"""``corea calibrate``: fit (or refit) the SLM's calibrator from evaluation runs and ratings.

    corea calibrate --runs runs/gsm8k-train-200 --ratings            # fit, compare, don't switch
    corea calibrate --runs runs/gsm8k-train-200 --ratings --save     # store as the next version
    corea calibrate --runs data/generations/gsm8k-train-1000 \\
        --out corea/assets/calibrators/<slm>                        # plain JSON, shipped

``--out`` writes the calibrator as plain numbers (``calibrator.json``, the format that ships for
the embedded SLM). Every ``--runs`` folder must record a train split in its ``run.json``
(:func:`corea.eval.runs.require_train_split`; a folder without one is refused too).

``--features`` picks the logistic calibrator's inputs (``token``: all but the stated confidence);
``--from-slm NAME`` fits the configured SLM on runs of the SLM named NAME — the base model of a
confidence-scoped calibration adapter, which shares its base's solutions and token signals (only
with ``--features token``)::

    COREA_USE_SHIPPED_ADAPTER=true corea calibrate --runs data/generations/gsm8k-train-1000 \\
        --features token --from-slm Qwen2.5-Coder-0.5B-Instruct --out corea/assets/calibrators/<slm>

Exit status: 0 fitted (and saved with --save), 1 not saved because it is worse than the current
calibrator (--force overrides), 2 bad input or too few labels.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import load_settings

HELP = "fit the SLM's calibrator from evaluation runs and rated interactions"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea calibrate`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea calibrate", description=HELP)
    p.add_argument("--runs", nargs="*", default=[], help="evaluation run folders")
    p.add_argument("--ratings", action="store_true",
                   help="also use rated interactions from the database (settings db_url)")
    p.add_argument("--kind", choices=["logistic", "isotonic"], default="logistic")
    p.add_argument("--signal", default="solution_prob",
                   choices=["solution_prob", "answer_prob", "min_prob", "verbal"],
                   help="input of an isotonic calibrator")
    p.add_argument("--features", default=None,
                   help="comma-separated logistic inputs (default: all), or 'token': all but "
                        "the stated confidence")
    p.add_argument("--from-slm", default=None,
                   help="take the runs' labels from this SLM (the base of a confidence-scoped "
                        "adapter); needs --features token")
    p.add_argument("--save", action="store_true", help="store it as the next version")
    p.add_argument("--force", action="store_true",
                   help="save even if its held-out AUROC is below the current calibrator's")
    p.add_argument("--out", default=None,
                   help="also write it as plain JSON into this folder (the shipped format; "
                        "train-split runs only)")
    p.add_argument("--config", default=None, help="YAML settings file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``corea calibrate`` with these arguments (exit status as in the module docstring)."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Fit, compare and maybe save (exit status as in the module docstring)."""
    from ..signals.calibrator import CalibratorStore, InsufficientLabels
    from ..eval.calibrate import refit
    if not args.runs and not args.ratings:
        print("error: give --runs and/or --ratings", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..eval.runs import require_train_split
    for d in args.runs or []:
        try:
            require_train_split(d, "calibrators are fit")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.out:
        if args.ratings or args.kind != "logistic":
            print("error: --out writes a logistic calibrator fit on train runs (no --ratings)",
                  file=sys.stderr)
            return 2
    store = None
    if args.ratings:
        from ..store import open_store
        store, err = open_store(settings.db_url)
        if store is None:
            print(f"error: cannot read the database: {err}", file=sys.stderr)
            return 2
    from ..signals.calibrator import TOKEN_FEATURES, check_features
    try:
        names = None
        if args.features:
            names = TOKEN_FEATURES if args.features.strip() == "token" else check_features(
                [f.strip() for f in args.features.split(",") if f.strip()])
        cal, ls, table = refit(settings, args.runs, store, args.kind, args.signal, save=False,
                               features=names, from_slm=args.from_slm)
    except (InsufficientLabels, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    current = CalibratorStore(settings.calibrators_path).load(settings.slm.name)
    worse = current is not None and (cal.card.held_out.get("auroc") or 0.0) < \
        (current.card.held_out.get("auroc") or 0.0)
    if args.save and worse and not args.force:
        print(table)
        print(f"\nnot saved: its held-out AUROC {cal.card.held_out.get('auroc') or 0:.3f} is below "
              f"the current v{current.card.version}'s {current.card.held_out.get('auroc') or 0:.3f} "
              "(measured on its own data); add --force to save it anyway", file=sys.stderr)
        return 1
    if args.save:
        CalibratorStore(settings.calibrators_path).save(cal)
    print(f"SLM: {settings.slm.name}; labels: {sum(ls.sources.values())} "
          f"({sum(ls.labels)} correct) from {ls.sources}; skipped: {ls.skipped or 'none'}\n")
    print(table)
    if args.out:
        from ..signals.calibrator import save_plain
        cal.card.version = cal.card.version or 1
        print(f"\nwritten as plain JSON: {save_plain(cal, args.out)}")
    if args.save:
        print(f"\nsaved as version {cal.card.version} under {settings.calibrators_path}; "
              f"{'it beats' if cal.card.beats_verbal() else 'it does NOT beat'} the verbal "
              "confidence on held-out AUROC, so confidence_source=auto "
              f"{'uses it' if cal.card.beats_verbal() else 'keeps the verbal confidence'}.")
    elif not args.out:
        print("\nnot saved (add --save to use it)")
    return 0

