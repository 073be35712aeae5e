"""``POST /v1/corea/ratings``: a caller rates one of its own answered requests (a 👍/👎, a
corrected answer, a comment), through :meth:`corea.service.CoreaService.rate`."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from pydantic import ValidationError

from .access import ApiContext, read_json
from .errors import ApiError, validation_error
from .schemas import RatingRequest

__all__ = ["add_rating_route"]


def add_rating_route(app: FastAPI, ctx: ApiContext) -> None:
    """Register the rating route on ``app``. Another key's interaction reads as unknown (404)."""

    @app.post("/v1/corea/ratings")
    async def rate(request: Request):
        service = ctx.service
        kid = ctx.authenticate(request)
        body = await read_json(request, ctx.settings.max_body_bytes)
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
