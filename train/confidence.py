"""Confidence-only training of the SLM on its own solutions (the CPU calibration recipe).

Full-solution GRPO spends almost all of its compute generating solutions, and its one advantage
per completion mixes the correctness and the calibration rewards over every token. Here the SLM's
solutions are already generated and graded (train-split evaluation runs, :mod:`corea.eval`:
``items.jsonl`` with the greedy solution, ``samples.jsonl`` with sampled ones). The policy (LoRA
on the SLM) only learns what to say after its own solution:

    <chat prompt> <its solution, up to its final answer> "\\nConfidence: 0." <digit>

- The **format** term: the negative log-likelihood of ``"\\nConfidence: 0."`` after the solution,
  weighted by ``format_weight``, so the SLM writes its confidence line itself (no forced suffix).
- The **end** term (``eos_weight``): the NLL of the end-of-turn token after ``"0.d"`` (``d`` a
  digit drawn per example), so the SLM stops after its confidence. Without it, greedy decoding
  repeated ``"Confidence: 0.3"`` until the token budget (our first run).
- The **digit** term (``digit_weight``): ``-log sum_d p_d`` over the whole vocabulary after
  ``"0."``, so a digit follows. The calibration term renormalises over the ten digits and cannot
  see this mass: in our second run (end term, no digit term) it fell from 1.0 to 0.01 after ~45
  steps (the end of turn came right after ``"0."``) and the digits collapsed onto ``0``.
- The **anchor** term (``anchor_weight``): the NLL of the SLM's own solution tokens at its line
  breaks (positions where the token or the next one holds ``"\\n"``; at most ``max_anchors`` per
  solution) — where a model trained only on the format term learns to write its confidence line
  too early, before its answer (our first run: on 16 of 16 test items). It keeps the adapted SLM's
  solutions its own (a cheap stand-in for a KL penalty to the base on every token).
- The **calibration** term on the next token, restricted to the ten digits ``0``–``9``
  (confidence ``c_d = d / 10``, what :func:`corea.parsing.parse_confidence` reads from
  ``"0.d"``), with ``p_d`` the model's distribution over them and ``t`` the target — this
  solution's correctness (``target=brier``) or its question's group accuracy over the greedy and
  sampled solutions (``group_l1`` / ``group_l2``, COREA's ``confidence_l1`` target). Two
  estimators of the same objective ``E_{d ~ p}[loss(c_d, t)]``:

  - ``exact``: the expectation itself, ``sum_d p_d · loss(c_d, t)`` (no sampling; with the
    squared loss this is ConfTuner's "tokenized Brier score", NeurIPS 2025);
  - ``grpo``: ``G`` digits sampled from ``p``, rewards ``-loss(c_g, t)``, advantages normalised
    within the group (GRPO, Shao et al. 2024), loss ``-mean_g A_g · log p_{d_g}``.

**Adapter scope** (``adapter_scope``). With ``all`` the adapter runs on every token, so it can
change the solution too — and it did: our third run (anchors on) halved pass@1 on GSM8K test
(solutions that stop at a mid-solution "0.d", a valid box lost to a later confidence paragraph).
With ``confidence`` the adapter only ever sees the confidence line: the prompt and solution (all
but its last token) go through the base model (``disable_adapter``, no gradient) into a KV cache,
and the adapter runs from the solution's last token on — exactly what the llama.cpp backend does
at run time (:data:`corea.adapters.SCOPES`). The solution, and so pass@1, is the base's by
construction; the anchor term has nothing to protect and is off.

A step is one forward/backward pass over the batch's texts; no generation. Logits are computed
only for the last ``len(suffix) + 1`` positions (left padding, ``logits_to_keep``), and with
``lora_top_layers`` the backward pass only runs through the top layers (the frozen ones below
need no gradient).

Usage::

    python -m train.confidence --config train/recipes/cpu-calibrate-0.5b.yaml
    python -m train.confidence --config train/recipes/cpu-calibrate-0.5b.yaml \\
        --resume_from_checkpoint last

Arguments: :class:`ConfidenceArguments` + transformers' ``TrainingArguments`` + TRL's
``ModelConfig`` (LoRA), read by TRL's ``TrlParser`` (a YAML ``--config`` sets defaults). Every log
line goes to ``<output_dir>/metrics.jsonl`` with ``calibration/*`` batch metrics (accuracy, mean
expected confidence, ECE, Brier of the expected confidence) and seconds per step. Checkpoints are
PEFT adapters, run on llama.cpp like ``train.grpo``'s (:mod:`corea.backends.lora_gguf`).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from corea.parsing import strip_confidence  # noqa: F401 — re-exported: the solution to train on
from corea.stopping import cut_text
from train.args import TrainerArguments

logger = logging.getLogger("train.confidence")

SUFFIX = "\nConfidence: 0."
DIGITS = tuple(str(d) for d in range(10))
DIGIT_VALUES = tuple(d / 10 for d in range(10))
TARGETS = ("brier", "group_l1", "group_l2")
ESTIMATORS = ("exact", "grpo")


@dataclass
class ConfidenceArguments(TrainerArguments):
    """Data, target and estimator (training: ``TrainingArguments``; LoRA: TRL's ``ModelConfig``);
    ``model``, ``limit``, ``corea_cache_dir`` and ``trainer`` are
    :class:`train.args.TrainerArguments`'."""

    runs: list[str] = field(default_factory=lambda: ["data/generations/gsm8k-train-1000"],
                            metadata={"help": "train-split evaluation run folders"})
    question_ids: str | None = field(default=None, metadata={
        "help": "a JSON list of question ids (e.g. a shipped adapter's train_ids.json): use only "
                "those questions of the runs (applied before limit)"})
    samples: bool = field(default=True, metadata={
        "help": "also train on the runs' sampled solutions (slm_samples), not only the greedy one"})
    target: str = field(default="brier", metadata={"help": "brier | group_l1 | group_l2"})
    estimator: str = field(default="exact", metadata={"help": "exact | grpo"})
    num_generations: int = field(default=8, metadata={"help": "G sampled digits (grpo)"})
    format_weight: float = field(default=0.1, metadata={
        "help": "weight of the NLL of the confidence line after the solution"})
    eos_weight: float = field(default=0.5, metadata={
        "help": "weight of the NLL of the end-of-turn token after the confidence digit"})
    digit_weight: float = field(default=0.5, metadata={
        "help": "weight of -log P(a digit follows 'Confidence: 0.') over the whole vocabulary"})
    anchor_weight: float = field(default=1.0, metadata={
        "help": "weight of the NLL of the solution's own tokens at its line breaks"})
    max_anchors: int = field(default=48, metadata={
        "help": "at most this many anchor positions per solution"})
    max_length: int = field(default=1024, metadata={"help": "longest prompt+solution (tokens)"})
    adapter_scope: str = field(default="all", metadata={
        "help": "all: the adapter runs on every token | confidence: only on the confidence line "
                "after the base model's solution (corea.adapters.SCOPES)"})
    lora_top_layers: int | None = field(default=None, metadata={
        "help": "put LoRA only on the top N decoder layers: the backward pass then stops there "
                "(cheaper steps on a CPU); default: every layer"})
    trainer: str = field(default="train.confidence", metadata={
        "help": "the module a recipe runs (read by the app's job manager)"})


# ------------------------------------------------------------------------------------ losses

def point_loss(c, t, target: str):
    """Loss of a stated confidence ``c`` against target ``t`` (tensors; broadcasting)."""
    if target in ("brier", "group_l2"):
        return (c - t) ** 2
    if target == "group_l1":
        return (c - t).abs()
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def expected_loss(digit_logits, targets, target: str = "brier"):
    """``sum_d p_d · loss(d / 10, t)`` per row; ``digit_logits`` (B, 10), ``targets`` (B,).

    The exact expected loss of the confidence read from ``"0.d"`` under the model's distribution
    over the ten digits (renormalised over them)."""
    import torch

    p = torch.softmax(digit_logits.float(), dim=-1)
    values = torch.tensor(DIGIT_VALUES, dtype=p.dtype, device=p.device)
    return (p * point_loss(values[None, :], targets[:, None].to(p.dtype), target)).sum(-1)


def grpo_loss(digit_logits, targets, target: str = "brier", num_generations: int = 8,
              generator=None):
    """The GRPO estimator per row: ``G`` digits sampled from ``p``, reward ``-loss``, advantage
    ``(r - mean) / (std + 1e-4)`` within the row's group (0 when all rewards are equal), loss
    ``-mean_g A_g log p_{d_g}``. Returns ``(loss (B,), sampled digits (B, G))``."""
    import torch

    logp = torch.log_softmax(digit_logits.float(), dim=-1)
    with torch.no_grad():
        d = torch.multinomial(logp.exp(), num_generations, replacement=True, generator=generator)
        values = torch.tensor(DIGIT_VALUES, dtype=logp.dtype, device=logp.device)[d]
        r = -point_loss(values, targets[:, None].to(logp.dtype), target)
        std = r.std(dim=1, keepdim=True, unbiased=False)
        adv = torch.where(std > 1e-8, (r - r.mean(dim=1, keepdim=True)) / (std + 1e-4),
                          torch.zeros_like(r))
    return -(adv * logp.gather(1, d)).mean(dim=1), d


# ------------------------------------------------------------------------------------ data

@dataclass(frozen=True)
class Example:
    """One solution to train on: its question, the solution text up to its final answer, whether
    that answer is right, and the question's group accuracy (greedy + sampled solutions)."""

    id: str
    question: str
    choices: tuple | None
    solution: str
    correct: bool
    group_accuracy: float


def examples_from_rows(rows: Sequence[dict], forced_answers: bool = False,
                       samples: bool = True) -> list[Example]:
    """Examples from evaluation rows (and, with ``samples``, their ``slm_samples``): solutions
    that were not cut off
    and whose answer the SLM wrote itself (``answer_method == "free"``) — or, with
    ``forced_answers`` (the confidence-scoped adapter, which states a confidence after those too),
    was elicited by the forced ``"\n\nAnswer:"`` suffix, kept in the text. Ungradable rows are
    skipped. The group accuracy counts every graded solution of the question."""
    out = []
    for r in rows:
        if r.get("slm_correct") is None:
            continue
        sols = [(r.get("slm") or {}, bool(r["slm_correct"]))]
        if samples:
            sols += [(s, bool(s.get("correct"))) for s in r.get("slm_samples") or []]
        group = sum(c for _, c in sols) / len(sols)
        for j, (s, correct) in enumerate(sols):
            method = s.get("answer_method", "free")
            if method not in (("free", "forced") if forced_answers else ("free",)) \
                    or s.get("finish_reason") == "length" or not s.get("answer") \
                    or not s.get("text"):
                continue
            # the solution as the cascade stops it (corea.stopping; the same rule with the adapter)
            text = cut_text(s["text"], r.get("choices"))
            sol = strip_confidence(text, keep_answer=method == "forced")
            if sol:
                out.append(Example(f"{r['id']}#{j}", r["question"],
                                   tuple(r["choices"]) if r.get("choices") else None, sol,
                                   correct, group))
    return out


def encode(example: Example, tokenizer, suffix_ids: list[int], max_length: int,
           end_id: int | None = None, max_anchors: int = 0) -> dict | None:
    """Token ids of chat prompt + solution + suffix (None when longer than ``max_length``).

    With ``end_id`` a digit token (drawn per example from its id) follows the suffix, so the
    position after it predicts ``end_id`` (the end-of-turn token). With ``max_anchors`` > 0,
    ``anchor_pos`` / ``anchor_tgt`` are up to that many positions inside the solution whose token
    or next token holds a line break, and the token that follows each (the solution's own)."""
    import zlib

    from corea.prompts import slm_messages

    msgs = [m.as_dict() for m in slm_messages(example.question, example.choices)]
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(prompt + example.solution, add_special_tokens=False)["input_ids"])
    n_text = len(ids)
    ids += list(suffix_ids)
    rng = random.Random(zlib.crc32(example.id.encode("utf-8")))
    if end_id is not None:
        ids.append(tokenizer.convert_tokens_to_ids(DIGITS[rng.randrange(10)]))
    if len(ids) > max_length:
        return None
    anchors: list[int] = []
    if max_anchors > 0:
        nl = [("\n" in tokenizer.decode([t])) for t in ids[:n_text]]
        anchors = [p for p in range(max(0, n_prompt - 1), n_text - 1) if nl[p] or nl[p + 1]]
        if len(anchors) > max_anchors:
            anchors = sorted(rng.sample(anchors, max_anchors))
    return {"input_ids": ids, "correct": float(example.correct),
            "group_accuracy": float(example.group_accuracy),
            "anchor_pos": anchors, "anchor_tgt": [ids[p + 1] for p in anchors]}


