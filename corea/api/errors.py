"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP
status (400 bad request, 401 key, 404 model, 413 too large, 422 wrong types, 429 limits, 5xx)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from .schemas import error_body


class ApiError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = \
            status, message, type_, code, param
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.code, self.param),
                            status_code=self.status, headers=self.headers)


def validation_error(errors) -> ApiError:
    first = errors[0] if errors else {}
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    msgs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: "
                     f"{e.get('msg')}" for e in errors[:5])
    return ApiError(422, f"invalid request: {msgs}", param=loc or None, code="invalid_type")
