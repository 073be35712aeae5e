"""A scripted backend for tests and demos: returns prepared text, streamed in small pieces."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Sequence

from .base import BackendError, Chunk, GenerationParams, Message, PromptState, Usage


class FakeBackend:
    """Replays scripted replies instead of running a model.

    Args:
        replies: the texts returned by successive :meth:`stream_chat` calls (cycled), or a callable
            ``f(messages) -> str`` that picks the reply.
        continuations: texts returned by successive :meth:`continue_chat` calls (cycled), or a
            callable ``f(messages, assistant_prefix) -> str``. ``None`` makes the backend
            chat-only (``supports_continuation`` is False).
        model_name: name used for prices and logs.
        chunk_chars: characters per streamed chunk.
        delay_s: sleep between chunks (seconds), to simulate decoding speed.
        error: if set, every call raises it (e.g. ``BackendError("timeout", "...")``).
        token_logprob: if set, each streamed chunk counts as one token with this natural-log
            probability, or ``f(chunk_text) -> logprob`` (for the token-probability signals).
        states: if set, ``f(messages, text) -> {"prompt": array, "end": array}``: scripted hidden
            states of a chat stream as of ``text`` (for the probe signals). Like a real engine's
            (:attr:`~corea.backends.base.Chunk.states`), each text chunk carries the states
            that predicted it, ``f(messages, reply before the chunk)`` (each chunk plays one
            token), and the final chunk ``f(messages, whole reply)``.
        next_logprobs: if set, ``f(messages, assistant_prefix, candidates) -> {candidate:
            logprob}`` answers :meth:`next_token_logprobs` (self-verification); else that method
            raises ``unsupported``.
        top_logprobs: if set, ``f(chunk_text) -> [(token text, logprob), ...]``: the scripted
            alternatives of each streamed chunk (one token) when a call asks for
            ``GenerationParams.top_logprobs`` (the chunk's own logprob is ``token_logprob``, 0.0
            when that is unset).
        stated_confidence: if set, the backend plays an SLM with a confidence-scoped adapter
            (``confidence_adapter`` is True): the texts returned by successive
            :meth:`state_confidence` calls (cycled), or ``f(messages, assistant_prefix) -> str``.
        prompt_states: if set, ``f(messages) -> array``: the scripted hidden state after the
            prompt that :meth:`prompt_state` returns (pre-generation routing); else that method
            raises ``unsupported``.

    Token counts are whitespace-separated words, so tests can compute them by hand.
    """

    def __init__(self, replies: Sequence[str] | Callable[[Sequence[Message]], str] = ("",),
                 continuations: Sequence[str] | Callable[[Sequence[Message], str], str] | None = None,
                 model_name: str = "fake", chunk_chars: int = 4, delay_s: float = 0.0,
                 error: BackendError | None = None,
                 token_logprob: float | Callable[[str], float] | None = None,
                 states: Callable[[Sequence[Message], str], dict] | None = None,
                 next_logprobs: Callable[[Sequence[Message], str, Sequence[str]], dict]
                 | None = None,
                 stated_confidence: Sequence[str] | Callable[[Sequence[Message], str], str]
                 | None = None,
                 top_logprobs: Callable[[str], Sequence[tuple[str, float]]] | None = None,
                 prompt_states: Callable[[Sequence[Message]], object] | None = None):
        self.model_name = model_name
        self._replies = replies
        self._continuations = continuations
        self.supports_continuation = continuations is not None
        self.chunk_chars = chunk_chars
        self.delay_s = delay_s
        self.error = error
        self.token_logprob = token_logprob
        self.states = states
        self.next_logprobs = next_logprobs
        self.top_logprobs = top_logprobs
        self._stated = stated_confidence
        self.confidence_adapter = stated_confidence is not None
        self.prompt_states = prompt_states
        self.calls: list[tuple[str, list[Message], str | None]] = []
        self.closed_early = 0
        self._lock = threading.Lock()
        self._n_chat = 0
        self._n_scripted: dict[str, int] = {}  # continuations served, per kind

    @staticmethod
    def _pick(source, i: int, *args) -> str:
        if callable(source):
            return source(*args)
        return source[i % len(source)]

    def _stream(self, prompt_words: int, text: str, params: GenerationParams,
                states: dict | None = None,
                states_at: Callable[[str], dict] | None = None) -> Iterator[Chunk]:
        """Stream ``text``; ``states`` go on the final chunk, ``states_at(text before a chunk)``
        on each text chunk."""
        if self.error is not None:
            raise self.error
        words = text.split()
        finish = "stop"
        if len(words) > params.max_new_tokens:
            # truncate at the token budget, like a real engine
            kept = params.max_new_tokens
            cut = 0
            for _ in range(kept):
                cut = text.index(words[_], cut) + len(words[_])
            text, finish = text[:cut], "length"
        for stop in params.stop:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop"
        done = False
        try:
            yield Chunk(prompt_tokens=prompt_words)
            for i in range(0, len(text), self.chunk_chars):
                if self.delay_s:
                    time.sleep(self.delay_s)
                piece = text[i: i + self.chunk_chars]
                lp = self.token_logprob
                if callable(lp):
                    lp = lp(piece)
                top = ()
                if self.top_logprobs is not None and params.top_logprobs > 0:
                    top = (tuple(self.top_logprobs(piece))[:params.top_logprobs],)
                    lp = 0.0 if lp is None else lp
                yield Chunk(text=piece, logprobs=((piece, float(lp)),) if lp is not None else (),
                            top_logprobs=top,
                            states=states_at(text[:i]) if states_at is not None else None)
            done = True
            yield Chunk(usage=Usage(prompt_words, len(text.split())), finish_reason=finish,
                        states=states)
        finally:
            if not done:
                self.closed_early += 1

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        with self._lock:
            i = self._n_chat
            self._n_chat += 1
            self.calls.append(("chat", list(messages), None))
        text = self._pick(self._replies, i, messages)
        prompt_words = sum(len(m.content.split()) for m in messages)
        if self.states is None:
            return self._stream(prompt_words, text, params)
        return self._stream(prompt_words, text, params, self.states(messages, text),
                            lambda before: self.states(messages, before))

    def next_token_logprobs(self, messages: Sequence[Message], assistant_prefix: str,
                            candidates: Sequence[str]) -> dict[str, float]:
        """The scripted ``next_logprobs`` answer (see the class docstring).

        Raises:
            BackendError: ``unsupported`` when none is scripted, or the scripted ``error``.
        """
        if self.error is not None:
            raise self.error
        if self.next_logprobs is None:
            raise BackendError("unsupported", f"{self.model_name} scores no next tokens")
        with self._lock:
            self.calls.append(("score", list(messages), assistant_prefix))
        return dict(self.next_logprobs(messages, assistant_prefix, candidates))

    def count_prompt_tokens(self, messages: Sequence[Message], assistant_prefix: str = "") -> int:
        """The prompt's words, as :meth:`prompt_state` counts them (a scripted model has no
        tokenizer)."""
        return sum(len(m.content.split()) for m in messages) + len(assistant_prefix.split())

    def prompt_state(self, messages: Sequence[Message]) -> PromptState:
        """The scripted ``prompt_states`` answer; the prompt counts its words as tokens.

        Raises:
            BackendError: ``unsupported`` when none is scripted, or the scripted ``error``.
        """
        if self.error is not None:
            raise self.error
        if self.prompt_states is None:
            raise BackendError("unsupported", f"{self.model_name} reads no hidden states")
        with self._lock:
            self.calls.append(("prompt_state", list(messages), None))
        return PromptState(self.prompt_states(messages),
                           sum(len(m.content.split()) for m in messages))

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        if self._continuations is None:
            raise BackendError("unsupported", f"{self.model_name} cannot continue a prefix")
        return self._scripted_continuation("continue", self._continuations, messages,
                                           assistant_prefix, params)

    def state_confidence(self, messages: Sequence[Message], assistant_prefix: str,
                         params: GenerationParams) -> Iterator[Chunk]:
        """The scripted confidence line of the adapted SLM (``stated_confidence``).

        Raises:
            BackendError: ``bad_request`` when none is scripted."""
        if self._stated is None:
            raise BackendError("bad_request", f"{self.model_name} has no confidence adapter")
        return self._scripted_continuation("state_confidence", self._stated, messages,
                                           assistant_prefix, params)

    def _scripted_continuation(self, kind: str, script, messages: Sequence[Message],
                               assistant_prefix: str, params: GenerationParams
                               ) -> Iterator[Chunk]:
        """Stream the next reply of ``script`` after ``assistant_prefix``; record the call as
        ``(kind, messages, prefix)`` and count it per kind."""
        with self._lock:
            i = self._n_scripted.get(kind, 0)
            self._n_scripted[kind] = i + 1
            self.calls.append((kind, list(messages), assistant_prefix))
        text = self._pick(script, i, messages, assistant_prefix)
        prompt_words = sum(len(m.content.split()) for m in messages) + len(assistant_prefix.split())
        return self._stream(prompt_words, text, params)
