"""Forced-suffix rollouts: train the SLM on the completions the cascade actually scores.

At inference the cascade elicits a missing final answer or confidence of a solution that ended on
its own by appending :data:`corea.prompts.ANSWER_SUFFIX` / :data:`~corea.prompts.CONFIDENCE_SUFFIX`
to the SLM's own completion and letting the SLM continue for a few tokens
(:func:`corea.policy.needs_forcing`). Plain GRPO rollouts never see that: a completion that ends
without its confidence line gets the minimum calibration reward, and a group with equal rewards
has zero advantage — measured (when cut-off completions were forced too): 7 of the first 9 steps
of ``cpu-lora-0.5b`` had a gradient norm of exactly 0. A completion cut off at its budget gets no
forced suffix, here as in the cascade: a short budget leaves those without a confidence.

This TRL ``rollout_func`` (TRL >= 1.16, experimental API) samples each completion with TRL's own
generation path, then applies the cascade's forcing rule (:func:`corea.policy.needs_forcing`, in
its default ``auto`` mode): a completion that ended on its own gets a missing answer and a missing
confidence elicited; one cut off at its token budget (no end-of-sequence token) gets nothing, as
the cascade elicits nothing after a cut-off solution (it is no answer, and eliciting after it only
produced fragments and made-up certainty). The suffix tokens are *not* the model's (``env_mask``
0, so no loss on them), the continuation after them *is* (``env_mask`` 1, sampled from the policy
at the training temperature), and an end-of-sequence token closes the completion (``env_mask``
0). Every completion that ended on its own thus carries a confidence the calibration reward can
score.
Before forcing, a completion is ended where the cascade stops a deciding tier
(:func:`stop_answered`, :mod:`corea.stopping`): the policy is scored on what the cascade reads.
The ``forced`` column (``""``, ``"answer"``, ``"confidence"`` or ``"answer+confidence"``) reaches
the reward functions: ``format`` pays only for a self-written answer and confidence.
"""

from __future__ import annotations

from typing import Any, Sequence

from corea.parsing import extract_answer, parse_confidence
from corea.policy import ANSWER, CONFIDENCE, needs_forcing
from corea.prompts import ANSWER_SUFFIX, CONFIDENCE_SUFFIX
from corea.stopping import cut_tokens


def missing(text: str, choices: Sequence[str] | None = None) -> tuple[bool, bool]:
    """``(needs an answer, needs a confidence)`` of a completion, parsed as the cascade parses."""
    return (extract_answer(text, tuple(choices) if choices else None) is None,
            parse_confidence(text).value is None)


def finish_reason(ids: Sequence[int], eos_ids: set[int]) -> str:
    """``"stop"`` for a completion that ends with an end-of-sequence token, else ``"length"``
    (TRL stops a completion only at an EOS or at ``max_completion_length``)."""
    return "stop" if ids and int(ids[-1]) in eos_ids else "length"


def forcing(text: str, ids: Sequence[int], eos_ids: set[int],
            choices: Sequence[str] | None = None) -> tuple[str, ...]:
    """The suffixes the cascade would force after this completion
    (:func:`corea.policy.needs_forcing`, ``auto`` mode): ``()`` for a cut-off one."""
    need_answer, need_conf = missing(text, choices)
    return needs_forcing(not need_answer, not need_conf, finish_reason(ids, eos_ids))


def _first_line(tokenizer, ids: Sequence[int], eos_ids: set[int]) -> list[int]:
    """The continuation up to (not including) its first end-of-sequence token or the token that
    starts a new line (the cascade stops forced continuations at ``"\\n"``)."""
    out: list[int] = []
    for t in ids:
        if t in eos_ids or "\n" in tokenizer.decode([t]):
            break
        out.append(int(t))
    return out