def collate(batch: Sequence[dict], pad_id: int) -> dict:
    """Left-pad a batch (so the suffix ends every row at the same position). ``anchor_pos``
    (B, A) are the rows' anchor positions shifted by their padding (padded with the last position
    where ``anchor_mask`` is 0), ``anchor_tgt`` (B, A) their target tokens."""
    import torch

    n = max(len(b["input_ids"]) for b in batch)
    a = max([len(b.get("anchor_pos") or []) for b in batch] + [0])
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    apos = torch.full((len(batch), a), n - 1, dtype=torch.long)
    atgt = torch.zeros((len(batch), a), dtype=torch.long)
    amask = torch.zeros((len(batch), a), dtype=torch.float)
    for i, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[i, n - k:] = torch.tensor(b["input_ids"])
        mask[i, n - k:] = 1
        m = len(b.get("anchor_pos") or [])
        if m:
            apos[i, :m] = torch.tensor(b["anchor_pos"]) + (n - k)
            atgt[i, :m] = torch.tensor(b["anchor_tgt"])
            amask[i, :m] = 1.0
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    extra = {"row": torch.tensor([b["row"] for b in batch])} if all("row" in b for b in batch) \
        else {}
    return {**extra, "input_ids": ids, "attention_mask": mask, "position_ids": pos,
            "correct": torch.tensor([b["correct"] for b in batch]),
            "group_accuracy": torch.tensor([b["group_accuracy"] for b in batch]),
            "anchor_pos": apos, "anchor_tgt": atgt, "anchor_mask": amask}


