"""Token-probability confidence signals of one SLM completion.

Besides its verbalized confidence, a completion carries signals computed from the engine's
per-token log-probabilities (natural log, the model's own distribution at temperature 1):

- ``solution_prob``: geometric-mean token probability of the free completion,
  ``exp(mean(logprob))`` — the "AvgProb" baseline of the COREA paper (Zhang et al., 2026,
  arXiv:2603.03752, §5) and the length-normalised sequence likelihood of Malinin & Gales (2021).
- ``answer_prob``: geometric-mean probability of the tokens that spell the final answer (the
  last occurrence of the parsed answer in the text: the box content, or the forced ``Answer:``
  continuation).
- ``min_prob``: the smallest token probability in the free completion.
- ``n_tokens``: completion length (tokens), and ``hit_length``: whether it stopped on the token
  budget.

Values are probabilities in [0, 1]; a signal that cannot be computed (no log-probs from the
engine, no answer) is ``None`` and never replaced by a made-up number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

TokenLogprob = tuple[str, float]
"""One generated token: its text and its natural-log probability."""

SIGNAL_NAMES = ("verbal", "solution_prob", "answer_prob", "min_prob")
"""Confidence signals that can rank completions (higher = more likely correct)."""

TOKPROB = "tokprob"
"""The one name of the **token-probability confidence** as a deciding signal: the geometric-mean
token probability of the free solution (the paper's AvgProb), in [0, 1]. It is
``confidence_source: tokprob`` in the settings, the ``tokprob`` signal of a decision, of
``corea heldout`` and of the explorer, and the ``tokprob`` key of a flat scored row. Its value is
stored as the ``solution_prob`` token signal of an output (:class:`Signals`; run folders and
calibrator features keep that key). Read with :func:`token_probability`."""

AGREEMENT = "agreement"
"""The one name of the **CoT/PoT agreement** deciding signal of a tier that solves both ways
(``solve: mot``, :mod:`corea.cascade.program`): 1.0 when its chain-of-thought and program answers
agree (:func:`corea.pot.answers_agree`), 0.0 when not. It is ``confidence_source: agreement`` in
the settings, the ``agreement`` signal of a decision and of ``corea heldout`` and the explorer
(:data:`corea.signals.registry.SIGNALS`), and the ``agreement`` key of an output's ``signals`` (a
calibrator feature)."""

OLD_TOKPROB_NAMES = ("avgprob", "solution_prob")
"""Names the token-probability confidence had as a deciding signal (``corea heldout --signals
avgprob``, the ``avgprob`` rows of held-out reports committed before): read as :data:`TOKPROB`."""


def signal_name(name: str) -> str:
    """The current name of a deciding signal (an old name of :data:`TOKPROB` becomes it; any
    other name is returned as is)."""
    return TOKPROB if name in OLD_TOKPROB_NAMES else name


def token_probability(output) -> float | None:
    """The token-probability confidence (:data:`TOKPROB`) of one output, in [0, 1]: its
    ``signals["solution_prob"]``; None when the engine returned no log-probabilities.

    Args:
        output: a :class:`corea.events.ModelOutput` or a stored output dict (``items.jsonl``'s
            ``slm``, a ``tiers.jsonl`` tier's ``output``).
    """
    sig = output.get("signals") if isinstance(output, dict) else getattr(output, "signals", None)
    v = (sig or {}).get("solution_prob")
    return None if v is None else float(v)


@dataclass(frozen=True)
class Signals:
    """Token-level signals of one completion (see the module docstring)."""

    solution_prob: float | None = None
    answer_prob: float | None = None
    min_prob: float | None = None
    n_tokens: int = 0
    hit_length: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _geo_mean(lps: Sequence[float]) -> float | None:
    if not lps:
        return None
    return math.exp(sum(lps) / len(lps))


def span_logprobs(tokens: Sequence[TokenLogprob], start: int, end: int) -> list[float]:
    """Log-probs of the tokens whose characters overlap ``text[start:end]``.

    ``tokens`` concatenate to the text (token texts in order); ``start``/``end`` are character
    offsets into that text.
    """
    out, pos = [], 0
    for piece, lp in tokens:
        nxt = pos + len(piece)
        if nxt > start and pos < end:
            out.append(lp)
        pos = nxt
        if pos >= end:
            break
    return out


def answer_span(text: str, answer: str | None) -> tuple[int, int] | None:
    """Character span of the last occurrence of ``answer`` in ``text`` (``None`` if absent)."""
    if not answer:
        return None
    i = text.rfind(answer)
    if i < 0:
        return None
    return i, i + len(answer)


def compute_signals(tokens: Sequence[TokenLogprob], answer: str | None,
                    finish_reason: str | None,
                    answer_tokens: Sequence[TokenLogprob] | None = None) -> Signals:
    """Signals of a completion from its tokens.

    Args:
        tokens: the free completion's tokens as ``(text, logprob)`` pairs, in order; empty when
            the engine returned no log-probs.
        answer: the parsed final answer, or ``None``.
        finish_reason: ``"length"`` marks a completion cut at its token budget.
        answer_tokens: the tokens of a forced ``Answer:`` continuation, when the answer came from
            there (then ``answer_prob`` is computed on them).

    Returns:
        :class:`Signals`; probabilities are ``None`` when there are no log-probs.
    """
    lps = [lp for _, lp in tokens]
    answer_prob = None
    if answer_tokens:
        text = "".join(t for t, _ in answer_tokens)
        span = answer_span(text, answer)
        sel = span_logprobs(answer_tokens, *span) if span else [lp for _, lp in answer_tokens]
        answer_prob = _geo_mean(sel)
    elif tokens:
        span = answer_span("".join(t for t, _ in tokens), answer)
        if span is not None:
            answer_prob = _geo_mean(span_logprobs(tokens, *span))
    return Signals(
        solution_prob=_geo_mean(lps),
        answer_prob=answer_prob,
        min_prob=math.exp(min(lps)) if lps else None,
        n_tokens=len(tokens),
        hit_length=finish_reason == "length",
    )
