"""The FastAPI app: OpenAI's chat-completions API over :meth:`CoreaService.ask`.

Routes: ``GET /v1/models`` (and ``/v1/models/{id}``, :mod:`.catalog`), ``POST
/v1/chat/completions`` (streamed as server-sent events or not, :mod:`.chat`) and ``POST
/v1/corea/ratings`` (:mod:`.ratings`). Every answered request is one logged interaction whose
session is the caller's key id. The request is checked in those modules (key and body:
:mod:`.access`; limits); :mod:`.translate` maps it to the cascade's inputs and :mod:`.stream`
runs it.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .access import FORWARDING_HEADERS, LOOPBACK, ApiContext  # noqa: F401 (re-exported)
from .auth import KeyRing, Limiter
from .catalog import add_model_routes
from .chat import add_chat_route
from .errors import ApiError, validation_error
from .ratings import add_rating_route
from .settings import ApiSettings

log = logging.getLogger("corea.api")


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
    ctx = ApiContext(service, settings, keys, limiter, created=int(time.time()))
    _add_error_handlers(app)
    add_model_routes(app, ctx)
    add_rating_route(app, ctx)
    add_chat_route(app, ctx)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error object (:class:`ApiError`); never a traceback."""

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
