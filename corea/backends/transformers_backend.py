"""Hugging Face ``transformers`` backend: any causal LM (hub id, local folder, or the embedded GGUF
weights converted once to safetensors by :func:`corea.backends.weights.safetensors_checkpoint`).

Models load lazily on the first call and are shared by every backend instance of the process.
Streaming runs ``model.generate`` in a worker thread feeding a ``TextIteratorStreamer``; closing the
stream early sets a flag that a stopping criterion checks after every token, so the worker ends
within one decoding step. :meth:`TransformersBackend.generate_batch` runs left-padded batches for
offline evaluation.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, StoppingCriteria,
                          StoppingCriteriaList, TextIteratorStreamer)

from .weights import safetensors_checkpoint
from ..prompts import CHATML_TEMPLATE
from .base import BackendError, Chunk, GenerationParams, Message, Usage, held_back

log = logging.getLogger(__name__)



@dataclass
class _LoadedModel:
    model: "torch.nn.Module"
    tokenizer: object
    device: torch.device
    eos_ids: frozenset[int]
    pad_id: int
    load_s: float


_models: dict[tuple[str, str], _LoadedModel] = {}
_load_locks: dict[tuple[str, str], threading.Lock] = {}
_registry_lock = threading.Lock()
_seed_lock = threading.Lock()


def _token_logprobs(tokenizer, tokens: list[int], logits) -> tuple[tuple[str, float], ...]:
    """``(token text, natural-log probability)`` of each generated token, from the raw per-step
    logits ``generate(output_logits=True)`` returns (the model's distribution at temperature 1)."""
    pairs = []
    for t, step in zip(tokens, logits):
        lp = torch.log_softmax(step[0].float(), dim=-1)[t].item()
        pairs.append((tokenizer.decode([t], skip_special_tokens=True), lp))
    return tuple(pairs)


def _pick_device() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda"), dtype
    return torch.device("cpu"), torch.float32


def _load(checkpoint: str) -> _LoadedModel:
    device, dtype = _pick_device()
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    except OSError as exc:  # not found locally / on the hub
        raise BackendError("model_missing", f"transformers could not load {checkpoint!r}: {exc}") \
            from exc
    model.to(device).eval()
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    load_s = time.perf_counter() - t0
    log.info("transformers loaded %s on %s (%s) in %.1f s", checkpoint, device, dtype, load_s)
    return _LoadedModel(model, tokenizer, device, eos_ids, pad, load_s)


def _get_model(checkpoint: str) -> _LoadedModel:
    key = (checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    with _registry_lock:
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _models:
            _models[key] = _load(checkpoint)
        return _models[key]


class _FlagCriteria(StoppingCriteria):
    """Ends generation once ``flag`` is set (the consumer closed the stream or saw a stop string)."""

    def __init__(self, flag: threading.Event):
        self.flag = flag

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class TransformersBackend:
    """A causal LM run by ``transformers`` (CPU float32, or GPU bf16/fp16 when CUDA is there).

    Args:
        settings: the model's :class:`~corea.config.ModelSettings`; ``model`` is a hub id, a local
            folder, a ``.gguf`` file or ``embedded:slm`` / ``embedded:llm`` (GGUFs are converted
            once into ``<cache_dir>/hf/``). ``n_threads`` sets torch's CPU threads.
        cache_dir: cache root for embedded weights and converted checkpoints.
    """

    supports_continuation = True

    def __init__(self, settings, cache_dir: Path):
        self.settings = settings
        self.model_name: str = settings.name
        self.cache_dir = Path(cache_dir)
        if settings.n_threads:
            torch.set_num_threads(settings.n_threads)

    # ------------------------------------------------------------------------------ loading
    def load(self) -> _LoadedModel:
        """Load (once per process; converting a GGUF once per cache) and return the model."""
        try:
            checkpoint = safetensors_checkpoint(self.settings.model, self.cache_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise BackendError("model_missing", str(exc)) from exc
        return _get_model(checkpoint)

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The raw prompt for ``messages``: chat template + generation prompt."""
        return self._render(self.load(), messages)

    @staticmethod
    def _render(lm: _LoadedModel, messages: Sequence[Message]) -> str:
        return lm.tokenizer.apply_chat_template([m.as_dict() for m in messages],
                                                add_generation_prompt=True, tokenize=False)

    def _gen_kwargs(self, lm: _LoadedModel, params: GenerationParams, max_new: int) -> dict:
        kw: dict = dict(max_new_tokens=max_new, pad_token_id=lm.pad_id,
                        eos_token_id=sorted(lm.eos_ids) or None)
        if params.temperature <= 0.0:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        return kw

    @staticmethod
    def _seed(params: GenerationParams) -> None:
        if params.temperature > 0.0:
            torch.manual_seed(params.seed if params.seed is not None else random.getrandbits(31))

    # ------------------------------------------------------------------------------ streaming
    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        lm = self.load()
        return self._stream(lm, self._render(lm, messages), params)

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        lm = self.load()
        return self._stream(lm, self._render(lm, messages) + assistant_prefix, params)

    def _stream(self, lm: _LoadedModel, prompt: str, params: GenerationParams) -> Iterator[Chunk]:
        tok = lm.tokenizer
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)
        n_prompt = int(enc["input_ids"].shape[1])
        stops = [s for s in params.stop if s]
        flag = threading.Event()
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        result: dict = {}

        def work() -> None:
            try:
                with torch.inference_mode():
                    result["out"] = lm.model.generate(
                        **enc, streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_FlagCriteria(flag)]),
                        output_logits=True, return_dict_in_generate=True,
                        **self._gen_kwargs(lm, params, params.max_new_tokens))
            except BaseException as exc:  # surfaced to the consumer below
                result["error"] = exc
                streamer.end()

        def chunks() -> Iterator[Chunk]:
            with _seed_lock:
                self._seed(params)
                thread = threading.Thread(target=work, name="corea-hf-generate", daemon=True)
                thread.start()
            text, emitted, stopped_by_string = "", 0, False
            try:
                for piece in streamer:
                    if stopped_by_string:
                        continue  # drain until the worker notices the flag
                    text += piece
                    end = len(text)
                    if stops:
                        hits = [i for i in (text.find(s, emitted) for s in stops) if i >= 0]
                        if hits:
                            text, end, stopped_by_string = text[:min(hits)], min(hits), True
                            flag.set()
                        else:
                            end -= held_back(text, stops)
                    if end > emitted:
                        yield Chunk(text=text[emitted:end])
                        emitted = end
            finally:
                flag.set()  # no-op after a normal end; stops the worker on an early close
                thread.join()
            if "error" in result:
                raise BackendError("internal", f"transformers generation failed: "
                                               f"{result['error']}") from result["error"]
            if not stopped_by_string and len(text) > emitted:
                yield Chunk(text=text[emitted:])
            out = result["out"]
            new = out.sequences[0, n_prompt:].tolist()
            n_out, hit_eos = len(new), False
            for i, t in enumerate(new):
                if t in lm.eos_ids:
                    n_out, hit_eos = i, True
                    break
            finish = "stop" if hit_eos or stopped_by_string or n_out < params.max_new_tokens \
                else "length"
            yield Chunk(usage=Usage(n_prompt, n_out), finish_reason=finish,
                        logprobs=_token_logprobs(tok, new[:n_out], out.logits))

        return chunks()

    # ------------------------------------------------------------------------------ batches
    def generate_batch(self, conversations: Sequence[Sequence[Message]], params: GenerationParams,
                       assistant_prefixes: Sequence[str] | None = None,
                       with_logprobs: bool = False) -> list[tuple]:
        """Generate replies for many conversations at once (left-padded batch; for evaluation).

        Args:
            conversations: one message list per row.
            params: shared generation parameters (``stop`` strings end a row early).
            assistant_prefixes: optional per-row assistant prefixes to continue (as
                :meth:`continue_chat`).
            with_logprobs: also return each row's ``(token, logprob)`` pairs.

        Returns:
            ``(text, usage, finish_reason)`` per row, in order (plus the pairs as a fourth item
            with ``with_logprobs``).
        """
        if not conversations:
            return []
        lm = self.load()
        tok = lm.tokenizer
        prompts = [self._render(lm, msgs) for msgs in conversations]
        if assistant_prefixes is not None:
            prompts = [p + a for p, a in zip(prompts, assistant_prefixes, strict=True)]
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left",
                  add_special_tokens=False).to(lm.device)
        stops = [s for s in params.stop if s]
        kw = self._gen_kwargs(lm, params, params.max_new_tokens)
        if stops:
            kw.update(stop_strings=stops, tokenizer=tok)
        with _seed_lock:
            self._seed(params)
        with torch.inference_mode():
            res = lm.model.generate(**enc, **kw, output_logits=with_logprobs,
                                    return_dict_in_generate=True)
        out = res.sequences
        width = enc["input_ids"].shape[1]
        n_prompts = enc["attention_mask"].sum(dim=1).tolist()
        ends = lm.eos_ids | {lm.pad_id}
        rows: list[tuple[str, Usage, str]] = []
        for r, n_prompt in enumerate(n_prompts):
            new = out[r, width:].tolist()
            n_out, finish = len(new), "length"
            for i, t in enumerate(new):
                if t in ends:
                    n_out, finish = i, "stop"
                    break
            text = tok.decode(new[:n_out], skip_special_tokens=True)
            hits = [i for i in (text.find(s) for s in stops) if i >= 0]
            if hits:
                text, finish = text[:min(hits)], "stop"
            elif finish == "length" and n_out < params.max_new_tokens:
                finish = "stop"
            row = (text, Usage(int(n_prompt), n_out), finish)
            if with_logprobs:
                row += (_token_logprobs(tok, new[:n_out], [step[r:r + 1] for step in res.logits]),)
            rows.append(row)
        return rows
