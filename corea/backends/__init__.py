"""Generation backends behind one small interface (:class:`~corea.backends.base.Backend`).

Use :func:`make_backend` to build the engine a :class:`~corea.config.ModelSettings` names. Heavy
engines (llama.cpp, torch/transformers, vLLM, the OpenAI client) are imported only when chosen.
"""

from __future__ import annotations

from pathlib import Path

from .base import Backend, BackendError, Chunk, GenerationParams, Message, Usage, collect

__all__ = ["Backend", "BackendError", "Chunk", "GenerationParams", "Message", "Usage", "collect",
           "make_backend"]


def make_backend(model: "ModelSettings", cache_dir: Path) -> Backend:  # noqa: F821
    """Build (and lazily load) the backend for one model.

    Args:
        model: the model's settings (:class:`corea.config.ModelSettings`).
        cache_dir: folder for assembled embedded weights and converted checkpoints.

    ``model.isolate``: the engine runs in a supervised worker process
    (:class:`corea.backends.worker.WorkerBackend`, which calls this again in the child).

    Raises:
        ValueError: unknown backend name.
        BackendError: the engine is not installed (kind ``unsupported``).
    """
    if getattr(model, "isolate", False):
        from .worker import WorkerBackend
        return WorkerBackend.for_model(model, cache_dir)
    name = model.backend
    try:
        if name == "llamacpp":
            from .llamacpp import LlamaCppBackend
            return LlamaCppBackend(model, cache_dir)
        if name == "transformers":
            from .transformers_backend import TransformersBackend
            return TransformersBackend(model, cache_dir)
        if name == "openai":
            from .openai_backend import OpenAIBackend
            return OpenAIBackend(model)
        if name == "vllm":
            from .vllm_backend import VLLMBackend
            return VLLMBackend(model, cache_dir)
    except ImportError as exc:  # engine not installed
        raise BackendError("unsupported", f"backend '{name}' needs a package that is not installed: "
                                          f"{exc}. See README, 'Install'.") from exc
    if name == "fake":
        from .fake import FakeBackend
        return FakeBackend(model_name=model.name)
    raise ValueError(f"unknown backend: {name!r}")
