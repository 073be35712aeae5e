"""Hugging Face ZeroGPU support: ``@gpu`` is ``spaces.GPU`` on a ZeroGPU Space, a no-op elsewhere.

On ZeroGPU hardware a GPU is attached only while a function decorated with ``spaces.GPU`` runs
(generators included). The ``spaces`` package exists on Spaces; locally it is usually absent, and
then the function is returned unchanged.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def gpu(fn: F | None = None, *, duration: int = 120):
    """Decorate GPU work for ZeroGPU; ``duration`` is the longest expected call (seconds)."""

    def wrap(f: F) -> F:
        if not os.environ.get("SPACES_ZERO_GPU"):
            return f
        try:
            import spaces  # type: ignore[import-not-found]
        except ImportError:
            return f
        return spaces.GPU(duration=duration)(f)

    return wrap(fn) if fn is not None else wrap
