"""One cascade run behind a request: its events in a worker thread, handed to the event loop,
turned into one JSON body (:func:`complete`) or server-sent events (:func:`sse`).

What is sent as ``content`` is the answering tier's text only: the SLM's text (and a middle tier's,
over N tiers) is held until its decision and sent when it is kept; when every deciding tier
defers, the last tier's text streams as it is generated. ``corea.include_reasoning`` also streams
the deciding tiers' text live as ``reasoning_content``. A client
that goes away sets the run's cancel event: generation stops at the next token and the turn is
logged as cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..backends.overrides import TierParams
from ..events import CascadeResult, Decision, Final, TierDelta, TierStarted
from ..types import Message
from ..validation import InvalidQuestion
from .errors import ApiError
from .schemas import ChatCompletionRequest, error_body
from .translate import answering_output, corea_object, finish_reason_of, usage_of

log = logging.getLogger("corea.api")

_KEEPALIVE_S = 10.0
#: the event loop sends an event this long after it arrives, not at once: meanwhile the generation
#: thread gets back into its engine (which releases the GIL) instead of waiting for the loop to
#: finish sending, and events that arrive together go out in one write. Measured on 2 busy vCPUs
#: (bench/api.py): waking at once slowed decoding by 7-10%, this delay by under 1%.
COALESCE_S = 0.001


END = object()


class Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class CascadeRun:
    """One cascade run in a worker thread; its events reach the event loop through a deque.

    The first item is the first tier's :class:`~corea.events.TierStarted` or a failure (a bad
    question), so the caller can answer 400/413 before any response starts. The consumer is woken
    :data:`COALESCE_S` after an item arrives and takes every item that is ready (:meth:`ready`).
    """

    def __init__(self, service, question: str, threshold: float | list[float] | None,
                 session_id: str, params: list[TierParams] | None,
                 context: list[Message] | None = None, solve: str | None = None):
        self.loop = asyncio.get_running_loop()
        self.items: deque = deque()
        self.cancel = threading.Event()
        self._waiter: asyncio.Future | None = None
        self._wake_pending = False
        self._args = (service, question, threshold, session_id, params, context, solve)
        self.thread = threading.Thread(target=self._pump, name="corea-api-run", daemon=True)
        self.thread.start()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_soon(self) -> None:  # in the event loop
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_later(COALESCE_S, self._wake_now)

    def _wake_now(self) -> None:
        self._wake_pending = False
        self._wake()

    def _put(self, item) -> None:  # in the generation thread
        self.items.append(item)  # deque.append is atomic
        try:
            self.loop.call_soon_threadsafe(self._wake_soon)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.cancel.set()

    def _pump(self) -> None:
        service, question, threshold, session_id, params, context, solve = self._args
        try:
            kw = {"context": context} if context else {}
            if solve is not None:
                kw["solve"] = solve
            events = service.ask(question, threshold=threshold, session_id=session_id,
                                 cancel=self.cancel, tier_params=params, **kw)
            for ev in events:
                self._put(ev)
        except BaseException as exc:  # noqa: BLE001 — handed to the request, never lost
            self._put(Failure(exc))
        finally:
            self._put(END)

    def ready(self) -> list:
        """Every item that has arrived (possibly none), without waiting."""
        out = []
        while self.items:
            out.append(self.items.popleft())
        return out

    async def wait(self, timeout: float | None = None) -> bool:
        """Until an item is there or ``timeout`` seconds have passed; whether one is there."""
        deadline = None if timeout is None else self.loop.time() + timeout
        while not self.items:
            left = None if deadline is None else deadline - self.loop.time()
            if left is not None and left <= 0:
                return False
            self._waiter = self.loop.create_future()
            timer = None if left is None else self.loop.call_later(left, self._wake)
            try:
                await self._waiter  # woken by an item (or a late wake-up for one taken already)
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return True

    async def get(self, timeout: float | None = None):
        """The next item (an event, a :class:`Failure` or ``END``); None on timeout."""
        if not self.items:
            await self.wait(timeout)
        return self.items.popleft() if self.items else None


def failure_error(exc: BaseException) -> ApiError:
    if isinstance(exc, InvalidQuestion):
        if "too long" in str(exc):
            return ApiError(413, f"{exc} (Earlier turns count toward it.)",
                            param="messages", code="prompt_too_long")
        return ApiError(400, str(exc), param="messages", code="invalid_question")
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc), code="invalid_request")
    log.error("cascade run failed", exc_info=exc)
    return ApiError(500, "internal error while answering", "server_error", "internal_error")


class SSEResponse(StreamingResponse):
    """A streaming response whose ``on_close`` always runs, however the stream ends (done,
    client gone, server error): it cancels the run and frees the caller's concurrency slot."""

    def __init__(self, content, on_close, **kw):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}, **kw)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def complete(run: CascadeRun, request: Request, rid: str, req: ChatCompletionRequest,
                    opts) -> JSONResponse:
    """Drain the run (cancelling it if the client goes away) and answer in one body."""
    result: CascadeResult | None = None
    failure = None
    while True:
        item = await run.get(timeout=1.0)
        if item is None:
            if await request.is_disconnected():
                run.cancel.set()
            continue
        if item is END:
            break
        if isinstance(item, Failure):
            failure = item.exc
        elif isinstance(item, Final):
            result = item.result
    if result is None:
        raise failure_error(failure or RuntimeError("no result"))
    corea = corea_object(result)
    if result.status == "error":
        body = error_body("Both tiers failed: " + "; ".join(
            t["error"] for t in corea["tiers"] if t["error"]), "server_error", "cascade_failed")
        body["corea"] = corea
        return JSONResponse(body, status_code=502)
    src = answering_output(result)
    message = {"role": "assistant", "content": result.final_text if src is not None else "",
               "refusal": None}
    if opts is not None and opts.include_reasoning:
        message["reasoning_content"] = "\n\n".join(
            st.output.text for st in result.tiers if st.role != "llm")
    body = {"id": rid, "object": "chat.completion", "created": int(time.time()),
            "model": req.model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                             "finish_reason": finish_reason_of(src)}],
            "usage": usage_of(result), "system_fingerprint": None, "corea": corea}
    return JSONResponse(body)


