"""Fit (or refit) the SLM's calibrator from evaluation runs and rated interactions.

``python -m corea.calibrate --runs runs/gsm8k-train-300 [--ratings] [--kind logistic] [--save]``

Labels:

- evaluation runs: ``slm_correct`` of every gradable item (gold answers);
- rated interactions in the app's database (``--ratings``): a 👍 on an answer, or a correction,
  labels whether the SLM's answer was right (:func:`corea.explorer.label_interaction`).

Only completions that carry token-probability signals and come from the configured SLM are used.
The new calibrator's held-out metrics (cross-validated) are printed next to the verbalized
confidence's and the current calibrator's; ``--save`` stores it as the next version, which the
cascade then uses (``confidence_source=auto`` uses it only if it beats the verbal confidence).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .calibrator import (Calibrator, CalibratorStore, InsufficientLabels, fit_calibrator,
                         has_token_signals)
from .config import load_settings


@dataclass
class LabelSet:
    """Labelled SLM outputs for fitting: ``outputs[i]`` (``confidence``, ``signals``) was right
    iff ``labels[i]``; ``sources`` counts labels per source; ``skipped`` counts what was left out
    and why."""

    outputs: list[dict] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    sources: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    def add(self, output: dict, label: bool, source: str) -> None:
        self.outputs.append(output)
        self.labels.append(bool(label))
        self.sources[source] = self.sources.get(source, 0) + 1

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def labels_from_runs(run_dirs: Sequence[str | Path], slm: str, into: LabelSet | None = None
                     ) -> LabelSet:
    """Labels from evaluation run folders (items.jsonl) of the SLM named ``slm``.

    Raises:
        FileNotFoundError: a run folder without items.jsonl.
    """
    from .eval.runs import load_results

    ls = into or LabelSet()
    for d in run_dirs:
        for r in load_results(d):
            out = r.get("slm") or {}
            if out.get("model") not in (None, slm):
                ls.skip("another SLM")
            elif r.get("slm_correct") is None:
                ls.skip("ungradable")
            elif not has_token_signals(out):
                ls.skip("no token log-probabilities")
            else:
                ls.add({"confidence": out.get("confidence"), "signals": out.get("signals")},
                       bool(r["slm_correct"]), str(d))
    return ls


def labels_from_ratings(store, slm: str, into: LabelSet | None = None) -> LabelSet:
    """Labels from rated interactions of the SLM named ``slm`` in a :class:`corea.storage.Store`."""
    from .explorer import label_interaction

    ls = into or LabelSet()
    for row in store.list_interactions(limit=None, rated=True):
        if row.get("slm_model") != slm:
            ls.skip("another SLM")
            continue
        lab = label_interaction(row)
        sig = (row.get("extra") or {}).get("slm_signals")
        out = {"confidence": row.get("confidence"), "signals": sig}
        if lab["slm_correct"] is None:
            ls.skip("rating does not say whether the SLM was right")
        elif not has_token_signals(out):
            ls.skip("no token log-probabilities")
        else:
            ls.add(out, bool(lab["slm_correct"]), "ratings")
    return ls


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def comparison_table(new: Calibrator, current: Calibrator | None) -> str:
    """Markdown table: held-out ECE / Brier / AUROC of verbal, the current and the new calibrator."""
    lines = ["| signal | n | ECE | Brier | AUROC |", "|---|---|---|---|---|"]
    v = new.card.verbal_held_out
    lines.append(f"| verbal (stated) | {v['n']} | {_fmt(v['ece'])} | {_fmt(v['brier'])} | "
                 f"{_fmt(v['auroc'])} |")
    if current is not None:
        c = current.card.held_out
        lines.append(f"| current calibrator v{current.card.version} ({current.card.kind}, its own "
                     f"held-out data) | {c['n']} | {_fmt(c['ece'])} | {_fmt(c['brier'])} | "
                     f"{_fmt(c['auroc'])} |")
    h = new.card.held_out
    lines.append(f"| new calibrator ({new.card.kind}, {new.card.cv_folds}-fold held-out) | "
                 f"{h['n']} | {_fmt(h['ece'])} | {_fmt(h['brier'])} | {_fmt(h['auroc'])} |")
    return "\n".join(lines)


def refit(settings, run_dirs: Sequence[str | Path] = (), store=None, kind: str = "logistic",
          signal: str = "solution_prob", save: bool = False) -> tuple[Calibrator, LabelSet, str]:
    """Collect labels, fit a calibrator, optionally save it as the next version.

    Returns:
        ``(calibrator, labels, markdown comparison table)``.

    Raises:
        InsufficientLabels: too few labels (the message says how many and how to get more).
        FileNotFoundError: a run folder without results.
    """
    slm = settings.slm.name
    ls = LabelSet()
    labels_from_runs(run_dirs, slm, ls)
    if store is not None:
        labels_from_ratings(store, slm, ls)
    cal = fit_calibrator(ls.outputs, ls.labels, slm, kind=kind, signal=signal, sources=ls.sources)
    cstore = CalibratorStore(settings.calibrators_path)
    table = comparison_table(cal, cstore.load(slm))
    if save:
        cstore.save(cal)
    return cal, ls, table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m corea.calibrate",
                                description="Fit the SLM's calibrator from labelled completions.")
    p.add_argument("--runs", nargs="*", default=[], help="evaluation run folders")
    p.add_argument("--ratings", action="store_true",
                   help="also use rated interactions from the database (settings db_url)")
    p.add_argument("--kind", choices=["logistic", "isotonic"], default="logistic")
    p.add_argument("--signal", default="solution_prob",
                   choices=["solution_prob", "answer_prob", "min_prob", "verbal"],
                   help="input of an isotonic calibrator")
    p.add_argument("--save", action="store_true", help="store it as the next version")
    p.add_argument("--force", action="store_true",
                   help="save even if its held-out AUROC is below the current calibrator's")
    p.add_argument("--config", default=None, help="YAML settings file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 fitted (and saved with --save), 1 not saved because it is worse than the
    current calibrator (--force overrides), 2 bad input or too few labels."""
    args = build_parser().parse_args(argv)
    if not args.runs and not args.ratings:
        print("error: give --runs and/or --ratings", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = None
    if args.ratings:
        from .storage import open_store
        store, err = open_store(settings.db_url)
        if store is None:
            print(f"error: cannot read the database: {err}", file=sys.stderr)
            return 2
    try:
        cal, ls, table = refit(settings, args.runs, store, args.kind, args.signal, save=False)
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
    if args.save:
        print(f"\nsaved as version {cal.card.version} under {settings.calibrators_path}; "
              f"{'it beats' if cal.card.beats_verbal() else 'it does NOT beat'} the verbal "
              "confidence on held-out AUROC, so confidence_source=auto "
              f"{'uses it' if cal.card.beats_verbal() else 'keeps the verbal confidence'}.")
    else:
        print("\nnot saved (add --save to use it)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
