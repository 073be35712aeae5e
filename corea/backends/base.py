"""The backend interface: one small contract every generation engine implements.

A backend turns chat messages into a stream of :class:`Chunk` objects. Every chunk carries a text
delta; the last chunk of a stream also carries :class:`Usage` (token counts) and a finish reason.
The cascade, the CLI and the app only ever talk to this interface, so a scripted fake
(:mod:`corea.backends.fake`) can stand in for a real model in tests.

Backends:

- ``llamacpp``     — GGUF files on CPU through ``llama-cpp-python`` (default for the embedded weights).
- ``transformers`` — any Hugging Face model id or local folder (and the embedded weights, converted).
- ``openai``       — any OpenAI-compatible chat-completions server (OpenAI, ``vllm serve``, ...).
- ``vllm``         — in-process vLLM on a GPU (optional requirements).
- ``fake``         — scripted outputs for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence, runtime_checkable

from ..types import GenerationParams, Message, Role  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation call (tokens, not characters)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)


@dataclass(frozen=True)
class Chunk:
    """One streamed piece of a generation.

    Attributes:
        text: the new text since the previous chunk (may be empty, e.g. on the final chunk).
        usage: set on the final chunk only: token counts of the whole call.
        finish_reason: set on the final chunk only: ``"stop"`` (natural end or stop string),
            ``"length"`` (hit ``max_new_tokens``) or ``"cancelled"``.
        logprobs: ``(token text, natural-log probability)`` of each token generated since the
            previous chunk, when the engine returns them (llama.cpp, transformers and vLLM do;
            an OpenAI-compatible server when it supports ``logprobs``). Empty otherwise.
        states: when the engine reads hidden states (llama.cpp with ``hidden_states`` on):
            ``{"prompt": ..., "end": ...}``, the final-layer hidden state (float32 array of shape
            ``(n_embd,)``) at the last prompt token and at the end of the text so far — the
            position that predicted the last token generated (for a completion that ends by
            itself, its last token before end-of-generation; :mod:`corea.backends.
            llamacpp_batch`). Set on the final chunk and on every text chunk (as of that chunk's
            last token), so a stream closed early (:mod:`corea.stopping`) still has the state
            where it stopped; the latest chunk's states are the stream's. ``None`` otherwise.
        top_logprobs: when the call asked for them (``GenerationParams.top_logprobs`` > 0) and
            the engine reports them (llama.cpp, the scripted fake): for each token of
            :attr:`logprobs`, in order, its ``top_logprobs`` most likely alternatives as
            ``(token text, natural-log probability)`` pairs, most likely first. Empty
            otherwise.
        prompt_tokens: set on a leading (empty) chunk by engines that know the prompt's size
            before generating (llama.cpp, the scripted fake), so a stream stopped before its
            final chunk (Stop pressed, a client gone) is still charged its prompt.
    """

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    logprobs: tuple[tuple[str, float], ...] = field(default=())
    states: dict | None = None
    prompt_tokens: int | None = None
    top_logprobs: tuple[tuple[tuple[str, float], ...], ...] = field(default=())


@dataclass
class StreamCount:
    """Tokens of a stream seen so far, for a stream that is cut before its engine's own usage
    arrives: ``announced`` prompt tokens (:attr:`Chunk.prompt_tokens`) and the completion tokens
    written (:attr:`written`: log-probability pairs seen, else one per text chunk)."""

    announced: int = 0
    pairs: int = 0
    chunks: int = 0

    def add(self, ch: Chunk) -> None:
        """Count one chunk."""
        if ch.prompt_tokens:
            self.announced = ch.prompt_tokens
        self.pairs += len(ch.logprobs)
        self.chunks += 1 if ch.text else 0

    @property
    def written(self) -> int:
        """Completion tokens written so far."""
        return self.pairs or self.chunks

    def usage(self) -> Usage:
        """The :class:`Usage` of the stream so far."""
        return Usage(self.announced, self.written)


@dataclass(frozen=True)
class PromptState:
    """What :meth:`prompt_state` returns: the final-layer hidden state at the last prompt token
    (float32 array of shape ``(n_embd,)``, the ``prompt`` state of :attr:`Chunk.states`) and the
    prompt's size (tokens), read by one prefill with nothing generated."""

    state: object
    prompt_tokens: int


class BackendError(RuntimeError):
    """A backend could not produce an answer.

    ``kind`` is a short machine-readable cause used in decision reasons and logs:
    ``unreachable``, ``timeout``, ``rate_limited``, ``auth`` (missing/invalid API key),
    ``model_missing``, ``bad_request``, ``unsupported`` or ``internal``.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@runtime_checkable
class Backend(Protocol):
    """A text-generation engine.

    Attributes:
        model_name: the model's display/accounting name (used for the price table and logs).
        supports_continuation: whether :meth:`continue_chat` works (raw-prompt engines do;
            a chat-only HTTP API does not).

    Optional: an SLM with a confidence-scoped calibration adapter (the llama.cpp backend with
    such an adapter folder; :data:`corea.adapters.SCOPES`) has ``confidence_adapter = True`` and
    ``state_confidence(messages, assistant_prefix, params)``, which continues the base model's
    solution with the adapter on (same streaming contract as :meth:`continue_chat`). The
    cascade looks for them with ``getattr``; other backends need neither.

    Optional: ``prompt_state(messages) -> PromptState`` (:class:`PromptState`), the hidden
    state after the prompt from one prefill, for pre-generation routing
    (:mod:`corea.cascade.route`); it raises :class:`BackendError` ``unsupported`` where the
    engine reads no hidden states.
    """

    model_name: str
    supports_continuation: bool

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        """Generate the assistant's reply to ``messages``, streamed as chunks.

        The last chunk has ``usage`` and ``finish_reason`` set. Closing the iterator early
        (``.close()``, or breaking out of a ``for``) stops generation and frees any HTTP stream.

        Raises:
            BackendError: the engine failed (see ``BackendError.kind``).
        """
        ...

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        """Continue an assistant reply that already starts with ``assistant_prefix``.

        Used by the forced-suffix confidence elicitation: the prefix is the SLM's own completion
        plus e.g. ``"\\n\\nConfidence:"``. Same streaming contract as :meth:`stream_chat`; the
        prefix's tokens count as prompt tokens.

        Raises:
            BackendError: with kind ``unsupported`` when the engine cannot continue a prefix.
        """
        ...


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that could be the start of a stop string.

    Streaming engines hold that many characters back until they know whether a stop string
    follows, so a stop string is never partly emitted.
    """
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def collect(chunks: Iterator[Chunk]) -> tuple[str, Usage, str | None]:
    """Drain a chunk stream. Returns ``(text, usage, finish_reason)``."""
    parts: list[str] = []
    usage = Usage()
    finish: str | None = None
    for ch in chunks:
        parts.append(ch.text)
        if ch.usage is not None:
            usage = ch.usage
        if ch.finish_reason is not None:
            finish = ch.finish_reason
    return "".join(parts), usage, finish
