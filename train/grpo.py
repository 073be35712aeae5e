"""GRPO training of the SLM with a correctness reward plus a confidence-calibration reward.

Usage::

    python -m train.grpo --config train/recipes/cpu-smoke.yaml [--max_steps 5 --output_dir ...]
    python -m train.grpo --config train/recipes/cpu-lora-0.5b.yaml --resume_from_checkpoint last

Arguments are :class:`ScriptArguments` (COREA's model names, data, rewards, rollouts) plus TRL's
``GRPOConfig`` (training) and ``ModelConfig`` (LoRA: ``lora_r``, ``lora_alpha``, ``lora_dropout``,
``lora_target_modules``, ...; the PEFT config comes from TRL's ``get_peft_config``, as in
open-r1), read by TRL's ``TrlParser``: a YAML file given with ``--config`` sets defaults and
command-line flags override them. Reward weights are ``GRPOConfig.reward_weights`` (one per name
in ``rewards``).

* ``model``: ``embedded:slm`` (the embedded Qwen2.5-Coder-0.5B-Instruct, converted once to a cached
  safetensors folder by :func:`corea.backends.weights.safetensors_checkpoint`), ``tiny-random`` (a tiny
  randomly initialised Qwen2-shaped model with the real Qwen tokenizer, for smoke tests), a hub id
  or a local model folder.
* ``dataset``: ``gsm8k`` (or any :func:`corea.datasets.load_dataset` name), a ``.jsonl`` file with
  ``question``/``answer`` rows, or a rated-interactions export of the app
  (``Store.export_rated_jsonl``): only rows whose rating gives a correct answer are kept -- the
  ``rating_correction`` when given, else ``final_answer`` of a thumbs-``up`` row.
* Prompts are conversational (system + user, :func:`corea.prompts.slm_messages`); the columns
  ``answer``, ``id`` and ``choices`` reach the reward functions.
* Per step, besides TRL's ``rewards/<name>/mean``, the batch's accuracy, mean confidence, share
  without confidence, ECE and Brier are logged as ``calibration/*``; every log line is also
  appended to ``<output_dir>/metrics.jsonl``.
* ``advantage``: ``plain`` (GRPO's one advantage per completion) or ``blockwise`` (the confidence
  span gets the calibration rewards' advantage, the solution the others', :mod:`train.blockwise`).
* Checkpoints every ``save_steps``; ``--resume_from_checkpoint <dir>`` or ``last`` resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from train.args import TrainerArguments

logger = logging.getLogger("train.grpo")

TINY_RANDOM = "tiny-random"
DEFAULT_REWARDS = ["correctness", "format", "confidence_l1"]


@dataclass
class ScriptArguments(TrainerArguments):
    """Model name, data, reward and rollout settings (training: TRL's ``GRPOConfig``; LoRA:
    TRL's ``ModelConfig``); ``model``, ``limit``, ``corea_cache_dir`` and ``trainer`` are
    :class:`train.args.TrainerArguments`'."""

    dataset: str = field(default="gsm8k", metadata={
        "help": "a corea dataset name (gsm8k, ...), a .jsonl file, or an app rated-JSONL export"})
    dataset_split: str = field(default="train", metadata={"help": "split of a named dataset"})
    data_dir: str | None = field(default=None, metadata={
        "help": "root of the named datasets (default: $COREA_DATA_DIR or <repo>/../shared/data)"})
    limit_seed: int | None = field(default=None, metadata={
        "help": "with limit: None takes the first questions, an int a reproducible random subset"})
    rewards: list[str] = field(default_factory=lambda: list(DEFAULT_REWARDS), metadata={
        "help": "reward names (train.rewards.REWARDS, or dotted import paths); weights are "
                "--reward_weights"})
    log_batch_metrics: bool = field(default=True, metadata={
        "help": "log calibration/* batch metrics (accuracy, confidence, ECE, Brier) every step"})
    use_lora: bool = field(default=False, metadata={
        "help": "train LoRA adapters only (ModelConfig's use_peft; lora_* are ModelConfig's)"})
    forced_suffix: bool = field(default=False, metadata={
        "help": "forced-suffix rollouts (train.rollout): elicit a missing answer / confidence as "
                "the cascade does at inference, so every completion has a confidence to reward"})
    forced_max_new_tokens: int = field(default=8, metadata={
        "help": "token budget of each forced continuation"})
    trainer: str = field(default="train.grpo", metadata={
        "help": "the module a recipe runs (read by the app's job manager)"})
    advantage: str = field(default="plain", metadata={
        "help": "plain (one advantage per completion, GRPO) | blockwise (the confidence span gets "
                "the calibration rewards' advantage, the rest the others', train.blockwise)"})
    torch_threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (None: torch's default). On a shared CPU, fewer threads than "
                "cores avoids oversubscription, which slows CPU generation several-fold"})


# ------------------------------------------------------------------------------------- data

