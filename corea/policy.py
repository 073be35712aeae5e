"""The deferral policy: keep the SLM's answer or defer to the LLM.

Rule (COREA paper, §3): defer iff the SLM's verbalized confidence is missing or strictly below the
threshold τ. A confidence exactly equal to τ is kept (``c ≥ τ`` answers locally), so τ = 0 never
defers a parsed confidence and τ = 1 defers everything but a stated certainty of 1.0.

Before the confidence is looked at, an SLM output that is not an answer is never kept
(:func:`unusable`): one cut off at its token budget (``truncated``) or one with no parsable answer
(``no_answer``), whatever confidence was elicited after it. Likewise an LLM answer that was cut off
or has no answer is not shown as final when the SLM had one (:func:`llm_unusable`). The vectorised
twin of this rule is :meth:`corea.eval.scored.ScoredSet.defer`.
"""

from __future__ import annotations

from .events import DecisionInfo


_SIGNAL_WORDS = {"verbal": "confidence", "tokprob": "token-probability confidence",
                 "calibrated": "calibrated confidence", "prior": "confidence",
                 "probe": "probe confidence"}


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
           verbal_confidence: float | None = None) -> DecisionInfo:
    """Decide for one SLM output.

    Args:
        confidence: the deciding confidence in [0, 1] (by default the SLM's verbalized one), or
            ``None`` if there is none.
        threshold: τ in [0, 1].
        signal: where ``confidence`` comes from: ``verbal``, ``tokprob``, ``calibrated`` or
            ``probe``.
        verbal_confidence: the SLM's stated confidence, when ``signal`` is another one (shown in
            the message next to the deciding number).

    Returns:
        A :class:`DecisionInfo` with reason ``confident`` (kept), ``low_confidence`` or
        ``no_confidence`` (deferred) and a plain-words message.

    Raises:
        ValueError: ``threshold`` or ``confidence`` outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    word = _SIGNAL_WORDS.get(signal, signal)
    verbal = verbal_confidence if signal != "verbal" else confidence
    aside = ""
    if signal in ("tokprob", "calibrated", "probe"):
        aside = " (stated: " + (f"{verbal_confidence:.2f}" if verbal_confidence is not None
                                else "none") + ")"
    if confidence is None:
        return DecisionInfo(True, "no_confidence", None, threshold,
                            "Deferred — the small model stated no confidence"
                            if signal == "verbal" else f"Deferred — no {word}",
                            signal, verbal)
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")
    c = shown(confidence, threshold)
    if confidence < threshold:
        return DecisionInfo(True, "low_confidence", confidence, threshold,
                            f"Deferred to the large model — {word} {c}{aside} "
                            f"< threshold {threshold:.2f}", signal, verbal)
    return DecisionInfo(False, "confident", confidence, threshold,
                        f"Answered by the small model — {word} {c}{aside} "
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


def not_an_answer(threshold: float, reason: str, confidence: float | None = None,
                  signal: str = "verbal", verbal_confidence: float | None = None
                  ) -> DecisionInfo:
    """Decision for an SLM output that :func:`unusable` rejects: always deferred."""
    return DecisionInfo(True, reason, confidence, threshold,
                        f"Deferred to the large model — {UNUSABLE_MESSAGES[reason]}",
                        signal, verbal_confidence)


def llm_unusable(previous: DecisionInfo, reason: str, slm_has_answer: bool) -> DecisionInfo:
    """Decision after a deferral whose LLM output is cut off or answerless (``llm_truncated`` /
    ``llm_no_answer``): the SLM's answer is shown when it has one, with the reason in words."""
    what = LLM_UNUSABLE_MESSAGES[reason]
    msg = (f"{what[0].upper()}{what[1:]} — showing the small model's answer" if slm_has_answer
           else f"{what[0].upper()}{what[1:]}, and the small model had none either")
    return DecisionInfo(True, reason, previous.confidence, previous.threshold, msg,
                        previous.signal, previous.verbal_confidence, previous.signal_note)


def slm_failed(threshold: float, error_kind: str) -> DecisionInfo:
    """Decision when the SLM itself failed: the question goes to the LLM."""
    return DecisionInfo(True, "slm_error", None, threshold,
                        f"Deferred — the small model failed ({error_kind})")


def llm_failed(previous: DecisionInfo, error_kind: str) -> DecisionInfo:
    """Decision after a deferral whose LLM call failed: the SLM's answer is shown instead."""
    return DecisionInfo(True, "llm_error", previous.confidence, previous.threshold,
                        f"LLM unavailable ({error_kind}) — showing the small model's answer",
                        previous.signal, previous.verbal_confidence, previous.signal_note)
