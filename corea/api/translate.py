"""OpenAI request → cascade inputs, and cascade result → the response's numbers.

- :func:`split_messages`: the messages list → the question and the earlier turns (the cascade's
  ``context``, given to every tier as chat messages).
- :func:`render_question`: the messages list → one text (earlier turns rendered before the
  question); kept for callers that need a single string, the API no longer asks it.
- :func:`parse_model`: ``corea`` / ``corea:<τ>`` → the threshold.
- :func:`tier_params`: ``temperature``, ``max_tokens``, ``stop`` ... → per-tier overrides.
- :func:`check_solve`: ``corea.solve`` → how every tier solves (``cot`` / ``pot`` / ``mot``).
- :func:`corea_object`: a :class:`~corea.events.CascadeResult` → the ``corea`` object (with
  the answering tier's program, what it printed and the ``mot`` agreement; per tier too).
"""

from __future__ import annotations

from typing import Any

from ..backends.overrides import TierParams
from ..events import CascadeResult
from ..policy import check_threshold
from ..types import Message
from ..types import check_solve as check_mode
from .errors import ApiError
from .schemas import ChatCompletionRequest, ChatMessage, TierOverride

#: the cascade's model name; ``corea:<τ>`` asks with threshold τ
CASCADE_MODEL = "corea"


def _text_of(m: ChatMessage, i: int) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    parts = []
    for p in m.content:
        if p.type != "text" or p.text is None:
            raise ApiError(400, f"messages[{i}]: only text content is supported, not {p.type!r}",
                           param=f"messages[{i}].content", code="unsupported_content")
        parts.append(p.text)
    return "".join(parts)


_ROLE = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[Message]]:
    """``(question, context)``: the last user turn, and the earlier system / developer / user /
    assistant turns as :class:`~corea.types.Message` objects (``developer`` read as
    ``system``; empty turns dropped), which the cascade puts into every tier's chat before the
    question (:meth:`corea.cascade.Cascade.run`'s ``context``).

    Raises:
        ApiError: no user message, a message after the last user turn, or a tool/function
            message (400).
    """
    question, context = _question_and_turns(messages)
    return question, [Message(_ROLE[r], t) for r, t in context]


def _question_and_turns(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """``(last user turn, [(role, stripped text) of the non-empty earlier turns])``.

    Raises:
        ApiError: as :func:`split_messages`.
    """
    if not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages",
                       code="missing_messages")
    for i, m in enumerate(messages):
        if m.role in ("tool", "function"):
            raise ApiError(400, f"messages[{i}]: {m.role} messages are not supported",
                           param=f"messages[{i}].role", code="unsupported_role")
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise ApiError(400, "messages has no user message (the last user turn is the question)",
                       param="messages", code="missing_question")
    last = users[-1]
    if last != len(messages) - 1:
        raise ApiError(400, "the last message must be the user's question", param="messages",
                       code="last_message_not_user")
    question = _text_of(messages[last], last)
    context = [(m.role, _text_of(m, i)) for i, m in enumerate(messages[:last])]
    return question, [(r, t.strip()) for r, t in context if t.strip()]


def render_question(messages: list[ChatMessage]) -> str:
    """The last user turn, with earlier turns (system instructions, user and assistant messages)
    rendered before it as one text block (``Earlier in this conversation:`` ...). A single user
    message is returned as is. The API passes earlier turns as chat messages instead
    (:func:`split_messages`).

    Raises:
        ApiError: as :func:`split_messages`.
    """
    question, context = _question_and_turns(messages)
    if not context:
        return question
    label = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
    lines = ["Earlier in this conversation:"]
    lines += [f"{label[r]}: {t}" for r, t in context]
    return "\n".join(lines) + "\n\nCurrent question: " + question.strip()


