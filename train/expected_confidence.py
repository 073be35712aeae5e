"""The stated versus the expected confidence, exactly, on committed generations (no generation).

For each row of an evaluation run, the greedy solution (up to its final answer, as trained:
:func:`train.confidence.examples_from_rows`) is prefilled and ``"\\nConfidence: 0."`` appended;
the model's distribution over the ten digit tokens at the next position gives

- ``stated``: the greedy digit ``argmax_d p_d / 10`` (what greedy decoding writes there), and
- ``expected``: ``E[c] = sum_d p_d · d / 10``, with its ``spread`` (:mod:`corea.signals.stated`; the
  distribution is the one :func:`train.confidence.expected_loss` trains, renormalised over the
  ten digits),

for the base SLM and for a confidence-scoped adapter (the shipped one by default), in one pass:
the prefix's KV cache is the base's (:func:`train.confidence.scoped_forward`), and the digit
position is read once with the adapter on and once with it off.

Versions compared: ``base_stated``, ``base_expected``, ``adapter_stated``, ``adapter_expected``,
the shipped **token calibrator** (``token_calibrator``: logistic regression on the solution's
token-probability signals, :mod:`corea.signals.calibrator`), and ``token+adapter_expected`` (the same
logistic regression with the adapter's expected confidence as its ``verbal`` feature, fit on the
train rows scored here). **Selection on train only**: the train run's rows the adapter was *not*
trained on (its ``train_ids.json``) are scored; each version's metrics there are out of sample
(the token calibrator's out of fold over every train row, 5-fold, as on its card — the shipped one
was fit on these rows; the combined one out of fold on the scored rows); the version with the
lowest Brier score is ``chosen``. The test runs are only reported.

    python -m train.expected_confidence --out bench/results/expected-confidence.json
    python -m train.expected_confidence --limit 10 --out /tmp/x.json     # a timing check
    python -m train.expected_confidence --from-json old.json --out new.json  # metrics only

The scoring (:func:`score_runs`, a prefill per row) is saved per row in the result (``rows``), so
the metrics (:func:`compare`) can be recomputed without the model (``--from-json``).

Rows without a usable solution (cut off at the budget, or no answer) have no confidence line and
are left out of every version alike (``n`` in each result). ECE with 10 bins; AUROC of the
confidence against correctness.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

SHIPPED_ADAPTER = "corea/assets/adapters/qwen2.5-coder-0.5b-instruct"
TOKEN_CALIBRATOR = \
    "corea/assets/calibrators/qwen2.5-coder-0.5b-instruct-corea-calibration-adapter-v4"
TRAIN_RUN = "data/generations/gsm8k-train-1000"
TEST_RUNS = ("gsm8k-test-200=data/generations/gsm8k-test-200",
             "svamp-test-100=data/generations/svamp-test-100")
VERSIONS = ("base_stated", "base_expected", "adapter_stated", "adapter_expected",
            "token_calibrator", "token+adapter_expected")
SELECT_BY = "brier"


@dataclass(frozen=True)
class DigitRow:
    """One scored solution: its run row id, correctness, the SLM output dict of the run (token
    signals), and the ten digit probabilities of the base and of the adapter."""

    id: str
    correct: bool
    output: dict
    base: tuple[float, ...]
    adapter: tuple[float, ...]


def digit_rows(model, tokenizer, rows: Sequence[dict], batch_size: int = 4,
               progress=None) -> list[DigitRow]:
    """Score the greedy solution of each row (see the module docstring). ``model``: a PEFT model
    with a confidence-scoped adapter. Rows without a usable solution, or longer than 1024 tokens,
    are skipped."""
    import torch

    from train.confidence import DIGITS, SUFFIX, collate, encode, examples_from_rows, \
        scoped_forward

    by_id = {str(r["id"]): r for r in rows}
    examples = examples_from_rows(rows, forced_answers=True, samples=False)
    suffix_ids = tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    digit_ids = [tokenizer.convert_tokens_to_ids(d) for d in DIGITS]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    enc = [(x, e) for x, e in ((x, encode(x, tokenizer, suffix_ids, 1024)) for x in examples)
           if e is not None]
    out: list[DigitRow] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(enc), batch_size):
            part = enc[i:i + batch_size]
            b = collate([dict(e, row=j) for j, (_, e) in enumerate(part)], pad)
            cache: dict = {}  # the base's prefix KV, shared by both readings
            tail = len(suffix_ids) + 1
            ad = scoped_forward(model, b, tail, cache).logits[:, -1, digit_ids].float()
            with model.disable_adapter():
                ba = scoped_forward(model, b, tail, cache).logits[:, -1, digit_ids].float()
            pa, pb = torch.softmax(ad, -1).tolist(), torch.softmax(ba, -1).tolist()
            for j, (x, _) in enumerate(part):
                rid = x.id.split("#", 1)[0]
                out.append(DigitRow(rid, bool(x.correct), by_id[rid].get("slm") or {},
                                    tuple(pb[j]), tuple(pa[j])))
            if progress:
                progress(len(out), len(enc))
    return out


def live_rows(backend, rows: Sequence[dict], progress=None) -> list[DigitRow]:
    """The same readings on llama.cpp, as the live cascade gets them (``--engine llamacpp``).

    ``backend``: a :class:`corea.backends.llamacpp.LlamaCppBackend` of a confidence-scoped
    adapter folder. The base's ten digits are exact (``next_token_logprobs`` after the solution
    and ``"\nConfidence: 0."``); the adapter writes its line after the solution
    (``state_confidence``, greedy, :data:`corea.signals.stated.TOP_LOGPROBS` alternatives per token) and
    its distribution is read at the digit after ``"Confidence: 0."``
    (:func:`corea.signals.stated.read_digits`) — exactly the live ``confidence_expected``. A line the
    adapter does not write as ``0.d`` gives all-zero adapter probabilities (the cascade defers
    such a row: confidence 0)."""
    from corea.prompts import slm_messages
    from corea.signals.stated import DIGITS, TOP_LOGPROBS, read_digits
    from corea.types import GenerationParams
    from train.confidence import SUFFIX, examples_from_rows

    import math

    by_id = {str(r["id"]): r for r in rows}
    params = GenerationParams(max_new_tokens=8, temperature=0.0, top_logprobs=TOP_LOGPROBS)
    out: list[DigitRow] = []
    for x in examples_from_rows(rows, forced_answers=True, samples=False):
        rid = x.id.split("#", 1)[0]
        msgs = slm_messages(x.question, x.choices)
        lp = backend.next_token_logprobs(msgs, x.solution + SUFFIX, DIGITS)
        m = max(lp.values())
        w = [math.exp(lp[d] - m) for d in DIGITS]
        base = tuple(v / sum(w) for v in w)
        chunks = list(backend.state_confidence(msgs, x.solution, params))
        reading = read_digits([t for c in chunks for t in c.logprobs],
                              [t for c in chunks for t in c.top_logprobs])
        adapter = reading.probs if reading is not None else (0.0,) * 10
        out.append(DigitRow(rid, bool(x.correct), by_id[rid].get("slm") or {}, base, adapter))
        if progress:
            progress(len(out), None)
    return out


def readings(probs: Sequence[float]) -> tuple[float, float, float]:
    """``(stated, expected, spread)`` of ten digit probabilities (:mod:`corea.signals.stated`)."""
    from corea.signals.stated import moments

    if not any(probs):  # no reading (the adapter wrote no "0.d" line)
        return 0.0, 0.0, 0.0
    e, s = moments(probs)
    return max(range(10), key=lambda d: probs[d]) / 10, e, s


def with_verbal(output: dict, value: float) -> dict:
    """A copy of an SLM output dict whose stated confidence is ``value`` (a calibrator's
    ``verbal`` feature)."""
    return {**output, "confidence": float(value)}


def version_scores(scored: Sequence[dict], outputs: Sequence[dict], token: Sequence[float],
                   combined=None) -> dict:
    """Each version's confidence per scored row: ``{version: [c, ...]}`` (:data:`VERSIONS`).

    Args:
        scored: per row ``{"correct", "base": [stated, expected, spread], "adapter": [...]}``.
        outputs: the rows' SLM output dicts (token signals), in the same order.
        token: the token calibrator's P(correct) per row (out of fold on train).
        combined: a fitted calibrator of token features + the adapter's expected confidence;
            ``None``: out of fold on these rows (5-fold), left out with fewer than 5 of a class.
    """
    import numpy as np

    from corea.signals.calibrator import FEATURES, cross_val_predictions

    mixed = [with_verbal(o, r["adapter"][1]) for o, r in zip(outputs, scored)]
    y = np.asarray([bool(r["correct"]) for r in scored])
    out = {"base_stated": [r["base"][0] for r in scored],
           "base_expected": [r["base"][1] for r in scored],
           "adapter_stated": [r["adapter"][0] for r in scored],
           "adapter_expected": [r["adapter"][1] for r in scored],
           "token_calibrator": [float(v) for v in token]}
    if combined is not None:
        out["token+adapter_expected"] = [float(v) for v in combined.predict(mixed)]
    elif min(y.sum(), (~y).sum()) >= 5:  # enough of each class for 5 folds
        out["token+adapter_expected"] = cross_val_predictions(mixed, y, names=FEATURES).tolist()
    return out


def summarize_versions(scores: dict, correct: Sequence[bool]) -> dict:
    """``{version: {n, accuracy, mean, auroc, ece_10, brier}}``
    (:func:`train.score_confidence.summarize`)."""
    from train.score_confidence import summarize

    return {v: summarize(c, correct) for v, c in scores.items()}


def choose(train: dict, by: str = SELECT_BY) -> str:
    """The version with the lowest ``by`` (``brier`` or ``ece_10``) on train."""
    return min((v for v in VERSIONS if v in train),
               key=lambda v: (train[v][by], VERSIONS.index(v)))


def load_backend(adapter: str, cache_dir: str = "~/.cache/corea"):
    """A llama.cpp backend of the embedded SLM with the confidence-scoped ``adapter``
    (``COREA_SLM__N_THREADS`` threads, 1 by default here)."""
    import os

    from corea.backends.llamacpp import LlamaCppBackend
    from corea.config import ModelSettings

    threads = int(os.environ.get("COREA_SLM__N_THREADS", "1"))
    return LlamaCppBackend(ModelSettings(backend="llamacpp", model=adapter, n_ctx=2048,
                                         n_threads=threads), Path(cache_dir).expanduser())


def load_model(adapter: str, cache_dir: str = "~/.cache/corea"):
    """The embedded SLM in float32 with ``adapter`` (PEFT) on top, and its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corea.backends.weights import safetensors_checkpoint

    base_dir = safetensors_checkpoint("embedded:slm", str(Path(cache_dir).expanduser()))
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter), AutoTokenizer.from_pretrained(base_dir)


