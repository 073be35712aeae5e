"""Continuous batching for llama.cpp: many generations decoded together in one context.

(Just over 400 lines: the scheduler, its decode step and what a request reads from the logits —
sample, log-probability, alternatives, candidate scores — share one request type and context.)

On CPU, decoding one token for one sequence leaves part of the arithmetic idle; decoding one token
for each of several sequences in the same ``llama_decode`` call costs less per token. Measured on a
2-vCPU EPYC VM (``python bench/batching.py``, 64 new tokens per ~50-token prompt, prefill
included, ``bench/results/batching.json``): the 0.5B SLM goes from 15.7 completion tokens/s (one
sequence) to 23.3 (8 or 16 together), the 1.5B LLM from 7.5 to 10.6 (8) — about 1.4-1.5x. The
evaluation harness uses this by running several items at once (``--workers``) against a backend
with ``n_parallel > 1``.

Design (the scheduler of llama.cpp's own ``llama-server``, in miniature):

- one llama.cpp context with ``n_parallel`` sequences (``n_seq_max``), each with its own window of
  ``n_ctx`` tokens (non-unified KV cache);
- callers submit a request (prompt tokens, budget, sampling) and read ``(token, logprob)`` pairs
  from a queue; a scheduler thread builds each batch from one next token per decoding sequence plus
  prompt chunks of newly admitted ones, decodes, samples, and hands the tokens out;
- a finished sequence keeps its KV cache, and a new request goes to the free slot whose cached
  tokens share the longest prefix with its prompt (the shared system prompt, or — for a forced
  ``Answer:``/``Confidence:`` continuation — the whole completion it continues), so only the new
  tail is evaluated;
- every ``llama_decode`` in the process holds one lock, so two batched models (SLM and LLM) never
  compete for the same cores (llama.cpp's spinning workers collapse when oversubscribed).

Sampling is done here in numpy: greedy is the arg-max; otherwise temperature + nucleus (top-p) with
a per-request seeded generator. Log-probabilities are of the model's distribution at temperature 1.

Hidden states (``states=True``): the context also returns llama.cpp's token embeddings
(``llama_set_embeddings``, pooling ``NONE``: the final-layer state after the output norm, shape
``(n_embd,)``, 896 for Qwen2.5-0.5B) at the same positions as the logits, in the same decode — no
second pass. A request then reports two states: ``prompt``, at the last prompt token (before the
model writes anything: the pre-generation probe's input), and ``end``, at the position that
predicted the last sampled token (for a completion that stopped by itself: its last token before
end-of-generation). Every sampled token is handed out with the ``end`` state that predicted it, so
a caller that closes the stream early (:mod:`corea.stopping`) holds the ``end`` state of the last
token it read, not of tokens decoded after it. With embeddings on, llama.cpp outputs every batch position, so prompt
processing also computes the vocabulary projection for prompt tokens (a few percent more work).
"""

from __future__ import annotations

import ctypes

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import llama_cpp
from llama_cpp import _internals

from .base import BackendError

log = logging.getLogger(__name__)

DECODE_LOCK = threading.Lock()
"""Held for every batched ``llama_decode`` in the process (one model computes at a time)."""

_N_BATCH = 512  # tokens per llama_decode call (prompt chunks + one per decoding sequence)


@dataclass
class _Request:
    prompt: list[int]
    max_new: int
    temperature: float
    top_p: float
    rng: np.random.Generator
    out: "queue.Queue[tuple]" = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    seq: int = -1
    n_past: int = 0             # tokens of this sequence in the KV cache
    todo: list[int] = field(default_factory=list)  # tokens to evaluate next
    n_gen: int = 0
    generated: list[int] = field(default_factory=list)
    states: dict | None = None       # filled with "prompt"/"end" hidden states when captured
    candidates: list[int] | None = None  # score these next tokens instead of generating
    fresh: bool = False  # evaluate the whole prompt, reusing no cached prefix
    adapter: bool = False  # decode with the engine's confidence-scoped LoRA adapter on
    n_base: int = 0        # leading prompt tokens whose KV the base model computed (reused)
    top_k: int = 0         # report this many most likely alternatives per generated token


def log_partition(logits: np.ndarray) -> float:
    """``log(sum(exp(logits)))``, computed stably; ``logits[t] - log_partition(logits)`` is token
    ``t``'s natural-log probability at temperature 1."""
    m = float(logits.max())
    return m + float(np.log(np.exp(logits - m).sum()))