def _chunk(rid: str, created: int, model: str, delta: dict | None, finish: str | None = None,
           usage: dict | None = None, corea: dict | None = None, include_usage: bool = False,
           choices: bool = True) -> str:
    d: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created,
                         "model": model, "system_fingerprint": None,
                         "choices": [{"index": 0, "delta": delta or {}, "logprobs": None,
                                      "finish_reason": finish}] if choices else []}
    if include_usage:
        d["usage"] = usage
    if corea is not None:
        d["corea"] = corea
    return "data: " + json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def _comment(kind: str, payload: dict) -> str:
    return f": corea {kind} " + json.dumps(payload, ensure_ascii=False, default=str,
                                           separators=(",", ":")) + "\n\n"


def _final_chunks(result: CascadeResult, chunk, include_usage: bool, answer_sent: bool,
                  llm_streamed: bool) -> list[str]:
    """The closing chunks of a streamed completion: an error body when every tier failed; else
    an earlier tier's answer when the last tier failed before its first token
    (``answer_sent`` False), the finish chunk with the ``corea`` object, and the usage chunk."""
    corea = corea_object(result)
    if result.status == "error":
        body = error_body("Both tiers failed: " + "; ".join(
            t["error"] for t in corea["tiers"] if t["error"]), "server_error", "cascade_failed")
        body["corea"] = corea
        return ["data: " + json.dumps(body, ensure_ascii=False) + "\n\n"]
    out = []
    answered = corea["answered_tier"]
    last = result.tiers[-1]
    earlier = answered is not None and not (last.role == "llm" and answered == last.index)
    if earlier and not answer_sent and result.final_text:
        # the last tier failed before its first token: an earlier tier's answer (the SLM's,
        # with two tiers) is shown
        out.append(chunk({"content": result.final_text}))
    src = result.llm if llm_streamed else answering_output(result) if earlier else None
    out.append(chunk({}, finish_reason_of(src), corea=corea))
    if include_usage:
        out.append(chunk(usage=usage_of(result), corea=corea, choices=False))
    return out


async def sse(run: CascadeRun, first, rid: str, req: ChatCompletionRequest, opts):
    """The server-sent events of one streamed completion, ending with ``data: [DONE]``."""
    created = int(time.time())
    model = req.model
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    reasoning = bool(opts and opts.include_reasoning)
    progress = opts is None or opts.progress

    def chunk(delta=None, finish=None, usage=None, corea=None, choices=True):
        return _chunk(rid, created, model, delta, finish, usage, corea, include_usage, choices)

    out = [chunk({"role": "assistant", "content": ""})]
    parts: dict[int, list[str]] = {}  # each deciding tier's text, held until its decision
    sent = llm_streamed = finished = False
    items = [first, *run.ready()]
    while True:
        for item in items:
            if item is None:
                out.append(": keepalive\n\n")
            elif item is END:
                finished = True
                break
            elif isinstance(item, Failure):
                err = failure_error(item.exc)
                out.append("data: " + json.dumps(error_body(err.message, err.type, err.code))
                           + "\n\n")
            elif isinstance(item, TierDelta):
                if item.role == "llm":  # the last tier: its text is the answer, sent live
                    llm_streamed = True
                    out.append(chunk({"content": item.text}))
                else:  # a deciding tier: held until its decision
                    parts.setdefault(item.tier, []).append(item.text)
                    if reasoning:
                        out.append(chunk({"reasoning_content": item.text}))
            elif isinstance(item, Decision):
                info = item.info
                if progress:
                    out.append(_comment("decision", {
                        "tier": item.tier, "decision": "deferred" if info.defer else "kept",
                        "reason": info.reason, "signal": info.signal,
                        "signal_value": info.confidence,
                        "stated_confidence": info.verbal_confidence,
                        "threshold": info.threshold, "message": info.message}))
                if not info.defer and parts.get(item.tier):
                    sent = True
                    out.append(chunk({"content": "".join(parts[item.tier])}))
            elif isinstance(item, TierStarted):
                if progress:
                    out.append(_comment("tier", {"tier": item.tier, "model": item.model,
                                                 "started": True}))
            elif isinstance(item, Final):
                out.extend(_final_chunks(item.result, chunk, include_usage,
                                         answer_sent=sent or llm_streamed,
                                         llm_streamed=llm_streamed))
        if finished:
            break
        if out:  # everything that was ready goes out in one write
            yield "".join(out)
            out = []
        # None: nothing came for a while, a keep-alive comment
        items = run.ready() if await run.wait(_KEEPALIVE_S) else [None]
    out.append("data: [DONE]\n\n")
    yield "".join(out)