def score_runs(adapter: str, runs: dict[str, str], skip: dict[str, set], limit: int | None,
               engine: str = "llamacpp", model=None, log=print, save=lambda rows: None,
               done: dict | None = None) -> dict:
    """The expensive part: ``{name: {row id: {"correct", "base": [stated, expected, spread],
    "adapter": [...]}}}`` for the first ``limit`` usable rows of each run (ids in
    ``skip[name]`` left out); ``save`` gets the partial result after each run. ``done``: rows
    scored before (the same shape), kept and not scored again.

    Raises:
        ValueError: an unknown engine, or no usable solution in a run."""
    from corea.eval.runs import load_results
    from train.confidence import examples_from_rows

    if engine not in ("llamacpp", "torch"):
        raise ValueError(f"engine must be llamacpp or torch, got {engine!r}")
    if model is None:
        model = load_backend(adapter) if engine == "llamacpp" else load_model(adapter)
    per_row: dict = {name: dict(rows) for name, rows in (done or {}).items()}
    for name, run in runs.items():
        rows = [r for r in load_results(run) if str(r["id"]) not in skip.get(name, ())]
        usable = {e.id.split("#", 1)[0]
                  for e in examples_from_rows(rows, forced_answers=True, samples=False)}
        have = per_row.setdefault(name, {})
        rows = [r for r in rows if str(r["id"]) in usable][:limit]
        rows = [r for r in rows if str(r["id"]) not in have]
        t0 = time.perf_counter()
        prog = lambda i, n: log(f"{name}: {i}") if i % 20 == 0 else None  # noqa: E731
        got = live_rows(model, rows, prog) if engine == "llamacpp" \
            else digit_rows(*model, rows, progress=prog)
        log(f"{name}: {len(got)} solutions in {time.perf_counter() - t0:.0f} s")
        have.update({r.id: {"correct": r.correct,
                            "base": [round(v, 4) for v in readings(r.base)],
                            "adapter": [round(v, 4) for v in readings(r.adapter)]}
                     for r in got})
        if not have:
            raise ValueError(f"no usable solution in {run}")
        save(per_row)
    return per_row


