"""Sampled solutions per item: the input of self-consistency and of group-accuracy targets.

For each item, ``k`` extra solutions of every deciding tier (each tier but the last; with two
tiers, the SLM) are drawn at a temperature (same prompt, parsing and forced suffix as the greedy
one, :meth:`corea.cascade.Cascade.tier_output` with sampled
:class:`~corea.types.GenerationParams`), graded, and appended as one line of
``<run_dir>/samples.jsonl``::

    {"id": ..., "k": 4, "temperature": 0.7, "top_p": 0.95,
     "samples": [{"text", "answer", "confidence", "confidence_method", "correct", "grade",
                  "prompt_tokens", "completion_tokens", "finish_reason", "signals"}, ...],
     "by_tier": {"1": [...]}}

``samples`` are the first tier's; ``by_tier`` (only with three tiers or more) each middle tier's,
keyed by its index. :func:`corea.eval.runs.load_results` puts them on the item's row
(``slm_samples``) and on each tier's record (``samples``).

Resumable like ``items.jsonl``: an item with a line is skipped, a torn last line is dropped. Each
sample's seed is derived from the item id and the sample index, so a rerun draws the same samples
(on the same engine and threads). Self-consistency (Wang et al., 2023) is then the share of samples
whose answer agrees with the greedy answer (:func:`corea.signals.consistency.agreement`); its
extra tokens are charged.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from ..cascade import Cascade
from ..datasets import Item
from ..grading import grade
from ..types import GenerationParams
from .harness import score_each
from .runs import SAMPLES_FILE, read_items

_KEEP = ("text", "answer", "confidence", "confidence_method", "prompt_tokens",
         "completion_tokens", "finish_reason", "signals")


def sample_seed(item_id: str, j: int) -> int:
    """A stable 31-bit seed for sample ``j`` of item ``item_id``."""
    h = hashlib.sha256(f"{item_id}\0{j}".encode("utf-8")).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def sample_item(item: Item, cascade: Cascade, k: int, temperature: float, top_p: float,
                cancel: threading.Event | None = None, parallel: int = 1) -> dict:
    """``k`` sampled solutions of one item by every deciding tier (all tiers but the last),
    graded; the ``samples.jsonl`` row: the first tier's in ``samples``, each middle tier's in
    ``by_tier`` (``{"1": [...], ...}``, keyed by the tier's index; absent with two tiers).

    ``parallel``: how many of the ``k`` are generated at once (a batched engine decodes them
    together; the seeds, so the samples, do not depend on it)."""
    choices = list(item.choices) if item.choices else None
    models = cascade.settings.tier_models()

    def draw(tier: int, j: int) -> dict:
        ms = models[tier] if len(models) == cascade.n_tiers else cascade.settings.slm
        params = GenerationParams(max_new_tokens=ms.max_new_tokens, temperature=temperature,
                                  top_p=top_p, seed=sample_seed(item.id, j))
        o = cascade.tier_output(tier, item.question, choices, cancel, params=params)
        g = grade(o.answer, item.answer, item.choices) if o.answer else None
        row = {key: getattr(o, key) for key in _KEEP}
        row.update(correct=g.correct if g else False, grade=g.status if g else "no_prediction",
                   error=o.error)
        return row

    def tier_samples(tier: int) -> list[dict]:
        if parallel > 1 and k > 1:
            with ThreadPoolExecutor(max_workers=min(parallel, k)) as pool:
                return list(pool.map(lambda j: draw(tier, j), range(k)))
        return [draw(tier, j) for j in range(k)]

    out = {"id": item.id, "k": k, "temperature": temperature, "top_p": top_p,
           "samples": tier_samples(0)}
    if cascade.n_tiers > 2:
        out["by_tier"] = {str(t): tier_samples(t) for t in range(1, cascade.n_tiers - 1)}
    return out


def score_samples(items: Sequence[Item], cascade: Cascade, run_dir: str | os.PathLike,
                  k: int = 4, temperature: float = 0.7, top_p: float = 0.95, workers: int = 1,
                  progress: bool = True) -> int:
    """Append ``k`` sampled solutions for every item of ``items`` without a line yet in
    ``<run_dir>/samples.jsonl`` (one fsynced line per item, :func:`~corea.eval.harness.score_each`).

    ``workers`` generations are in flight: ``workers // k`` items with their ``k`` samples drawn
    together (when ``workers`` >= ``k``), so an item's line comes ``k`` times sooner than drawing
    its samples one after another, and an interrupted run loses at most the items in flight.

    Returns:
        the number of items sampled now.

    Raises:
        ValueError: ``k`` < 1 or ``temperature`` <= 0.
        RuntimeError: another process is writing the run folder.
    """
    if k < 1 or temperature <= 0:
        raise ValueError("samples need k >= 1 and a temperature > 0")
    cancel = threading.Event()

    inner = min(k, workers) if workers > 1 else 1

    def one(it: Item) -> dict:
        return sample_item(it, cascade, k, temperature, top_p, cancel, parallel=inner)

    return score_each(items, one, run_dir, SAMPLES_FILE, max(1, workers // inner), progress,
                      cancel)


def load_samples(run_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """``{item id: [sample, ...]}`` from ``samples.jsonl`` (empty when there is none)."""
    return {str(r["id"]): r.get("samples") or []
            for r in read_items(Path(run_dir) / SAMPLES_FILE, repair=False)}
