"""llama.cpp backend: GGUF models on CPU through ``llama-cpp-python``.

(Longer than 400 lines on purpose: loading, the one-sequence, batched, adapter and drafted
generation paths share one model cache and its locks.)

The default engine for the embedded weights. Chat messages are rendered to a raw prompt with the
GGUF's own chat template (metadata ``tokenizer.chat_template``), so :meth:`continue_chat` can append
an assistant prefix after the generation prompt and let the model continue it verbatim.

Models are loaded lazily on the first call and shared by every backend instance of the process
(keyed by GGUF path, ``n_ctx`` and ``n_threads``). A llama.cpp context is not thread-safe, so each
model has a lock held for the whole of one generation; concurrent callers queue. Closing a stream
early stops decoding and releases the lock.

A LoRA checkpoint folder from ``train.grpo`` (a PEFT adapter) runs as its unchanged base GGUF plus
the adapter applied at run time, converted once to llama.cpp's LoRA GGUF (:mod:`corea.backends.lora_gguf`).
A confidence-scoped adapter (``corea_adapter.json``, :data:`corea.adapters.SCOPES`) is loaded but
applied only in :meth:`LlamaCppBackend.state_confidence`: the solution is decoded by the base model
and the adapter is switched on for the confidence line that follows it.

With ``speculative: slm_lookup`` a greedy one-sequence generation whose parameters carry a
``draft_hint`` drafts tokens by lookup in it and verifies them (:mod:`corea.backends.speculative`);
the counts of the latest such generation are in :attr:`LlamaCppBackend.last_draft`.

Token accounting is exact: the prompt is tokenized once here (its length is ``prompt_tokens``) and
every decoded token is counted (``completion_tokens``; the end-of-generation token is not counted).
Per-token log-probabilities (for the token-probability confidence signals, :mod:`corea.signals.tokens`)
are computed here from the logits llama.cpp keeps for the last decoded position, read right after
each token is sampled — not with llama-cpp-python's ``logits_all=True``, which keeps
``n_ctx x vocab`` floats (~2.5 GB for Qwen at 4k context) and computes the vocabulary projection
for every prompt token.
"""

from __future__ import annotations

import codecs
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import llama_cpp  # ImportError here -> make_backend reports the backend as unsupported
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from .lora_gguf import base_gguf, gguf_architecture, is_adapter_dir, lora_gguf, lora_scope
from .weights import resolve_gguf
from ..prompts import CHATML_TEMPLATE
from .llamacpp_batch import BatchEngine, clear_lora, log_partition, set_lora, top_logprobs
from .drafting import DraftStats, HintDrafter
from .speculative import greedy_drafted
from .llamacpp_states import CompletionStates, read_completion_states
from .base import BackendError, Chunk, GenerationParams, Message, PromptState, Usage, held_back

log = logging.getLogger(__name__)



@dataclass
class _LoadedModel:
    llm: "llama_cpp.Llama"
    render: Callable[[list[dict[str, str]]], str]
    is_eog: Callable[[int], bool]
    add_bos: bool
    load_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    engine: "BatchEngine | None" = None  # created on first use with n_parallel > 1
    lora_adapter: object | None = None  # llama_adapter_lora_p, owned (and freed) by ``llm``
    lora_scope: str = "all"  # "confidence": applied only to confidence-line continuations


@dataclass
class _Slot:
    load_lock: threading.Lock = field(default_factory=threading.Lock)
    model: _LoadedModel | None = None


_slots: dict[tuple[str, int, int, str, bool], _Slot] = {}
_slots_lock = threading.Lock()