# ------------------------------------------------------------------------------------ trainer

def make_trainer_cls():
    from transformers import Trainer

    class ConfidenceTrainer(Trainer):
        """``Trainer`` with the format + calibration loss of the module docstring."""

        def __init__(self, *a, conf_args: ConfidenceArguments, suffix_ids: list[int],
                     digit_ids: list[int], end_id: int | None = None, **kw):
            super().__init__(*a, **kw)
            self.conf_args = conf_args
            self.suffix_ids = suffix_ids
            self.digit_ids = digit_ids
            self.end_id = end_id
            self._stats: list[dict] = []
            self._t0 = time.perf_counter()
            self._prefix_kv: dict = {}  # adapter_scope confidence: the base's KV per solution

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            a = self.conf_args
            k = len(self.suffix_ids)
            ids = inputs["input_ids"]
            b, n = ids.shape
            # logits only where a term needs them: the anchors, the suffix, the digit, the end
            tail = k + 1 + (1 if self.end_id is not None else 0)
            apos = inputs.get("anchor_pos")
            n_anchor = 0 if apos is None or a.anchor_weight <= 0 else apos.size(1)
            if a.adapter_scope == "confidence":
                n_anchor = 0
                out = scoped_forward(model, inputs, tail, self._prefix_kv)
            else:
                keep = torch.arange(n - tail, n, device=ids.device).expand(b, tail)
                if n_anchor:
                    keep = torch.cat([apos, keep], dim=1)
                out = model(input_ids=ids, attention_mask=inputs["attention_mask"],
                            position_ids=inputs["position_ids"], logits_to_keep=keep)
            logits = out.logits.float().view(b, n_anchor + tail, -1)      # (B, A+tail, V)
            t_logits = logits[:, n_anchor:, :]
            suffix = torch.tensor(self.suffix_ids, device=logits.device)
            logp = torch.log_softmax(t_logits[:, :k, :], dim=-1)
            nll = -logp.gather(2, suffix[None, :, None].expand(b, k, 1)).mean((1, 2))
            digit_logits = t_logits[:, k, self.digit_ids]                 # (B, 10)
            t = inputs["correct"] if a.target == "brier" else inputs["group_accuracy"]
            if a.estimator == "exact":
                cal = expected_loss(digit_logits, t, a.target)
            else:
                cal, _ = grpo_loss(digit_logits, t, a.target, a.num_generations)
            log_all = torch.log_softmax(t_logits[:, k, :], dim=-1)
            digit_nll = -torch.logsumexp(log_all[:, self.digit_ids], dim=-1)   # (B,)
            loss = cal + a.format_weight * nll + a.digit_weight * digit_nll
            eos = torch.zeros_like(cal)
            if self.end_id is not None:
                eos = -torch.log_softmax(t_logits[:, k + 1, :], dim=-1)[:, self.end_id]
                loss = loss + a.eos_weight * eos
            anchor = torch.zeros_like(cal)
            if n_anchor:
                am = inputs["anchor_mask"]
                ce = -torch.log_softmax(logits[:, :n_anchor, :], dim=-1).gather(
                    2, inputs["anchor_tgt"][:, :, None]).squeeze(2)        # (B, A)
                anchor = (ce * am).sum(1) / am.sum(1).clamp(min=1)
                loss = loss + a.anchor_weight * anchor
            loss = loss.mean()
            with torch.no_grad():
                p = torch.softmax(digit_logits, -1)
                conf = (p * torch.tensor(DIGIT_VALUES)[None, :]).sum(-1)
                digit_mass = digit_nll.neg().exp()
                self._stats.append({"conf": conf.tolist(), "y": inputs["correct"].tolist(),
                                    "nll": nll.mean().item(), "cal": cal.mean().item(),
                                    "eos": eos.mean().item(), "anchor": anchor.mean().item(),
                                    "digit_mass": digit_mass.mean().item()})
            return (loss, out) if return_outputs else loss

        def _save(self, output_dir=None, state_dict=None):
            super()._save(output_dir, state_dict)
            from corea.adapters import write_adapter_scope

            write_adapter_scope(output_dir or self.args.output_dir, self.conf_args.adapter_scope)

        def log(self, logs: dict, *args, **kwargs):
            if self._stats:
                logs.update(batch_metrics(self._stats))
                if self.is_world_process_zero():
                    write_confidences(self.args.output_dir, self.state.global_step, self._stats)
                now = time.perf_counter()
                steps = max(1, len(self._stats) // max(1, self.args.gradient_accumulation_steps))
                logs["seconds_per_step"] = (now - self._t0) / steps
                self._t0 = now
                self._stats = []
            super().log(logs, *args, **kwargs)

    return ConfidenceTrainer


def scoped_forward(model, inputs, tail: int, cache: dict | None = None):
    """The forward pass of ``adapter_scope: confidence``: the first ``n - tail`` positions
    (prompt and solution but its last token) through the base model (``disable_adapter``, no
    gradient) into a KV cache; the last ``tail`` (the solution's last token, the suffix, the
    digit) through the adapted model on that cache. Returns the model output, logits of shape
    ``(B, tail, V)``.

    ``cache``: ``{row: [(keys, values) per layer]}``, each of shape ``(1, kv_heads, L_row,
    head_dim)`` without padding, keyed by ``inputs["row"]`` (the example's index): the base's
    prefix KV does not change while the adapter trains, so each solution's prefix is computed
    once per run (a 2-vCPU step is then a few forward/backward passes over ``tail`` tokens
    instead of over the whole text, from the second epoch on)."""
    import torch
    from transformers import DynamicCache

    ids, mask, pos = inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"]
    b, n = ids.shape
    m = n - tail
    rows = inputs.get("row")
    if cache is None or rows is None:
        with torch.no_grad(), model.disable_adapter():
            past = model(input_ids=ids[:, :m], attention_mask=mask[:, :m],
                         position_ids=pos[:, :m], use_cache=True).past_key_values
    else:
        keys = [int(r) for r in rows.tolist()]
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            with torch.no_grad(), model.disable_adapter():
                got = model(input_ids=ids[missing, :m], attention_mask=mask[missing, :m],
                            position_ids=pos[missing, :m], use_cache=True).past_key_values
            for j, i in enumerate(missing):
                pad = n - int(mask[i].sum())  # left padding of row i
                cache[keys[i]] = [(layer.keys[j:j + 1, :, pad:].clone(),
                                   layer.values[j:j + 1, :, pad:].clone())
                                  for layer in got.layers]
        past = DynamicCache()
        for li in range(len(cache[keys[0]])):
            ks, vs = [], []
            for k in keys:
                kk, vv = cache[k][li]
                left = m - kk.size(2)
                ks.append(torch.nn.functional.pad(kk, (0, 0, left, 0)))
                vs.append(torch.nn.functional.pad(vv, (0, 0, left, 0)))
            past.update(torch.cat(ks), torch.cat(vs), li)
    return model(input_ids=ids[:, m:], attention_mask=mask, position_ids=pos[:, m:],
                 past_key_values=past, use_cache=True)


def write_confidences(output_dir: str | os.PathLike, step: int, stats: Sequence[dict]) -> None:
    """Append the logged batches' expected confidences and correctness to
    ``<output_dir>/confidences.jsonl`` (one line per log step: ``{"step", "confidence": [..],
    "correct": [..]}``, confidence in [0, 1]): the Training tab's reliability panel pools the
    last few steps from it (:func:`corea.jobs.read_confidences`)."""
    import json

    from corea.jobs import CONFIDENCES_FILE

    rec = {"step": int(step),
           "confidence": [round(float(c), 4) for s in stats for c in s["conf"]],
           "correct": [bool(v) for s in stats for v in s["y"]]}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(output_dir) / CONFIDENCES_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


def batch_metrics(stats: Sequence[dict]) -> dict:
    """``calibration/*`` of logged batches: accuracy, mean expected confidence, ECE (10 bins) and
    Brier score of the expected confidence, mean format NLL, digit probability mass; and the
    calibration reward (minus the calibration loss) as ``rewards/calibration/mean``, so the
    Training tab plots it beside GRPO's rewards."""
    import numpy as np

    from corea.metrics import brier_score, ece

    conf = np.array([c for s in stats for c in s["conf"]], dtype=float).clip(0, 1)
    y = np.array([bool(v) for s in stats for v in s["y"]])
    cal = float(np.mean([s["cal"] for s in stats]))
    return {"rewards/calibration/mean": -cal,
            "calibration/accuracy": float(y.mean()),
            "calibration/mean_confidence": float(conf.mean()),
            "calibration/ece": ece(conf, y, 10), "calibration/brier": brier_score(conf, y),
            "calibration/loss": cal,
            "format/nll": float(np.mean([s["nll"] for s in stats])),
            "format/end_nll": float(np.mean([s.get("eos", 0.0) for s in stats])),
            "format/anchor_nll": float(np.mean([s.get("anchor", 0.0) for s in stats])),
            "format/digit_mass": float(np.mean([s["digit_mass"] for s in stats]))}


# ------------------------------------------------------------------------------------ main

def make_parser():
    from transformers import TrainingArguments
    from trl import ModelConfig, TrlParser

    return TrlParser((ConfidenceArguments, TrainingArguments, ModelConfig))


def load_examples(args: ConfidenceArguments, seed: int) -> list[Example]:
    """Examples from the train runs (a run of another split is refused): the rows of
    ``args.question_ids`` (all without it), then the first ``args.limit`` of them, with their
    sampled solutions when ``args.samples``.

    Raises:
        ValueError: a run that is not a train split, a question id no run has, or no usable
            example.
    """
    import json

    from corea.eval.runs import load_results, require_train_split

    rows = []
    for d in args.runs:
        require_train_split(d, "the confidence is trained")
        rows += load_results(d)
    if args.question_ids:
        want = set(json.loads(Path(args.question_ids).read_text(encoding="utf-8")))
        missing = want - {str(r["id"]) for r in rows}
        if missing:
            raise ValueError(f"{len(missing)} question ids of {args.question_ids} are in no run "
                             f"of {args.runs} (e.g. {sorted(missing)[0]})")
        rows = [r for r in rows if str(r["id"]) in want]
    if args.limit:
        rows = rows[:args.limit]
    ex = examples_from_rows(rows, forced_answers=args.adapter_scope == "confidence",
                            samples=args.samples)
    if not ex:
        raise ValueError(f"no usable solutions in {args.runs}")
    random.Random(seed).shuffle(ex)
    return ex


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant turn: ``<|im_end|>`` for ChatML models (Qwen), else the
    tokenizer's EOS.

    Raises:
        ValueError: the tokenizer has neither."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tid is None or tid == tokenizer.unk_token_id:
        tid = tokenizer.eos_token_id
    if tid is None:
        raise ValueError("the tokenizer has no end-of-turn token")
    return int(tid)


def write_train_ids(output_dir: str | os.PathLike, examples: Sequence[Example]) -> None:
    """``<output_dir>/train_ids.json``: the sorted question ids trained on (merged with those of
    an earlier start of the same run), so held-out checks (:mod:`train.score_confidence`) can
    skip them."""
    import json

    path = Path(output_dir) / "train_ids.json"
    ids = {e.id.split("#", 1)[0] for e in examples}
    if path.is_file():
        ids |= set(json.loads(path.read_text(encoding="utf-8")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(ids)), encoding="utf-8")


DATA_ARGS_FILE = "data_args.json"
"""``<output_dir>/data_args.json``: what a run trained on, beyond its recipe (:func:`write_data_args`)."""


def write_data_args(output_dir: str | os.PathLike, args: ConfidenceArguments) -> None:
    """``<output_dir>/data_args.json``: ``runs``, ``question_ids``, ``limit`` and ``samples`` of
    this run, so :mod:`train.ship_adapter` writes a regenerate command that selects the same
    examples."""
    import json

    path = Path(output_dir) / DATA_ARGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": list(args.runs), "question_ids": args.question_ids,
                                "limit": args.limit, "samples": args.samples}), encoding="utf-8")