def parse_model(model: str, tiers: list[str]) -> float | None:
    """The threshold a model name asks for: ``corea`` → None (the default τ), ``corea:0.8`` →
    0.8.

    Raises:
        ApiError: 404 for an unknown model (a tier's name included: tiers are listed, not served
            alone), 400 for a threshold that is not a number in [0, 1].
    """
    if model == CASCADE_MODEL:
        return None
    if model.startswith(CASCADE_MODEL + ":"):
        raw = model[len(CASCADE_MODEL) + 1:]
        try:
            tau = float(raw)
        except ValueError:
            raise ApiError(400, f"model {model!r}: the threshold {raw!r} is not a number "
                           "(use e.g. corea:0.8)", param="model", code="invalid_threshold")
        check_tau(tau, "model")
        return tau
    why = (" It is a tier of the cascade, listed for information; ask 'corea' or 'corea:<τ>'."
           if model in tiers else " Ask 'corea' or 'corea:<τ>'.")
    raise ApiError(404, f"The model {model!r} does not exist.{why}", code="model_not_found",
                   param="model")


def check_tau(tau: float | list[float], param: str, n_tiers: int = 2) -> None:
    """A request's τ: one number in [0, 1] (the first tier's), or a list of one τ per tier but
    the last (``n_tiers - 1`` numbers).

    Raises:
        ApiError: 400 otherwise.
    """
    if isinstance(tau, list):
        if len(tau) != n_tiers - 1:
            raise ApiError(400, f"threshold: a list needs one τ per tier but the last "
                           f"({n_tiers - 1} for this cascade of {n_tiers} tiers), got "
                           f"{len(tau)}", param=param, code="invalid_threshold")
        for t in tau:
            check_tau(t, param)
        return
    try:
        check_threshold(tau)
    except ValueError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_threshold") from None


def check_solve(solve: str | None) -> str | None:
    """``corea.solve`` of a request: a mode of :data:`corea.types.SOLVE_MODES` or None (the one
    rule: :func:`corea.types.check_solve`).

    Raises:
        ApiError: 400 ``invalid_solve`` for another value."""
    if solve is None:
        return None
    try:
        return check_mode(solve, "corea.solve")
    except ValueError as exc:
        raise ApiError(400, str(exc), param="corea.solve", code="invalid_solve") from None


