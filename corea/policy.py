"""The deferral policy: keep the SLM's answer or defer to the LLM.

Rule (COREA paper, §3): defer iff the SLM's verbalized confidence is missing or strictly below the
threshold τ. A confidence exactly equal to τ is kept (``c ≥ τ`` answers locally), so τ = 0 never
defers a parsed confidence and τ = 1 defers everything but a stated certainty of 1.0.

Before the confidence is looked at, an SLM output that is not an answer is never kept
(:func:`unusable`): one cut off at its token budget (``truncated``) or one with no parsable answer
(``no_answer``), whatever confidence was elicited after it. Likewise an LLM answer that was cut off
or has no answer is not shown as final when the SLM had one (:func:`llm_unusable`). The vectorised
twin of this rule is :meth:`corea.eval.scored.ScoredSet.defer`.

Over N tiers (``settings.tiers``) every tier but the last applies the same rule with its own τ;
the functions then take ``who`` (the deciding tier, e.g. ``"tier 2 (Qwen2.5-1.5B)"``) and ``to``
(the tier it defers to) for their messages. Left out, the messages are the two-tier ones ("the
small model", "the large model").
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
           verbal_confidence: float | None = None, *, who: str | None = None,
           to: str | None = None) -> DecisionInfo:
    """Decide for one SLM output.

    Args:
        confidence: the deciding confidence in [0, 1] (by default the SLM's verbalized one), or
            ``None`` if there is none.
        threshold: τ in [0, 1].
        signal: where ``confidence`` comes from: ``verbal``, ``tokprob``, ``calibrated`` or
            ``probe``.
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
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    word = _SIGNAL_WORDS.get(signal, signal)
    verbal = verbal_confidence if signal != "verbal" else confidence
    aside = ""
    if signal in ("tokprob", "calibrated", "probe"):
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
               to: str | None = None) -> DecisionInfo:
    """Decision after a deferral whose LLM call failed: the SLM's answer is shown instead. Over
    N tiers ``to`` is the failed last tier and ``who`` the tier whose answer is shown."""
    msg = f"LLM unavailable ({error_kind}) — showing the small model's answer"
    if to is not None:
        msg = f"{to[0].upper()}{to[1:]} unavailable ({error_kind}) — showing " + \
            ("no answer: no earlier tier had one" if who is None else f"{who}'s answer")
    return DecisionInfo(True, "llm_error", previous.confidence, previous.threshold, msg,
                        previous.signal, previous.verbal_confidence, previous.signal_note)
