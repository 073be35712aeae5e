"""The Ask tab's chat view of one turn: :class:`TurnView` folds the cascade's typed events into
Gradio chat messages; the badges and the one-line summary of a finished turn are here too.

Used by :class:`corea.ui.ask.AskHandlers` (which re-exports these names).
"""

from __future__ import annotations

from typing import Any

from ..events import (EARLY_EXIT, ROUTED, CascadeResult, Decision, DecisionInfo, Final,
                      ModelOutput, TierDelta, TierDone, TierStarted)
from ..policy import shown
from ..redact import plain_error, plain_logging_off, redact
from .cards import program_block, signal_words, turn_card
from .latex import answer_markup, math_markup

__all__ = ["DETAILS_TITLE", "TurnView", "chat_message", "confidence_badge", "confidence_details",
           "decision_icon", "snapshot", "stated_badge", "turn_details"]

# --------------------------------------------------------------------------- presentation helpers

def stated_badge(confidence: float | None) -> str:
    """The SLM's stated confidence before the decision is known."""
    if confidence is None:
        return "⚪ **confidence: none stated**"
    return f"**stated confidence {confidence * 100:.0f}%**"


def confidence_details(info: DecisionInfo, out: ModelOutput | None = None) -> list[str]:
    """The lines behind a turn's one confidence (shown one click away): the deciding signal's
    name, the stated confidence and who wrote it, the expected confidence and its
    spread when the output has them, and the token-probability signals of the solution."""
    lines = [f"decided by: `{info.signal}`, against τ {info.threshold:.2f}"]
    method = getattr(out, "confidence_method", None)
    by = {"adapter": " (written by the calibration adapter)", "forced": " (elicited)",
          "asked": " (asked again)", "prior": " (stated before solving)"}.get(method or "", "")
    stated = info.verbal_confidence if info.signal not in ("verbal", "prior") \
        else info.confidence
    lines.append("the small model's stated confidence: "
                 + ("none" if stated is None else f"{stated * 100:.0f}%{by}"))
    expected = getattr(out, "confidence_expected", None)
    if expected is not None:
        spread = getattr(out, "confidence_spread", None)
        lines.append(f"expected confidence from its digit distribution: {expected * 100:.0f}%"
                     + (f" (spread {spread * 100:.0f}%)" if spread is not None else ""))
    sig = getattr(out, "signals", None) or {}
    if sig.get("solution_prob") is not None:
        lines.append(f"token probability of its solution {sig['solution_prob']:.2f}, lowest "
                     f"token {sig.get('min_prob') or 0:.2f}, {sig.get('n_tokens', 0)} tokens")
    return lines


def confidence_badge(info: DecisionInfo) -> str:
    """Markdown badge of the turn's one confidence, the number that decided
    (:class:`corea.events.DecisionInfo`), named in words (:func:`corea.ui.cards.signal_words`):
    🟢 kept, 🟠 deferred, ⚪ none. What lies behind it (:func:`confidence_details`) is a
    collapsed chat block of its own (:data:`DETAILS_TITLE`), added by :class:`TurnView`."""
    word = signal_words(info.signal)
    if info.confidence is None:
        return ("⚪ **confidence: none stated**" if info.signal in ("verbal", "prior")
                else f"⚪ **{word}: none**")
    dot = "🟠" if info.defer else "🟢"
    return f"{dot} **{word}: {shown(info.confidence, info.threshold, percent=True)}**"


DETAILS_TITLE = "🔎 Behind this confidence"
"""The title of the collapsed chat block that holds :func:`confidence_details`."""


def decision_icon(reason: str) -> str:
    return {"confident": "✅", "low_confidence": "↪️", "no_confidence": "↪️",
            "truncated": "↪️", "no_answer": "↪️", "slm_error": "⚠️", "llm_error": "⚠️",
            "llm_truncated": "⚠️", "llm_no_answer": "⚠️", "routed": "⏩",
            "early_exit": "⏹"}.get(reason, "")


