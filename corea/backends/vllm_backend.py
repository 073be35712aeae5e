"""In-process vLLM backend for a CUDA GPU (optional: ``pip install -r requirements-gpu.txt``).

``vllm`` is imported only when this backend is built; without it, construction raises
``ImportError`` and :func:`corea.backends.make_backend` turns that into
``BackendError("unsupported", ...)``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import BackendError, Chunk, GenerationParams, Message, Usage


class VLLMBackend:
    """A Hugging Face model (id or local folder) run by vLLM's offline ``LLM`` engine.

    Messages are rendered to a prompt with the tokenizer's chat template. vLLM's offline API is
    not token-streaming: :meth:`stream_chat` and :meth:`continue_chat` generate the whole reply
    first, then yield it as ONE text chunk followed by the final chunk carrying usage and finish
    reason (early ``close()`` therefore cannot stop a generation already running). For evaluation
    over many questions use :meth:`generate_batch`, which lets vLLM batch all prompts at once.

    Args:
        settings: the model's :class:`~corea.config.ModelSettings` (``model`` = HF id or folder).
        cache_dir: COREA's cache folder (kept for symmetry; vLLM uses the Hugging Face cache).
        **llm_kwargs: extra arguments for ``vllm.LLM`` (e.g. ``gpu_memory_utilization``,
            ``max_model_len``, ``dtype``).

    Raises:
        ImportError: ``vllm`` is not installed.
        BackendError: kind ``unsupported`` for the embedded GGUF weights (``embedded:*``).
    """

    supports_continuation = True

    def __init__(self, settings: Any, cache_dir: Path | str | None = None, **llm_kwargs: Any):
        import vllm  # noqa: PLC0415 — lazy: optional GPU dependency

        self._vllm = vllm
        self.settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.model_name: str = settings.name
        if str(settings.model).startswith("embedded:"):
            raise BackendError("unsupported", f"the vllm backend cannot run the embedded weights "
                                              f"'{settings.model}'; set model to a Hugging Face id "
                                              f"or a local model folder")
        kwargs: dict[str, Any] = {"model": settings.model, "seed": 0}
        kwargs.update(llm_kwargs)
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._lock = threading.Lock()  # LLM.generate is not meant for concurrent callers

    # -- prompt rendering ---------------------------------------------------------------------

    def render(self, messages: Sequence[Message], assistant_prefix: str | None = None) -> str:
        """The prompt text for ``messages``, ending with the assistant turn's opening
        (plus ``assistant_prefix`` when continuing a reply)."""
        prompt = self.tokenizer.apply_chat_template([m.as_dict() for m in messages],
                                                    tokenize=False, add_generation_prompt=True)
        return prompt + (assistant_prefix or "")

    def _sampling(self, params: GenerationParams):
        # logprobs=0: vLLM returns the sampled token's log-probability at each step (the
        # token-probability signals, corea.signals.tokens)
        return self._vllm.SamplingParams(max_tokens=params.max_new_tokens,
                                         temperature=params.temperature, top_p=params.top_p,
                                         seed=params.seed, stop=list(params.stop) or None,
                                         logprobs=0)

    @staticmethod
    def _logprobs(out: Any) -> tuple[tuple[str, float], ...]:
        """``(token text, logprob)`` of each generated token (``CompletionOutput.logprobs``: per
        step a dict token id → ``Logprob(logprob, rank, decoded_token)``); () when absent."""
        comp = out.outputs[0]
        steps = getattr(comp, "logprobs", None)
        if not steps:
            return ()
        pairs = []
        for tok, d in zip(comp.token_ids or (), steps):
            lp = (d or {}).get(tok)
            if lp is None:
                return ()
            pairs.append((str(getattr(lp, "decoded_token", "") or ""), float(lp.logprob)))
        return tuple(pairs)

    @staticmethod
    def _result(out: Any) -> tuple[str, Usage, str]:
        comp = out.outputs[0]
        usage = Usage(len(out.prompt_token_ids or ()), len(comp.token_ids or ()))
        return comp.text, usage, comp.finish_reason or "stop"

    def _raw(self, prompts: list[str], params: GenerationParams) -> list:
        try:
            with self._lock:
                return self.llm.generate(prompts, self._sampling(params), use_tqdm=False)
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 — engine failures surface as BackendError
            raise BackendError("internal", f"vLLM generation failed for model "
                                           f"'{self.settings.model}': {exc}") from exc

    def _generate(self, prompts: list[str], params: GenerationParams) -> list[tuple[str, Usage, str]]:
        return [self._result(o) for o in self._raw(prompts, params)]

    # -- Backend protocol ---------------------------------------------------------------------

    def _one(self, prompt: str, params: GenerationParams) -> Iterator[Chunk]:
        out, = self._raw([prompt], params)
        text, usage, finish = self._result(out)
        lps = self._logprobs(out)
        if text or lps:
            yield Chunk(text=text, logprobs=lps)
        yield Chunk(usage=usage, finish_reason=finish)

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        """Generate the reply (whole, not token-streamed), then yield it and the usage chunk."""
        return self._one(self.render(messages), params)

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        """Continue the assistant reply after ``assistant_prefix`` (counted as prompt tokens)."""
        return self._one(self.render(messages, assistant_prefix), params)

    def generate_batch(self, batch: Sequence[Sequence[Message]], params: GenerationParams,
                       assistant_prefixes: Sequence[str] | None = None,
                       with_logprobs: bool = False) -> list[tuple]:
        """Answer many chats in one batched vLLM call (vLLM's offline batched generation).

        Args:
            batch: one message list per chat.
            params: shared generation parameters.
            assistant_prefixes: optional per-chat assistant prefixes to continue.
            with_logprobs: also return each chat's ``(token, logprob)`` pairs.

        Returns:
            ``(text, usage, finish_reason)`` per chat, in input order (plus the pairs as a fourth
            item with ``with_logprobs``).
        """
        if not batch:
            return []
        prefixes = list(assistant_prefixes) if assistant_prefixes is not None else [None] * len(batch)
        outs = self._raw([self.render(m, p) for m, p in zip(batch, prefixes, strict=True)], params)
        rows = [self._result(o) for o in outs]
        if with_logprobs:
            rows = [r + (self._logprobs(o),) for r, o in zip(rows, outs)]
        return rows
