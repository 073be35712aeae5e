"""Per-request generation settings for one tier, applied by wrapping its backend.

An API request may set ``temperature``, ``max_tokens`` and ``stop`` (OpenAI's names) for every
tier or for one tier. :func:`with_params` returns a backend that applies them to the tier's
free generation (:meth:`~corea.backends.base.Backend.stream_chat`: the SLM's solution, the LLM's
answer) and leaves everything else alone: the forced-suffix and ask-again continuations keep
their own short greedy settings, so a caller cannot break the confidence elicitation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Sequence

from .base import Backend, Chunk, GenerationParams, Message


@dataclass(frozen=True)
class TierParams:
    """Overrides for one tier's free generation; ``None`` keeps the configured value.

    Attributes:
        max_new_tokens: lowers the tier's token budget (never raises it above the configured
            ``max_new_tokens``: the operator's budget bounds the cost of one request).
        temperature: replaces the sampling temperature (0 = greedy).
        top_p: replaces the nucleus-sampling mass.
        stop: strings that also end generation (added to the engine's own).
        seed: sampling seed, where the engine supports one.
    """

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def apply(self, params: GenerationParams) -> GenerationParams:
        """``params`` with these overrides."""
        upd: dict = {}
        if self.max_new_tokens is not None:
            upd["max_new_tokens"] = max(1, min(params.max_new_tokens, self.max_new_tokens))
        if self.temperature is not None:
            upd["temperature"] = self.temperature
        if self.top_p is not None:
            upd["top_p"] = self.top_p
        if self.stop:
            upd["stop"] = tuple(dict.fromkeys((*params.stop, *self.stop)))
        if self.seed is not None:
            upd["seed"] = self.seed
        return replace(params, **upd) if upd else params

    def is_empty(self) -> bool:
        return self == TierParams()


class ParamsBackend:
    """``backend`` with :class:`TierParams` applied to :meth:`stream_chat`; every other attribute
    (``model_name``, ``continue_chat``, ``next_token_logprobs``, ...) is the wrapped backend's."""

    def __init__(self, backend: Backend, params: TierParams):
        self._backend = backend
        self._params = params

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        return self._backend.stream_chat(messages, self._params.apply(params))


def with_params(backend: Backend, params: TierParams | None) -> Backend:
    """``backend`` itself when ``params`` is empty, else a :class:`ParamsBackend`."""
    if params is None or params.is_empty():
        return backend
    return ParamsBackend(backend, params)
