"""Greedy speculative decoding on a llama.cpp context with a lookup drafter.

One generation, one sequence, on the ``llama_cpp.Llama`` object the llama.cpp backend shares
(held under its lock by the caller). Each forward pass evaluates the last produced token followed
by the drafter's proposal (:class:`corea.backends.drafting.HintDrafter`) with logits at every
position; the LLM's arg-max at each position is compared with the next proposed token, the
agreeing prefix is kept and the arg-max after it is the pass's own new token; the rejected draft
positions are removed from the KV cache. With no proposal a pass is an ordinary one-token decode.

Why not llama-cpp-python's own ``Llama(draft_model=...)``: it turns ``logits_all`` on for the
whole model, so every prompt token gets the vocabulary projection and a copy of
``n_ctx x n_vocab`` floats (about 2.5 GB for Qwen at 4k context), for every request, drafted or
not. Here only the draft positions get logits.

Exact, not just lossless in exact arithmetic: the output is token for token (and the
log-probabilities bit for bit) what greedy one-token-at-a-time decoding of the same model gives,
under two conditions the llama.cpp backend keeps:

- flash attention on (the backend loads a drafting model with it). Without it, llama.cpp's CPU
  attention rounds a batch of two or more query positions differently from one (a different
  matrix kernel), the logits move by up to ~0.4 and a near-tie between the two best tokens can
  flip;
- at most 3 positions per pass (``MAX_DRAFT`` = 2 draft tokens after the produced one). From 4
  rows on, the repacked Q4_K weights (``q4_K_8x8``) are multiplied by a 4-row kernel that also
  rounds differently.

Both measured on the embedded Qwen2.5-Coder-1.5B Q4_K_M with llama-cpp-python 0.3.36 on x86 (1
and 2 threads): evaluating 6 tokens one at a time, as 2+2+2, 3+3 or 1+2+3 gave identical logits
with flash attention; 4+2 or 6 at once, or any batch of 2+ without it, did not.
``tests/test_drafting.py`` checks the identity on the real model. It is not a guarantee on
every input: timed on 8 GSM8K test answers (``bench/results/speculative.json``, 2 threads), one
drafted answer still left the undrafted one at a near-tie (docs/speed.md), so the output is the
model's greedy output up to such rare flips.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import llama_cpp

from .drafting import DraftStats, HintDrafter
from .llamacpp_batch import log_partition

__all__ = ["MAX_DRAFT", "greedy_drafted"]

MAX_DRAFT = 2
"""Most draft tokens per pass for which a pass's logits equal one-token decoding's (see above)."""


def _load_prompt(llm: "llama_cpp.Llama", tokens: list[int], fresh: bool) -> None:
    """Evaluate ``tokens`` (reusing the cached prefix unless ``fresh``); afterwards llama.cpp
    holds the logits of the last prompt position."""
    keep = 0
    if not fresh:
        cached = llm.input_ids[:llm.n_tokens]
        limit = min(len(cached), len(tokens) - 1)  # the last prompt token is always evaluated
        while keep < limit and cached[keep] == tokens[keep]:
            keep += 1
    if keep == 0:
        llm.reset()
    llm.n_tokens = keep  # ``eval`` drops the cache from here on
    llm.eval(tokens[keep:])


def _verify(llm: "llama_cpp.Llama", batch: list[int], n_vocab: int) -> np.ndarray:
    """Decode ``batch`` after the cached tokens with logits at every position; returns a copy
    of them, shape ``(len(batch), n_vocab)``. The tokens stay in the cache (and in
    ``llm.input_ids``)."""
    n_past = llm.n_tokens
    llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
    llm._ctx.decode(llm._batch)
    llm.input_ids[n_past:n_past + len(batch)] = batch
    llm.n_tokens = n_past + len(batch)
    ptr = llama_cpp.llama_get_logits(llm.ctx)
    return np.ctypeslib.as_array(ptr, shape=(len(batch), n_vocab)).copy()


def _truncate(llm: "llama_cpp.Llama", n: int) -> None:
    """Forget every cached position from ``n`` on."""
    if n < llm.n_tokens:
        llm._ctx.kv_cache_seq_rm(-1, n, -1)
        llm.n_tokens = n


def greedy_drafted(llm: "llama_cpp.Llama", tokens: list[int], drafter: HintDrafter,
                   max_new: int, fresh: bool = True,
                   stats: DraftStats | None = None) -> Iterator[tuple[int, float]]:
    """Stream the greedy continuation of ``tokens`` as ``(token, logprob)`` pairs.

    The same pairs, in the same order, as greedy one-token decoding (``logprob``: natural log at
    temperature 1 of the token under the LLM's logits at its position); the caller stops reading
    at end-of-generation or a stop string, as for any token stream.

    Args:
        llm: the loaded model; the caller holds its lock for the whole stream.
        tokens: prompt token ids (fits the context window, < ``llm.n_ctx()``).
        drafter: proposes the next tokens after the context (a fresh one per generation); at
            most :data:`MAX_DRAFT` of them are verified per pass.
        max_new: most tokens produced (> 0, and at most ``n_ctx - len(tokens)``); no draft goes
            past it.
        fresh: evaluate the prompt from scratch; else reuse the cached common prefix.
        stats: filled while streaming (``tokens``, ``passes``, ``drafted``, ``accepted``).

    Raises:
        RuntimeError: llama.cpp failed to decode (from ``llama_decode``).
    """
    stats = stats if stats is not None else DraftStats()
    n_vocab = llm.n_vocab()
    context = list(tokens)
    try:
        _load_prompt(llm, context, fresh)
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        rows = np.ctypeslib.as_array(ptr, shape=(1, n_vocab)).copy()
        stats.passes, at = 1, 0  # ``rows[at]`` predicts the next token
        while True:
            tok = int(np.argmax(rows[at]))
            stats.tokens += 1
            yield tok, float(rows[at][tok]) - log_partition(rows[at])
            context.append(tok)
            room = max_new - stats.tokens
            if room <= 0:
                return
            draft = drafter.propose(context)[:min(room, MAX_DRAFT)]
            rows = _verify(llm, [tok] + draft, n_vocab)
            stats.passes += 1
            stats.drafted += len(draft)
            m = 0
            while m < len(draft) and int(np.argmax(rows[m])) == draft[m]:
                m += 1
            _truncate(llm, llm.n_tokens - len(draft) + m)  # keep ``tok`` and the agreed prefix
            stats.accepted += m
            for i in range(m):
                stats.tokens += 1
                yield draft[i], float(rows[i][draft[i]]) - log_partition(rows[i])
                context.append(draft[i])
            at = m
            if stats.tokens >= max_new:
                return
    finally:
        # the context's logits no longer belong to the last cached position: the next
        # ``Llama.generate`` must evaluate at least one token before it samples
        llm._requires_eval = True
