"""Dead thresholds: whether a τ splits a set of turns at all, and which τ would.

The cascade keeps the small model's answer iff its deciding confidence is not None and
``confidence >= τ`` (:func:`corea.policy.decide`); a turn whose answer is unusable (cut off, no
answer, an error) or that has no confidence is deferred at every τ. A τ is *dead* on a set of
turns when it defers all of them or none of them: the cascade then behaves like one model, and
moving τ a little changes nothing. :func:`threshold_split` says which, and the interval of τ
that keeps some turns and defers others; :func:`dead_threshold_warning` says it in one line.
Used by the Ask tab (this session's recent turns) and the threshold explorer (the chosen run).

Pure functions: no I/O, no widgets. Confidences and τ are on the 0-1 scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = ["ThresholdSplit", "threshold_split", "dead_threshold_warning", "logged_confidence",
           "UNUSABLE_REASONS"]


@dataclass(frozen=True)
class ThresholdSplit:
    """How one τ splits a set of turns.

    Attributes:
        tau: the threshold looked at.
        n: turns considered.
        n_deferred: turns deferred at ``tau`` (those without a usable confidence included).
        n_always_deferred: turns deferred at every τ (no usable confidence).
        lo: the splitting τ range's lower end: τ must be greater than ``lo`` (or, when
            ``lo_inclusive``, at least ``lo``); None when no τ splits the turns.
        lo_inclusive: whether ``lo`` itself splits (true when some turn is always deferred:
            then τ = 0 already keeps the others).
        hi: the splitting τ range's upper end, inclusive (the largest usable confidence); None
            when no τ splits the turns.
        top: the largest usable confidence (None when no turn has one).
    """

    tau: float
    n: int
    n_deferred: int
    n_always_deferred: int
    lo: float | None
    lo_inclusive: bool
    hi: float | None
    top: float | None = None

    @property
    def verdict(self) -> str:
        """``"empty"`` (no turns), ``"all"`` (τ defers every turn), ``"none"`` (τ defers none)
        or ``"split"``."""
        if self.n == 0:
            return "empty"
        if self.n_deferred == self.n:
            return "all"
        if self.n_deferred == 0:
            return "none"
        return "split"

    @property
    def splittable(self) -> bool:
        """Whether some τ keeps some turns and defers others."""
        return self.hi is not None


def threshold_split(confidences: Iterable[float | None], tau: float) -> ThresholdSplit:
    """How ``tau`` splits turns with these deciding confidences (None: no usable confidence,
    deferred at every τ), and which τ range splits them.

    >>> s = threshold_split([0.2, 0.4, 0.6], 0.7)
    >>> s.verdict, s.lo, s.lo_inclusive, s.hi
    ('all', 0.2, False, 0.6)
    >>> threshold_split([0.9, None], 0.5).verdict, threshold_split([0.9, None], 0.5).lo_inclusive
    ('split', True)
    >>> threshold_split([0.5, 0.5], 0.3).splittable
    False
    """
    tau = float(tau)
    values = [None if c is None else float(c) for c in confidences]
    usable = sorted(c for c in values if c is not None)
    n_none = len(values) - len(usable)
    deferred = n_none + sum(1 for c in usable if c < tau)
    lo = hi = None
    lo_inclusive = False
    if usable and (n_none or usable[0] < usable[-1]):
        hi = usable[-1]
        lo, lo_inclusive = (0.0, True) if n_none else (usable[0], False)
    return ThresholdSplit(tau=tau, n=len(values), n_deferred=deferred, n_always_deferred=n_none,
                          lo=lo, lo_inclusive=lo_inclusive, hi=hi,
                          top=usable[-1] if usable else None)


def _num(x: float) -> str:
    return f"{x:.4g}"


def dead_threshold_warning(split: ThresholdSplit, what: str) -> str | None:
    """One Markdown line when ``split.tau`` defers all or none of the turns, else None.

    Args:
        split: from :func:`threshold_split`.
        what: the turns in words, plural, e.g. ``"recent turns of this session"``.

    >>> dead_threshold_warning(threshold_split([0.2, 0.6], 0.7), "recent turns")
    '⚠️ **Dead threshold:** at τ = 0.70 all 2 recent turns would be deferred to the large model. τ in (0.2, 0.6] splits them.'
    >>> dead_threshold_warning(threshold_split([0.2, 0.6], 0.5), "recent turns") is None
    True
    """
    verdict = split.verdict
    if verdict in ("split", "empty"):
        return None
    if verdict == "all":
        head = (f"at τ = {split.tau:.2f} all {split.n} {what} would be deferred to the large "
                "model.")
    else:
        head = (f"at τ = {split.tau:.2f} none of the {split.n} {what} would be deferred: the "
                "small model's answer would always be kept.")
    if split.splittable:
        left = "[" if split.lo_inclusive else "("
        tail = f" τ in {left}{_num(split.lo)}, {_num(split.hi)}] splits them."
    elif split.n_always_deferred == split.n:
        tail = " None has a usable confidence, so every τ defers them all."
    else:
        tail = (f" They all have the same confidence ({_num(split.top)}), so no τ splits "
                "them.")
    return f"⚠️ **Dead threshold:** {head}{tail}"


UNUSABLE_REASONS = ("truncated", "no_answer", "slm_error")
"""Decision reasons of a turn whose small-model answer is deferred at every τ."""


def logged_confidence(row: dict) -> float | None:
    """The deciding confidence of one logged interaction (a :mod:`corea.store` row: the number
    that was compared with τ, ``extra["decision_confidence"]``, else the stated ``confidence`` of
    rows logged before it was recorded); None when the answer was unusable at any τ or had no
    confidence."""
    if row.get("decision_reason") in UNUSABLE_REASONS:
        return None
    extra = row.get("extra") or {}
    value = extra["decision_confidence"] if "decision_confidence" in extra else \
        row.get("confidence")
    return None if value is None else float(value)
