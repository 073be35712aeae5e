"""N-tier evaluation runs: score every tier once per item into a run folder, resumably.

An N-tier run (``settings.tiers`` with three tiers or more) is what ``corea evaluate`` makes with
such a configuration. For every item each tier runs once (:meth:`corea.cascade.Cascade.tier_output`:
the same prompts, parsing and forced suffix as a live run), independently of any τ, and is graded
with :func:`corea.grading.grade`. One line per item goes to ``tiers.jsonl``, appended and fsynced
through :func:`corea.eval.harness.score_each`, so an interrupted run keeps every finished item and
the same command resumes it:

.. code-block:: json

    {"id": "...", "dataset": "...", "question": "...", "choices": null, "gold": "...",
     "tiers": [{"model": "...", "output": {...ModelOutput...}, "correct": true,
                "grade": "correct", "grade_note": "...", "cost_usd": 1.2e-05,
                "confidence": 0.8, "signal": "verbal", "usable": true}, ...],
     "wall_s": 3.2, "done_at": "..."}

``confidence`` is the tier's deciding confidence (the first tier's stated one; a middle tier's
per its ``confidence_source``: stated, or its token probability); the last tier has none.
``usable``: the output can be kept (no error, not cut off, an answer parsed).
:func:`corea.eval.tiers.load_tier_items` reads the rows back as typed
:class:`corea.eval.tiers.TierItem`; any τ vector is then evaluated without generating again.

The same folder also gets the **two-tier view** of the run, the first tier against the last, in
``items.jsonl``: its rows are derived from the tiers rows (no second generation) and have the
same fields as a two-tier run's, so the summary, the report and the threshold explorer read it as
they read any run.

``run.json`` records the configuration: the two-tier identity (:func:`corea.eval.harness.prepare_run`)
plus every tier (model, budget, sampling, price, deciding signal; no τ, which is swept), so a
resumed run with other tiers is refused (:class:`corea.eval.harness.RunMismatch`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Sequence

from .. import policy
from ..signals.tokens import TOKPROB, token_probability
from ..cascade import Cascade
from ..datasets import Item
from .harness import (LLM_DROP, EvaluationAborted, close_session, fatal_error, grade_output,
                      output_dict, prepare_run, score_each)
from .runs import (ITEMS_FILE, RUN_FILE, TIERS_FILE, append_json_line, now, read_items, run_lock,
                   unpack_run, write_json)

__all__ = ["score_tier_row", "two_tier_row", "evaluate_tiers", "tier_signals"]


def tier_signals(cascade: Cascade) -> list[str]:
    """The deciding signal of every tier but the last: ``verbal`` for the first (its stated
    confidence), each middle tier's ``confidence_source`` (``verbal`` / ``tokprob``)."""
    sources = cascade.settings.tier_sources()
    n = cascade.n_tiers
    mid = sources if len(sources) == n - 2 else ["verbal"] * (n - 2)
    return ["verbal", *mid]


def score_tier_row(item: Item, cascade: Cascade, cancel: threading.Event | None = None) -> dict:
    """Run and grade every tier of ``cascade`` on ``item``; returns its ``tiers.jsonl`` row
    (module docstring).

    Raises:
        EvaluationAborted: a tier failed with a configuration fault
            (:data:`corea.eval.harness.FATAL_ERROR_KINDS`).
    """
    t0 = time.perf_counter()
    choices = list(item.choices) if item.choices else None
    signals = tier_signals(cascade)
    last = cascade.n_tiers - 1
    tiers = []
    for k in range(cascade.n_tiers):
        out = cascade.tier_output(k, item.question, choices, cancel)
        if (err := fatal_error(out)) is not None:
            raise EvaluationAborted(f"tier {k + 1} ({out.model}) failed on item {item.id}: {err}")
        g = grade_output(out, item)
        signal = conf = None
        if k < last:
            signal, conf = signals[k], out.confidence
            if signal == TOKPROB:
                prob = token_probability(out)
                if prob is not None:  # as the live cascade: no token probabilities -> stated
                    conf = prob
                else:
                    signal = "verbal"
        usable = out.error is None and policy.unusable(out.answer, out.finish_reason) is None
        tiers.append({"model": out.model,
                      "output": output_dict(out, LLM_DROP if k == last else ()),
                      "correct": g.correct, "grade": g.status, "grade_note": g.note,
                      "cost_usd": out.cost_usd, "confidence": conf, "signal": signal,
                      "usable": usable})
    return {"id": item.id, "dataset": item.dataset, "question": item.question,
            "choices": choices, "gold": item.answer, "tiers": tiers,
            "wall_s": time.perf_counter() - t0, "done_at": now()}


