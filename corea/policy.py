"""The deferral policy: keep the SLM's answer or defer to the LLM.

Rule (COREA paper, §3): defer iff the SLM's verbalized confidence is missing or strictly below the
threshold τ. A confidence exactly equal to τ is kept (``c ≥ τ`` answers locally), so τ = 0 never
defers a parsed confidence and τ = 1 defers everything but a stated certainty of 1.0.

Before the confidence is looked at, an SLM output that is not an answer is never kept
(:func:`unusable`): one cut off at its token budget (``truncated``) or one with no parsable answer
(``no_answer``), whatever confidence was elicited after it. Likewise an LLM answer that was cut off
or has no answer is not shown as final when the SLM had one (:func:`llm_unusable`). The vectorised
twin of this rule is :meth:`corea.eval.scored.ScoredSet.defer`.

The other shared rules live here too, each written once for the live cascade, offline scoring
and training: which tier's answer is final (:func:`final_tier`, vector twin :func:`final_tiers`),
which suffixes are forced after a solution (:func:`needs_forcing`) and the τ ∈ [0, 1] check
(:func:`check_threshold`).

Over N tiers (``settings.tiers``) every tier but the last applies the same rule with its own τ;
the functions then take ``who`` (the deciding tier, e.g. ``"tier 2 (Qwen2.5-1.5B)"``) and ``to``
(the tier it defers to) for their messages. Left out, the messages are the two-tier ones ("the
small model", "the large model").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .events import DecisionInfo
from .signals.registry import word as signal_word



def shown(value: float, threshold: float, percent: bool = False) -> str:
    """``value`` with as few decimals (2 at least) as keep its comparison with ``threshold`` true
    when read: 0.9999999999999 against 1.0 is "0.9999999999999", not "1.00" ("confidence 1.00 <
    threshold 1.00" was on the page). ``percent`` writes it as a percentage (0 decimals at least).
    """
    scale, unit, base = (100.0, "%", 0) if percent else (1.0, "", 2)
    v, t = value * scale, threshold * scale
    for d in range(base, 16):
        a, b = round(v, d), round(t, d)
        if (a < b) == (v < t) and (a == b) == (v == t):
            return f"{v:.{d}f}{unit}"
    return f"{v!r}{unit}"


def decide(confidence: float | None, threshold: float, signal: str = "verbal",
           verbal_confidence: float | None = None, *, who: str | None = None,
           to: str | None = None) -> DecisionInfo:
    """Decide for one SLM output.

    Args:
        confidence: the deciding confidence in [0, 1] (by default the SLM's verbalized one), or
            ``None`` if there is none.
        threshold: τ in [0, 1].
        signal: where ``confidence`` comes from: a live signal's setting
            (:data:`corea.signals.registry.SETTINGS`: ``verbal``, ``tokprob``, ``calibrated``,
            ``probe``, ``agreement``) or ``prior`` (stated before solving); its words in the
            message come from the registry.
        verbal_confidence: the SLM's stated confidence, when ``signal`` is another one (shown in
            the message next to the deciding number).
        who / to: the deciding tier and the tier it defers to, in words, for the message
            (default: the small model, the large model).

    Returns:
        A :class:`DecisionInfo` with reason ``confident`` (kept), ``low_confidence`` or
        ``no_confidence`` (deferred) and a plain-words message.

    Raises:
        ValueError: ``threshold`` or ``confidence`` outside [0, 1].
    """
    check_threshold(threshold)
    word = signal_word(signal)
    verbal = verbal_confidence if signal != "verbal" else confidence
    aside = ""
    if signal not in ("verbal", "prior"):  # another number decides: show the stated one too
        aside = " (stated: " + (f"{verbal_confidence:.2f}" if verbal_confidence is not None
                                else "none") + ")"
    who_, to_ = who or "the small model", to or "the large model"
    if confidence is None:
        return DecisionInfo(True, "no_confidence", None, threshold,
                            (f"Deferred — {who_} stated no confidence" if signal == "verbal"
                             else f"Deferred — no {word}")
                            + ("" if to is None else f"; asking {to}"),
                            signal, verbal)
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")
    c = shown(confidence, threshold)
    if confidence < threshold:
        return DecisionInfo(True, "low_confidence", confidence, threshold,
                            f"Deferred to {to_} — {word} {c}{aside} "
                            f"< threshold {threshold:.2f}", signal, verbal)
    return DecisionInfo(False, "confident", confidence, threshold,
                        f"Answered by {who_} — {word} {c}{aside} "
                        f"≥ threshold {threshold:.2f}", signal, verbal)


UNUSABLE_MESSAGES = {
    "truncated": "the small model's answer was cut off at its token budget",
    "no_answer": "the small model gave no answer that could be read",
}
LLM_UNUSABLE_MESSAGES = {
    "llm_truncated": "the large model's answer was cut off at its token budget",
    "llm_no_answer": "the large model gave no answer that could be read",
}


def unusable(answer: str | None, finish_reason: str | None) -> str | None:
    """Why an output cannot be kept as an answer: ``truncated`` (it stopped on its token budget,
    ``finish_reason == "length"``), ``no_answer`` (nothing parsable), or None when it can."""
    if finish_reason == "length":
        return "truncated"
    if not answer:
        return "no_answer"
    return None


def _named(text: str, who: str | None, to: str | None) -> str:
    """A two-tier message with the tiers' names put in (N tiers)."""
    if to is not None:
        text = text.replace("the large model", to)
    if who is not None:
        text = text.replace("the small model", who)
    return text


def not_an_answer(threshold: float, reason: str, confidence: float | None = None,
                  signal: str = "verbal", verbal_confidence: float | None = None, *,
                  who: str | None = None, to: str | None = None) -> DecisionInfo:
    """Decision for an SLM output that :func:`unusable` rejects: always deferred."""
    return DecisionInfo(True, reason, confidence, threshold,
                        _named(f"Deferred to the large model — {UNUSABLE_MESSAGES[reason]}",
                               who, to), signal, verbal_confidence)


def llm_unusable(previous: DecisionInfo, reason: str, slm_has_answer: bool, *,
                 who: str | None = None, to: str | None = None) -> DecisionInfo:
    """Decision after a deferral whose LLM output is cut off or answerless (``llm_truncated`` /
    ``llm_no_answer``): the SLM's answer is shown when it has one, with the reason in words.

    Over N tiers: ``to`` is the last tier, ``who`` the earlier tier whose answer is shown (or,
    without one, the tier that deferred)."""
    what = LLM_UNUSABLE_MESSAGES[reason]
    msg = (f"{what[0].upper()}{what[1:]} — showing the small model's answer" if slm_has_answer
           else f"{what[0].upper()}{what[1:]}, and the small model had none either")
    if to is not None:  # capitalised at the start of the sentence
        msg = msg.replace("The large model", to[0].upper() + to[1:])
    return DecisionInfo(True, reason, previous.confidence, previous.threshold,
                        _named(msg, who, to), previous.signal, previous.verbal_confidence,
                        previous.signal_note)


def slm_failed(threshold: float, error_kind: str, *, who: str | None = None,
               to: str | None = None) -> DecisionInfo:
    """Decision when the SLM itself failed: the question goes to the LLM. Over N tiers also a
    middle tier that failed: it is skipped and the next tier (``to``) answers."""
    msg = f"Deferred — the small model failed ({error_kind})"
    if who is not None:
        msg = f"Skipped {who} — it failed ({error_kind}); asking {to or 'the next tier'}"
    return DecisionInfo(True, "slm_error", None, threshold, msg)


def llm_failed(previous: DecisionInfo, error_kind: str, *, who: str | None = None,
               to: str | None = None, slm_has_answer: bool = True) -> DecisionInfo:
    """Decision after a deferral whose LLM call failed: the SLM's answer is shown instead, when
    it has one (``slm_has_answer``; else the message says there is none). Over N tiers ``to`` is
    the failed last tier and ``who`` the tier whose answer is shown (``None``: no tier had one)."""
    msg = (f"LLM unavailable ({error_kind}) — showing the small model's answer" if slm_has_answer
           else f"LLM unavailable ({error_kind}), and the small model had no answer either")
    if to is not None:
        msg = f"{to[0].upper()}{to[1:]} unavailable ({error_kind}) — showing " + \
            ("no answer: no earlier tier had one" if who is None else f"{who}'s answer")
    return DecisionInfo(True, "llm_error", previous.confidence, previous.threshold, msg,
                        previous.signal, previous.verbal_confidence, previous.signal_note)


# ----------------------------------------------------------------------------- τ

def check_threshold(tau, name: str = "threshold") -> float:
    """The one check of a threshold τ: a real number in [0, 1] (both ends included).

    Args:
        tau: the value to check (an int, float or numpy number; a bool is refused).
        name: what to call it in the message (e.g. ``"--threshold"``, ``"tiers[1].threshold"``).

    Returns:
        ``tau`` as a float.

    Raises:
        ValueError: not a number, NaN, or outside [0, 1] (the message names ``name`` and the
            value).
    """
    if isinstance(tau, bool):
        raise ValueError(f"{name} must be a number in [0, 1], got {tau!r}")
    try:
        t = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {tau!r}") from None
    if math.isnan(t) or not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {tau!r}")
    return t


# ----------------------------------------------------------------------------- final answer

@dataclass(frozen=True)
class TierRun:
    """One tier that ran on a question, as the final-answer rule sees it.

    Attributes:
        usable: its output can be kept as an answer: no error, not cut off at its token budget,
            an answer parsed (:meth:`of_output` derives it with :func:`unusable`).
        failed: the tier's call failed (an engine error).
        deferred: it decided to defer (``False`` for the last tier, and for a tier stopped
            before it decided).
    """

    usable: bool
    failed: bool = False
    deferred: bool = False

    @classmethod
    def of_output(cls, answer: str | None, finish_reason: str | None, error: str | None = None,
                  deferred: bool = False) -> "TierRun":
        """From a tier's output fields (``ModelOutput.answer`` / ``finish_reason`` / ``error``)."""
        failed = error is not None
        return cls(usable=not failed and unusable(answer, finish_reason) is None,
                   failed=failed, deferred=bool(deferred))


def final_tier(ran: Sequence[TierRun], n_tiers: int, cancelled: bool = False) -> int | None:
    """Which tier's answer is final, the one rule of the live cascade and of offline scoring.

    ``ran`` holds the tiers that ran, in cascade order (tier 0 first, no gaps); ``n_tiers`` is
    the cascade's number of tiers, so ``len(ran) == n_tiers`` means the last tier ran. Walking
    back from the last tier that ran, the first that qualifies is final:

    - the **last tier** of the cascade qualifies iff its answer is usable and the run was not
      cancelled: a cut-off, answerless or failed last-tier answer is never kept, it falls back
      to the latest earlier usable answer (:data:`LLM_UNUSABLE_MESSAGES`);
    - a **deciding tier where the run stopped** (it kept its answer, or the run was cancelled
      there) qualifies iff it did not fail and its answer is usable or it did not defer (a
      run stopped before the tier decided shows what it wrote);
    - any **earlier tier** qualifies iff its answer is usable.

    (``usable`` and ``failed`` are both checked, so a hand-made ``TierRun(usable=True,
    failed=True)`` is not usable.) A cut-off or answerless answer is thus never final, except
    where the run stopped at a tier that had not deferred (a kept answer is usable by the
    deferral rule; a cancelled run shows the partial text of the tier it stopped in).

    Returns:
        the final tier's index (0-based), or ``None``: no tier has an answer to show.

    Raises:
        ValueError: more tiers ran than the cascade has, or ``n_tiers`` < 1.

    The vectorised twin is :func:`final_tiers`.
    """
    if n_tiers < 1 or len(ran) > n_tiers:
        raise ValueError(f"{len(ran)} tiers ran in a cascade of {n_tiers}")
    last = len(ran) - 1
    for i in range(last, -1, -1):
        t = ran[i]
        good = t.usable and not t.failed
        if i < last:
            ok = good
        elif i == n_tiers - 1:
            ok = good and not cancelled
        else:
            ok = not t.failed and (t.usable or not t.deferred)
        if ok:
            return i
    return None


def final_tiers(usable, failed, deferred, n_ran, cancelled=None) -> np.ndarray:
    """Vectorised twin of :func:`final_tier` over items (and any leading axes).

    Args:
        usable, failed, deferred: bool arrays of shape ``(..., T)``, one column per tier of the
            cascade (T = ``n_tiers``); the columns of tiers that did not run are ignored.
        n_ran: int array of shape ``(...)`` (broadcastable), how many tiers ran (1 … T).
        cancelled: bool array of shape ``(...)`` (broadcastable); ``None``: no run cancelled.

    Returns:
        int array of shape ``(...)``: the final tier's index, ``-1`` where there is none.

    Raises:
        ValueError: an ``n_ran`` outside 1 … T.
    """
    u, f, d = (np.asarray(a, dtype=bool) for a in (usable, failed, deferred))
    n = np.asarray(n_ran, dtype=int)
    c = np.zeros((), dtype=bool) if cancelled is None else np.asarray(cancelled, dtype=bool)
    shape = np.broadcast_shapes(u.shape, f.shape, d.shape, n.shape + (1,), c.shape + (1,))
    u, f, d = (np.broadcast_to(a, shape) for a in (u, f, d))
    n, c = np.broadcast_to(n, shape[:-1]), np.broadcast_to(c, shape[:-1])
    t = shape[-1]
    if n.size and (n.min() < 1 or n.max() > t):
        raise ValueError(f"n_ran must be in 1 … {t}")
    good = u & ~f
    col = np.arange(t)
    at_last = col == (n[..., None] - 1)                       # the last tier that ran
    ok = np.where(col < n[..., None] - 1, good, False)        # earlier tiers: usable
    stop = np.where(col == t - 1, good & ~c[..., None], ~f & (u | ~d))
    ok |= at_last & stop
    # the highest qualifying column, -1 where none
    best = t - 1 - np.argmax(ok[..., ::-1], axis=-1)
    return np.where(ok.any(axis=-1), best, -1)


# ----------------------------------------------------------------------------- forcing

ANSWER = "answer"
CONFIDENCE = "confidence"


def needs_forcing(has_answer: bool, stated_confidence: bool, finish_reason: str | None,
                  mode: str = "auto", adapter: bool = False) -> tuple[str, ...]:
    """Which forced suffixes the cascade elicits after a tier's free solution, in order.

    The live cascade's rule (``Cascade._solve`` / ``_adapter_confidence``), also applied by the
    training rollout (:mod:`train.rollout`):

    - a solution cut off at its token budget (``finish_reason == "length"``) gets **none**: it
      is no answer (:func:`unusable`), and eliciting after it only produced fragments and
      made-up certainty;
    - with a confidence-scoped adapter (``adapter``): only a missing answer is elicited (the
      adapter writes the confidence itself, without a forced suffix);
    - ``mode == "free"``: none; ``"forced"``: the answer if missing, and always the confidence
      (a stated one is not taken); ``"auto"``: the answer if missing, the confidence if none
      was stated.

    Args:
        has_answer: an answer was parsed from the solution.
        stated_confidence: a confidence was parsed from the solution.
        finish_reason: why the solution stopped (``"length"``: its token budget).
        mode: ``Settings.confidence_mode`` (``auto`` / ``free`` / ``forced``).
        adapter: the tier's backend states the confidence with a calibration adapter.

    Returns:
        a tuple of :data:`ANSWER` / :data:`CONFIDENCE` (the ``"\\n\\nAnswer:"`` /
        ``"\\nConfidence:"`` suffixes of :mod:`corea.prompts`), empty when nothing is forced.

    Whether the backend can continue a prefix at all (``Backend.supports_continuation``) is not
    part of the rule: a backend that cannot gets nothing forced, with a note.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode not in ("auto", "free", "forced"):
        raise ValueError(f"confidence mode must be auto, free or forced, got {mode!r}")
    if finish_reason == "length":
        return ()
    if adapter:
        return () if has_answer else (ANSWER,)
    if mode == "free":
        return ()
    need_conf = mode == "forced" or not stated_confidence
    return tuple(s for s, need in ((ANSWER, not has_answer), (CONFIDENCE, need_conf)) if need)
