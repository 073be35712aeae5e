"""Draft tokens for speculative decoding by n-gram lookup in a hint (no draft model).

When the cascade defers, the large model (LLM) solves a question the small model (SLM) has just
solved; the two Qwen2.5-Coder models share a tokenizer and often write the same sentences. So the
SLM's solution, tokenized with the LLM's tokenizer, is a good source of guesses for the LLM's next
tokens: find the last few tokens the LLM wrote in the hint and propose what followed them there
(prompt-lookup decoding, Saxena 2023, https://github.com/apoorvumang/prompt-lookup-decoding, with
the SLM's text as the lookup source; the same idea as llama-cpp-python's
``llama_cpp.llama_speculative.LlamaPromptLookupDecoding``, which looks only in the context).

The LLM then checks every proposed token in one forward pass (:mod:`corea.backends.speculative`)
and keeps the longest prefix that its own greedy choice agrees with, so under greedy decoding the
output is the LLM's own; the draft only changes how many forward passes it takes.

Pure logic on token-id lists: no model here. :func:`replay` simulates greedy verification against
a known output (the LLM's committed greedy text), which gives exact pass counts without running
the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["DraftStats", "HintDrafter", "replay"]


@dataclass
class DraftStats:
    """Counts of one speculative generation (all in tokens or forward passes).

    Attributes:
        tokens: tokens the LLM produced (the end-of-generation token included when reached).
        passes: forward passes (``llama_decode`` calls) that produced them; the prompt's
            evaluation is one pass (it yields the first token). Without drafting ``passes``
            equals ``tokens``.
        drafted: draft tokens sent for verification (each costs part of a forward pass).
        accepted: draft tokens the LLM's greedy choice agreed with (each saved a pass).
    """

    tokens: int = 0
    passes: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def tokens_per_pass(self) -> float:
        """LLM tokens per forward pass (1.0 without drafting; 0.0 before any pass)."""
        return self.tokens / self.passes if self.passes else 0.0

    @property
    def acceptance(self) -> float:
        """Share of drafted tokens accepted (0.0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "passes": self.passes, "drafted": self.drafted,
                "accepted": self.accepted, "tokens_per_pass": round(self.tokens_per_pass, 4),
                "acceptance": round(self.acceptance, 4)}


def _index(tokens: Sequence[int], max_n: int) -> dict[tuple[int, ...], list[int]]:
    """Start positions of every n-gram (1 <= n <= ``max_n``) of ``tokens``, ascending."""
    out: dict[tuple[int, ...], list[int]] = {}
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            out.setdefault(tuple(tokens[i:i + n]), []).append(i)
    return out


class HintDrafter:
    """Propose the next tokens by n-gram lookup in a hint, then in the context itself.

    Args:
        hint: token ids of the hint (the SLM's solution, tokenized with the LLM's tokenizer,
            no special tokens).
        max_tokens: most tokens proposed at once (k >= 1).
        min_match: shortest suffix of the context (tokens) that must occur in the hint (or the
            context) for a proposal; longer matches are tried first, up to ``max_match``.
            Short matches (one common token such as ``" the"``) guess badly, and on a CPU a
            rejected draft token costs nearly as much as a decoded one.
        max_match: longest suffix tried (tokens).
        context_lookup: when the hint has no match, also look for the suffix earlier in the
            context (prompt and output so far; the most recent occurrence).

    Where the suffix occurs several times in the hint, the first occurrence at or after the end
    of the previous match is used (the LLM tends to follow the hint in order), else the first
    one. So one drafter serves one generation; make a new one per generation.

    Calling the drafter with a 1-D int array of every token so far (prompt + output) returns the
    proposal as a ``np.intc`` array: the interface of llama-cpp-python's ``LlamaDraftModel``.

    The defaults (2 tokens after a match of 4 to 8) were chosen by :func:`replay` on the first
    200 rows of ``data/generations/gsm8k-train-1000`` (the SLM's solution as hint, the LLM's
    committed greedy answer as output), weighing passes saved against drafted tokens, which cost
    compute even when rejected: 1.39 LLM tokens per forward pass there, 64% of drafted tokens
    accepted (``python bench/speculative.py --replay`` on GSM8K test 200: 1.37 and 63%). More
    tokens per pass are possible (2.3 with 16 tokens after a 1-token match) but with most of them
    rejected.

    Raises:
        ValueError: ``max_tokens`` < 1, or not 1 <= ``min_match`` <= ``max_match``.
    """

    def __init__(self, hint: Sequence[int], max_tokens: int = 2, min_match: int = 4,
                 max_match: int = 8, context_lookup: bool = True):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if not 1 <= min_match <= max_match:
            raise ValueError(f"need 1 <= min_match <= max_match, got {min_match}, {max_match}")
        self.hint = [int(t) for t in hint]
        self.max_tokens = max_tokens
        self.min_match = min_match
        self.max_match = max_match
        self.context_lookup = context_lookup
        self._where = _index(self.hint, max_match)
        self._cursor = 0  # hint position just after the previous match

    def propose(self, context: Sequence[int]) -> list[int]:
        """Up to ``max_tokens`` guessed next tokens after ``context`` (prompt + output so far,
        ending with the token just produced); ``[]`` when nothing matches."""
        for n in range(min(self.max_match, len(context)), self.min_match - 1, -1):
            key = tuple(int(t) for t in context[-n:])
            starts = [i for i in self._where.get(key, ()) if i + n < len(self.hint)]
            if starts:
                later = [i for i in starts if i >= self._cursor]
                i = later[0] if later else starts[0]
                self._cursor = i + n
                return self.hint[i + n:i + n + self.max_tokens]
        return self._from_context(context) if self.context_lookup else []

    def _from_context(self, context: Sequence[int]) -> list[int]:
        ids = np.asarray(context, dtype=np.int64)
        for n in range(min(self.max_match, len(ids) - 1), self.min_match - 1, -1):
            windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], n)
            hits = np.nonzero((windows == ids[-n:]).all(axis=1))[0]
            if len(hits):
                start = int(hits[-1]) + n  # the most recent earlier occurrence
                return [int(t) for t in ids[start:start + self.max_tokens]]
        return []

    def __call__(self, input_ids: Any, /, **kwargs: Any) -> np.ndarray:
        return np.asarray(self.propose(list(input_ids)), dtype=np.intc)


def replay(drafter: HintDrafter, prompt: Sequence[int], output: Sequence[int]) -> DraftStats:
    """Simulate greedy speculative decoding whose result is known to be ``output``.

    The prompt pass yields ``output[0]``; each later pass verifies the drafter's proposal after
    the context and yields the agreeing prefix plus the model's own next token — exactly what
    :func:`corea.backends.speculative.greedy_drafted` does when the model's greedy output is
    ``output``.

    Args:
        drafter: a fresh drafter (its hint cursor advances).
        prompt: prompt token ids.
        output: the greedy output token ids.

    Returns:
        the pass and draft counts (``passes`` == ``tokens`` when nothing is ever accepted).
    """
    stats = DraftStats()
    if not output:
        return stats
    context = list(prompt) + [output[0]]
    stats.tokens, stats.passes, i = 1, 1, 1
    while i < len(output):
        draft = drafter.propose(context)[:len(output) - i]
        m = 0
        while m < len(draft) and draft[m] == output[i + m]:
            m += 1
        got = min(m + 1, len(output) - i)  # the agreeing prefix plus the model's own token
        context.extend(output[i:i + got])
        i += got
        stats.passes += 1
        stats.tokens += got
        stats.drafted += len(draft)
        stats.accepted += m
    return stats
