"""The FastAPI app: OpenAI's chat-completions API over :meth:`CoreaService.ask`.

Routes: ``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/chat/completions`` (streamed as
server-sent events or not) and ``POST /v1/corea/ratings``. Every answered request is one logged
interaction whose session is the caller's key id. The request is checked here (key, body, limits);
:mod:`.translate` maps it to the cascade's inputs and :mod:`.stream` runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import LOCAL_KEY_ID, KeyRing, Limiter
from .errors import ApiError, validation_error
from .schemas import ChatCompletionRequest, RatingRequest
from .settings import ApiSettings
from .stream import CascadeRun, Failure, SSEResponse, complete, failure_error, sse
from .translate import (CASCADE_MODEL, check_solve, check_tau, parse_model, split_messages,
                        tier_params)

log = logging.getLogger("corea.api")

LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}  # testclient: Starlette's TestClient
#: headers a proxy or tunnel adds: a request carrying one did not start on this machine
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host",
                      "cf-connecting-ip", "true-client-ip", "x-client-ip")


def create_api(service, settings: ApiSettings | None = None) -> FastAPI:
    """The API over ``service`` (a :class:`corea.service.CoreaService`).

    ``settings`` default to :class:`ApiSettings` from the environment. Without keys every request
    is accepted from loopback addresses only (``corea serve`` also binds 127.0.0.1 then), and
    not when it carries a proxy's forwarding header (:data:`FORWARDING_HEADERS`): a reverse
    proxy on this machine forwards strangers from 127.0.0.1.

    Raises:
        corea.api.auth.KeyConfigError: the key file cannot be read or is malformed.
    """
    settings = settings or ApiSettings()
    keys = KeyRing(settings)
    limiter = Limiter(settings.rate_per_minute, settings.max_concurrent,
                      settings.max_concurrent_total)
    app = FastAPI(title="COREA OpenAI-compatible API", docs_url="/v1/docs",
                  openapi_url="/v1/openapi.json", redoc_url=None)
    app.state.corea_service = service
    app.state.corea_keys = keys
    app.state.corea_limiter = limiter
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        return validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return ApiError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.error("unexpected error in the API", exc_info=exc)
        return ApiError(500, "internal server error", "server_error", "internal_error").response()

    def authenticate(request: Request) -> str:
        if not keys.enabled:
            host = request.client.host if request.client else ""
            proxied = any(h in request.headers for h in FORWARDING_HEADERS)
            if host not in LOOPBACK or proxied:
                raise ApiError(401, "This server has no API keys configured and answers "
                               "loopback clients only" + (" (this request came through a "
                               "proxy)." if proxied else "."), code="invalid_api_key")
            return LOCAL_KEY_ID
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
        kid = keys.identify(token.strip())
        if kid is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return kid

    def tier_names() -> list[str]:
        s = service.settings
        return [m.name for m in s.tier_models()]

    def model_entries() -> list[dict]:
        s = service.settings
        names = tier_names()
        taus = s.tier_thresholds()
        cascade = {"kind": "cascade", "threshold": s.threshold, "tiers": names}
        if len(names) > 2:
            cascade["thresholds"] = taus
        data = [{"id": CASCADE_MODEL, "object": "model", "created": created, "owned_by": "corea",
                 "corea": cascade}]
        seen = set()
        for i, name in enumerate(names):
            if name in seen:  # two tiers on one model: one entry (ids are unique)
                continue
            seen.add(name)
            role = "slm" if i == 0 else "llm" if i == len(names) - 1 else "mid"
            entry = {"kind": "tier", "index": i, "role": role, "served_alone": False}
            if len(names) > 2:
                entry["threshold"] = taus[i] if i < len(taus) else None
            data.append({"id": name, "object": "model", "created": created, "owned_by": "corea",
                         "corea": entry})
        return data

    @app.get("/v1/models")
    async def list_models(request: Request):
        authenticate(request)
        return {"object": "list", "data": model_entries()}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        authenticate(request)
        for m in model_entries():
            if m["id"] == model_id:
                return m
        if model_id.startswith(CASCADE_MODEL + ":"):
            tau = parse_model(model_id, tier_names())
            m = dict(model_entries()[0], id=model_id)
            m["corea"] = dict(m["corea"], threshold=tau)
            return m
        raise ApiError(404, f"The model {model_id!r} does not exist.", code="model_not_found")

    @app.post("/v1/corea/ratings")
    async def rate(request: Request):
        kid = authenticate(request)
        body = await _read_json(request, settings.max_body_bytes)
        try:
            r = RatingRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc.errors())
        store = service.store
        waiting = r.interaction_id < 0  # a turn kept in the journal (corea.store.durable)
        row = store.get_interaction(r.interaction_id) if store is not None and not waiting \
            else None
        if not waiting and (row is None or row.get("session_id") != kid):
            raise ApiError(404, f"No interaction #{r.interaction_id} of this key.",
                           code="not_found", param="interaction_id")
        try:
            rid = await asyncio.to_thread(service.rate, r.interaction_id, r.thumbs, r.correction,
                                          r.comment, kid if waiting else None)
        except ValueError as exc:
            if waiting and str(exc).startswith("no interaction"):
                raise ApiError(404, f"No interaction #{r.interaction_id} of this key.",
                               code="not_found", param="interaction_id")
            raise ApiError(400, str(exc))
        return {"object": "corea.rating", "id": rid, "interaction_id": r.interaction_id}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        kid = authenticate(request)
        body = await _read_json(request, settings.max_body_bytes)
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
        tau = parse_model(req.model, tier_names())
        opts = req.corea
        n_tiers = len(tier_names())
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
            run = CascadeRun(service, question, tau, kid, params, context, solve)
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

    return app


async def _read_json(request: Request, max_bytes: int) -> dict:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > max_bytes:
        raise ApiError(413, f"request body over {max_bytes:,} bytes", code="request_too_large")
    raw = b""
    async for piece in request.stream():
        raw += piece
        if len(raw) > max_bytes:
            raise ApiError(413, f"request body over {max_bytes:,} bytes",
                           code="request_too_large")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON body: {exc}", code="invalid_json")
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object", code="invalid_json")
    return body