def build(argv: Sequence[str] | None = None):
    """Parse arguments and build ``(trainer, resume checkpoint or None)``."""
    import torch
    from datasets import Dataset
    from trl import get_peft_config

    from train.grpo import (ScriptArguments, install_stop_handlers, jsonl_callback_cls,
                            load_model_and_tokenizer, resolve_resume, schedule_callback_cls,
                            stop_callback_cls)

    conf_args, training_args, model_args = make_parser().parse_args_and_config(
        list(sys.argv[1:] if argv is None else argv))
    if conf_args.target not in TARGETS or conf_args.estimator not in ESTIMATORS:
        raise ValueError(f"target must be one of {TARGETS} and estimator one of {ESTIMATORS}")
    from corea.adapters import SCOPES

    if conf_args.adapter_scope not in SCOPES:
        raise ValueError(f"adapter_scope must be one of {SCOPES}")
    scoped = conf_args.adapter_scope == "confidence"
    if scoped and not model_args.use_peft:
        raise ValueError("adapter_scope: confidence trains a LoRA adapter: set use_peft: true")
    training_args.remove_unused_columns = False
    model, tokenizer = load_model_and_tokenizer(
        ScriptArguments(model=conf_args.model, corea_cache_dir=conf_args.corea_cache_dir),
        training_args.seed)
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    peft_config = get_peft_config(model_args)
    if peft_config is not None and conf_args.lora_top_layers:
        n = model.config.num_hidden_layers
        peft_config.layers_to_transform = list(range(max(0, n - conf_args.lora_top_layers), n))
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    suffix_ids = tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    digit_ids = [tokenizer.convert_tokens_to_ids(d) for d in DIGITS]
    if any(i is None or i == tokenizer.unk_token_id for i in digit_ids):
        raise ValueError("the tokenizer has no single-token digits 0-9")
    examples = load_examples(conf_args, training_args.seed)
    write_train_ids(training_args.output_dir, examples)
    write_data_args(training_args.output_dir, conf_args)
    end_id = end_of_turn_id(tokenizer) if conf_args.eos_weight > 0 else None
    rows = [e for e in (encode(x, tokenizer, suffix_ids, conf_args.max_length, end_id,
                               conf_args.max_anchors
                               if conf_args.anchor_weight > 0 and not scoped else 0)
                        for x in examples) if e is not None]
    rows = [dict(r, row=i) for i, r in enumerate(rows)]  # the key of its cached prefix KV
    logger.info("%d solutions (%d too long), %.1f%% correct", len(rows),
                len(examples) - len(rows), 100 * sum(r["correct"] for r in rows) / len(rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cls = make_trainer_cls()
    stop = stop_callback_cls()
    install_stop_handlers(stop)
    callbacks = [jsonl_callback_cls()(), schedule_callback_cls()(), stop()]
    trainer = cls(model=model, args=training_args, train_dataset=Dataset.from_list(rows),
                  data_collator=lambda b: collate(b, pad), callbacks=callbacks,
                  conf_args=conf_args, suffix_ids=suffix_ids, digit_ids=digit_ids,
                  end_id=end_id)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    return trainer, resume


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        trainer, resume = build(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from train.grpo import stop_exit_code

    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(trainer.args.output_dir)
    return stop_exit_code()  # 128 + N after a stop on signal N


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