def _is_rated_export(path: Path) -> bool:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                return isinstance(row, dict) and ("rating_thumbs" in row
                                                  or "rating_correction" in row)
    return False


def rated_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Training rows from an app export whose rating gives a gold answer
    (:func:`corea.store.labels.gold_answer`: the correction, else the final answer of a 👍); other
    rows (thumbs down without correction, unrated) are dropped."""
    from corea.store.labels import gold_answer

    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            q = (r.get("question") or "").strip()
            gold, _ = gold_answer(r.get("rating_correction"), r.get("rating_thumbs"),
                                  r.get("final_answer"))
            if gold is None:
                continue
            if q:
                rows.append({"id": f"rated-{r.get('id', n)}", "question": q, "answer": gold,
                             "choices": None})
    return rows


def load_rows(args: ScriptArguments) -> list[dict[str, Any]]:
    """Questions as dicts ``{id, question, answer, choices}``."""
    path = Path(args.dataset).expanduser()
    if args.dataset.endswith(".jsonl") and path.is_file() and _is_rated_export(path):
        rows = rated_rows(path)
        if args.limit is not None:
            rows = rows[:args.limit]
    else:
        from corea.datasets import load_dataset

        items = load_dataset(args.dataset, split=args.dataset_split, limit=args.limit,
                             seed=args.limit_seed, data_dir=args.data_dir)
        rows = [{"id": it.id, "question": it.question, "answer": it.answer,
                 "choices": list(it.choices) if it.choices else None} for it in items]
    if not rows:
        raise ValueError(f"no training rows in {args.dataset!r}")
    return rows


def build_dataset(rows: Sequence[dict[str, Any]]):
    """A ``datasets.Dataset`` with a conversational ``prompt`` and ``answer``/``id``/``choices``."""
    from datasets import Dataset

    from corea.prompts import slm_messages

    return Dataset.from_list([
        {"prompt": [m.as_dict() for m in slm_messages(r["question"], r.get("choices"))],
         "answer": str(r["answer"]), "id": str(r["id"]), "choices": r.get("choices")}
        for r in rows])


# ------------------------------------------------------------------------------------ model

def tiny_random_model(tokenizer_dir: str, seed: int = 0):
    """A tiny randomly initialised Qwen2 model (hidden 64, 2 layers, 4 heads, 2 KV heads,
    intermediate 128) with the vocabulary of the checkpoint in ``tokenizer_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

    ref = AutoConfig.from_pretrained(tokenizer_dir)
    config = Qwen2Config(vocab_size=ref.vocab_size, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=ref.bos_token_id, eos_token_id=ref.eos_token_id,
                         pad_token_id=getattr(ref, "pad_token_id", None))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def load_model_and_tokenizer(args: ScriptArguments, seed: int = 0):
    """``(model, tokenizer)``: ``model`` is a path / hub id for TRL to load (with
    ``GRPOConfig.model_init_kwargs``), or an instance for ``tiny-random``."""
    from transformers import AutoTokenizer

    from corea.backends.weights import safetensors_checkpoint

    cache = os.path.expanduser(args.corea_cache_dir)
    if args.model == TINY_RANDOM:
        tok_dir = safetensors_checkpoint("embedded:slm", cache)
        return tiny_random_model(tok_dir, seed), AutoTokenizer.from_pretrained(tok_dir)
    path = safetensors_checkpoint(args.model, cache)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return path, tokenizer


def build_rewards(args: ScriptArguments) -> list:
    from train.rewards import WithBatchMetrics, get_reward

    funcs = [get_reward(name) for name in args.rewards]
    if not funcs:
        raise ValueError("at least one reward is needed")
    if args.log_batch_metrics:
        funcs[0] = WithBatchMetrics(funcs[0])
    return funcs


# ------------------------------------------------------------------------------------ logging

