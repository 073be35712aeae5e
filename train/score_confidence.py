"""The confidence a confidence-training checkpoint states after given solutions, teacher-forced.

A quick, generation-free check of :mod:`train.confidence` between full evaluations: for each
solution of an evaluation run (the same examples as training: own answer, not cut off), the text
``<chat prompt> <solution> "\\nConfidence: 0."`` goes through the model once and the distribution
``p`` over the next digit ``d`` gives two confidences — the expected one ``sum_d p_d · d / 10``
(what the training objective scores) and the greedy one ``argmax_d p_d / 10`` (what greedy
decoding would write first). Their AUROC, ECE (10 bins) and Brier score against the solution's
correctness, and the mean, are reported for the checkpoint and for the base model (no adapter).

Use it on **held-out train items** (items of a train run that the checkpoint did not train on:
by default the questions listed in the checkpoint run's ``train_ids.json`` are skipped) to decide
about a recipe; the full, generated measurement on test items is ``corea evaluate --slm
<checkpoint>`` + ``corea beforeafter``.

    python -m train.score_confidence runs/cpu-calibrate-0.5b/checkpoint-66 \\
        --runs data/generations/gsm8k-train-1000 [--limit 100] [--json out.json]

Cost: one forward pass per solution (~0.5–1 s for a ~450-token text with the 0.5B on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

TRAIN_IDS = "train_ids.json"


def trained_ids(checkpoint: str | Path) -> set[str]:
    """Question ids a checkpoint was trained on: ``train_ids.json`` in the checkpoint folder or
    its run folder (written by :mod:`train.confidence`); empty when neither has one."""
    ck = Path(checkpoint)
    for d in (ck, ck.parent):
        p = d / TRAIN_IDS
        if p.is_file():
            return set(json.loads(p.read_text(encoding="utf-8")))
    return set()


def summarize(conf: Sequence[float], correct: Sequence[bool]) -> dict:
    """``{n, accuracy, mean, auroc, ece_10, brier}`` of confidences in [0, 1] against labels."""
    import numpy as np

    from corea.metrics import auroc, brier_score, ece

    c = np.asarray(conf, dtype=float)
    y = np.asarray(correct, dtype=bool)
    return {"n": int(c.size), "accuracy": float(y.mean()), "mean": float(c.mean()),
            "auroc": auroc(c, y), "ece_10": ece(c, y, 10), "brier": brier_score(c, y)}


def digit_confidences(model, tokenizer, examples, max_length: int = 1024,
                      batch_size: int = 4, scoped: bool = False
                      ) -> tuple[list[float], list[float], list[bool]]:
    """``(expected, greedy, correct)`` per encodable example (see the module docstring).
    ``scoped``: the adapter runs only on the confidence line (``adapter_scope: confidence``,
    :func:`train.confidence.scoped_forward`)."""
    import torch

    from train.confidence import DIGIT_VALUES, DIGITS, SUFFIX, collate, encode, scoped_forward

    suffix_ids = tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    digit_ids = [tokenizer.convert_tokens_to_ids(d) for d in DIGITS]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [e for e in (encode(x, tokenizer, suffix_ids, max_length) for x in examples)
            if e is not None]
    values = torch.tensor(DIGIT_VALUES)
    expected, greedy, correct = [], [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = collate(rows[i:i + batch_size], pad)
            if scoped:
                out = scoped_forward(model, b, len(suffix_ids) + 1)
            else:
                out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                            position_ids=b["position_ids"], logits_to_keep=1)
            p = torch.softmax(out.logits[:, -1, digit_ids].float(), dim=-1)
            expected += (p * values).sum(-1).tolist()
            greedy += values[p.argmax(-1)].tolist()
            correct += [bool(v) for v in b["correct"].tolist()]
    return expected, greedy, correct


def score(checkpoint: str, runs: Sequence[str], limit: int | None = None,
          include_trained: bool = False, cache_dir: str = "~/.cache/corea",
          base=None) -> dict:
    """Teacher-forced confidences of ``checkpoint`` (a PEFT adapter of the embedded SLM) and of
    its base on the runs' solutions. ``base``: ``(model, tokenizer)`` the adapter was trained on
    (default: the embedded SLM in float32).

    Returns:
        ``{"checkpoint", "runs", "n_questions", "skipped_trained", "adapter": {"expected":
        summary, "greedy": summary}, "base": {...}}`` (:func:`summarize`).

    Raises:
        ValueError: no usable solution is left.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corea.adapters import adapter_scope
    from corea.backends.weights import safetensors_checkpoint
    from corea.eval.runs import load_results
    from train.confidence import examples_from_rows

    rows = [r for d in runs for r in load_results(d)]
    seen = set() if include_trained else trained_ids(checkpoint)
    kept = [r for r in rows if r["id"] not in seen]
    skipped = len(rows) - len(kept)
    if limit:
        kept = kept[:limit]
    scoped = adapter_scope(checkpoint) == "confidence"
    examples = examples_from_rows(kept, forced_answers=scoped)
    if not examples:
        raise ValueError("no usable solution left (all trained on, or none with its own answer)")
    if base is None:
        base_dir = safetensors_checkpoint("embedded:slm", str(Path(cache_dir).expanduser()))
        base = (AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                AutoTokenizer.from_pretrained(base_dir))
    model, tokenizer = base
    model = PeftModel.from_pretrained(model, checkpoint)
    out = {"checkpoint": str(checkpoint), "runs": list(runs), "n_questions": len(kept),
           "scope": "confidence" if scoped else "all",
           "skipped_trained": skipped}
    e, g, y = digit_confidences(model, tokenizer, examples, scoped=scoped)
    out["adapter"] = {"expected": summarize(e, y), "greedy": summarize(g, y)}
    with model.disable_adapter():
        e, g, y = digit_confidences(model, tokenizer, examples)
    out["base"] = {"expected": summarize(e, y), "greedy": summarize(g, y)}
    return out


def format_table(result: dict) -> str:
    """The scores as a Markdown table (one row per model × confidence reading)."""
    lines = [f"| {result['adapter']['expected']['n']} solutions of {result['n_questions']} "
             "questions | AUROC | ECE | Brier | mean | accuracy |", "|---|---:|---:|---:|---:|---:|"]
    for who in ("base", "adapter"):
        for how in ("expected", "greedy"):
            s = result[who][how]
            au = "–" if s["auroc"] is None else f"{s['auroc']:.3f}"
            lines.append(f"| {who}, {how} digit | {au} | {s['ece_10']:.3f} | {s['brier']:.3f} | "
                         f"{s['mean']:.3f} | {s['accuracy']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.score_confidence",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a PEFT adapter folder of the embedded SLM")
    ap.add_argument("--runs", nargs="+", required=True, help="evaluation run folders")
    ap.add_argument("--limit", type=int, default=None, help="at most this many questions")
    ap.add_argument("--include-trained", action="store_true",
                    help="also score the questions the checkpoint was trained on")
    ap.add_argument("--json", default=None, help="also write the result here")
    a = ap.parse_args(argv)
    try:
        res = score(a.checkpoint, a.runs, a.limit, a.include_trained)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
