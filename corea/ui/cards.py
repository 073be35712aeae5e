"""A turn at a glance: the per-turn card in the chat and the running session summary.

Pure presentation (Markdown strings), no widgets: :func:`turn_card` shows what the cascade did for
one question — each model's answer, the deciding confidence against τ as a gauge, kept or deferred
and why, an answer "computed by a program" (and for ``mot`` whether the two answers agreed),
tokens, latency and cost per model; :func:`session_summary` adds up a session's logged
turns — questions asked, share kept by the small model, and cost against running the large model
on every one of them.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from ..events import EARLY_EXIT, ROUTED, CascadeResult, ModelOutput
from ..policy import shown
from ..signals import registry
from ..spend import Turn, against_llm, spend_text, turns_of, why_more
from ..timing import TimeModel
from .latex import answer_markup

GAUGE_WIDTH = 20

def signal_words(signal: str | None) -> str:
    """The deciding signal (:attr:`corea.events.DecisionInfo.signal`, ``None``: ``verbal``) in
    words: the one name of the turn's one confidence on the badge, the card, the details line and
    the models panel — its registry entry's :attr:`~corea.signals.base.Signal.plain`
    (:func:`corea.signals.registry.plain`); an unknown one as ``"<signal> confidence"``.

    >>> signal_words("calibrated")
    'how sure the small model is, calibrated on past answers'
    >>> signal_words("nope")
    'nope confidence'
    """
    return registry.plain(signal or "verbal")


WHY = {"confident": "its confidence reached τ", "low_confidence": "its confidence was below τ",
       "no_confidence": "it stated no confidence", "truncated": "its answer was cut off",
       "no_answer": "it gave no answer", "slm_error": "the small model failed",
       "llm_error": "it failed, so the small model's answer is shown (see the warning above)",
       "llm_truncated": "the large model's answer was cut off",
       "llm_no_answer": "the large model gave no answer",
       "routed": "before the small model wrote anything, a probe on its reading of the question "
                 "expected it to fail",
       "early_exit": "while the small model wrote, a probe on its state expected it to fail, "
                     "so it was stopped (its reasoning so far is kept)"}
"""Each decision reason in a few words, for the card's first line."""

WHY_BY_SIGNAL = {(ROUTED, "delegation"): "before the small model wrote anything, both models "
                 "read the question: the chance that the large model gets it right and the "
                 "small one wrong was high"}
"""A reason whose words depend on the signal that gave it (reason, signal) -> words."""


def _against(reason: str) -> str:
    """What a decision's number was compared with, in words."""
    return {ROUTED: "routing threshold", EARLY_EXIT: "early-exit threshold"}.get(reason, "τ")


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


def one_line(text: str | None, limit: int = 240) -> str:
    """Model- or program-written ``text`` safe inside a card's inline code: one line, no
    backticks, at most ``limit`` characters."""
    flat = " ".join((text or "").replace("`", "'").split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def fenced(text: str, lang: str = "text") -> str:
    """``text`` as a Markdown code block whose fence is longer than any backtick run in it (a
    program's output cannot close it early)."""
    run, best = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        best = max(best, run)
    fence = "`" * max(3, best + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def program_line(who: str, out: ModelOutput) -> str | None:
    """One card line for a tier that solved with a program (``pot`` / ``mot``): the answer
    "computed by a program", or why its program gave none, and for ``mot`` whether its two
    answers agreed. None for a chain-of-thought tier."""
    if not out.solve:
        return None
    if out.program_error:
        line = f"🧮 {who}: its program gave no answer — `{one_line(out.program_error)}`"
    elif out.program_answer is not None:
        line = (f"🧮 {who}: answer **computed by a program** "
                f"({answer_markup(out.program_answer)})")
    else:
        return None
    if out.solve == "mot":
        if out.agreement is True:
            line += " · its chain of thought **agreed** ✔"
        elif out.agreement is False:
            cot = answer_markup(out.cot_answer) if out.cot_answer else "no answer"
            line += f" · its chain of thought said {cot}: the two **disagreed** ✘"
    return line


def program_block(out: ModelOutput, role: str, tier: int,
                  clean: Callable[[str], str] | None = None) -> tuple[str, str] | None:
    """The Ask tab's collapsible block of a tier that ran a program (``pot`` / ``mot``):
    ``(title, Markdown body)`` with what the program printed (in a code block it cannot close),
    or why it gave no answer, and for ``mot`` whether its chain-of-thought answer agrees. The
    program itself is in the tier's text, a highlighted code block. ``clean``: applied to
    program-written text first (:func:`corea.redact.redact` for a visitor). None for a
    chain-of-thought tier or one whose engine failed."""
    if not out.solve or out.error:
        return None
    clean = clean or (lambda t: t or "")
    printed = clean(out.program_output or "")
    if out.program_error:
        body = f"⚠️ **The program gave no answer:** `{one_line(clean(out.program_error))}`"
        if printed.strip():
            body += "\n\nIt printed before that:\n\n" + fenced(printed[:2000])
        title = "🧮 Program refused or failed"
    else:
        body = "**It printed:**\n\n" + fenced(printed[:2000] or "(nothing)")
        title = "🧮 Program run"
    if out.solve == "mot" and out.agreement is not None:
        body += ("\n\n✔ Its chain-of-thought answer agrees." if out.agreement else
                 f"\n\n✘ Its chain-of-thought answer ({one_line(out.cot_answer) or 'none'}) "
                 "disagrees.")
    who = {"slm": "small model", "llm": "large model"}.get(role, f"tier {tier + 1}")
    return f"{title} — {who}", body


def _program_lines(result: CascadeResult) -> list[str]:
    """The card's program lines, one per tier that ran with a program, then a blank line."""
    steps = result.tier_steps()
    names = {"slm": "small model", "llm": "large model"} if len(steps) <= 2 or not any(
        st.role == "mid" for st in steps) else {}
    lines = [program_line(names.get(st.role, f"tier {st.index + 1}"), st.output) for st in steps]
    lines = [ln for ln in lines if ln]
    return [*[ln + "  " for ln in lines[:-1]], *lines[-1:], ""] if lines else []


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
    lines += _program_lines(result)
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
        verdict = "⏩ **Sent straight to the large model**" if d.reason == ROUTED else \
            "↪️ **Deferred to the large model**" if d.defer \
            else "✅ **Kept the small model's answer**"
        why = WHY_BY_SIGNAL.get((d.reason, d.signal)) or WHY.get(d.reason, d.reason)
        head = f"{verdict} — {why}"
        word = signal_words(d.signal)
        value = "none" if d.confidence is None else shown(d.confidence, d.threshold)
        meter = (f"`{gauge(d.confidence, d.threshold)}` {word} **{value}** vs "
                 f"{_against(d.reason)} **{d.threshold:.2f}**")
    final = answer_markup(result.final_answer) if result.final_answer is not None else "—"
    by = f" ({result.final_model})" if result.final_model else ""
    lines = [head, ""]
    if meter:
        lines += [meter, ""]
    lines += _program_lines(result)
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
