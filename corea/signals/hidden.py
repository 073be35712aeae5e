"""Hidden-state vectors in run files: a compact, exact-enough text encoding.

The SLM's final-layer hidden states (:mod:`corea.backends.llamacpp_batch`, shape ``(n_embd,)``,
896 floats for Qwen2.5-0.5B) are stored in evaluation rows as base64 of little-endian float16:
2 bytes per dimension (about 2.4 kB of text per state). float16 keeps ~3 significant digits, far
below what a linear probe's decision depends on.
"""

from __future__ import annotations

import base64
from typing import Mapping

import numpy as np


def encode(vec: np.ndarray) -> str:
    """A 1-D float array as base64 float16 text.

    Raises:
        ValueError: not a 1-D array, or a non-finite value.
    """
    arr = np.asarray(vec, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"a hidden state is 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("a hidden state has a non-finite value")
    return base64.b64encode(arr.astype("<f2").tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    """The float32 array of :func:`encode`'s text (shape ``(n_embd,)``)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)


def encode_all(states: Mapping[str, np.ndarray] | None) -> dict[str, str] | None:
    """``{"prompt": vec, "end": vec}`` → the same keys with :func:`encode`'d values (``None``
    when there are none)."""
    if not states:
        return None
    return {k: encode(v) for k, v in states.items()}
