"""A turn at a glance: the per-turn card in the chat and the running session summary.

Pure presentation (Markdown strings), no widgets: :func:`turn_card` shows what the cascade did for
one question — each model's answer, the deciding confidence against τ as a gauge, kept or deferred
and why, tokens, latency and cost per model; :func:`session_summary` adds up a session's logged
turns — questions asked, share kept by the small model, and cost against running the large model
on every one of them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..events import CascadeResult, ModelOutput
from ..policy import shown
from ..spend import Turn, against_llm, spend_text, turns_of, why_more
from ..timing import TimeModel
from .latex import answer_markup

GAUGE_WIDTH = 20

WHY = {"confident": "its confidence reached τ", "low_confidence": "its confidence was below τ",
       "no_confidence": "it stated no confidence", "truncated": "its answer was cut off",
       "no_answer": "it gave no answer", "slm_error": "the small model failed",
       "llm_error": "it failed, so the small model's answer is shown (see the warning above)",
       "llm_truncated": "the large model's answer was cut off",
       "llm_no_answer": "the large model gave no answer"}
"""Each decision reason in a few words, for the card's first line."""


def gauge(confidence: float | None, threshold: float, width: int = GAUGE_WIDTH) -> str:
    """A text gauge of ``confidence`` with a ``│`` at τ, e.g. ``████████░░░░│░░░░░░░░``.

    >>> gauge(0.5, 0.7, 10)
    '█████░░│░░░'
    >>> gauge(None, 0.7, 10)
    '░░░░░░░│░░░'
    """
    filled = 0 if confidence is None else round(max(0.0, min(1.0, confidence)) * width)
    cut = round(max(0.0, min(1.0, threshold)) * width)
    bar = ["█" if i < filled else "░" for i in range(width)]
    return "".join(bar[:cut]) + "│" + "".join(bar[cut:])


def _usd(x: float) -> str:
    return f"${x:.6f}"


def _row(role: str, out: ModelOutput | None) -> str:
    if out is None:
        return f"| {role} | not asked | — | — | — |"
    answer = answer_markup(out.answer) if out.answer else "no answer"
    if out.error:
        answer = "failed"
    elif out.finish_reason == "length":
        answer += " (cut off)"
    return (f"| {role} · {out.model} | {answer} | {out.prompt_tokens} / "
            f"{out.completion_tokens} | {out.latency_s:.1f} s | {_usd(out.cost_usd)} |")


def _tier_card(result: CascadeResult) -> str:
    """The card of an N-tier turn (three tiers or more): who answered, then per tier that ran its
    decision with its gauge, and a row per tier."""
    steps = result.tier_steps()
    answered = next((st for st in steps if st.index == result.answered_tier), None)
    if answered is not None:
        head = (f"↪️ **Answered by the last tier** ({answered.model})" if answered.role == "llm"
                else f"✅ **Answered by tier {answered.index + 1}** ({answered.model})")
    else:
        head = "⏹ **Stopped before an answer**" if result.status == "cancelled" \
            else "**No answer**"
    lines = [head, ""]
    for st in steps:
        d = st.decision
        if d is None:
            continue
        value = "none" if d.confidence is None else shown(d.confidence, d.threshold)
        lines += [f"tier {st.index + 1}: `{gauge(d.confidence, d.threshold)}` **{value}** vs τ "
                  f"**{d.threshold:.2f}** — {d.message}", ""]
    final = answer_markup(result.final_answer) if result.final_answer is not None else "—"
    by = f" ({result.final_model})" if result.final_model else ""
    lines += ["| model | answer | tokens in / out | latency | cost |", "|---|---|---|---|---|"]
    lines += [_row(f"tier {st.index + 1}", st.output) for st in steps]
    lines += ["", f"**Final answer:** {final}{by} · total {_usd(result.cost_usd)} · "
              f"{result.latency_s:.1f} s"]
    return "\n".join(lines)


def against_line(result: CascadeResult, prices: Mapping, llm: str,
                 time_model: TimeModel | None) -> str:
    """The turn card's last line: this turn against the large model alone in money and seconds,
    and why when it cost more (:mod:`corea.spend`); "" for a turn with no model output."""
    turn = Turn.from_result(result)
    if not turn.calls:
        return ""
    a = against_llm([turn], prices, time_model, llm)
    why = why_more(a)
    return f"This turn: {spend_text(a)}" + (f". {why}" if why else "")


def turn_card(result: CascadeResult) -> str:
    """Markdown card of one finished turn (see the module docstring). A turn of an N-tier
    cascade that reached a middle tier gets a row and a decision line per tier that ran."""
    if any(st.role == "mid" for st in result.tier_steps()):
        return _tier_card(result)
    d = result.decision
    if d is None:
        head = "⏹ **Stopped before a decision**" if result.status == "cancelled" \
            else "**No decision**"
        meter = ""
    else:
        verdict = "↪️ **Deferred to the large model**" if d.defer \
            else "✅ **Kept the small model's answer**"
        head = f"{verdict} — {WHY.get(d.reason, d.reason)}"
        word = "stated confidence" if d.signal in ("verbal", "prior") else f"{d.signal} confidence"
        value = "none" if d.confidence is None else shown(d.confidence, d.threshold)
        meter = (f"`{gauge(d.confidence, d.threshold)}` {word} **{value}** vs "
                 f"τ **{d.threshold:.2f}**")
    final = answer_markup(result.final_answer) if result.final_answer is not None else "—"
    by = f" ({result.final_model})" if result.final_model else ""
    lines = [head, ""]
    if meter:
        lines += [meter, ""]
    lines += ["| model | answer | tokens in / out | latency | cost |",
              "|---|---|---|---|---|",
              _row("small", result.slm), _row("large", result.llm), "",
              f"**Final answer:** {final}{by} · total {_usd(result.cost_usd)} · "
              f"{result.latency_s:.1f} s"]
    return "\n".join(lines)


def session_summary(rows: Sequence[dict], prices: Mapping, llm: str,
                    time_model: TimeModel | None = None) -> str:
    """One line over a session's logged interactions (store rows): questions, share kept by the
    small model, what they cost in money and compute seconds, and what the large model alone would
    have (:func:`corea.spend.against_llm`: a kept turn's figure is an estimate from the small
    model's token counts at the large model's prices and time model), then, when the cascade cost
    more, why (:func:`corea.spend.why_more`).
    """
    turns = turns_of(rows)
    if not turns:
        return "_No answered questions in this session yet._"
    a = against_llm(turns, prices, time_model, llm)
    kept = a.n - a.n_deferred
    why = why_more(a)
    return (f"**This session:** {a.n} question(s) · {kept} kept by the small model "
            f"({kept / a.n:.0%}) · {spend_text(a)}" + (f". {why}" if why else ""))
