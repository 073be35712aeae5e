"""Cross-fitted calibration adapters: an out-of-fold stated confidence for every train row.

An adapter trained on every train row has no out-of-sample stated confidence on them, so no
calibrator can learn how far to trust it (the shipped token calibrator leaves it out for that
reason). Here, with ``k`` folds of the train questions:

1. ``k`` adapters, each trained (:mod:`train.confidence`, the recipe as given) on the questions
   outside one fold (``fold-<f>/``);
2. each fold's questions scored by the adapter that did not see them, teacher-forced and exact
   (:func:`train.expected_confidence.digit_rows`: the greedy digit ``stated``, the ``expected``
   confidence and its ``spread``) → ``oof.jsonl``, one line per train row;
3. on those, out of fold again (5-fold): the stated and the expected confidence alone, the token
   calibrator (token features only) and the combined calibrator (token features + the
   out-of-fold **expected** confidence as its ``verbal`` feature), each with AUROC / ECE / Brier
   → ``crossfit.json``; the combined calibrator fit on every row → ``calibrator/``
   (:func:`corea.signals.calibrator.save_plain`; at run time its ``verbal`` input is the live
   ``confidence_expected``);
4. the full-data adapter, trained on every train question (``full/``), the one to ship.

``crossfit.json`` (also copied to ``full/``) is the card: folds, sizes, the cross-fit metrics
(the rule that lets the stated confidence decide reads them, :mod:`corea.selection`) and the
command that regenerates everything. Every extra argument goes to :mod:`train.confidence`.

    python -m train.crossfit --folds 3 --out runs/crossfit-0.5b \\
        --config train/recipes/cpu-calibrate-0.5b.yaml

Cost: ``k + 1`` training runs of the recipe (each on ``(k-1)/k`` or all of the questions) plus
one teacher-forced pass over the train rows. Resumable: rerun the same command and every fold
whose adapter and readings are done is skipped (a fold stopped mid-training resumes from its
newest checkpoint), and so is a finished full-data adapter.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Sequence

CARD = "crossfit.json"
OOF = "oof.jsonl"


def fold_of(ids: Sequence[str], folds: int, seed: int = 0) -> dict[str, int]:
    """Question id → fold in ``0..folds-1``: the sorted ids shuffled with ``seed``, dealt in
    turn (sizes differ by at most one).

    Raises:
        ValueError: fewer than 2 folds, or fewer ids than folds."""
    if folds < 2 or len(set(ids)) < folds:
        raise ValueError(f"need at least 2 folds and as many questions ({len(set(ids))} for "
                         f"{folds} folds)")
    order = sorted(set(ids))
    random.Random(seed).shuffle(order)
    return {q: i % folds for i, q in enumerate(order)}


def trained(out: Path, ids: Sequence[str]) -> bool:
    """Whether ``out`` already holds a finished adapter trained on exactly the questions ``ids``
    (its saved weights and the ``question_ids.json`` it was given): a rerun skips it."""
    asked = out / "question_ids.json"
    return ((out / "adapter_model.safetensors").is_file() and asked.is_file()
            and json.loads(asked.read_text(encoding="utf-8")) == sorted(ids))


def train_adapter(argv: Sequence[str], ids: Sequence[str], out: Path) -> None:
    """Train one adapter (:func:`train.confidence.main`) on the questions ``ids`` into ``out``;
    nothing to do when it is already :func:`trained`. A stopped run resumes from its newest
    ``checkpoint-*`` when there is one (``--resume_from_checkpoint last``).

    Raises:
        RuntimeError: the trainer failed."""
    from train.confidence import main

    if trained(out, ids):
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "question_ids.json").write_text(json.dumps(sorted(ids)), encoding="utf-8")
    resume = ["--resume_from_checkpoint", "last"] if any(out.glob("checkpoint-*")) else []
    rc = main(list(argv) + ["--question_ids", str(out / "question_ids.json"),
                            "--output_dir", str(out)] + resume)
    if rc != 0:
        raise RuntimeError(f"training {out} failed (exit code {rc})")


def score_fold(conf_args, seed: int, adapter: Path, rows: Sequence[dict]) -> list:
    """The fold's rows scored by ``adapter`` on the recipe's base model
    (:func:`train.expected_confidence.digit_rows`)."""
    import os

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from train.expected_confidence import digit_rows
    from train.grpo import ScriptArguments, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ScriptArguments(
        model=conf_args.model, corea_cache_dir=conf_args.corea_cache_dir), seed)
    if isinstance(model, (str, os.PathLike)):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    return digit_rows(PeftModel.from_pretrained(model, str(adapter)), tok, rows)


def fold_readings(argv: Sequence[str], conf_args, seed: int, out: Path, train_ids: Sequence[str],
                  rows: Sequence[dict], fold: int) -> list[dict]:
    """Fold ``fold``: its adapter trained on ``train_ids`` (:func:`train_adapter`) and the fold's
    ``rows`` scored by it (:func:`score_fold`), one dict per scored row (``id``, ``fold``,
    ``correct``, ``stated``, ``expected``, ``spread`` and the SLM output dict as ``_output``).
    The readings are kept in ``<out>/readings.jsonl``, written once the fold is done, so a rerun
    of a stopped cross-fit redoes neither the fold's training nor its scoring (the file is
    trusted only beside an adapter :func:`trained` on the same questions)."""
    from train.expected_confidence import readings

    done = out / "readings.jsonl"
    if done.is_file() and trained(out, train_ids):
        return [json.loads(x) for x in done.read_text(encoding="utf-8").splitlines() if x]
    train_adapter(argv, train_ids, out)
    got = []
    for r in score_fold(conf_args, seed, out, rows):
        stated, expected, spread = readings(r.adapter)
        got.append({"id": r.id, "fold": fold, "correct": r.correct, "stated": stated,
                    "expected": round(expected, 4), "spread": round(spread, 4),
                    "_output": r.output})
    tmp = done.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(g) + "\n" for g in got), encoding="utf-8")
    tmp.replace(done)
    return got


def crossfit_metrics(oof: Sequence[dict], outputs: Sequence[dict]) -> dict:
    """AUROC / ECE / Brier (:func:`train.score_confidence.summarize`) of the out-of-fold
    ``stated`` and ``expected`` confidences, and out of fold (5-fold) of the token calibrator
    and the combined one (token features + ``expected``)."""
    from corea.signals.calibrator import FEATURES, TOKEN_FEATURES, cross_val_predictions
    from train.expected_confidence import with_verbal
    from train.score_confidence import summarize

    y = [o["correct"] for o in oof]
    mixed = [with_verbal(out, o["expected"]) for out, o in zip(outputs, oof)]
    return {"stated": summarize([o["stated"] for o in oof], y),
            "expected": summarize([o["expected"] for o in oof], y),
            "token_calibrator": summarize(cross_val_predictions(outputs, y,
                                                                names=TOKEN_FEATURES), y),
            "combined": summarize(cross_val_predictions(mixed, y, names=FEATURES), y)}


def run(argv: Sequence[str], folds: int, out: Path, seed: int = 0) -> dict:
    """Steps 1–4 of the module docstring; returns the card (also written to
    ``<out>/crossfit.json``).

    Raises:
        ValueError: bad recipe arguments, a run that is not a train split, too few questions.
        RuntimeError: a training run failed."""
    from corea.signals.calibrator import FEATURES, fit_calibrator, save_plain
    from corea.eval.runs import load_results
    from train.confidence import load_examples, make_parser
    from train.expected_confidence import with_verbal

    conf_args, training_args, _ = make_parser().parse_args_and_config(
        list(argv) + ["--output_dir", str(out / "full")])
    examples = load_examples(conf_args, training_args.seed)  # checks the runs are train splits
    ids = sorted({e.id.split("#", 1)[0] for e in examples})
    fold = fold_of(ids, folds, seed)
    rows = [r for d in conf_args.runs for r in load_results(d) if str(r["id"]) in fold]
    oof: list[dict] = []
    for f in range(folds):
        oof += fold_readings(argv, conf_args, training_args.seed, out / f"fold-{f}",
                             [q for q in ids if fold[q] != f],
                             [r for r in rows if fold[str(r["id"])] == f], f)
    oof.sort(key=lambda o: o["id"])
    outputs = [o.pop("_output") for o in oof]
    (out / OOF).write_text("".join(json.dumps(o) + "\n" for o in oof), encoding="utf-8")
    metrics = crossfit_metrics(oof, outputs)
    cal = fit_calibrator([with_verbal(o, x["expected"]) for o, x in zip(outputs, oof)],
                         [x["correct"] for x in oof], f"{conf_args.model} + cross-fit adapter",
                         features=FEATURES, sources={str(out / OOF): len(oof)})
    save_plain(cal, out / "calibrator")
    train_adapter(argv, ids, out / "full")
    card = {"folds": folds, "seed": seed, "n_questions": len(ids), "n_scored": len(oof),
            "runs": list(conf_args.runs), "verbal_feature": "expected",
            "crossfit": metrics,
            "regenerate": "python -m train.crossfit " + " ".join(
                [f"--folds {folds}", f"--seed {seed}", f"--out {out.as_posix()}", *argv])}
    for d in (out, out / "full"):
        (d / CARD).write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.crossfit",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="the fold assignment's seed")
    ap.add_argument("--out", required=True, help="folder for the folds, oof.jsonl, the "
                                                 "calibrator, the full adapter and the card")
    a, rest = ap.parse_known_args(argv)
    try:
        card = run(rest, a.folds, Path(a.out), a.seed)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(card["crossfit"], indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