def turn_details(result: CascadeResult) -> str:
    """One-line summary of a finished turn: final model, tokens, latency (s), cost (USD)."""
    final = result.final_answer
    parts = [f"**Final answer:** "
             f"{math_markup(answer_markup(final)) if final is not None else '—'}",
             f"by **{result.final_model or 'no model'}**",
             *([f"{signal_words(d.signal)}: **{shown(d.confidence, d.threshold, percent=True)}**"]
               if (d := result.decision) is not None and d.confidence is not None else []),
             f"tokens in/out {result.prompt_tokens}/{result.completion_tokens}",
             f"latency {result.latency_s:.1f} s",
             f"cost ${result.cost_usd:.6f}"]
    if result.interaction_id is not None:
        parts.append(f"logged as #{result.interaction_id}" if result.interaction_id >= 0 else
                     f"waiting in the journal as #{result.interaction_id}")
    if result.status != "ok":
        parts.append(f"status: {result.status}")
    return " · ".join(parts)


def snapshot(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the chat for one streamed update (later deltas must not change sent updates),
    the models' bare ``\\boxed{…}`` made renderable math (:func:`corea.ui.latex.math_markup`)."""
    return [{**m, "metadata": dict(m.get("metadata") or {}),
             "content": math_markup(m["content"]) if m.get("role") == "assistant" and
             isinstance(m.get("content"), str) else m.get("content")} for m in history]


def chat_message(content: str, title: str | None = None, status: str | None = None,
         duration: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if title is not None:
        meta["title"] = title
    if status is not None:
        meta["status"] = status
    if duration is not None:
        meta["duration"] = round(duration, 1)
    return {"role": "assistant", "content": content, "metadata": meta}


class TurnView:
    """Turns the cascade's events into Gradio chat messages for one question: a block per tier
    that ran (its reasoning, its answer with the deciding badge, its decision), then the card."""

    def __init__(self, history: list[dict[str, Any]], threshold: float, public: bool = False):
        self.history = history
        self.threshold = threshold
        self.public = public  # a visitor: faults in plain words, no URLs or server paths
        self.blocks: dict[int, int] = {}  # tier → its streamed message's index
        self.result: CascadeResult | None = None
        self._answers: dict[int, tuple[int, str, str]] = {}  # deciding tier → (index, head, error)
        self._decided: set[str] = set()  # decision messages already in the chat
        self._outputs: dict[int, ModelOutput] = {}  # deciding tier → its output
        self._llm_error: tuple[int, int, str] | None = None  # (tier, where in its block, error)
        self.against = None  # f(result) -> the card's line against the large model alone

    def apply(self, ev) -> None:
        h = self.history
        if isinstance(ev, TierStarted):
            if ev.role == "llm":  # the last tier: its text is the answer, shown as it streams
                who = "Large model" if ev.tier == 1 else f"Tier {ev.tier + 1}, the last"
                h.append(chat_message(f"**{who} ({ev.model}):**\n\n"))
            else:
                title = "Small model" if ev.role == "slm" else f"Tier {ev.tier + 1}"
                h.append(chat_message("", title=f"🧠 {title} reasoning — {ev.model}", status="pending"))
            self.blocks[ev.tier] = len(h) - 1
        elif isinstance(ev, TierDelta):
            h[self.blocks[ev.tier]]["content"] += ev.text
        elif isinstance(ev, TierDone):
            self._done(ev)
        elif isinstance(ev, Decision):
            if ev.tier in self._answers:  # the badge shows the number that decided
                i, head, tail = self._answers[ev.tier]
                h[i]["content"] = head + confidence_badge(ev.info) + tail
                h.append(chat_message("  \n".join(confidence_details(
                    ev.info, self._outputs.get(ev.tier))), title=DETAILS_TITLE, status="done"))
            self._decided.add(ev.info.message)
            note = f"\n\n_{ev.info.signal_note}_" if ev.info.signal_note else ""
            h.append(chat_message(f"{decision_icon(ev.info.reason)} {ev.info.message}{note}"))
        elif isinstance(ev, Final):
            self._final(ev.result)

    def _done(self, ev: TierDone) -> None:
        """A tier finished: the last tier's fault under its text; a deciding tier's reasoning
        block closed and its answer shown with its stated confidence (the badge of the number
        that decided replaces it at the decision)."""
        h, out = self.history, ev.output
        m = h[self.blocks[ev.tier]]
        if ev.role == "llm":
            if out.error:
                self._llm_error = (ev.tier, len(m["content"]), out.error)
                m["content"] += f"\n\n⚠️ {self._error('large', out.error)}"
            self._program(ev)
            return
        m["metadata"].update(status="done", duration=round(out.latency_s, 1))
        if out.finish_reason == ROUTED:  # it only read the question: its decision says why
            m["content"] = "(read the question only; wrote nothing)"
            return
        if out.finish_reason == EARLY_EXIT:  # stopped while writing: its reasoning stays shown
            m["content"] = (m["content"] or "") + "\n\n⏹ (stopped here: early exit)"
            return
        if out.confidence_method == "adapter" and out.text:
            m["content"] = out.text  # without the base model's own confidence line
        if not m["content"]:
            m["content"] = "(no output)"
        answer = out.answer if out.answer is not None else "no answer found"
        how = " (elicited)" if out.answer_method == "forced" else ""
        conf_how = {"forced": " (elicited)", "prior": " (stated before solving)",
                    "adapter": " (by the calibration adapter)"}.get(
            out.confidence_method or "", "")
        first = ev.role == "slm"
        err = f"\n\n⚠️ {self._error('small' if first else 'middle', out.error)}" \
            if out.error else ""
        who = "Small model's" if first else f"Tier {ev.tier + 1}'s"
        self._program(ev)
        if out.answer_method == "program":
            how = " (computed by its program)"
        self._outputs[ev.tier] = out
        # the decision's badge replaces the stated one; how it was stated is in its details
        self._answers[ev.tier] = (len(h), f"**{who} answer{how}:** {answer}\n\n", err)
        h.append(chat_message(self._answers[ev.tier][1] + stated_badge(out.confidence)
                      + conf_how + err))

    def _program(self, ev: TierDone) -> None:
        """A tier that ran a program: its collapsible block (:func:`corea.ui.cards.program_block`)."""
        block = program_block(ev.output, ev.role, ev.tier, redact if self.public else None)
        if block is not None:
            self.history.append(chat_message(block[1], title=block[0], status="done"))

    def _final(self, r: CascadeResult) -> None:
        """The run ended: a last-tier fault, a stop, the warnings not shown yet, the card."""
        h = self.history
        self.result = r
        if r.decision is not None and r.decision.reason == "llm_error":
            self._one_llm_warning(r.decision.message)
        if r.status == "cancelled":
            for i in self.blocks.values():
                if h[i]["metadata"].get("status") == "pending":
                    h[i]["metadata"]["status"] = "done"
            h.append(chat_message("⏹ Stopped."))
        for w in r.warnings:
            if w in self._decided:
                continue  # a skipped middle tier: its decision is in the chat already
            if r.decision is None or w != r.decision.message:
                h.append(chat_message(f"⚠️ {self._warning(w)}"))
        line = self.against(r) if self.against is not None else ""
        h.append(chat_message(turn_card(r) + (f"\n\n{line}" if line else "")))  # the turn at a glance

    def _one_llm_warning(self, message: str) -> None:
        """One warning for a failed large model: its block's error line becomes the decision
        (what is shown instead; the error itself for an owner), or, without a block, one line."""
        if self._llm_error is None or self._llm_error[0] not in self.blocks:
            self.history.append(chat_message(f"{decision_icon('llm_error')} {message}"))
            return
        tier, start, error = self._llm_error
        m = self.history[self.blocks[tier]]
        line = self._error("large", error) if self.public else f"{message} ({error})"
        m["content"] = m["content"][:start] + f"\n\n⚠️ {line}"

    def _error(self, model: str, error: str) -> str:
        return plain_error(model, error) if self.public else error

    def _warning(self, text: str) -> str:
        if not self.public:
            return text
        if text.startswith("Logging is paused"):
            return ("Logging is paused: the database is unavailable. Your answer is kept on the "
                    "server and saved when the database is back; you can rate it meanwhile.")
        if text.startswith("Logging is off") or "not saved to the database" in text:
            return plain_logging_off()
        return redact(text)