def _default_threads() -> int:
    """All usable CPUs (at least 1).

    Measured on a 2-vCPU VM with the 0.5B SLM: 2 threads decode ~22 tokens/s on an idle machine,
    1 thread ~12. llama.cpp's workers spin-wait at every barrier, so when other CPU-heavy work
    shares the machine, all-core decoding collapses (~2 tokens/s seen): then set ``n_threads``
    (``COREA_SLM__N_THREADS=1``) explicitly.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    return max(1, n)


def _token_text(llm: "llama_cpp.Llama", token_id: int) -> str:
    if token_id is None or token_id < 0:
        return ""
    return llm.detokenize([token_id], special=True).decode("utf-8", errors="ignore")


def _last_logprob(llm: "llama_cpp.Llama", token: int, n_vocab: int, top_k: int = 0
                  ) -> tuple[float, tuple[tuple[int, float], ...]]:
    """Natural-log probability of ``token`` under the logits of the last decoded position, and
    the ``top_k`` most likely ``(token id, logprob)`` there (:func:`top_logprobs`)."""
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    logz = log_partition(logits)
    return float(logits[token]) - logz, top_logprobs(logits, logz, top_k)


def _attach_lora(llm: "llama_cpp.Llama", lora: Path, apply: bool = True):
    """Load a LoRA GGUF onto ``llm``'s model and (``apply``) apply it (scale 1) to ``llm``'s
    context.

    Done here rather than with ``Llama(lora_path=...)``, which turns memory mapping off and so
    keeps a private copy of the base weights for every checkpoint; mapped, all checkpoints of one
    base share its pages. The adapter is freed with ``llm`` (before its model).
    """
    adapter = llama_cpp.llama_adapter_lora_init(llm._model.model, str(lora).encode("utf-8"))
    if adapter is None:
        raise ValueError(f"llama.cpp could not load the LoRA adapter {lora}")
    llm._stack.callback(llama_cpp.llama_adapter_lora_free, adapter)
    if apply:
        set_lora(llm.ctx, adapter)
    return adapter


def _load(path: Path, n_ctx: int, n_threads: int, lora: Path | None = None,
          scope: str = "all", flash_attn: bool = False) -> _LoadedModel:
    t0 = time.perf_counter()
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads,
                              n_threads_batch=n_threads, logits_all=False, verbose=False,
                              flash_attn=flash_attn)
    except Exception as exc:  # llama.cpp reports a bad file as ValueError / RuntimeError
        raise BackendError("model_missing", f"llama.cpp could not load {path}: {exc}") from exc
    adapter = None
    if lora is not None:
        try:
            adapter = _attach_lora(llm, lora, apply=scope == "all")
        except Exception as exc:  # wrong architecture / shapes: llama.cpp logs and returns NULL
            llm.close()
            raise BackendError("model_missing", f"{exc} (base {path.name})") from exc
    metadata = getattr(llm, "metadata", {}) or {}
    template = metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
    eos, bos = llm.token_eos(), llm.token_bos()
    formatter = Jinja2ChatFormatter(template=template, eos_token=_token_text(llm, eos),
                                    bos_token=_token_text(llm, bos), add_generation_prompt=True)

    def render(messages: list[dict[str, str]]) -> str:
        return formatter(messages=messages).prompt

    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
        def is_eog(token: int) -> bool:
            return bool(llama_cpp.llama_vocab_is_eog(vocab, token))
    else:  # pragma: no cover - older bindings
        def is_eog(token: int) -> bool:
            return token == eos

    add_bos = str(metadata.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
    load_s = time.perf_counter() - t0
    log.info("llama.cpp loaded %s%s in %.1f s (n_ctx=%d, n_threads=%d)", path.name,
             f" + LoRA {lora} ({scope})" if lora else "", load_s, n_ctx, n_threads)
    return _LoadedModel(llm=llm, render=render, is_eog=is_eog, add_bos=add_bos and bos >= 0,
                        load_s=load_s, lora_adapter=adapter, lora_scope=scope)


def _get_model(path: Path, n_ctx: int, n_threads: int, lora: Path | None = None,
               scope: str = "all", flash_attn: bool = False) -> _LoadedModel:
    # the LoRA file's mtime and size are part of the key: a checkpoint folder rewritten by a new
    # run (same path) gets its new adapter, not the cached old one
    lora_key = f"{lora.resolve()}@{lora.stat().st_mtime_ns}:{lora.stat().st_size}" if lora else ""
    key = (str(path.resolve()), n_ctx, n_threads, f"{lora_key}#{scope}", flash_attn)
    with _slots_lock:
        slot = _slots.setdefault(key, _Slot())
    if slot.model is None:
        with slot.load_lock:
            if slot.model is None:
                slot.model = _load(path, n_ctx, n_threads, lora, scope, flash_attn)
    return slot.model


class LlamaCppBackend:
    """A GGUF model run by llama.cpp on CPU.

    Args:
        settings: the model's :class:`~corea.config.ModelSettings` (``model`` is ``embedded:slm``,
            ``embedded:llm``, a ``.gguf`` path or a LoRA checkpoint folder trained on one of
            those; ``n_ctx`` and ``n_threads`` are used).
        cache_dir: where embedded weights are assembled.

    The model loads on the first call (assembling embedded weights if needed); :meth:`load`
    forces it.
    """

    supports_continuation = True

    def __init__(self, settings, cache_dir: Path):
        self.settings = settings
        self.model_name: str = settings.name
        self.cache_dir = Path(cache_dir)
        self.n_ctx: int = settings.n_ctx
        self.n_threads: int = settings.n_threads or _default_threads()
        self.n_parallel: int = getattr(settings, "n_parallel", 1) or 1
        # hidden states come from the batch engine's context (also with one sequence)
        self.hidden_states: bool = bool(getattr(settings, "hidden_states", False))
        self.reuse_prefix: bool = bool(getattr(settings, "reuse_prefix", False))
        self.speculative: str = getattr(settings, "speculative", "off")
        self.last_draft: DraftStats | None = None  # counts of the latest drafted generation
        try:
            self.lora_scope: str = lora_scope(settings.model)
        except ValueError as exc:
            raise BackendError("model_missing", str(exc)) from exc
        self._files: tuple[Path, Path | None] | None = None  # (GGUF, LoRA GGUF), set by load()
        self._files_lock = threading.Lock()

    # ------------------------------------------------------------------------------ loading
    def _gguf_path(self) -> Path:
        try:
            if is_adapter_dir(self.settings.model):
                return base_gguf(self.settings.model, self.cache_dir)
            path = resolve_gguf(self.settings.model, self.cache_dir)
        except (OSError, ValueError) as exc:
            raise BackendError("model_missing", str(exc)) from exc
        if path is None:
            raise BackendError("bad_request",
                               f"the llamacpp backend needs a .gguf file or embedded:slm/llm, got "
                               f"{self.settings.model!r} (use the transformers backend for hub ids)")
        return path

    def _lora_path(self, base: Path) -> Path | None:
        if not is_adapter_dir(self.settings.model):
            return None
        try:
            return lora_gguf(self.settings.model, arch=gguf_architecture(base),
                             cache_dir=self.cache_dir)
        except (OSError, ValueError) as exc:
            raise BackendError("model_missing", f"cannot run {self.settings.model} on llama.cpp: "
                                                f"{exc}") from exc

    def load(self) -> _LoadedModel:
        """Load (once per process) and return the shared model (with its LoRA adapter, if any)."""
        with self._files_lock:  # resolved once: a loaded checkpoint keeps working if deleted
            if self._files is None:
                base = self._gguf_path()
                self._files = (base, self._lora_path(base))
            gguf, lora = self._files
        # drafting runs with flash attention: see corea.backends.speculative (exactness)
        return _get_model(gguf, self.n_ctx, self.n_threads, lora, self.lora_scope,
                          flash_attn=self.speculative != "off")

    @property
    def confidence_adapter(self) -> bool:
        """Whether this SLM states its confidence with a confidence-scoped adapter
        (:meth:`state_confidence`; :data:`corea.adapters.SCOPES`)."""
        return self.lora_scope == "confidence"

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The raw prompt for ``messages``: chat template + generation prompt."""
        return self.load().render([m.as_dict() for m in messages])

    # ------------------------------------------------------------------------------ generation
    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        return self._stream(messages, "", params)

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        return self._stream(messages, assistant_prefix, params)

    def state_confidence(self, messages: Sequence[Message], assistant_prefix: str,
                         params: GenerationParams) -> Iterator[Chunk]:
        """Continue the assistant turn ``assistant_prefix`` (the base model's solution) with the
        confidence-scoped adapter on: the adapted SLM writes its confidence line. The solution's
        KV cache is the base model's, reused; the adapter decodes from its last token on.

        Raises:
            BackendError: ``bad_request`` when this model has no confidence-scoped adapter."""
        if not self.confidence_adapter:
            raise BackendError("bad_request", f"{self.model_name} has no confidence adapter")
        return self._stream(messages, assistant_prefix, params, adapter=True)

    def _stream(self, messages: Sequence[Message], prefix: str,
                params: GenerationParams, adapter: bool = False) -> Iterator[Chunk]:
        model = self.load()  # outside the generator: load errors surface at call time
        prompt = model.render([m.as_dict() for m in messages]) + prefix
        # a new chat is evaluated from scratch unless reuse_prefix; a continuation of the same
        # turn's completion (forced suffix) reuses its own cached tokens
        fresh = not self.reuse_prefix and not prefix
        return self._generate(model, prompt, params, fresh, adapter)

    def _engine(self, model: _LoadedModel) -> BatchEngine:
        with model.lock:
            if model.engine is None:
                model.engine = BatchEngine(model.llm, model.is_eog, self.n_parallel, self.n_ctx,
                                           self.n_threads, lora_adapter=model.lora_adapter,
                                           states=self.hidden_states,
                                           lora_scope=model.lora_scope)
            return model.engine

    def _tokens(self, model: _LoadedModel, prompt: str) -> list[int]:
        llm = model.llm
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        bos = llm.token_bos()
        if model.add_bos and (not tokens or tokens[0] != bos):
            tokens = [bos] + tokens
        if len(tokens) >= self.n_ctx:
            raise BackendError("bad_request", f"prompt of {len(tokens)} tokens does not fit the "
                                              f"context window of {self.n_ctx} tokens")
        return tokens

    @staticmethod
    def _single(model: _LoadedModel, tokens: list[int], params: GenerationParams,
                fresh: bool = False):
        """(token, logprob, top alternatives) from llama-cpp-python's own one-sequence generator
        (``params.top_logprobs`` alternatives, :func:`_last_logprob`)."""
        llm = model.llm
        if fresh:
            llm.reset()  # evaluate the whole prompt: no dependence on the previous request
        greedy = params.temperature <= 0.0
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        gen = llm.generate(tokens, top_k=1 if greedy else 0,
                           top_p=1.0 if greedy else params.top_p, min_p=0.0, typical_p=1.0,
                           temp=0.0 if greedy else params.temperature, repeat_penalty=1.0)
        n_vocab = llm.n_vocab()
        try:
            for tok in gen:
                yield tok, *_last_logprob(llm, tok, n_vocab, params.top_logprobs)
        finally:
            gen.close()

    def _drafted(self, model: _LoadedModel, tokens: list[int], params: GenerationParams,
                 max_new: int, fresh: bool):
        """(token, logprob) pairs of greedy decoding with drafts looked up in
        ``params.draft_hint``; the counts go to :attr:`last_draft`."""
        hint = model.llm.tokenize(params.draft_hint.encode("utf-8"), add_bos=False,
                                  special=False)
        min_match = getattr(self.settings, "draft_min_match", 4)
        drafter = HintDrafter(hint, max_tokens=getattr(self.settings, "draft_tokens", 2),
                              min_match=min_match, max_match=max(min_match, 8))
        self.last_draft = DraftStats()
        return ((tok, lp, ()) for tok, lp in
                greedy_drafted(model.llm, tokens, drafter, max_new, fresh, self.last_draft))

    def prompt_state(self, messages: Sequence[Message]) -> PromptState:
        """The hidden state after the prompt of ``messages``: :func:`read_prompt_state`."""
        return read_prompt_state(self, messages)

    def completion_states(self, messages: Sequence[Message], completion: str,
                          positions: Sequence[int]) -> CompletionStates:
        """The final-layer states at completion ``positions`` (tokens written so far) of
        ``completion`` after the chat ``messages``, from one prefill: the states a greedy decode
        of that completion held there (:mod:`corea.backends.llamacpp_states`).

        Raises:
            BackendError: ``bad_request`` for a chat and completion over ``n_ctx``;
                ``internal`` when llama.cpp fails."""
        model = self.load()
        prompt = self._tokens(model, model.render([m.as_dict() for m in messages]))
        return read_completion_states(model.llm, prompt, completion, positions, self.n_ctx,
                                      self.n_threads)

    def count_prompt_tokens(self, messages: Sequence[Message], assistant_prefix: str = "") -> int:
        """Tokens of the prompt these messages render to (chat template, BOS where the model adds
        one, ``assistant_prefix`` after the generation prompt): what a call on them evaluates.

        Raises:
            BackendError: ``bad_request`` for a prompt over ``n_ctx``.
        """
        model = self.load()
        return len(self._tokens(model, model.render([m.as_dict() for m in messages])
                                + assistant_prefix))

    def next_token_logprobs(self, messages: Sequence[Message], assistant_prefix: str,
                            candidates: Sequence[str]) -> dict[str, float]:
        """Natural-log probability of each candidate's first token as the next token after the
        assistant turn begun with ``assistant_prefix`` (one prompt evaluation, no generation).

        Used for self-verification, P(True) (Kadavath et al., 2022; AutoMix, arXiv:2310.12963).

        Raises:
            BackendError: ``bad_request`` for an empty candidate or a prompt over ``n_ctx``.
        """
        model = self.load()
        prompt = model.render([m.as_dict() for m in messages]) + assistant_prefix
        ids = []
        for c in candidates:
            toks = model.llm.tokenize(c.encode("utf-8"), add_bos=False, special=False)
            if not toks:
                raise BackendError("bad_request", f"candidate {c!r} has no tokens")
            ids.append(toks[0])
        tokens = self._tokens(model, prompt)
        if self.n_parallel > 1 or self.hidden_states:
            lps = self._engine(model).score_next(tokens, ids)
        else:
            with model.lock:
                llm = model.llm
                llm.reset()
                llm.eval(tokens)
                ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
                logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))
                logz = log_partition(logits)
                lps = [float(logits[i]) - logz for i in ids]
        return dict(zip(candidates, lps))

    def _generate(self, model: _LoadedModel, prompt: str, params: GenerationParams,
                  fresh: bool = False, adapter: bool = False) -> Iterator[Chunk]:
        if self.n_parallel > 1 or self.hidden_states:
            engine = self._engine(model)
            tokens = self._tokens(model, prompt)
            max_new = min(params.max_new_tokens, self.n_ctx - len(tokens))
            seed = params.seed if params.seed is not None else random.getrandbits(31)
            states: dict = {}
            yield from _decode_stream(model, len(tokens), max_new, params, engine.generate(
                tokens, max_new, params.temperature, params.top_p, seed,
                None if adapter else states, fresh, adapter, params.top_logprobs), states)
            return
        with model.lock:
            tokens = self._tokens(model, prompt)
            max_new = min(params.max_new_tokens, self.n_ctx - len(tokens))
            if not adapter:
                pairs = (self._drafted(model, tokens, params, max_new, fresh)
                         if self.speculative == "slm_lookup" and params.draft_hint
                         and params.temperature <= 0.0
                         else self._single(model, tokens, params, fresh))
                yield from _decode_stream(model, len(tokens), max_new, params, pairs)
                return
            llm = model.llm
            # the prefix (all but the last prompt token) is the base model's: reuse what is
            # cached, evaluate the rest with the adapter off; then the adapter is switched on and
            # at least the last prompt token is evaluated with it (an exact cache hit would
            # sample from the base model's logits)
            cached = list(llm.input_ids[:llm.n_tokens])
            keep = 0
            while keep < min(len(cached), len(tokens) - 1) and cached[keep] == tokens[keep]:
                keep += 1
            llm.n_tokens = keep
            if keep < len(tokens) - 1:
                llm.eval(tokens[keep:-1])
            set_lora(llm.ctx, model.lora_adapter)
            try:
                yield from _decode_stream(model, len(tokens), max_new, params,
                                        self._single(model, tokens, params, False))
            finally:  # nothing the adapter computed stays cached for the base model
                clear_lora(model.llm.ctx)
                model.llm.reset()


