"""Who may call the API and what a request body may be: the per-app context every route reads
(:class:`ApiContext`), bearer-key or loopback-only authentication
(:meth:`ApiContext.authenticate`) and the size-capped JSON body (:func:`read_json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import Request

from .auth import LOCAL_KEY_ID, KeyRing, Limiter
from .errors import ApiError
from .settings import ApiSettings

__all__ = ["ApiContext", "LOOPBACK", "FORWARDING_HEADERS", "read_json"]

LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}  # testclient: Starlette's TestClient
#: headers a proxy or tunnel adds: a request carrying one did not start on this machine
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host",
                      "cf-connecting-ip", "true-client-ip", "x-client-ip")


@dataclass
class ApiContext:
    """What the routes of one app share: the service (a :class:`corea.service.CoreaService`),
    the API settings, the keys, the per-key limiter and the app's start time (``created``, Unix
    seconds, reported as each model's ``created``)."""

    service: object
    settings: ApiSettings
    keys: KeyRing
    limiter: Limiter
    created: int

    def authenticate(self, request: Request) -> str:
        """The caller's key id (:data:`~corea.api.auth.LOCAL_KEY_ID` when no keys are set).

        Raises:
            ApiError: 401 for a missing or unknown key, or, without keys, a request that is not
                from a loopback address or carries a forwarding header."""
        if not self.keys.enabled:
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
        kid = self.keys.identify(token.strip())
        if kid is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return kid

    def tier_names(self) -> list[str]:
        """The model names of the service's tiers, cheapest first."""
        return [m.name for m in self.service.settings.tier_models()]


async def read_json(request: Request, max_bytes: int) -> dict:
    """The request's JSON object body, read at most ``max_bytes`` bytes far.

    Raises:
        ApiError: 413 for a body over ``max_bytes``; 400 for invalid JSON or a non-object."""
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
