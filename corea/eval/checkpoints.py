"""The SLM's hidden states every ``k`` tokens of its committed solution: an early-exit probe's data.

An early-exit tier (:mod:`corea.cascade.early_exit`) reads its state every ``k`` tokens while it
writes. Under greedy decoding that state equals (up to float rounding) what a prefill of the
SLM's chat plus the first ``t`` tokens of its solution gives, so for a run's committed rows the
states are read from one prefill per item
(:meth:`corea.backends.llamacpp.LlamaCppBackend.completion_states`), without generating again,
into the side file ``<run_dir>/checkpoints.jsonl``::

    {"id": ..., "k": 32, "prompt_tokens": 145, "solution_tokens": 297,
     "positions": [32, 64, ..., 288, 297], "states": ["<base64 float16>", ...]}

``positions`` are completion positions (tokens the SLM had written, see
:mod:`corea.backends.llamacpp_states`): every multiple of ``k`` below the solution's length, and
the length itself (the solution's end, its ``end`` state). ``solution_tokens`` is the solution's
own length (``signals.n_tokens``: without a forced ``Confidence:``/``Answer:`` suffix COREA
appended). A row without an SLM solution gets ``positions: []``.

Resumable like ``samples.jsonl`` (:func:`corea.eval.harness.score_each`: an item with a line is
skipped, a torn last line dropped, the session recorded in ``run.json``); packed by ``corea
pack``; read back by :func:`load_checkpoints`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..prompts import slm_messages
from ..signals.hidden import decode, encode
from .runs import read_items

__all__ = ["CHECKPOINTS_FILE", "DEFAULT_K", "RowItem", "checkpoint_positions",
           "solution_length", "checkpoint_line", "score_checkpoints", "load_checkpoints",
           "attach_checkpoints"]

CHECKPOINTS_FILE = "checkpoints.jsonl"
DEFAULT_K = 32  # tokens between two reads of the state


@dataclass(frozen=True)
class RowItem:
    """A run row as a :func:`~corea.eval.harness.score_each` item (its ``id`` and the row)."""

    id: str
    row: dict


def checkpoint_positions(n: int, k: int) -> list[int]:
    """Every multiple of ``k`` below ``n`` and ``n`` itself (``[]`` for ``n`` < 1).

    Raises:
        ValueError: ``k`` < 1.
    """
    if k < 1:
        raise ValueError("k must be at least 1 token")
    return [*range(k, n, k), n] if n >= 1 else []


def solution_length(row: dict) -> int | None:
    """The SLM solution's own length in tokens (``signals.n_tokens``, else its completion
    tokens); None without a solution."""
    slm = row.get("slm") or {}
    if not slm.get("text"):
        return None
    n = (slm.get("signals") or {}).get("n_tokens")
    return int(n if n is not None else slm.get("completion_tokens") or 0) or None


def checkpoint_line(row: dict, backend, k: int) -> dict:
    """The ``checkpoints.jsonl`` line of one run row (see the module docstring), read by one
    prefill on ``backend`` (a llama.cpp backend with ``completion_states``).

    Raises:
        BackendError: the prefill failed.
    """
    n = solution_length(row)
    line = {"id": row["id"], "k": k, "prompt_tokens": None, "solution_tokens": n,
            "positions": [], "states": []}
    if n is None:
        return line
    slm = row["slm"]
    got = backend.completion_states(slm_messages(row["question"], row.get("choices")),
                                    slm["text"], checkpoint_positions(n, k))
    end = min(n, got.completion_tokens)
    keep = [i for i, t in enumerate(got.positions) if t <= end]
    line.update(prompt_tokens=got.prompt_tokens, solution_tokens=end,
                positions=[got.positions[i] for i in keep],
                states=[encode(got.states[i]) for i in keep])
    return line


def score_checkpoints(rows: Sequence[dict], backend, run_dir: str | os.PathLike,
                      k: int = DEFAULT_K, progress: bool = True) -> int:
    """Append a ``checkpoints.jsonl`` line for every row without one yet (one prefill each, one
    at a time; :func:`~corea.eval.harness.score_each`).

    Returns:
        the number of rows read now.

    Raises:
        RuntimeError: another process is writing the run folder.
    """
    from .harness import score_each

    items = [RowItem(str(r["id"]), r) for r in rows]
    return score_each(items, lambda it: checkpoint_line(it.row, backend, k), run_dir,
                      CHECKPOINTS_FILE, 1, progress)


def load_checkpoints(run_dir: str | os.PathLike) -> dict[str, dict]:
    """``{item id: {"k", "prompt_tokens", "solution_tokens", "positions": [int],
    "states": float32 array (n positions, n_embd)}}`` from ``checkpoints.jsonl`` (or its packed
    ``.gz``); empty when there is none."""
    out = {}
    for line in read_items(Path(run_dir) / CHECKPOINTS_FILE, repair=False):
        states = [decode(s) for s in line.get("states") or []]
        out[str(line["id"])] = {
            "k": line.get("k"), "prompt_tokens": line.get("prompt_tokens"),
            "solution_tokens": line.get("solution_tokens"),
            "positions": [int(t) for t in line.get("positions") or []],
            "states": np.stack(states) if states else np.zeros((0, 0), dtype=np.float32)}
    return out


def attach_checkpoints(rows: Sequence[dict], run_dir: str | os.PathLike) -> list[dict]:
    """``rows`` with their checkpoint states as ``slm_checkpoints`` (a :func:`load_checkpoints`
    value; rows without a line are returned unchanged)."""
    cps = load_checkpoints(run_dir)
    return [{**r, "slm_checkpoints": cps[str(r["id"])]} if str(r["id"]) in cps else r
            for r in rows]
