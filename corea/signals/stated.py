"""The stated confidence read as a distribution: its expectation and spread over the digit tokens.

A deciding tier writes ``Confidence: 0.d``. The greedy digit ``d`` is the mode of the model's
distribution over the ten digit tokens at that position; the same decode also gives the whole
distribution. With ``p_d`` the probability of digit ``d`` (``0``–``9``), renormalised over the
digits:

- the **expected confidence** ``E[c] = sum_d p_d · d / 10`` — the value ``"0.d"`` parses to
  (:func:`corea.parsing.parse_confidence`) averaged over the digits, the quantity the exact
  confidence-training objective scores (:func:`train.confidence.expected_loss`); ``d / 10``, not
  the bin centre ``d / 10 + 0.05``, so that the expected and the stated confidence share one scale
  and a peaked distribution gives back the stated number;
- its **spread** ``sqrt(sum_d p_d · (d / 10 - E[c])^2)`` (a standard deviation on the same
  [0, 1] scale; at most 0.45).

Both are read from the engine's top log-probabilities at the digit after ``"0."``
(``GenerationParams.top_logprobs``). When the top ``k`` holds only some of the ten digits, the
distribution is renormalised over those present, and :attr:`DigitReading.n_digits` says how many
there were. A confidence not written as ``0.d`` (``1.0``, ``85%``), or an engine without
alternatives, gives no reading (``None``): never a made-up number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["DIGITS", "TOP_LOGPROBS", "DigitReading", "moments", "reading_from_probs",
           "read_digits"]

DIGITS = tuple(str(d) for d in range(10))
"""The ten digit tokens; digit ``d`` states confidence ``d / 10``."""

TOP_LOGPROBS = 20
"""Alternatives asked for per token of a confidence line (``GenerationParams.top_logprobs``)."""

_BEFORE_DIGIT = re.compile(r"confidence\**\s*:?\**\s*0\.$", re.IGNORECASE)
"""The text that precedes the confidence digit: ``Confidence: 0.`` (markdown stars allowed)."""


@dataclass(frozen=True)
class DigitReading:
    """The distribution of the confidence digit.

    Attributes:
        expected: ``E[c]`` in [0, 1] (see the module docstring).
        spread: the standard deviation of ``c`` in [0, 0.45].
        probs: ``p_d`` for ``d`` = 0..9 (renormalised over the digits present; 0.0 for a digit
            not among the engine's alternatives).
        n_digits: how many of the ten digits were among the alternatives (10: exact).
        mass: their total probability before renormalising (the rest went to other tokens).
    """

    expected: float
    spread: float
    probs: tuple[float, ...]
    n_digits: int
    mass: float


def moments(probs: Sequence[float]) -> tuple[float, float]:
    """``(E[c], spread)`` of ten digit probabilities (summing to 1), confidence ``d / 10``."""
    e = sum(p * d / 10 for d, p in enumerate(probs))
    var = sum(p * (d / 10 - e) ** 2 for d, p in enumerate(probs))
    return e, math.sqrt(max(var, 0.0))


def reading_from_probs(probs: Sequence[float], n_digits: int = 10,
                       mass: float = 1.0) -> DigitReading:
    """A :class:`DigitReading` of ten digit probabilities (renormalised here).

    Raises:
        ValueError: not ten values, or none positive."""
    if len(probs) != 10:
        raise ValueError(f"need ten digit probabilities, got {len(probs)}")
    total = float(sum(probs))
    if not total > 0:
        raise ValueError("the digit probabilities sum to zero")
    p = tuple(float(x) / total for x in probs)
    e, s = moments(p)
    return DigitReading(min(max(e, 0.0), 1.0), s, p, n_digits, mass)


def read_digits(tokens: Sequence[tuple[str, float]],
                top: Sequence[Sequence[tuple[str, float]]], prefix: str = ""
                ) -> DigitReading | None:
    """The reading at the last confidence digit of a generated text.

    Args:
        tokens: the generated ``(token text, logprob)`` pairs, in order.
        top: for each token, its alternatives ``(token text, logprob)`` (the engine's top
            log-probabilities; the same length as ``tokens``).
        prefix: the text just before the first token (a forced ``"\nConfidence:"``).

    Returns:
        The :class:`DigitReading` at the last digit token that follows ``"Confidence: 0."``, or
        ``None`` when there is no such token, no alternatives for it, or no digit among them.
    """
    if len(top) != len(tokens):
        return None
    text, at = prefix, None
    for i, (piece, _) in enumerate(tokens):
        if piece[:1].isdigit() and _BEFORE_DIGIT.search(text):
            at = i
        text += piece
    if at is None or not top[at]:
        return None
    lp = {}
    for piece, logprob in top[at]:
        if piece in DIGITS and piece not in lp:
            lp[piece] = float(logprob)
    if not lp:
        return None
    m = max(lp.values())
    w = [math.exp(lp[d] - m) if d in lp else 0.0 for d in DIGITS]
    mass = sum(math.exp(v) for v in lp.values())
    return reading_from_probs(w, len(lp), min(mass, 1.0))
