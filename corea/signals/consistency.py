"""Self-consistency: how many sampled solutions agree with the greedy one (Wang et al., 2023).

The samples are drawn by :mod:`corea.eval.samples` (``samples.jsonl`` of a run folder); the
``sc2``/``sc4`` deciding signals (:mod:`corea.signals.registry`) read their agreement.
"""

from __future__ import annotations

from typing import Sequence


def agreement(greedy_answer: str | None, samples: Sequence[dict], k: int | None = None,
              equal=None) -> float | None:
    """Self-consistency: the share of the first ``k`` samples whose answer equals the greedy
    answer (``equal(a, b)``, default: exact string match after stripping). ``None`` without a
    greedy answer or samples."""
    if not greedy_answer:
        return None
    chosen = list(samples)[:k] if k else list(samples)
    if not chosen:
        return None
    eq = equal or (lambda a, b: a is not None and a.strip() == b.strip())
    return sum(bool(eq(s.get("answer"), greedy_answer)) for s in chosen) / len(chosen)