def _stops(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > 4:
        raise ApiError(400, "stop: at most 4 sequences", param="stop")
    return tuple(s for s in stops if s)


def tier_params(req: ChatCompletionRequest, n_tiers: int = 2) -> list[TierParams] | None:
    """The request's generation settings per tier: its own ``temperature``, ``top_p``,
    ``max_tokens`` (or ``max_completion_tokens``), ``stop`` and ``seed``, under
    ``corea.tiers[i]`` for tier ``i``."""
    base = TierOverride(temperature=req.temperature, top_p=req.top_p,
                        max_tokens=req.max_completion_tokens or req.max_tokens, stop=req.stop)
    per = list((req.corea.tiers if req.corea and req.corea.tiers else []))
    if len(per) > n_tiers:
        raise ApiError(400, f"corea.tiers has {len(per)} entries; the cascade has {n_tiers} "
                       "tiers", param="corea.tiers")
    out = []
    for i in range(n_tiers):
        o = per[i] if i < len(per) and per[i] is not None else None
        merged = base.model_copy(update=o.model_dump(exclude_unset=True)) if o else base
        out.append(TierParams(max_new_tokens=merged.max_tokens, temperature=merged.temperature,
                              top_p=merged.top_p, stop=_stops(merged.stop), seed=req.seed))
    return None if all(p.is_empty() for p in out) else out


# ------------------------------------------------------------------------------- the corea object


_TIER_KEYS = ("index", "role", "model", "answered", "answer", "stated_confidence",
              "confidence_method", "confidence_expected", "confidence_spread", "finish_reason", "prompt_tokens", "completion_tokens",
              "cost_usd", "latency_s", "ttft_s", "error", "threshold", "decision", "reason",
              "signal", "signal_value", "message", "solve", "program", "program_output",
              "program_error", "agreement")


def answering_output(result: CascadeResult):
    """The :class:`~corea.events.ModelOutput` whose answer is final, or None."""
    answered = result.answering_index()
    for step in result.tiers:
        if step.index == answered:
            return step.output
    return None


def corea_object(result: CascadeResult) -> dict[str, Any]:
    """The ``corea`` object of a finished run: the decision, its signal and numbers, which tier
    answered, and one entry per tier that ran (tokens, cost in USD, latency in s, its τ and its
    own decision).

    ``decision`` / ``reason`` / ``message`` / ``signal*`` are the first tier's decision (the
    SLM's keep-or-defer); over N tiers each later deciding tier's is in its ``tiers`` entry."""
    d = result.decision
    answered = result.answering_index()
    tiers = []
    for step in result.tiers:
        t = step.to_dict()
        t["answered"] = answered == step.index
        t["latency_s"] = round(t["latency_s"], 6)
        t["ttft_s"] = None if t["ttft_s"] is None else round(t["ttft_s"], 6)
        tiers.append({k: t[k] for k in _TIER_KEYS})
    by = next((t["model"] for t in tiers if t["index"] == answered), None)
    return {
        "interaction_id": result.interaction_id,
        "status": result.status,
        "threshold": result.threshold,
        "decision": None if d is None else ("deferred" if d.defer else "kept"),
        "reason": d.reason if d else None,
        "message": d.message if d else None,
        "signal": d.signal if d else None,
        "signal_value": d.confidence if d else None,
        "signal_note": d.signal_note if d else None,
        "stated_confidence": result.slm.confidence,
        "confidence_method": result.slm.confidence_method,
        "confidence_expected": result.slm.confidence_expected,
        "confidence_spread": result.slm.confidence_spread,
        "answered_by": by,
        "answered_tier": answered,
        "final_answer": result.final_answer,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cost_usd": result.cost_usd,
        "latency_s": round(result.latency_s, 6),
        "warnings": list(result.warnings),
        **program_fields(answering_output(result)),
        "tiers": tiers,
    }


def program_fields(out) -> dict[str, Any]:
    """The answering tier's program keys of the ``corea`` object: ``solve`` (``cot`` / ``pot``
    / ``mot``), ``program`` (the program run, or None), ``program_output`` (what it printed),
    ``program_error`` (why it gave no answer) and ``agreement`` (``mot``: whether its CoT and
    program answers agree; else None). All None but ``solve`` when no tier answered."""
    return {"solve": (out.solve or "cot") if out is not None else None,
            "program": getattr(out, "program", None),
            "program_output": getattr(out, "program_output", None),
            "program_error": getattr(out, "program_error", None),
            "agreement": getattr(out, "agreement", None)}


def tier_seconds(out) -> dict[str, float]:
    """One tier's measured seconds split in two: ``prompt`` — request to its first streamed
    token (the prefill, with any wait for the engine; the whole call when nothing streamed, e.g.
    a tier that only read the question and routed it on) — and ``generation``, the rest of its
    ``latency_s`` (decoding, and any forced suffix or confidence turn)."""
    total = max(0.0, float(out.latency_s or 0.0))
    first = total if out.ttft_s is None else min(max(0.0, float(out.ttft_s)), total)
    return {"prompt": round(first, 6), "generation": round(total - first, 6)}


def usage_of(result: CascadeResult) -> dict[str, Any]:
    """OpenAI's usage object (tokens over every tier that ran) with COREA's measured
    ``seconds``: ``{"prompt", "generation", "total", "wall", "tiers": [{"index", "role",
    "model", "prompt", "generation"}]}`` — per tier :func:`tier_seconds`, their sums, and
    ``wall``, the run's request-to-answer time (s; it also holds the cascade's own work
    between tiers)."""
    p, c = result.prompt_tokens, result.completion_tokens
    tiers = [{"index": st.index, "role": st.role, "model": st.model, **tier_seconds(st.output)}
             for st in result.tiers]
    prompt = sum(t["prompt"] for t in tiers)
    gen = sum(t["generation"] for t in tiers)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "seconds": {"prompt": round(prompt, 6), "generation": round(gen, 6),
                        "total": round(prompt + gen, 6), "wall": round(result.latency_s, 6),
                        "tiers": tiers}}


def finish_reason_of(out) -> str:
    return "length" if out is not None and out.finish_reason == "length" else "stop"