def stop_answered(tokenizer, ids: Sequence[int], eos_ids: set[int], end: int,
                  choices: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """A sampled completion ended where the cascade stops a deciding tier
    (:func:`corea.stopping.cut_tokens`: the first line end after its answer and stated
    confidence): ``(ids, env_mask)``. A completion the rule cuts keeps its tokens up to the cut
    (``env_mask`` 1) and is closed by ``end`` (an end-of-sequence token, ``env_mask`` 0: the
    engine was stopped, the model did not choose to end); any other is returned whole (mask 1)."""
    ids = [int(t) for t in ids]
    body = ids[:-1] if ids and ids[-1] in eos_ids else ids
    keep = cut_tokens(body, lambda x: tokenizer.decode(x, skip_special_tokens=True), choices)
    if keep >= len(body):
        return ids, [1] * len(ids)
    return body[:keep] + [end], [1] * keep + [0]


class ForcedSuffixRollout:
    """A TRL ``rollout_func``: free completions plus the cascade's forced answer / confidence.

    Args:
        forced_max_new_tokens: token budget of each forced continuation (the cascade's
            ``forced_max_new_tokens``).

    Called as ``rollout(prompts, trainer)`` with the per-process prompts (each already repeated
    ``num_generations`` times by TRL's sampler); returns ``prompt_ids``, ``completion_ids``,
    ``logprobs`` (None: nothing here needs importance sampling), ``env_mask`` (1 = a token the
    policy sampled) and ``forced`` (per completion), all lists of the batch's length.

    Raises:
        ValueError: with vLLM generation (the forced continuation runs on the training model).
    """

    def __init__(self, forced_max_new_tokens: int = 8):
        self.forced_max_new_tokens = forced_max_new_tokens

    # -------------------------------------------------------------------------- pieces
    @staticmethod
    def _prompt_ids(tokenizer, prompts: Sequence[Any]) -> list[list[int]]:
        out = []
        for p in prompts:
            if isinstance(p, str):
                out.append(tokenizer(p, add_special_tokens=False)["input_ids"])
            else:
                ids = tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding
                    ids = ids["input_ids"]
                out.append(list(ids))
        return out

    def _continue(self, trainer, sequences: list[list[int]]) -> list[list[int]]:
        """Sample up to ``forced_max_new_tokens`` tokens after each sequence (batched, left-pad)."""
        import torch

        tok = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        pad = tok.pad_token_id if tok.pad_token_id is not None else trainer.eos_token_ids[0]
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(sequences):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        gc = trainer.generation_config
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                    max_new_tokens=self.forced_max_new_tokens,
                    do_sample=bool(gc.do_sample), temperature=gc.temperature, top_p=gc.top_p,
                    top_k=gc.top_k, pad_token_id=pad, eos_token_id=list(trainer.eos_token_ids))
        finally:
            model.train(was_training)
        return [row[width:].tolist() for row in out.cpu()]

    # -------------------------------------------------------------------------- call
    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        if getattr(trainer, "use_vllm", False):
            raise ValueError("forced-suffix rollouts run on the training model; turn use_vllm off")
        tok = trainer.processing_class
        eos = set(int(t) for t in trainer.eos_token_ids)
        prompt_ids = self._prompt_ids(tok, prompts)
        # the free completion: TRL's own generation path (same sampling as without forcing)
        completion_ids, _ = trainer._generate_single_turn(prompt_ids, None, {},
                                                          trainer.num_generations)
        completion_ids = [list(map(int, c)) for c in completion_ids]
        choices = [None] * len(completion_ids)  # multiple-choice rows are not used for training yet
        end = tok.eos_token_id if tok.eos_token_id in eos else int(trainer.eos_token_ids[0])
        env_mask = []
        for i, c in enumerate(completion_ids):  # the cascade's stop rule (corea.stopping)
            completion_ids[i], mask = stop_answered(tok, c, eos, end, choices[i])
            env_mask.append(mask)
        forced = [""] * len(completion_ids)
        texts = [tok.decode(c, skip_special_tokens=True) for c in completion_ids]
        need = [forcing(t, c, eos, ch) for t, c, ch in zip(texts, completion_ids, choices)]
        for stage, suffix in ((ANSWER, ANSWER_SUFFIX), (CONFIDENCE, CONFIDENCE_SUFFIX)):
            rows = [i for i, n in enumerate(need) if stage in n]
            if not rows:
                continue
            suffix_ids = tok(suffix, add_special_tokens=False)["input_ids"]
            for i in rows:  # the cascade continues the text, not a finished turn: drop the EOS
                while completion_ids[i] and completion_ids[i][-1] in eos:
                    completion_ids[i].pop()
                    env_mask[i].pop()
                completion_ids[i] += suffix_ids
                env_mask[i] += [0] * len(suffix_ids)
            conts = self._continue(trainer, [prompt_ids[i] + completion_ids[i] for i in rows])
            for i, cont in zip(rows, conts):
                kept = _first_line(tok, cont, eos)
                completion_ids[i] += kept
                env_mask[i] += [1] * len(kept)
                texts[i] = tok.decode(completion_ids[i], skip_special_tokens=True)
                forced[i] = "+".join(x for x in (forced[i], stage) if x)
        for i, f in enumerate(forced):
            if f:  # close the forced completion like a finished turn (not trained on)
                completion_ids[i].append(end)
                env_mask[i].append(0)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None,
                "env_mask": env_mask, "forced": forced}
