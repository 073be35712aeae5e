"""Request batching for engines with a batched ``generate_batch`` (transformers, vLLM).

The evaluation harness runs several items at once (``--workers N``), each calling
``stream_chat`` / ``continue_chat`` one request at a time. :class:`BatchingBackend` collects the
requests that arrive together (up to ``max_batch``, waiting at most ``wait_s`` for more) and answers
them with one ``generate_batch`` call — one left-padded ``model.generate`` for transformers,
vLLM's offline batched generation on a GPU — instead of one call per request. Requests are grouped
by their :class:`~corea.backends.base.GenerationParams` (one batch shares them).

Replies are not token-streamed (each arrives whole, then its usage chunk): this adapter is for
evaluation, not for the app. llama.cpp has its own continuous batching
(:mod:`corea.backends.llamacpp_batch`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from .base import BackendError, Chunk, GenerationParams, Message


@dataclass
class _Pending:
    messages: Sequence[Message]
    prefix: str | None
    params: GenerationParams
    future: Future = field(default_factory=Future)


class BatchingBackend:
    """Wraps a backend that has ``generate_batch(conversations, params, assistant_prefixes,
    with_logprobs)``.

    Args:
        backend: the engine (``TransformersBackend``, ``VLLMBackend``).
        max_batch: most requests answered by one call.
        wait_s: how long the first request of a batch waits for others (seconds).
    """

    def __init__(self, backend, max_batch: int = 16, wait_s: float = 0.05):
        if not hasattr(backend, "generate_batch"):
            raise TypeError(f"{type(backend).__name__} has no generate_batch")
        self.backend = backend
        self.model_name = backend.model_name
        self.supports_continuation = getattr(backend, "supports_continuation", False)
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: list[_Pending] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batch_sizes: list[int] = []  # sizes of the calls made (for tests and tuning)

    def __getattr__(self, name):  # settings, load(), ... of the wrapped backend
        return getattr(self.backend, name)

    # ------------------------------------------------------------------ Backend protocol
    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        return self._submit(messages, None, params)

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        if not self.supports_continuation:
            raise BackendError("unsupported", f"{self.model_name} cannot continue a prefix")
        return self._submit(messages, assistant_prefix, params)

    def _submit(self, messages, prefix, params) -> Iterator[Chunk]:
        p = _Pending(messages, prefix, params)
        with self._cv:
            self._queue.append(p)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="corea-batching")
                self._thread.start()
            self._cv.notify()
        return self._result(p)

    @staticmethod
    def _result(p: _Pending) -> Iterator[Chunk]:
        text, usage, finish, lps = p.future.result()
        if text or lps:
            yield Chunk(text=text, logprobs=tuple(lps or ()))
        yield Chunk(usage=usage, finish_reason=finish)

    # ------------------------------------------------------------------ batching loop
    def _take(self) -> list[_Pending]:
        """Wait for requests, then gather one batch of equal params (called under the lock)."""
        while not self._queue:
            if not self._cv.wait(timeout=30.0):
                return []
        deadline = time.monotonic() + self.wait_s
        while len(self._queue) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0 or not self._cv.wait(timeout=left):
                break
        key = self._queue[0].params
        batch = [p for p in self._queue if p.params == key][: self.max_batch]
        self._queue = [p for p in self._queue if p not in batch]
        return batch

    def _loop(self) -> None:
        while True:
            with self._cv:
                batch = self._take()
                if not batch:
                    if not self._queue:
                        self._thread = None
                        return
                    continue
            self.batch_sizes.append(len(batch))
            prefixes = [p.prefix or "" for p in batch] if any(p.prefix for p in batch) else None
            try:
                rows = self.backend.generate_batch([p.messages for p in batch], batch[0].params,
                                                   assistant_prefixes=prefixes,
                                                   with_logprobs=True)
            except Exception as exc:  # noqa: BLE001 — every request of the batch gets the error
                err = exc if isinstance(exc, BackendError) else BackendError(
                    "internal", f"batched generation failed: {exc}")
                for p in batch:
                    p.future.set_exception(err)
                continue
            for p, row in zip(batch, rows):
                text, usage, finish = row[:3]
                p.future.set_result((text, usage, finish, row[3] if len(row) > 3 else ()))