def top_logprobs(logits: np.ndarray, logz: float, k: int) -> tuple[tuple[int, float], ...]:
    """The ``k`` most likely tokens under ``logits`` as ``(token id, natural-log probability)``,
    most likely first (``logz``: :func:`log_partition` of ``logits``); ``()`` for ``k`` <= 0."""
    if k <= 0:
        return ()
    k = min(k, logits.shape[0])
    ids = np.argpartition(-logits, k - 1)[:k]
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    return tuple((int(i), float(logits[i]) - logz) for i in ids)


def _sample(logits: np.ndarray, req: _Request) -> tuple[int, float]:
    """Pick the next token; returns ``(token, natural-log probability at temperature 1)``."""
    logz = log_partition(logits)
    if req.temperature <= 0.0:
        tok = int(np.argmax(logits))
    else:
        z = logits / req.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if req.top_p < 1.0:
            order = np.argsort(-p)
            keep = order[: int(np.searchsorted(np.cumsum(p[order]), req.top_p)) + 1]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        tok = int(req.rng.choice(len(p), p=p))
    return tok, float(logits[tok]) - logz


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def set_lora(ctx, adapter) -> None:
    """Apply a loaded LoRA ``adapter`` (``llama_adapter_lora_p``) with scale 1 to a llama.cpp
    context; ValueError if llama.cpp refuses."""
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    if llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales):
        raise ValueError("llama.cpp could not apply the LoRA adapter to a context")


def clear_lora(ctx) -> None:
    """Remove every LoRA adapter from a llama.cpp context (the plain model decodes again)."""
    if llama_cpp.llama_set_adapters_lora(ctx, None, 0, None):
        raise ValueError("llama.cpp could not remove the LoRA adapters of a context")


