"""Draining one backend stream into a tier's output, and the bookkeeping every call shares.

A backend call (:meth:`corea.backends.base.Backend.stream_chat` / ``continue_chat``) yields
:class:`~corea.backends.base.Chunk` objects; :func:`drain` appends their text to a
:class:`~corea.events.ModelOutput`, yields one event per text chunk and returns
``(text, usage, finish_reason)``. :func:`record_free`, :func:`add_usage`, :func:`record_fault` and
:func:`close_output` write what a finished, continued or failed call leaves on the output:
token counts (tokens), latency (seconds) and cost (USD).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..backends.base import BackendError
from ..costs import cost_usd
from ..events import ModelOutput
from ..parsing import extract_answer


class Cancelled(Exception):
    """Raised inside a run when its cancel event is set."""


def drain(chunks, out: ModelOutput, t_start: float, cancel: threading.Event,
          make_event: Callable[[str], object], tokens: list | None = None,
          states: dict | None = None, top: list | None = None):
    """Drain one backend stream into ``out``; yields events; returns (text, usage, finish).

    ``out.text`` grows by every text chunk and ``out.ttft_s`` is set at the first one (seconds
    since ``t_start``). The chunks' ``(token, logprob)`` pairs are appended to ``tokens`` when
    given, and their hidden states (:attr:`corea.backends.base.Chunk.states`) merged into
    ``states``; with ``top``, each token's top alternatives
    (:attr:`corea.backends.base.Chunk.top_logprobs`, ``()`` for a token the engine gave none)
    are appended to it, aligned with the tokens. A stream stopped before the engine reported
    usage (cancel, fault) charges the prompt tokens the engine announced and one completion token per streamed chunk to ``out``.

    Raises:
        Cancelled: ``cancel`` was set (checked before every chunk).
    """
    parts: list[str] = []
    usage = None
    finish = None
    n_chunks = 0
    announced = 0  # prompt tokens the engine announced before generating
    try:
        for ch in chunks:
            if cancel.is_set():
                raise Cancelled()
            if tokens is not None and ch.logprobs:
                tokens.extend(ch.logprobs)
            if top is not None and ch.logprobs:
                top.extend(ch.top_logprobs if len(ch.top_logprobs) == len(ch.logprobs)
                           else ((),) * len(ch.logprobs))
            if states is not None and ch.states:
                states.update(ch.states)
            if ch.prompt_tokens:
                announced = ch.prompt_tokens
            if ch.text:
                if out.ttft_s is None:
                    out.ttft_s = time.perf_counter() - t_start
                parts.append(ch.text)
                n_chunks += 1
                out.text += ch.text
                yield make_event(ch.text)
            if ch.usage is not None:
                usage = ch.usage
            if ch.finish_reason is not None:
                finish = ch.finish_reason
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        if usage is None:
            # stopped before the engine reported usage (cancel, fault): charge the prompt the
            # engine announced and count the streamed chunks (one token each on the local
            # engines) so the turn's cost is not lost
            out.prompt_tokens += announced
            out.completion_tokens += n_chunks
    return "".join(parts), usage, finish


def record_free(out: ModelOutput, text: str, usage, finish: str | None, choices) -> None:
    """Store a finished free completion's finish reason, token counts and parsed answer
    (``answer_method`` ``free``)."""
    out.finish_reason = finish
    if usage is not None:
        out.prompt_tokens, out.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    answer = extract_answer(text, choices)
    if answer is not None:
        out.answer, out.answer_method = answer, "free"


def add_usage(out: ModelOutput, usage, known: int) -> None:
    """Add a continuation's tokens to ``out``. With a KV-cached engine only the new input is
    paid: the engine's prompt count minus the ``known`` tokens (``out``'s prompt plus completion
    tokens before the continuation), which were already counted."""
    if usage is not None:
        out.prompt_tokens += max(0, usage.prompt_tokens - known)
        out.completion_tokens += usage.completion_tokens


def record_fault(out: ModelOutput, exc: Exception) -> str:
    """Mark ``out`` as failed by ``exc``; returns the error kind (``BackendError.kind``, else
    ``internal``)."""
    kind = exc.kind if isinstance(exc, BackendError) else "internal"
    out.error = f"{kind}: {exc}"
    out.finish_reason = "error"
    return kind


def close_output(out: ModelOutput, t_start: float, prices: dict) -> None:
    """Set ``out``'s latency (s since ``t_start``) and its cost (USD) from its tokens and
    ``prices`` (:attr:`corea.config.Settings.prices`)."""
    out.latency_s = time.perf_counter() - t_start
    out.cost_usd = cost_usd(out.model, out.prompt_tokens, out.completion_tokens, prices)
