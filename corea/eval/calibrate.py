"""Fit (or refit) the SLM's calibrator from evaluation runs and rated interactions.

``corea calibrate --runs runs/gsm8k-train-300 [--ratings] [--kind logistic] [--save]``
(:mod:`corea.cli.calibrate`)

Labels:

- evaluation runs: ``slm_correct`` of every gradable item (gold answers);
- rated interactions in the app's database (``--ratings``): a 👍 on an answer, or a correction,
  labels whether the SLM's answer was right (:func:`corea.store.labels.label_interaction`).

Only completions that carry token-probability signals and come from the configured SLM are used.
The new calibrator's held-out metrics (cross-validated) are printed next to the verbalized
confidence's and the current calibrator's; ``--save`` stores it as the next version, which the
cascade then uses (``confidence_source=auto`` uses it only if it beats the verbal confidence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..signals.calibrator import Calibrator, CalibratorStore, fit_calibrator, has_token_signals
from ..store.labels import label_interaction
from .runs import load_results


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
    """Labels from rated interactions of the SLM named ``slm`` in a :class:`corea.store.Store`."""
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
          signal: str = "solution_prob", save: bool = False,
          features: Sequence[str] | None = None, from_slm: str | None = None
          ) -> tuple[Calibrator, LabelSet, str]:
    """Collect labels, fit a calibrator, optionally save it as the next version.

    ``features``: the logistic calibrator's inputs (default all of
    :data:`corea.signals.calibrator.FEATURES`). ``from_slm``: take the runs' labels from the SLM of this
    name instead of ``settings.slm`` — the base model of a confidence-scoped adapter
    (:data:`corea.adapters.SCOPES`), whose solutions and token signals the adapted SLM shares;
    only with features that leave out the stated confidence (:data:`TOKEN_FEATURES`).

    Returns:
        ``(calibrator, labels, markdown comparison table)``.

    Raises:
        InsufficientLabels: too few labels (the message says how many and how to get more).
        FileNotFoundError: a run folder without results.
        ValueError: ``from_slm`` with a feature that reads the stated confidence, or with
            ratings.
    """
    from ..signals.calibrator import FEATURES, TOKEN_FEATURES

    slm = settings.slm.name
    names = tuple(features or FEATURES)
    if from_slm and (not set(names) <= set(TOKEN_FEATURES) or store is not None):
        raise ValueError("labels of another SLM fit only features that leave out the stated "
                         f"confidence ({', '.join(TOKEN_FEATURES)}), from runs (no ratings)")
    ls = LabelSet()
    labels_from_runs(run_dirs, from_slm or slm, ls)
    if store is not None:
        labels_from_ratings(store, slm, ls)
    cal = fit_calibrator(ls.outputs, ls.labels, slm, kind=kind, signal=signal, sources=ls.sources,
                         features=names)
    if from_slm:  # those rows' stated confidence is the other SLM's, not this one's
        cal.card.verbal_held_out = {"n": 0, "ece": None, "brier": None, "auroc": None}
        cal.card.sources = {f"{k} ({from_slm})": v for k, v in cal.card.sources.items()}
    cstore = CalibratorStore(settings.calibrators_path)
    table = comparison_table(cal, cstore.load(slm))
    if save:
        cstore.save(cal)
    return cal, ls, table
