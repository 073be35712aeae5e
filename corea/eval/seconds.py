"""Seconds of a scored run against the large model alone: measured, and from a time model.

Two estimates of one quantity, side by side in the run summary (:mod:`corea.eval.summary`),
because neither is the whole truth:

* **measured**: each output's recorded ``latency_s`` (request to last token) on the machine the
  run recorded (``run.json``'s ``machine``, :func:`corea.eval.runs.machine_info`). Runs
  generated with several sequences in flight (``--workers``) share the CPU, so these seconds
  are longer than one question alone would take.
* **time model**: a :class:`corea.timing.TimeModel` (seconds per call from token counts, fit
  on one machine by ``bench/time_model.py``) applied to each output's tokens; its machine and
  source are recorded beside the numbers.

Per item: a kept item takes the SLM's call, a deferred one the SLM's and the LLM's, LLM-only the
LLM's (:func:`corea.eval.routing.item_seconds`, the held-out report's accounting).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..timing import TimeModel
from .routing import ItemSeconds, item_seconds
from .scored import ScoredSet

__all__ = ["measured_seconds", "seconds_at", "seconds_summary"]


def measured_seconds(rows: Sequence[dict]) -> ItemSeconds:
    """Per row the recorded ``latency_s`` of the SLM (kept), SLM + LLM (deferred) and LLM."""
    slm = np.array([float((r.get("slm") or {}).get("latency_s") or 0.0) for r in rows])
    llm = np.array([float((r.get("llm") or {}).get("latency_s") or 0.0) for r in rows])
    return ItemSeconds(slm, slm + llm, llm)


def seconds_at(scored: ScoredSet, secs: ItemSeconds, tau: float) -> dict:
    """The cascade at ``tau`` in seconds: ``seconds_per_item``, ``slm_only_s_per_item``,
    ``llm_only_s_per_item`` and ``time_fraction_of_llm_only`` (None when LLM-only took 0 s)."""
    d = scored.defer(tau)
    n = max(1, len(d))
    spent, alone = float(np.where(d, secs.deferred, secs.kept).sum()), float(secs.llm.sum())
    return {"seconds_per_item": spent / n, "slm_only_s_per_item": float(secs.kept.sum()) / n,
            "llm_only_s_per_item": alone / n,
            "time_fraction_of_llm_only": spent / alone if alone > 0 else None}


def seconds_summary(rows: Sequence[dict], scored: ScoredSet, tau: float, run: dict | None,
                    tm: TimeModel | None) -> dict:
    """``{"measured": {..., "machine"}, "time_model": {..., "machine", "source"} or None}`` at
    ``tau`` over gradable ``rows`` (the rows ``scored`` was built from, same order)."""
    out = {"threshold": float(tau),
           "measured": {**seconds_at(scored, measured_seconds(rows), tau),
                        "machine": (run or {}).get("machine")},
           "time_model": None}
    if tm is not None:
        models = {(r.get(k) or {}).get("model") for r in rows for k in ("slm", "llm")} - {None}
        est = item_seconds(rows, tm, lambda r: (0, 0), before=False)
        out["time_model"] = {**seconds_at(scored, est, tau), "machine": tm.machine,
                             "source": tm.source, "missing_models": tm.missing(sorted(models))}
    return out


def seconds_line(block: dict | None) -> str:
    """One table cell: the cascade's seconds per item against LLM-only, measured and estimated."""
    if not block:
        return "–"

    def one(b: dict | None, what: str) -> str:
        if not b or b.get("time_fraction_of_llm_only") is None:
            return f"{what}: –"
        return (f"{what}: {b['seconds_per_item']:.1f} s/item vs LLM-only "
                f"{b['llm_only_s_per_item']:.1f} s ({b['time_fraction_of_llm_only'] * 100:.0f}%)")

    cpu = (block.get("measured") or {}).get("machine") or {}
    where = f" on {cpu.get('processor') or '?'}, {cpu.get('cpu_count') or '?'} CPUs" if cpu else ""
    return (one(block.get("measured"), "measured" + where + " (other items in flight)") + "; "
            + one(block.get("time_model"), "time model"))