def _decode_stream(model: _LoadedModel, n_prompt: int, max_new: int, params: GenerationParams,
            gen, states: dict | None = None) -> Iterator[Chunk]:
    """Turn a stream of (token, logprob, top alternatives) into text chunks (stop strings,
    UTF-8); the alternatives' token ids become their texts.

    ``states``: filled by the engine with the hidden states (its ``end`` the state that
    predicted the last pair read); attached to every text chunk, as of that chunk's last token
    (so a stream closed early keeps the state where it stopped), and to the final chunk."""
    llm = model.llm
    stops = [s for s in params.stop if s]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""      # decoded completion so far
    emitted = 0    # characters of ``text`` already yielded
    n_out = 0
    pending: list[tuple[str, float]] = []  # tokens not yet attached to a chunk
    pending_top: list[tuple[tuple[str, float], ...]] = []  # their alternatives, if asked
    finish = "length"
    stopped_by_string = False
    try:
        yield Chunk(prompt_tokens=n_prompt)  # charged even if the stream is stopped early
        for tok, lp, top in gen:
            if model.is_eog(tok):
                finish = "stop"
                break
            n_out += 1
            piece = decoder.decode(llm.detokenize([tok]))
            pending.append((piece, lp))
            if params.top_logprobs:
                pending_top.append(tuple((_token_text(llm, i), a) for i, a in top))
            text += piece
            end = len(text)
            if stops:
                hits = [i for i in (text.find(s, emitted) for s in stops) if i >= 0]
                if hits:
                    text, end = text[:min(hits)], min(hits)
                    finish, stopped_by_string = "stop", True
                else:
                    end -= held_back(text, stops)
            if end > emitted:
                yield Chunk(text=text[emitted:end], logprobs=tuple(pending),
                            top_logprobs=tuple(pending_top),
                            states=dict(states) if states else None)
                pending, pending_top = [], []
                emitted = end
            if stopped_by_string or n_out >= max_new:
                break
        else:  # the token generator ran dry (a stopping criterion, or the context is full)
            finish = "stop" if n_out < max_new else "length"
    except (BackendError, GeneratorExit):
        raise
    except Exception as exc:
        raise BackendError("internal", f"llama.cpp generation failed: {exc}") from exc
    finally:
        gen.close()
    if not stopped_by_string:
        text += decoder.decode(b"", final=True)
        if len(text) > emitted:  # held-back partial stop string, or a trailing byte
            yield Chunk(text=text[emitted:], logprobs=tuple(pending),
                        top_logprobs=tuple(pending_top),
                        states=dict(states) if states else None)
            pending, pending_top = [], []
    yield Chunk(usage=Usage(n_prompt, n_out), finish_reason=finish, logprobs=tuple(pending),
                top_logprobs=tuple(pending_top), states=dict(states) if states else None)


def read_prompt_state(backend: "LlamaCppBackend", messages: Sequence[Message]) -> PromptState:
    """The final-layer hidden state after the prompt of ``messages`` (chat template and
    generation prompt): one prefill in the batched context, one token sampled and dropped. The
    same state the generating decode records as ``prompt`` (:attr:`Chunk.states`), for
    pre-generation routing (:mod:`corea.cascade.route`).

    Raises:
        BackendError: ``unsupported`` without ``hidden_states``; ``bad_request`` for a prompt
            over ``n_ctx``; ``internal`` when llama.cpp returned no state.
    """
    if not backend.hidden_states:
        raise BackendError("unsupported", f"{backend.model_name} reads no hidden states "
                                          "(hidden_states is off)")
    model = backend.load()
    tokens = backend._tokens(model, model.render([m.as_dict() for m in messages]))
    states: dict = {}
    for _ in backend._engine(model).generate(tokens, 1, 0.0, 1.0, 0, states,
                                             fresh=not backend.reuse_prefix):
        pass
    if states.get("prompt") is None:
        raise BackendError("internal", "llama.cpp returned no hidden state after the prompt")
    return PromptState(states["prompt"], len(tokens))