def compare(per_row: dict, train_run: str, test_runs: dict[str, str],
            token_calibrator: str) -> dict:
    """The cheap part: every version's metrics from the scored rows (:func:`score_runs`) and the
    runs' SLM outputs. On train the token calibrator's P(correct) is out of fold (5-fold over
    every train row, as its card's held-out numbers: the shipped one was fit on them) and the
    combined one out of fold on the scored rows; the ``chosen`` version has the lowest Brier
    score there. On each test run: the shipped token calibrator, and the combined one fit on
    the scored train rows.

    Raises:
        ValueError: the train run is not a train split."""
    import numpy as np

    from corea.eval.runs import load_results, require_train_split
    from corea.signals.calibrator import (FEATURES, TOKEN_FEATURES, InsufficientLabels,
                                          cross_val_predictions, fit_calibrator, load_plain)

    require_train_split(train_run, "the version is chosen")
    res: dict = {"select_by": SELECT_BY,
                 "confidence_scale": "c_d = d / 10 for the digit d after 'Confidence: 0.'"}
    all_train = [r for r in load_results(train_run) if r.get("slm_correct") is not None]
    oof = cross_val_predictions([r.get("slm") or {} for r in all_train],
                                np.asarray([bool(r["slm_correct"]) for r in all_train]),
                                names=TOKEN_FEATURES)
    oof_by_id = dict(zip((str(r["id"]) for r in all_train), oof))
    by_id = {str(r["id"]): r.get("slm") or {} for r in all_train}
    ids = list(per_row["train"])
    scored = [per_row["train"][i] for i in ids]
    outputs = [by_id[i] for i in ids]
    tr = version_scores(scored, outputs, [oof_by_id[i] for i in ids])
    res["train"] = {"run": train_run, **summarize_versions(tr, [r["correct"] for r in scored])}
    res["chosen"] = choose(res["train"])
    try:
        combined = fit_calibrator([with_verbal(o, r["adapter"][1])
                                   for o, r in zip(outputs, scored)],
                                  [r["correct"] for r in scored], "token+adapter_expected",
                                  features=FEATURES)
    except InsufficientLabels:
        combined = None
    token = load_plain(token_calibrator)
    res["test"] = {}
    for name, run in test_runs.items():
        if name not in per_row:
            continue
        rows = {str(r["id"]): r.get("slm") or {} for r in load_results(run)}
        ids = list(per_row[name])
        scored = [per_row[name][i] for i in ids]
        outs = [rows[i] for i in ids]
        te = version_scores(scored, outs, token.predict(outs), combined or _NoCombined())
        if combined is None:
            te.pop("token+adapter_expected")
        res["test"][name] = {"run": run, **summarize_versions(te, [r["correct"]
                                                                   for r in scored])}
    return res


