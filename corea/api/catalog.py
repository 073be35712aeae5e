"""``GET /v1/models`` and ``GET /v1/models/{id}``: the cascade (``corea``, or ``corea:<τ>``) and
each tier's model, with a ``corea`` object saying what each entry is."""

from __future__ import annotations

from fastapi import FastAPI, Request

from .access import ApiContext
from .errors import ApiError
from .translate import CASCADE_MODEL, parse_model

__all__ = ["model_entries", "add_model_routes"]


def model_entries(ctx: ApiContext) -> list[dict]:
    """The model list's entries: the cascade first, then one per distinct tier model (a tier's
    ``threshold`` is listed when there are more than two tiers)."""
    s = ctx.service.settings
    names = ctx.tier_names()
    taus = s.tier_thresholds()
    cascade = {"kind": "cascade", "threshold": s.threshold, "tiers": names}
    if len(names) > 2:
        cascade["thresholds"] = taus
    data = [{"id": CASCADE_MODEL, "object": "model", "created": ctx.created, "owned_by": "corea",
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
        data.append({"id": name, "object": "model", "created": ctx.created, "owned_by": "corea",
                     "corea": entry})
    return data


def add_model_routes(app: FastAPI, ctx: ApiContext) -> None:
    """Register the two model routes on ``app``."""

    @app.get("/v1/models")
    async def list_models(request: Request):
        ctx.authenticate(request)
        return {"object": "list", "data": model_entries(ctx)}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        ctx.authenticate(request)
        for m in model_entries(ctx):
            if m["id"] == model_id:
                return m
        if model_id.startswith(CASCADE_MODEL + ":"):
            tau = parse_model(model_id, ctx.tier_names())
            m = dict(model_entries(ctx)[0], id=model_id)
            m["corea"] = dict(m["corea"], threshold=tau)
            return m
        raise ApiError(404, f"The model {model_id!r} does not exist.", code="model_not_found")
