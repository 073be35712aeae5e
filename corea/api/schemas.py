"""Requests and responses of the API in OpenAI's chat-completions schema, and the ``corea``
object every response carries.

Requests accept OpenAI's fields; those COREA uses are typed here, the rest (``user``,
``presence_penalty``, ``logit_bias``, ...) are accepted and ignored so that existing clients
work unchanged. Features that would silently change the answer's meaning (``n`` > 1, tools)
are refused with a 400 by :mod:`corea.api.app`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TextPart(BaseModel):
    """One part of a message's content list (only ``text`` parts are served)."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class TierOverride(BaseModel):
    """Generation settings for one tier (``corea.tiers[i]``), over the request's own."""

    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None


class CoreaOptions(BaseModel):
    """``extra_body={"corea": {...}}``.

    Attributes:
        threshold: τ in [0, 1] for this request (overrides a ``corea:<τ>`` model name): one
            number is the first tier's τ (over N tiers the others keep their configured τ); a
            list gives one τ per tier but the last.
        include_reasoning: also send the tiers' text as ``reasoning_content`` (streamed live;
            in the message when not streamed), including a deferred SLM's reasoning. Off by
            default: only the answering tier's text is sent, as ``content``.
        progress: send SSE comment lines (``: corea ...``) as the cascade moves on (stream only).
        tiers: per-tier generation settings in cascade order (SLM, middle tiers, LLM).
        solve: how every tier solves for this request: ``cot`` (step-by-step text), ``pot`` (a
            Python program run in the sandbox; what it prints is the answer) or ``mot`` (both;
            whether they agree is in the ``corea`` object); default: the configured modes. Another
            value is answered 400 (``invalid_solve``).
    """

    model_config = ConfigDict(extra="forbid")
    threshold: float | list[float] | None = None
    solve: str | None = None  # checked by corea.api.translate.check_solve (400, not 422)
    include_reasoning: bool = False
    progress: bool = True
    tiers: list[TierOverride | None] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = 1
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    corea: CoreaOptions | None = None


# --------------------------------------------------------------------------------- responses


class TierSeconds(BaseModel):
    """One tier's measured seconds (:func:`corea.api.translate.tier_seconds`)."""

    index: int
    role: str
    model: str
    prompt: float
    generation: float


class UsageSeconds(BaseModel):
    """COREA's addition to the usage object: measured compute seconds, per tier and in all
    (:func:`corea.api.translate.usage_of`)."""

    prompt: float
    generation: float
    total: float
    wall: float
    tiers: list[TierSeconds]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    seconds: UsageSeconds | None = None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    corea: dict


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str | None = None
    usage: Usage | None = None
    corea: dict | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    corea: dict | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class RatingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interaction_id: int
    thumbs: Literal["up", "down"] | None = None
    correction: str | None = None
    comment: str | None = None


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