class _NoCombined:
    """Stands in for a combined calibrator that could not be fit (too few train labels)."""

    def predict(self, outputs):
        return [0.0] * len(outputs)


def format_table(res: dict) -> str:
    """AUROC / ECE / Brier of each version on train and each test set, as Markdown."""
    sets = [("train (held out of the adapter)", res["train"])] + list(res["test"].items())
    head = "| version | " + " | ".join(f"{n}: AUROC / ECE / Brier" for n, _ in sets) + " |"
    lines = [head, "|---" * (len(sets) + 1) + "|"]
    for v in (v for v in VERSIONS if all(v in s for _, s in sets)):
        cells = []
        for _, s in sets:
            m = s[v]
            au = "–" if m["auroc"] is None else f"{m['auroc']:.3f}"
            cells.append(f"{au} / {m['ece_10']:.3f} / {m['brier']:.3f}")
        mark = " (chosen on train)" if v == res["chosen"] else ""
        lines.append(f"| {v}{mark} | " + " | ".join(cells) + " |")
    n = " · ".join(f"{name}: n {s[VERSIONS[0]]['n']}, {100 * s[VERSIONS[0]]['accuracy']:.1f}% "
                   "right" for name, s in sets)
    return "\n".join(lines + ["", n])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.expected_confidence",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", default=SHIPPED_ADAPTER)
    ap.add_argument("--train-run", default=TRAIN_RUN)
    ap.add_argument("--test", nargs="*", default=list(TEST_RUNS), metavar="NAME=DIR")
    ap.add_argument("--token-calibrator", default=TOKEN_CALIBRATOR)
    ap.add_argument("--limit", type=int, default=None, help="at most this many rows per run")
    ap.add_argument("--engine", default="llamacpp", choices=("llamacpp", "torch"),
                    help="llamacpp: the quantized GGUF as live (default; ~20x faster on a CPU "
                         "than float32 torch); torch: the float32 model train.confidence trains")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--from-json", default=None, metavar="PATH",
                    help="recompute the metrics from the rows scored in an earlier result")
    ap.add_argument("--resume", default=None, metavar="PATH",
                    help="keep the rows an earlier result scored; score only the others")
    ap.add_argument("--out", required=True, help="write the result JSON here")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.torch_threads)
    command = "python -m train.expected_confidence " + " ".join(
        argv if argv is not None else sys.argv[1:])
    head = {"command": command, "adapter": a.adapter, "engine": a.engine,
            "token_calibrator": a.token_calibrator, "limit": a.limit,
            "train_rows": f"{a.train_run}, rows not in {a.adapter}/train_ids.json"}

    def save(res):
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({**head, **res}, indent=1), encoding="utf-8")

    try:
        tests = dict(t.split("=", 1) for t in a.test)
        if a.from_json:  # metrics again from rows scored before (no model)
            old = json.loads(Path(a.from_json).read_text(encoding="utf-8"))
            head.update({k: old[k] for k in ("command", "adapter", "engine", "limit")
                         if k in old})
            head["metrics_command"] = command
            per_row = old["rows"]
        else:
            from train.score_confidence import trained_ids

            done = json.loads(Path(a.resume).read_text(encoding="utf-8"))["rows"] \
                if a.resume else None
            per_row = score_runs(a.adapter, {"train": a.train_run, **tests},
                                 {"train": trained_ids(a.adapter)}, a.limit, a.engine,
                                 log=lambda m: print(m, file=sys.stderr, flush=True),
                                 save=lambda rows: save({"rows": rows}), done=done)
        res = {**compare(per_row, a.train_run, tests, a.token_calibrator), "rows": per_row}
        save(res)
    except (ValueError, FileNotFoundError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