def jsonl_callback_cls():
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        """Appends every log line (step, loss, rewards/*, calibration/*, ...) to
        ``<output_dir>/metrics.jsonl`` on the main process."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            rec = {"step": state.global_step}
            for k, v in logs.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    rec[k] = v if math.isfinite(v) else str(v)
                elif v is None:
                    rec[k] = None
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(args.output_dir) / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")

    return JsonlLogCallback


def schedule_callback_cls():
    from transformers import TrainerCallback

    class ScheduleFromArgs(TrainerCallback):
        """Applies this run's ``logging_steps``/``eval_steps``/``save_steps`` on resume.

        transformers (5.24, ``Trainer._init_training_state``) replaces the whole
        ``TrainerState`` with the checkpoint's ``trainer_state.json``, so a resumed run silently
        keeps the old run's save schedule (measured: a run started with ``save_steps`` 10 and
        resumed with 1 still saved only every 10 steps, so a crash would have lost up to 9
        steps). ``on_train_begin`` runs after that load; recomputing the steps from ``args``
        makes the command line win."""

        def on_train_begin(self, args, state, control, **kwargs):
            state.compute_steps(args, state.max_steps)

    return ScheduleFromArgs


def stop_callback_cls():
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        """Ends training cleanly after the current step when the process gets SIGTERM/SIGINT
        (the app's Stop button): a checkpoint is saved and ``main`` saves the final model."""

        requested = False

        def on_step_end(self, args, state, control, **kwargs):
            if type(self).requested:
                control.should_training_stop = True
                control.should_save = True
            return control

    return StopOnSignal


_SIGNALLED: int | None = None  # the signal that asked this process to stop (process-wide)


def install_stop_handlers(cb_cls) -> None:
    """SIGTERM / SIGINT set ``cb_cls.requested`` (the run saves and ends after the current step)
    and remember the signal for :func:`stop_exit_code`; a second signal stops at once."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        global _SIGNALLED
        if cb_cls.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        cb_cls.requested = True
        _SIGNALLED = signum
        logger.warning("stop requested (signal %d): finishing the current step, saving", signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. called from tests in a thread)
            pass


def stop_exit_code() -> int:
    """The exit status of a run: 0, or ``128 + N`` after it saved and ended on signal N (the shell
    convention), so whoever waits for it (:mod:`corea.jobs`) records it as stopped, not
    completed."""
    return 0 if _SIGNALLED is None else 128 + int(_SIGNALLED)


# ------------------------------------------------------------------------------------ entry

def make_parser():
    from trl import GRPOConfig, ModelConfig, TrlParser

    return TrlParser((ScriptArguments, GRPOConfig, ModelConfig))


def parse_args(argv: Sequence[str] | None = None):
    """``(ScriptArguments, GRPOConfig, ModelConfig)`` from ``argv`` (``--config file.yaml`` +
    overrides). ``use_lora`` turns on ``ModelConfig.use_peft``."""
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        args=list(argv) if argv is not None else None)
    model_args.use_peft = bool(model_args.use_peft or script_args.use_lora)
    if training_args.reward_weights is not None and \
            len(training_args.reward_weights) != len(script_args.rewards):
        raise ValueError(f"{len(training_args.reward_weights)} reward_weights for "
                         f"{len(script_args.rewards)} rewards {script_args.rewards}")
    return script_args, training_args, model_args


def resolve_resume(value: str | bool | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last``/``true`` for the newest
    ``checkpoint-*`` in ``output_dir``."""
    if value in (None, False, "", "false", "False", "none", "None"):
        return None
    if value in (True, "last", "true", "True"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise FileNotFoundError(f"no checkpoint-* folder in {output_dir} to resume from")
        return last
    return str(value)


_STOP = None  # the StopOnSignal class, created on first use (transformers imported lazily)


def build_trainer(script_args: ScriptArguments, training_args, model_args=None):
    """The ``GRPOTrainer`` for these arguments (``model_args``: TRL's ``ModelConfig``; None trains
    every parameter)."""
    global _STOP
    from trl import GRPOTrainer, get_peft_config

    if _STOP is None:
        _STOP = stop_callback_cls()

    if script_args.torch_threads:
        import torch

        torch.set_num_threads(script_args.torch_threads)
    model, tokenizer = load_model_and_tokenizer(script_args, seed=training_args.seed)
    peft_config = get_peft_config(model_args) if model_args is not None else None
    rollout = None
    if script_args.forced_suffix:
        if getattr(training_args, "use_vllm", False):
            raise ValueError("forced_suffix needs use_vllm false (the forced continuation runs on "
                             "the training model)")
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental
        from train.rollout import ForcedSuffixRollout

        rollout = ForcedSuffixRollout(script_args.forced_max_new_tokens)
    rewards = build_rewards(script_args)
    trainer_cls = GRPOTrainer
    if script_args.advantage == "blockwise":
        from train.blockwise import blockwise_trainer_cls, record_rewards

        rewards, trainer_cls = record_rewards(rewards), blockwise_trainer_cls()
    elif script_args.advantage != "plain":
        raise ValueError(f"advantage must be plain or blockwise, got {script_args.advantage!r}")
    return trainer_cls(model=model, reward_funcs=rewards, args=training_args,
                       train_dataset=build_dataset(load_rows(script_args)),
                       processing_class=tokenizer, peft_config=peft_config,
                       callbacks=[jsonl_callback_cls()(), schedule_callback_cls()(), _STOP()],
                       rollout_func=rollout)


def main(argv: Sequence[str] | None = None):
    """Parse, train (resuming if asked), save the final model; returns the trainer."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    script_args, training_args, model_args = parse_args(argv)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    trainer = build_trainer(script_args, training_args, model_args)
    install_stop_handlers(_STOP)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    logger.info("model saved to %s%s", training_args.output_dir,
                " (stopped early on request)" if _STOP.requested else "")
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(stop_exit_code())
