"""Hidden states at chosen positions of a written completion, from one llama.cpp prefill.

Under greedy decoding the state a decode holds after writing ``t`` completion tokens equals (up
to the CPU kernels' rounding for other batch sizes) the state a prefill of the prompt plus those
``t`` tokens gives at its last position. So the states an early-exit probe reads every ``k``
tokens during a decode (:mod:`corea.cascade.early_exit`) can be recovered for committed rows
without generating again: evaluate the chat (template and generation prompt) followed by the
completion once, with llama.cpp's embeddings on (``llama_set_embeddings``, pooling ``NONE``:
the final-layer state after the output norm, the same as :mod:`corea.backends.llamacpp_batch`
reads), and output only the requested positions (the vocabulary projection is then computed for
those positions alone).

Position convention (tokens): the state **at completion position t** is the one after reading the
prompt and the first ``t`` completion tokens — the state that predicts token ``t + 1``. ``t = 0``
is the ``prompt`` state of :attr:`corea.backends.base.Chunk.states`; ``t = n`` for a completion
of ``n`` tokens that stopped by itself is its ``end`` state. A live decode holds the state at
``t`` once it has written ``t + 1`` tokens.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import llama_cpp
from llama_cpp import _internals

from .base import BackendError
from .llamacpp_batch import DECODE_LOCK

__all__ = ["StateReader", "CompletionStates", "read_completion_states"]

_N_BATCH = 512  # tokens per llama_decode call


class StateReader:
    """A one-sequence llama.cpp context of ``llm`` (a loaded ``llama_cpp.Llama``) that returns
    final-layer hidden states at chosen positions of a token sequence.

    Args:
        llm: the loaded model (its weights are shared, not copied).
        n_ctx: the context window (tokens).
        n_threads: CPU threads of the decode.

    Raises:
        BackendError: ``internal`` when llama.cpp cannot create the context.
    """

    def __init__(self, llm: "llama_cpp.Llama", n_ctx: int, n_threads: int):
        params = llama_cpp.llama_context_default_params()
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = _N_BATCH
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        try:
            self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except Exception as exc:
            raise BackendError("internal", f"llama.cpp could not create a context: {exc}") \
                from exc
        self._llm = llm  # keeps the model alive as long as this context
        self._batch = _internals.LlamaBatch(n_tokens=_N_BATCH, embd=0, n_seq_max=1,
                                            verbose=False)
        self._n_embd = llm.n_embd()
        self.n_ctx = n_ctx
        self._lock = threading.Lock()

    def states_at(self, tokens: Sequence[int], indices: Sequence[int]) -> np.ndarray:
        """The final-layer states at sequence ``indices`` (0-based positions into ``tokens``)
        after one prefill of ``tokens``; float32 array of shape ``(len(indices), n_embd)``.

        Raises:
            BackendError: ``bad_request`` for a sequence over ``n_ctx`` or an index outside it;
                ``internal`` when llama.cpp fails or returns no state.
        """
        if len(tokens) >= self.n_ctx:
            raise BackendError("bad_request", f"{len(tokens)} tokens do not fit the context "
                                              f"window of {self.n_ctx} tokens")
        want = sorted(set(int(i) for i in indices))
        if want and (want[0] < 0 or want[-1] >= len(tokens)):
            raise BackendError("bad_request", f"positions {want[0]}..{want[-1]} outside a "
                                              f"sequence of {len(tokens)} tokens")
        wanted = set(want)
        got: dict[int, np.ndarray] = {}
        with self._lock:
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, 0, 0, -1)
            b = self._batch.batch
            for start in range(0, (want[-1] + 1) if want else 0, _N_BATCH):
                chunk = tokens[start:min(start + _N_BATCH, want[-1] + 1)]
                b.n_tokens = 0
                for i, tok in enumerate(chunk):
                    b.token[i], b.pos[i], b.n_seq_id[i] = tok, start + i, 1
                    b.seq_id[i][0] = 0
                    b.logits[i] = (start + i) in wanted
                    b.n_tokens += 1
                with DECODE_LOCK:
                    rc = llama_cpp.llama_decode(self._ctx.ctx, b)
                    if rc != 0:
                        raise BackendError("internal", f"llama_decode returned {rc}")
                    for i in range(len(chunk)):
                        if (start + i) in wanted:
                            emb = llama_cpp.llama_get_embeddings_ith(self._ctx.ctx, i)
                            if not emb:
                                raise BackendError("internal", "llama.cpp returned no state")
                            got[start + i] = np.ctypeslib.as_array(
                                emb, shape=(self._n_embd,)).copy()
        return np.stack([got[int(i)] for i in indices]) if len(indices) else \
            np.zeros((0, self._n_embd), dtype=np.float32)


@dataclass(frozen=True)
class CompletionStates:
    """What :func:`read_completion_states` returns: the prompt's and the completion's sizes
    (tokens), the completion positions read (each in ``0..completion_tokens``, see the module
    docstring) and their states, float32 of shape ``(len(positions), n_embd)``."""

    prompt_tokens: int
    completion_tokens: int
    positions: tuple[int, ...]
    states: np.ndarray


_readers: dict[int, StateReader] = {}
_readers_lock = threading.Lock()


def read_completion_states(llm: "llama_cpp.Llama", prompt: Sequence[int], completion: str,
                           positions: Sequence[int], n_ctx: int,
                           n_threads: int) -> CompletionStates:
    """The states of ``llm`` at completion ``positions`` of ``completion`` written after the
    ``prompt`` tokens (template and generation prompt, exactly what the model decoded from;
    :meth:`corea.backends.llamacpp.LlamaCppBackend.completion_states`). Positions past the
    completion's length are dropped. One reader context per model, made on first use.

    Raises:
        BackendError: as :meth:`StateReader.states_at`.
    """
    written = llm.tokenize(completion.encode("utf-8"), add_bos=False, special=False)
    keep = tuple(int(t) for t in positions if 0 <= int(t) <= len(written))
    with _readers_lock:
        reader = _readers.get(id(llm))
        if reader is None:
            reader = _readers[id(llm)] = StateReader(llm, n_ctx, n_threads)
    seq = list(prompt) + list(written)
    states = reader.states_at(seq, [len(prompt) + t - 1 for t in keep])
    return CompletionStates(len(prompt), len(written), keep, states)