def two_tier_row(row: dict) -> dict:
    """The ``items.jsonl`` row (the fields of :func:`corea.eval.harness.score_item`) of a
    ``tiers.jsonl`` row: its first tier as the SLM, its last as the LLM."""
    first, last = row["tiers"][0], row["tiers"][-1]
    return {
        "id": row["id"], "dataset": row.get("dataset"), "question": row.get("question"),
        "choices": row.get("choices"), "gold": row.get("gold"),
        "slm": first["output"], "llm": last["output"],
        "slm_correct": first["correct"], "slm_grade": first["grade"],
        "slm_grade_note": first["grade_note"],
        "llm_correct": last["correct"], "llm_grade": last["grade"],
        "llm_grade_note": last["grade_note"],
        "wall_s": row.get("wall_s"), "done_at": row.get("done_at"),
    }


def _sync_items(run_dir: Path) -> int:
    """Append to ``items.jsonl`` the two-tier row of every tiers row it lacks; returns how many."""
    items_path = run_dir / ITEMS_FILE
    items_path.touch()
    have = {str(r["id"]) for r in read_items(items_path, repair=True)}
    n = 0
    for row in read_items(run_dir / TIERS_FILE, repair=False):
        if str(row["id"]) not in have:
            append_json_line(items_path, two_tier_row(row))
            have.add(str(row["id"]))
            n += 1
    return n


def evaluate_tiers(items: Sequence[Item], cascade: Cascade, run_dir: str | os.PathLike,
                   workers: int = 1, progress: bool = True, *, run_info: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Score every tier of ``cascade`` on every item not yet in ``<run_dir>/tiers.jsonl``
    (:func:`score_tier_row` through :func:`corea.eval.harness.score_each`: fsynced line by
    line, ``workers`` items in flight), then bring ``items.jsonl`` (the first tier against the
    last) up to date. Ctrl-C keeps the finished items; rerun to resume.

    Args:
        items: the benchmark items (unique ids).
        cascade: a cascade of three tiers or more (``middle`` backends).
        run_dir: the run folder (created if missing).
        workers: items scored concurrently.
        progress: a tqdm bar on stderr.
        run_info: ``dataset``, ``split``, ``limit``, ``seed`` to record and check.
        overwrite: discard the folder's results first.

    Returns:
        the run folder.

    Raises:
        RunMismatch: the folder holds a run of another configuration (other tiers included).
        EvaluationAborted: a tier fails with a configuration fault; finished items are kept.
        ValueError: fewer than three tiers, duplicate ids or ``workers`` < 1.
        RuntimeError: another process writes the folder.
    """
    if cascade.n_tiers < 3:
        raise ValueError("evaluate_tiers needs three tiers or more; a two-tier cascade is "
                         "evaluated by corea.eval.harness.evaluate")
    if workers < 1:
        raise ValueError("workers must be >= 1")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate item ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"dataset": items[0].dataset if items else None, "split": None, "limit": None,
            "seed": None, **(run_info or {})}
    with run_lock(run_dir):
        unpack_run(run_dir)
        if overwrite:
            (run_dir / TIERS_FILE).unlink(missing_ok=True)
            (run_dir / (TIERS_FILE + ".gz")).unlink(missing_ok=True)
        record = prepare_run(run_dir, cascade, info, overwrite)
        record["tiers"] = [t["name"] for t in record["identity"]["tiers"]]
        tiers_path = run_dir / TIERS_FILE
        tiers_path.touch()
        before = {str(r["id"]) for r in read_items(tiers_path, repair=True)}
        n_done = sum(it.id in before for it in items)
        session = {"started_at": now(), "kind": "tiers", "workers": workers,
                   "n_todo": len(items) - n_done, "n_already_done": n_done, "n_generated": 0,
                   "elapsed_s": 0.0, "items_per_minute": None, "status": "running"}
        record["sessions"].append(session)
        write_json(run_dir / RUN_FILE, record)  # a killed process still leaves its session
        cancel = threading.Event()
        t0 = time.perf_counter()
        status = "interrupted"
        try:
            score_each(items, lambda it: score_tier_row(it, cascade, cancel), run_dir,
                       TIERS_FILE, workers, progress, cancel, locked=True)
            status = "complete"
        except EvaluationAborted:
            status = "aborted"
            raise
        finally:
            elapsed = time.perf_counter() - t0
            n = len({str(r["id"]) for r in read_items(tiers_path, repair=False)} - before)
            _sync_items(run_dir)
            close_session(record, session, status, elapsed, n)
            write_json(run_dir / RUN_FILE, record)
    return run_dir
