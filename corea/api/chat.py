"""``POST /v1/chat/completions``: check the request (body, model and τ, options, the key's
limits), then run the cascade (:class:`~corea.api.stream.CascadeRun`) and answer in one JSON
response or as server-sent events. The limiter's slot is released when the answer is done (for
a stream: when its connection closes)."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from pydantic import ValidationError

from .access import ApiContext, read_json
from .errors import ApiError, validation_error
from .schemas import ChatCompletionRequest
from .stream import CascadeRun, Failure, SSEResponse, complete, failure_error, sse
from .translate import check_solve, check_tau, parse_model, split_messages, tier_params

__all__ = ["add_chat_route"]

log = logging.getLogger("corea.api")


async def _read_request(request: Request, ctx: ApiContext) -> ChatCompletionRequest:
    """The validated request body.

    Raises:
        ApiError: 400 for empty ``messages``, an invalid body, ``n`` other than 1, or tools."""
    body = await read_json(request, ctx.settings.max_body_bytes)
    if not body.get("messages"):
        raise ApiError(400, "messages must be a non-empty list", param="messages",
                       code="missing_messages")
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors())
    if req.n not in (None, 1):
        raise ApiError(400, "n must be 1: the cascade gives one answer", param="n")
    if req.tools or req.functions:
        raise ApiError(400, "tools and functions are not supported", param="tools")
    return req


def add_chat_route(app: FastAPI, ctx: ApiContext) -> None:
    """Register the chat-completions route on ``app``."""
    limiter = ctx.limiter

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        kid = ctx.authenticate(request)
        req = await _read_request(request, ctx)
        tau = parse_model(req.model, ctx.tier_names())
        opts = req.corea
        n_tiers = len(ctx.tier_names())
        if opts is not None and opts.threshold is not None:
            check_tau(opts.threshold, "corea.threshold", n_tiers)
            tau = opts.threshold
        solve = check_solve(opts.solve if opts is not None else None)
        question, context = split_messages(req.messages)
        params = tier_params(req, n_tiers)
        ok, retry, why = limiter.acquire(kid)
        if not ok:
            what = "requests per minute" if why == "rate_limit_exceeded" else "requests at once"
            raise ApiError(429, f"Too many {what} for key {kid}; retry after {retry} s.",
                           "requests", why, headers={"Retry-After": str(retry)})
        streaming = False
        run = None
        try:
            run = CascadeRun(ctx.service, question, tau, kid, params, context, solve)
            first = await run.get()
            if isinstance(first, Failure):
                raise failure_error(first.exc)
            log.info("chat completion key=%s model=%s stream=%s", kid, req.model, req.stream)
            rid = "chatcmpl-" + uuid.uuid4().hex[:24]
            if not req.stream:
                return await complete(run, request, rid, req, opts)

            def on_close() -> None:
                run.cancel.set()  # a no-op once the run has finished
                limiter.release(kid)

            streaming = True
            return SSEResponse(sse(run, first, rid, req, opts), on_close)
        finally:
            if not streaming:
                if run is not None:
                    run.cancel.set()
                limiter.release(kid)
