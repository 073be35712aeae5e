"""``corea probe``: fit a linear probe on a train run's hidden states and save it.

    corea probe --train data/generations/gsm8k-train-1000 [--position end] [--target slm_correct] \\
        [--version v1] [--out corea/assets/probes/<slm>] [--test gsm8k-test=data/generations/gsm8k-test-200]

The run must have been made with ``corea evaluate --hidden-states`` on a **train** split (its
``run.json`` must record it: :func:`corea.eval.runs.require_train_split`). The
probe's card records the rows it was fit on and its out-of-fold AUROC / ECE / Brier score next to
the stated confidence's (:mod:`corea.signals.probe`). Without ``--out`` it is written to
``<cache>/probes/<slm>/``; ``--out`` to the shipped folder makes it the SLM's default probe.

Exit status: 0 saved, 2 bad input (no run, not a train split, too few labels, no hidden states).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "fit a linear probe on a train run's hidden states (the learned deciding signal)"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea probe`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea probe", description=HELP)
    p.add_argument("--train", nargs="+", required=True, help="train-split run folder(s)")
    p.add_argument("--position", choices=["end", "prompt"], default="end")
    p.add_argument("--target", choices=["slm_correct", "llm_helps"], default="slm_correct")
    p.add_argument("--tokens", action="store_true",
                   help="also feed the stated confidence and token-probability signals "
                        "(the calibrator's features) to the probe")
    p.add_argument("--version", default="", help="a label for the card, e.g. v1")
    p.add_argument("--out", default=None, help="folder to write probe.npz and card.json to")
    p.add_argument("--test", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="a held-out run whose AUROC/ECE/Brier the card records (repeatable); "
                        "never fit on")
    p.add_argument("--config", default=None, help="YAML settings file")
    return p


def run(args: argparse.Namespace) -> int:
    """Fit and save (exit status as in the module docstring)."""
    from ..config import load_settings
    from ..eval.runs import load_results, read_run, require_train_split
    from ..signals.probe import fit_probe, test_metrics
    from .heldout import named_runs
    from ..shipped import slug

    rows, sources, slm = [], [], None
    for d in args.train:
        try:
            run_rows = load_results(d)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            rec = require_train_split(d, "probes are fit")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        slm = slm or (rec.get("models") or {}).get("slm")
        rows += run_rows
        sources.append(f"{d} ({rec.get('dataset')}/{rec.get('split')}, {len(run_rows)} rows)")
    settings = load_settings(args.config)
    slm = slm or settings.slm.name
    try:
        probe = fit_probe(rows, slm, position=args.position, target=args.target, data=sources,
                          tokens=args.tokens,
                          version=args.version,
                          notes="corea probe --train " + " ".join(args.train)
                          + f" --position {args.position} --target {args.target}"
                          + (" --tokens" if args.tokens else ""))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        tests = named_runs(args.test)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in tests.items():
        rec = read_run(path) or {}
        if rec.get("split") == "train" or any(Path(path).resolve() == Path(d).resolve()
                                              for d in args.train):
            print(f"error: --test {name} is a train split; held-out runs only", file=sys.stderr)
            return 2
        try:
            probe.card.test[name] = {"run": path, **test_metrics(probe, load_results(path))}
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else settings.cache_dir / "probes" / slug(slm)
    probe.save(out)
    c = probe.card
    print(f"{c.signal} for {slm}: {c.n_train} rows ({c.n_positive} positive), C={c.c:g}; "
          f"out-of-fold AUROC {c.cv['auroc']:.3f} ECE {c.cv['ece']:.3f} Brier {c.cv['brier']:.3f}"
          f" (stated confidence AUROC {(c.cv_verbal or {}).get('auroc') or float('nan'):.3f})"
          f" -> {out}")
    for name, m in c.test.items():
        print(f"  held-out {name}: {m['n']} rows, AUROC {m.get('auroc') or float('nan'):.3f} "
              f"ECE {m.get('ece') or float('nan'):.3f} Brier {m.get('brier') or float('nan'):.3f}"
              f" (stated confidence AUROC "
              f"{(m.get('verbal') or {}).get('auroc') or float('nan'):.3f})")
    return 0