class BatchEngine:
    """A llama.cpp context decoding up to ``n_parallel`` sequences together.

    Args:
        llm: a loaded ``llama_cpp.Llama`` (its model weights are shared; a new context is made).
        is_eog: whether a token ends generation.
        n_parallel: sequences decoded together (>= 2).
        n_ctx: context window per sequence (tokens).
        n_threads: CPU threads for decoding.
        lora_adapter: a LoRA adapter loaded on ``llm``'s model (``llama_adapter_lora_p``), applied
            to this context with scale 1; ``None`` for the plain model.
        lora_scope: ``"all"`` — the adapter decodes every token; ``"confidence"`` — only the
            requests made with ``adapter=True`` (the confidence line after the base model's
            solution, :data:`corea.adapters.SCOPES`): each step then decodes the base requests and
            the adapter requests in two ``llama_decode`` calls, switching the adapter between
            them.
        states: also read the final-layer hidden states (see the module docstring).

    Raises:
        BackendError: ``internal`` if llama.cpp cannot create the context (e.g. out of memory).
    """

    def __init__(self, llm: "llama_cpp.Llama", is_eog: Callable[[int], bool], n_parallel: int,
                 n_ctx: int, n_threads: int, lora_adapter=None, states: bool = False,
                 lora_scope: str = "all"):
        params = llama_cpp.llama_context_default_params()
        if states:
            params.embeddings = True
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        params.n_ctx = n_ctx * n_parallel
        params.n_batch = params.n_ubatch = _N_BATCH
        params.n_seq_max = n_parallel
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = n_threads
        try:
            self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except Exception as exc:
            raise BackendError("internal", f"llama.cpp could not create a {n_parallel}-sequence "
                                           f"context: {exc}") from exc
        self._adapter = lora_adapter if lora_scope == "confidence" else None
        self._adapter_on = False  # whether the context's decodes currently use ``_adapter``
        if lora_adapter is not None and self._adapter is None:  # applies to every token
            try:
                set_lora(self._ctx.ctx, lora_adapter)
            except ValueError as exc:
                self._ctx.close()
                raise BackendError("internal", f"{exc} (batch context)") from exc
        self._llm = llm  # keeps the model (and the adapter it owns) alive as long as this context
        self._batch = _internals.LlamaBatch(n_tokens=_N_BATCH, embd=0, n_seq_max=1,
                                            verbose=False)
        self._n_vocab = llm.n_vocab()
        self._n_embd = llm.n_embd()
        self.states = states
        self._is_eog = is_eog
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx
        self._cached: list[list[int]] = [[] for _ in range(n_parallel)]  # KV content per slot
        self._free = set(range(n_parallel))
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------- caller side
    def generate(self, prompt: list[int], max_new: int, temperature: float, top_p: float,
                 seed: int | None, states: dict | None = None,
                 fresh: bool = False, adapter: bool = False, top_k: int = 0
                 ) -> Iterator[tuple[int, float, tuple]]:
        """Stream ``(token, logprob, top)`` of one generation (end-of-generation token included,
        as the last one, when the model stops by itself). Closing the iterator cancels it.
        ``top``: the ``top_k`` most likely ``(token id, logprob)`` at that position
        (:func:`top_logprobs`), ``()`` with ``top_k`` 0.

        ``states``: when given and the engine reads hidden states, it receives ``"prompt"`` and
        ``"end"`` (float32 arrays of shape ``(n_embd,)``) before the first pair is yielded, and
        ``"end"`` is updated before every pair: it is always the state that predicted the pair
        just yielded (so it stays right when the caller closes the stream early).
        ``fresh``: evaluate the whole prompt instead of reusing a slot's cached prefix (the CPU
        kernels round differently for other chunk sizes, so reuse can change a greedy answer).
        ``adapter``: decode with the confidence-scoped adapter on (reusing the cached prefix the
        base model computed; at least the last prompt token is evaluated with the adapter).

        Raises:
            BackendError: ``bad_request`` for ``adapter=True`` on an engine without a
                confidence-scoped adapter."""
        if adapter and self._adapter is None:
            raise BackendError("bad_request", "this model has no confidence-scoped adapter")
        req = _Request(prompt=list(prompt), max_new=max_new, temperature=temperature,
                       top_p=top_p, rng=np.random.default_rng(seed),
                       states={} if states is not None and self.states else None, fresh=fresh,
                       adapter=adapter, top_k=top_k)
        yield from self._submit(req, states)

    def score_next(self, prompt: list[int], candidates: Sequence[int]) -> list[float]:
        """Natural-log probabilities (temperature 1) of each of ``candidates`` as the next token
        after ``prompt``: one prompt evaluation, nothing generated."""
        req = _Request(prompt=list(prompt), max_new=1, temperature=0.0, top_p=1.0,
                       rng=np.random.default_rng(0), candidates=list(candidates))
        for _tok, lps, _top in self._submit(req, None):
            return list(lps)
        raise BackendError("internal", "llama.cpp returned no scores")

    def _submit(self, req: _Request, states: dict | None):
        with self._cv:
            self._waiting.append(req)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="corea-llamacpp-batch",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        try:
            while True:
                kind, *rest = req.out.get()
                if kind == "token":
                    tok, lp, top, end = rest
                    if states is not None and end is not None:
                        # "prompt" is set once, before the first token, and never changed
                        states["prompt"], states["end"] = req.states["prompt"], end
                    yield tok, lp, top
                elif kind == "done":
                    return
                else:
                    raise rest[0]
        finally:
            req.cancelled.set()

    # ---------------------------------------------------------------------- scheduler
    def _admit(self, req: _Request) -> None:
        # the free slot sharing the longest prefix; among equals the one caching the least, so
        # a just-finished completion stays cached for its forced-suffix continuation
        seq = max(self._free, key=lambda s: (_common_prefix(self._cached[s], req.prompt),
                                             -len(self._cached[s])))
        self._free.discard(seq)
        keep = 0 if req.fresh else \
            min(_common_prefix(self._cached[seq], req.prompt), len(req.prompt) - 1)
        llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq, keep, -1)
        self._cached[seq] = req.prompt[:keep]
        req.seq, req.n_past, req.todo = seq, keep, req.prompt[keep:]
        # an adapter request's prompt but its last token is decoded as a base request
        req.n_base = len(req.prompt) - 1 if req.adapter else keep
        self._active.append(req)

    def _release(self, req: _Request) -> None:
        self._active.remove(req)
        # an adapter request's own tokens were computed with the adapter: not a base prefix
        n = min(req.n_base, req.n_past) if req.adapter else req.n_past
        if req.adapter:
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, req.seq, n, -1)
        self._cached[req.seq] = (req.prompt + req.generated)[:n]
        self._free.add(req.seq)

    def _loop(self) -> None:
        while True:
            try:
                with self._cv:
                    for req in [r for r in self._active if r.cancelled.is_set()]:
                        self._release(req)
                    while self._waiting and self._free:
                        req = self._waiting.popleft()
                        if not req.cancelled.is_set():
                            self._admit(req)
                    if not self._active:
                        if not self._cv.wait(timeout=30.0) and not self._waiting:
                            self._thread = None
                            return
                        continue
                self._step()
            except Exception as exc:  # noqa: BLE001 — fail every request in flight, keep serving
                self._fail_all(BackendError("internal",
                                            f"llama.cpp batched decoding failed: {exc}"))

    def _fail_all(self, err: BackendError) -> None:
        """Hand ``err`` to every active request and reset their slots (callers never hang)."""
        with self._cv:
            for req in list(self._active):
                req.out.put(("error", err))
                self._active.remove(req)
                self._free.add(req.seq)
                self._cached[req.seq] = []
                try:
                    llama_cpp.llama_memory_seq_rm(self._ctx.memory, req.seq, 0, -1)
                except Exception:  # noqa: BLE001
                    pass

    def _step(self) -> None:
        if self._adapter is None:
            self._step_group(self._active, False)
            return
        for on in (False, True):  # base requests, then adapter requests: one decode each
            group = [r for r in self._active if (r.adapter and r.n_past >= r.n_base) == on]
            if group:
                self._step_group(group, on)

    def _switch(self, on: bool) -> None:
        """Turn the confidence-scoped adapter on or off for the next decodes (under the lock)."""
        if on != self._adapter_on:
            if on:
                set_lora(self._ctx.ctx, self._adapter)
            else:
                clear_lora(self._ctx.ctx)
            self._adapter_on = on

    def _step_group(self, active: list[_Request], adapter: bool) -> None:
        b = self._batch.batch
        b.n_tokens = 0
        outputs: list[tuple[_Request, int]] = []
        # decoding sequences first (one token each), then prompt chunks in the space left
        order = sorted(active, key=lambda r: len(r.todo) > 1)
        for req in order:
            room = _N_BATCH - b.n_tokens
            if room <= 0:
                break
            if req.adapter and not adapter:  # its base prefix only: stop before the last token
                room = min(room, req.n_base - req.n_past)
            chunk = req.todo[:room]
            for i, tok in enumerate(chunk):
                j = b.n_tokens
                b.token[j] = tok
                b.pos[j] = req.n_past + i
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = req.seq
                b.logits[j] = self.states  # with embeddings llama.cpp outputs every position
                b.n_tokens += 1
            req.n_past += len(chunk)
            req.todo = req.todo[len(chunk):]
            if not req.todo:  # the prompt (or the last sampled token) is in: sample from here
                b.logits[b.n_tokens - 1] = True
                outputs.append((req, b.n_tokens - 1))
        with DECODE_LOCK:
            if self._adapter is not None:
                self._switch(adapter)
            rc = llama_cpp.llama_decode(self._ctx.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            picks = []
            for req, j in outputs:
                ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, j)
                logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
                if req.states is not None:
                    emb = llama_cpp.llama_get_embeddings_ith(self._ctx.ctx, j)
                    if emb:
                        state = np.ctypeslib.as_array(emb, shape=(self._n_embd,)).copy()
                        req.states.setdefault("prompt", state)
                        req.states["end"] = state
                if req.candidates is not None:
                    logz = log_partition(logits)
                    picks.append((req, -1, tuple(float(logits[c]) - logz
                                                 for c in req.candidates), ()))
                else:
                    tok, lp = _sample(logits, req)
                    top = top_logprobs(logits, log_partition(logits), req.top_k) \
                        if req.top_k else ()
                    picks.append((req, tok, lp, top))
        with self._cv:
            for req, tok, lp, top in picks:
                if req.cancelled.is_set():
                    self._release(req)
                    continue
                if req.candidates is not None:
                    req.out.put(("token", tok, lp, (), None))
                    req.out.put(("done",))
                    self._release(req)
                    continue
                finished = self._is_eog(tok) or req.n_gen + 1 >= req.max_new \
                    or req.n_past + 1 >= self.n_ctx
                # the state that predicted ``tok`` (this step's), handed out with it
                end = req.states.get("end") if req.states is not None else None
                req.out.put(("token", tok, lp, top, end))
                req.generated.append(tok)
                req.n_gen += 1
                if finished:
                    req.out.put(("done",))
                    self._release(req)
                else:
                    req.todo = [tok]
