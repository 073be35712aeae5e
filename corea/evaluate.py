"""Benchmark evaluation of the cascade: score once, sweep many.

For every item both models are run once, **independently of any threshold**: the SLM (same prompt,
parsing and forced suffix as the live cascade, :meth:`corea.cascade.Cascade.slm_output`) and then
the LLM (:meth:`corea.cascade.Cascade.llm_output`). Both answers are graded with
:func:`corea.grading.grade`. Any τ can then be evaluated afterwards without generating again: an
item is deferred iff its SLM confidence is None or below τ (:mod:`corea.metrics`).

Run folder (default ``runs/<dataset>-<split>-<limit>-<slm>-<llm>``):

* ``run.json``: the configuration (dataset, split, limit, seed, models, backends, prices, prompt
  version, settings dump), start/update times, machine info and one entry per generation session
  (items generated, wall time, items/minute).
* ``items.jsonl``: one JSON object per item, appended, flushed and fsynced as soon as the item is
  done. Rerunning the same command resumes: ids already present are skipped, and a truncated last
  line left by a crash is dropped and regenerated. A run folder made with another configuration
  (models, dataset, prompts, budgets...) is refused unless ``--overwrite``.
* ``summary.json`` / ``sweep.json``: written by :func:`summarize` after generation (or with
  ``--summarize-only``); a markdown table is printed.

Grading: each model is graded on its parsed answer (``ModelOutput.answer``, what the cascade shows);
no parsed answer is ``no_prediction`` (incorrect). Items where either grade is undecided
(``correct`` None: ``ungradable`` gold or grader ``timeout``) are excluded from every accuracy,
calibration and cost metric, and listed.

Cost convention (USD, from token counts and the price table in the settings): the SLM cost is
charged on every item, the LLM cost only when the item is deferred; LLM-only cost is the sum of the
LLM costs.

Usage::

    python -m corea.evaluate --dataset gsm8k --split test --limit 200 [--seed 0] \\
        [--slm-backend llamacpp --slm embedded:slm --llm-backend llamacpp --llm embedded:llm] \\
        [--max-new-tokens 512] [--run-dir runs/NAME] [--workers 1] [--threshold 0.7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from . import metrics
from .backends import make_backend
from .cascade import Cascade
from .config import Settings, load_settings
from .costs import missing_prices, priced_like
from .datasets import Item, load_dataset
from .events import ModelOutput
from .grading import grade
from .prompts import (ANSWER_SUFFIX, CONFIDENCE_SUFFIX, LLM_SYSTEM, SLM_SYSTEM, format_question)

__all__ = ["evaluate", "load_results", "summarize", "format_summary", "main", "RunMismatch",
           "EvaluationAborted", "prompt_version", "default_run_dir"]

ITEMS_FILE = "items.jsonl"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
SWEEP_FILE = "sweep.json"
PRIORS_FILE = "priors.jsonl"  # confidence-first turns, one {"id", "slm_prior"} per line
LOCK_FILE = ".lock"

#: Backend error kinds that no retry of the next item can fix: the run stops instead of recording
#: the same failure on every item.
FATAL_ERROR_KINDS = ("auth", "model_missing", "unsupported")

_LLM_DROP = ("confidence", "confidence_method", "confidence_note")


class RunMismatch(ValueError):
    """The run folder holds results of a different configuration."""


class EvaluationAborted(RuntimeError):
    """A configuration fault (missing model, no API key, ...) makes every item fail."""


# ----------------------------------------------------------------------------- identity

def prompt_version() -> str:
    """A short hash of the prompts and forced-suffix strings (changes whenever they change)."""
    h = hashlib.sha256()
    for part in (SLM_SYSTEM, LLM_SYSTEM, ANSWER_SUFFIX, CONFIDENCE_SUFFIX,
                 format_question("Q", ["x", "y"])):
        h.update(part.encode("utf-8") + b"\0")
    return "sha256:" + h.hexdigest()[:12]


def _model_identity(ms, name: str) -> dict:
    return {"backend": ms.backend, "model": ms.model, "name": name,
            "max_new_tokens": ms.max_new_tokens, "temperature": ms.temperature, "top_p": ms.top_p}


def _price(settings: Settings, name: str) -> dict | None:
    p = settings.prices.get(name)
    return p.model_dump() if p is not None else None


def _identity(cascade: Cascade, run_info: dict) -> dict:
    """What must be equal for two runs to share one items.jsonl."""
    s = cascade.settings
    slm_name, llm_name = cascade.slm.model_name, cascade.llm.model_name
    return {
        "dataset": run_info.get("dataset"),
        "split": run_info.get("split"),
        "limit": run_info.get("limit"),
        "seed": run_info.get("seed"),
        "slm": _model_identity(s.slm, slm_name),
        "llm": _model_identity(s.llm, llm_name),
        "prices": {"slm": _price(s, slm_name), "llm": _price(s, llm_name)},
        "confidence_mode": s.confidence_mode,
        "forced_max_new_tokens": s.forced_max_new_tokens,
        "prompt_version": prompt_version(),
        **({"slm_only": True} if run_info.get("slm_only") else {}),
    }


def _diff(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def _machine_info() -> dict:
    proc = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    proc = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "cpu_usable": usable, "processor": proc or None,
            "hostname": platform.node()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean(x):
    """NaN/inf -> None, recursively, so files are strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def _run_lock(run_dir: Path):
    """Refuse a second process writing the same run folder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    f = open(run_dir / LOCK_FILE, "w")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise RuntimeError(f"{run_dir} is being written by another process") from exc
        yield
    finally:
        f.close()


# ----------------------------------------------------------------------------- results file

def _read_items(path: Path, repair: bool) -> list[dict]:
    """Parse items.jsonl. A torn last line (crash mid-write) is ignored, and cut off if ``repair``.

    Raises:
        ValueError: an invalid line that is not the last one.
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    rows: list[dict] = []
    good_end = 0
    pos = 0
    lineno = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        lineno += 1
        line = data[pos:end]
        last = end >= len(data)
        try:
            row = json.loads(line) if line.strip() else None
            if row is not None and not (isinstance(row, dict) and "id" in row):
                raise ValueError("not an item object")
            if nl < 0 and row is not None:
                raise ValueError("no trailing newline")  # complete JSON but cut before the newline
        except ValueError as exc:
            if not last:
                raise ValueError(f"{path}:{lineno}: corrupt line ({exc}); fix or remove it") \
                    from exc
            break
        if row is not None:
            rows.append(row)
        good_end = end
        pos = end
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    return rows


def load_results(run_dir: str | os.PathLike) -> list[dict]:
    """The item rows of a run folder, in file order, one per id (a repeated id keeps the last row).

    A torn last line is ignored (the file is not modified).

    Raises:
        FileNotFoundError: no ``items.jsonl`` in ``run_dir``.
        ValueError: a corrupt line other than the last.
    """
    path = Path(run_dir) / ITEMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}")
    by_id: dict[str, dict] = {}
    for row in _read_items(path, repair=False):
        by_id.pop(str(row["id"]), None)
        by_id[str(row["id"])] = row
    for p in _read_items(Path(run_dir) / PRIORS_FILE, repair=False):
        if str(p["id"]) in by_id:
            by_id[str(p["id"])]["slm_prior"] = p.get("slm_prior")
    return list(by_id.values())


def score_priors(items: Sequence[Item], cascade: Cascade, run_dir: str | os.PathLike,
                 workers: int = 1, progress: bool = True) -> int:
    """Run the confidence-first turn (:meth:`Cascade.prior_output`) on every item of ``items``
    that has no line yet in ``<run_dir>/priors.jsonl``; appends one line per item (fsynced).

    Returns:
        the number of items scored now.
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    path = run_dir / PRIORS_FILE
    with _run_lock(run_dir):
        path.touch()
        done = {str(r["id"]) for r in _read_items(path, repair=True)}
        todo = [it for it in items if it.id not in done]
        bar = tqdm(total=len(todo), unit="item", desc=f"priors {run_dir.name}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        lock = threading.Lock()

        def one(it: Item) -> dict:
            out = cascade.prior_output(it.question, list(it.choices) if it.choices else None)
            return {"id": it.id, "slm_prior": _output_dict(out)}

        def write(row: dict) -> None:
            with lock, open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(_clean(row), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                bar.update(1)

        try:
            if workers == 1:
                for it in todo:
                    write(one(it))
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for row in pool.map(one, todo):
                        write(row)
        finally:
            bar.close()
    return len(todo)


# ----------------------------------------------------------------------------- one item

def _output_dict(out: ModelOutput | None, drop: Sequence[str] = ()) -> dict | None:
    if out is None:
        return None
    d = asdict(out)
    for k in drop:
        d.pop(k, None)
    return d


def _fatal(out: ModelOutput | None) -> str | None:
    if out is not None and out.error and out.error.split(":", 1)[0] in FATAL_ERROR_KINDS:
        return out.error
    return None


def _grade_output(out: ModelOutput, item: Item):
    if out.error is not None and not out.answer:
        from .grading import Grade
        return Grade(correct=False, status="no_prediction", note=f"model error: {out.error}")
    return grade(out.answer, item.answer, item.choices)


def _score_item(item: Item, cascade: Cascade, slm_only: bool = False,
                cancel: threading.Event | None = None) -> dict:
    t0 = time.perf_counter()
    choices = list(item.choices) if item.choices else None
    slm = cascade.slm_output(item.question, choices, cancel)
    if (err := _fatal(slm)) is not None:
        raise EvaluationAborted(f"SLM failed on item {item.id}: {err}")
    g_slm = _grade_output(slm, item)
    if slm_only:
        from types import SimpleNamespace
        llm, g_llm = None, SimpleNamespace(correct=None, status="not_run", note="--slm-only")
    else:
        llm = cascade.llm_output(item.question, choices, cancel)
        if (err := _fatal(llm)) is not None:
            raise EvaluationAborted(f"LLM failed on item {item.id}: {err}")
        g_llm = _grade_output(llm, item)
    return {
        "id": item.id,
        "dataset": item.dataset,
        "question": item.question,
        "choices": list(item.choices) if item.choices else None,
        "gold": item.answer,
        "slm": _output_dict(slm),
        "llm": _output_dict(llm, _LLM_DROP),
        "slm_correct": g_slm.correct,
        "slm_grade": g_slm.status,
        "slm_grade_note": g_slm.note,
        "llm_correct": g_llm.correct,
        "llm_grade": g_llm.status,
        "llm_grade_note": g_llm.note,
        "wall_s": time.perf_counter() - t0,
        "done_at": _now(),
    }


# ----------------------------------------------------------------------------- generation

def _prepare_run(run_dir: Path, cascade: Cascade, run_info: dict, overwrite: bool) -> dict:
    """Create/validate run.json; returns the run record (not yet written)."""
    identity = _identity(cascade, run_info)
    run_path, items_path = run_dir / RUN_FILE, run_dir / ITEMS_FILE
    if overwrite:
        for name in (ITEMS_FILE, SUMMARY_FILE, SWEEP_FILE, RUN_FILE):
            (run_dir / name).unlink(missing_ok=True)
    if run_path.is_file():
        try:
            old = json.loads(run_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RunMismatch(f"{run_path} is not valid JSON ({exc}); use --overwrite to start "
                              "over") from exc
        diffs = _diff(old.get("identity"), identity)
        if diffs:
            raise RunMismatch(
                f"{run_dir} holds a run with a different configuration:\n  " + "\n  ".join(diffs)
                + "\nUse another --run-dir, or --overwrite to discard the existing results.")
        record = old
    elif items_path.is_file() and items_path.stat().st_size > 0:
        raise RunMismatch(f"{items_path} exists but {run_path} is missing, so its configuration is "
                          "unknown; use --overwrite to discard it or another --run-dir")
    else:
        record = {"identity": identity, "started_at": _now(), "sessions": []}
    s = cascade.settings
    record.update({
        "identity": identity,
        "dataset": identity["dataset"], "split": identity["split"],
        "limit": identity["limit"], "seed": identity["seed"],
        "models": {"slm": identity["slm"]["name"], "llm": identity["llm"]["name"]},
        "backends": {"slm": s.slm.backend, "llm": s.llm.backend},
        "prices": identity["prices"],
        "prompt_version": identity["prompt_version"],
        "settings": s.model_dump(mode="json"),
        "machine": _machine_info(),
        "updated_at": _now(),
    })
    record.setdefault("sessions", [])
    return record


def evaluate(items: Sequence[Item], cascade: Cascade, run_dir: str | os.PathLike,
             workers: int = 1, progress: bool = True, *, run_info: dict | None = None,
             overwrite: bool = False, slm_only: bool = False) -> Path:
    """Run both models on every item not yet in ``<run_dir>/items.jsonl`` and append the rows.

    Each item runs the SLM then the LLM (:meth:`Cascade.slm_output`, :meth:`Cascade.llm_output`),
    grades both, and appends one JSON line (flushed and fsynced) as soon as it is done, so an
    interrupted run loses at most the items in flight. Ids already present are skipped.

    Args:
        items: the benchmark items (ids must be unique).
        cascade: the two backends and the settings.
        run_dir: the run folder (created if missing).
        workers: items processed concurrently (thread pool) when > 1; useful for HTTP backends.
        progress: show a tqdm bar (items/s and ETA) on stderr.
        run_info: ``dataset``, ``split``, ``limit``, ``seed`` to record and check in run.json
            (defaults: the items' dataset name, others None).
        overwrite: discard any existing results in ``run_dir`` first.
        slm_only: run only the SLM (``llm`` None, ``llm_correct`` None): pass@1 and calibration
            of one model, e.g. a trained checkpoint before/after, at a third of the cost.

    Returns:
        the run folder.

    Raises:
        RunMismatch: ``run_dir`` holds a run with another configuration (and not ``overwrite``).
        EvaluationAborted: a model fails with a configuration fault (``auth``, ``model_missing``,
            ``unsupported``); completed items are kept.
        ValueError: duplicate item ids, or a corrupt line in the middle of items.jsonl.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate item ids: {dup}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"dataset": items[0].dataset if items else None, "split": None, "limit": None,
            "seed": None, **(run_info or {})}
    if slm_only:
        info["slm_only"] = True
    with _run_lock(run_dir):
        record = _prepare_run(run_dir, cascade, info, overwrite)
        _write_json(run_dir / RUN_FILE, record)
        items_path = run_dir / ITEMS_FILE
        items_path.touch()
        done = {str(r["id"]) for r in _read_items(items_path, repair=True)}
        todo = [it for it in items if it.id not in done]
        session = {"started_at": _now(), "workers": workers, "n_todo": len(todo),
                   "n_already_done": len(items) - len(todo), "n_generated": 0,
                   "elapsed_s": 0.0, "items_per_minute": None, "status": "running"}
        record["sessions"].append(session)
        _write_json(run_dir / RUN_FILE, record)  # a killed process still leaves its session
        t0 = time.perf_counter()
        write_lock = threading.Lock()
        stats = {"slm": 0, "llm": 0}

        from tqdm import tqdm
        bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="item",
                   desc=f"eval {run_dir.name}", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True, smoothing=0.1)

        def write(row: dict) -> None:
            line = json.dumps(_clean(row), ensure_ascii=False) + "\n"
            with write_lock:
                with open(items_path, "a", encoding="utf-8") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
                session["n_generated"] += 1
                stats["slm"] += row["slm_correct"] is True
                stats["llm"] += row["llm_correct"] is True
                n = session["n_generated"]
                bar.set_postfix_str(f"slm {stats['slm'] / n:.0%} llm {stats['llm'] / n:.0%}",
                                    refresh=False)
                bar.update(1)

        status = "interrupted"
        try:
            if workers == 1:
                for it in todo:
                    write(_score_item(it, cascade, slm_only))
            else:
                _run_pool(todo, cascade, workers, write, slm_only)
            status = "complete"
        except EvaluationAborted:
            status = "aborted"
            raise
        finally:
            bar.close()
            elapsed = time.perf_counter() - t0
            n = session["n_generated"]
            session.update({"finished_at": _now(), "elapsed_s": elapsed, "status": status,
                            "items_per_minute": 60.0 * n / elapsed if n and elapsed > 0 else None})
            record["updated_at"] = _now()
            _write_json(run_dir / RUN_FILE, record)
    return run_dir


def _run_pool(todo: Sequence[Item], cascade: Cascade, workers: int, write,
              slm_only: bool = False) -> None:
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="corea-eval")
    cancel = threading.Event()  # set on the way out: in-flight generations stop at their next token
    try:
        pending = set()
        it = iter(todo)
        for x in it:  # keep at most 2*workers futures in flight, so an abort wastes little
            pending.add(pool.submit(_score_item, x, cascade, slm_only, cancel))
            if len(pending) >= 2 * workers:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                write(fut.result())
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(_score_item, nxt, cascade, slm_only, cancel))
    finally:
        cancel.set()  # Ctrl-C / SIGTERM / an abort: don't wait minutes for unfinished items
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- summary

def _mean(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def _counts(values: Iterable) -> dict:
    out: dict = {}
    for v in values:
        k = "none" if v is None else str(v)
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def summarize(rows: Sequence[dict], threshold: float = 0.7, run: dict | None = None,
              n_boot: int = 1000, seed: int = 0) -> dict:
    """All metrics of a scored run, for any τ, without generating again.

    Args:
        rows: item rows (:func:`load_results`).
        threshold: τ for the headline cascade row.
        run: the run.json record, for generation throughput (items/minute over its sessions);
            without it items/minute is estimated from per-item wall times (sequential).
        n_boot: bootstrap resamples for the 95% intervals.
        seed: bootstrap seed.

    Returns:
        dict with ``n_rows``, ``n`` (gradable items used for metrics), ``n_ungradable`` and
        ``ungradable_ids`` (either grade undecided: excluded), ``slm_pass_at_1`` /
        ``llm_pass_at_1`` / ``cascade`` pass@1 with ``ci95``, ``calibration``
        (:func:`corea.metrics.calibration_report` of the SLM confidence), ``slm_only_cost`` and
        ``llm_only_cost`` (USD), ``cascade`` (at ``threshold``) and ``paper_rule`` (at τ = LLM
        pass@1) each with a ``random_routing`` baseline at the same deferral rate,
        ``best_within_2pt`` (:func:`corea.metrics.best_saving_within`), ``sweep`` (every distinct
        τ), error/truncation counts, answer/confidence method counts and ``throughput``.
        Metrics are None when no item is gradable.
    """
    import numpy as np

    rows = list(rows)
    ungradable = [r for r in rows if r.get("slm_correct") is None or r.get("llm_correct") is None]
    ok = [r for r in rows if r.get("slm_correct") is not None and r.get("llm_correct") is not None]
    n = len(ok)
    slm = [r["slm"] or {} for r in rows]
    llm = [r["llm"] or {} for r in rows]
    out: dict = {
        "limit": (run or {}).get("limit"),
        "n_rows": len(rows),
        "n": n,
        "n_ungradable": len(ungradable),
        "ungradable_ids": [str(r["id"]) for r in ungradable],
        "ungradable_reasons": {str(r["id"]): f"slm {r.get('slm_grade')}, llm {r.get('llm_grade')}"
                               for r in ungradable},
        "threshold": float(threshold),
        "slm_errors": sum(1 for o in slm if o.get("error")),
        "llm_errors": sum(1 for o in llm if o.get("error")),
        "slm_truncated": sum(1 for o in slm if o.get("finish_reason") == "length"),
        "llm_truncated": sum(1 for o in llm if o.get("finish_reason") == "length"),
        "slm_answer_methods": _counts(o.get("answer_method") for o in slm),
        "slm_confidence_methods": _counts(o.get("confidence_method") for o in slm),
        "llm_answer_methods": _counts(o.get("answer_method") for o in llm),
        "throughput": _throughput(rows, run),
    }
    empty = {"slm_pass_at_1": None, "llm_pass_at_1": None, "calibration": None,
             "slm_only_cost": None, "llm_only_cost": None, "cascade": None, "paper_rule": None,
             "best_within_2pt": None, "sweep": []}
    if rows and all(r.get("llm") is None and r.get("llm_grade") == "not_run" for r in rows):
        # an --slm-only run: one model's pass@1 and calibration, no cascade
        graded = [r for r in rows if r.get("slm_correct") is not None]
        out.update(empty)
        out.update({"slm_only_run": True, "n": len(graded),
                    "n_ungradable": len(rows) - len(graded),
                    "ungradable_ids": [str(r["id"]) for r in rows
                                       if r.get("slm_correct") is None]})
        if graded:
            y = np.array([bool(r["slm_correct"]) for r in graded])
            lo, hi = metrics.bootstrap_ci(lambda idx: float(y[idx].mean()), len(graded),
                                          n_boot=n_boot, seed=seed)
            out["slm_pass_at_1"] = {"value": float(y.mean()), "ci95": [lo, hi]}
            out["calibration"] = metrics.calibration_report(
                [(r["slm"] or {}).get("confidence") for r in graded], y)
            out["slm_only_cost"] = float(sum((r["slm"] or {}).get("cost_usd") or 0.0
                                             for r in graded))
        return _clean(out)
    if n == 0:
        out.update(empty)
        return out

    conf = [r["slm"].get("confidence") if r["slm"] else None for r in ok]
    s = np.array([bool(r["slm_correct"]) for r in ok])
    l_ = np.array([bool(r["llm_correct"]) for r in ok])
    sc = np.array([float((r["slm"] or {}).get("cost_usd") or 0.0) for r in ok])
    lc = np.array([float((r["llm"] or {}).get("cost_usd") or 0.0) for r in ok])

    def pass_ci(y: np.ndarray) -> dict:
        lo, hi = metrics.bootstrap_ci(lambda idx: float(y[idx].mean()), n, n_boot=n_boot,
                                      seed=seed)
        return {"value": float(y.mean()), "ci95": [lo, hi]}

    def cascade_block(tau: float) -> dict:
        row = metrics.cascade_at(tau, conf, s, l_, sc, lc)
        has = np.array([c is not None for c in conf])
        cv = np.array([c if c is not None else -1.0 for c in conf])
        defer = ~has | (cv < tau)
        y = np.where(defer, l_, s)
        row["pass_at_1_ci95"] = pass_ci(y)["ci95"]
        row["n_deferred"] = int(defer.sum())
        row["random_routing"] = metrics.random_routing_baseline(row["deferral_rate"], s, l_, sc,
                                                                lc)
        return row

    llm_pass = float(l_.mean())
    sweep_rows = metrics.sweep(conf, s, l_, sc, lc)
    out.update({
        "slm_pass_at_1": pass_ci(s),
        "llm_pass_at_1": pass_ci(l_),
        "calibration": metrics.calibration_report(conf, s),
        "slm_only_cost": float(sc.sum()),
        "llm_only_cost": float(lc.sum()),
        "cascade": cascade_block(float(threshold)),
        "paper_rule": cascade_block(llm_pass),
        "best_within_2pt": metrics.best_saving_within(sweep_rows, llm_pass, 0.02),
        "sweep": sweep_rows,
    })
    best = out["best_within_2pt"]
    if best is not None:
        best["random_routing"] = metrics.random_routing_baseline(best["deferral_rate"], s, l_, sc,
                                                                 lc)
    return _clean(out)


def _parse_time(x):
    from datetime import datetime

    if not x:
        return None
    try:
        return datetime.fromisoformat(str(x))
    except ValueError:
        return None


def _throughput(rows: Sequence[dict], run: dict | None) -> dict:
    sessions = (run or {}).get("sessions") or []
    gen = sum(int(x.get("n_generated") or 0) for x in sessions)
    secs = sum(float(x.get("elapsed_s") or 0.0) for x in sessions)
    walls = [float(r["wall_s"]) for r in rows if r.get("wall_s") is not None]
    done = sorted(t for t in (_parse_time(r.get("done_at")) for r in rows) if t is not None)
    if gen and secs > 0:
        ipm, source = 60.0 * gen / secs, "finished sessions"
    elif len(done) >= 2:
        # no finished session yet (a run in progress): items completed per minute between the
        # first completion and the last, pipeline start-up excluded
        span = (done[-1] - done[0]).total_seconds()
        ipm = 60.0 * (len(done) - 1) / span if span > 0 else None
        source = "completion timestamps (run in progress)"
    elif walls and sum(walls) > 0:
        ipm, source = 60.0 * len(walls) / sum(walls), "per-item wall times (sequential)"
    else:
        ipm, source = None, None

    def m(side: str, key: str):
        return _mean(float((r.get(side) or {}).get(key) or 0) for r in rows)

    return {"items_per_minute": ipm, "source": source, "generated_items": gen or None,
            "generation_s": secs or None,
            "mean_slm_latency_s": m("slm", "latency_s"), "mean_llm_latency_s": m("llm", "latency_s"),
            "mean_slm_completion_tokens": m("slm", "completion_tokens"),
            "mean_llm_completion_tokens": m("llm", "completion_tokens")}


def _pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _num(x, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt)


def _usd(x) -> str:
    return "–" if x is None else f"${x:.6f}"


def _ci(block: dict | None) -> str:
    if not block:
        return "–"
    lo, hi = block["ci95"]
    ci = "" if lo is None else f" [{_pct(lo)}, {_pct(hi)}]"
    return _pct(block["value"]) + ci


def _casc(row: dict | None) -> str:
    if not row:
        return "–"
    rr = row.get("random_routing") or {}
    return (f"pass@1 {_pct(row['pass_at_1'])}, deferral {_pct(row['deferral_rate'])}, "
            f"cost {_usd(row['cost'])} ({_pct(row.get('cost_fraction_of_llm_only'))} of LLM-only)"
            f"; random routing: pass@1 {_pct(rr.get('pass_at_1'))}")


def _best_text(best: dict | None) -> str:
    if not best:
        return "no τ keeps pass@1 within 2 points"
    detail = (f"τ={best['threshold']:.4g}: pass@1 {_pct(best['pass_at_1'])}, deferral "
              f"{_pct(best['deferral_rate'])}")
    saving = best.get("saving")
    if saving is None or saving <= 1e-12:
        extra = "" if saving is None else f", cost {_pct(-saving)} above LLM-only"
        return f"none: no τ within 2 points costs less than LLM-only (cheapest: {detail}{extra})"
    return f"saving {_pct(saving)} ({detail})"


def format_summary(summary: dict) -> str:
    """The summary as a two-column markdown table (percentages on the 0-100 scale)."""
    s = summary
    cal = s.get("calibration") or {}
    best = s.get("best_within_2pt")
    tp = s.get("throughput") or {}
    ung = s.get("ungradable_ids") or []
    ung_txt = str(s.get("n_ungradable", 0))
    if ung:
        ung_txt += " (" + ", ".join(ung[:10]) + (", …" if len(ung) > 10 else "") + ")"
    rows = [
        ("items (gradable / total)", f"{s.get('n')} / {s.get('n_rows')}" + (
            f" — run in progress or stopped: {s.get('n_rows')} of {s.get('limit')} scored"
            if s.get("limit") and s.get("n_rows", 0) < s["limit"] else "")),
        ("ungradable (excluded)", ung_txt),
        ("SLM-only pass@1 [95% CI]", _ci(s.get("slm_pass_at_1"))),
        ("LLM-only pass@1 [95% CI]", _ci(s.get("llm_pass_at_1"))),
        ("SLM-only / LLM-only cost", f"{_usd(s.get('slm_only_cost'))} / "
                                     f"{_usd(s.get('llm_only_cost'))}"),
        ("SLM ECE-10 / ECE-15", f"{_num(cal.get('ece_10'))} / {_num(cal.get('ece_15'))}"),
        ("SLM Brier / AUROC / AURC", f"{_num(cal.get('brier'))} / {_num(cal.get('auroc'))} / "
                                     f"{_num(cal.get('aurc'))}"),
        ("SLM without confidence", f"{_pct(cal.get('share_no_confidence'))} "
                                   f"({cal.get('n_no_confidence', '–')})"),
        ("SLM distinct confidences / mean", f"{cal.get('n_distinct_confidences', '–')} / "
                                            f"{_num(cal.get('mean_confidence'), '.3f')}"),
        (f"cascade τ={s.get('threshold')}", _casc(s.get("cascade"))),
        (f"cascade τ=LLM pass@1 ({_num((s.get('paper_rule') or {}).get('threshold'), '.3f')})",
         _casc(s.get("paper_rule"))),
        ("best saving within 2 pt of LLM-only", _best_text(best)),
        ("errors SLM / LLM", f"{s.get('slm_errors')} / {s.get('llm_errors')}"),
        ("truncated (length) SLM / LLM", f"{s.get('slm_truncated')} / {s.get('llm_truncated')}"),
        ("SLM answer / confidence methods", f"{s.get('slm_answer_methods')} / "
                                            f"{s.get('slm_confidence_methods')}"),
        ("throughput", f"{_num(tp.get('items_per_minute'), '.2f')} items/min "
                       f"(from {tp.get('source') or '–'}; mean latency per item with the others "
                       f"in flight: SLM {_num(tp.get('mean_slm_latency_s'), '.1f')} s, "
                       f"LLM {_num(tp.get('mean_llm_latency_s'), '.1f')} s)"),
    ]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)


def write_summary(run_dir: str | os.PathLike, threshold: float = 0.7) -> dict:
    """Summarize a run folder: writes ``summary.json`` and ``sweep.json``; returns the summary."""
    run_dir = Path(run_dir)
    rows = load_results(run_dir)
    run = None
    if (run_dir / RUN_FILE).is_file():
        run = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    summary = summarize(rows, threshold=threshold, run=run)
    _write_json(run_dir / SWEEP_FILE, summary["sweep"])
    short = {k: v for k, v in summary.items() if k != "sweep"}
    short["sweep_file"] = SWEEP_FILE
    short["n_sweep_rows"] = len(summary["sweep"])
    if run:
        short["run"] = {k: run.get(k) for k in ("dataset", "split", "limit", "seed", "models",
                                                 "backends", "prompt_version")}
    short["summarized_at"] = _now()
    _write_json(run_dir / SUMMARY_FILE, short)
    return summary


# ----------------------------------------------------------------------------- CLI

def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._-") or "x"


def default_run_dir(dataset: str, split: str, limit: int | None, slm: str, llm: str,
                    seed: int | None = None) -> Path:
    """``runs/<dataset>-<split>-<limit>-<slm>-<llm>[-seed<N>]``, each part sanitised."""
    ds = Path(dataset).stem if (dataset.endswith(".jsonl") or "/" in dataset) else dataset
    parts = [ds, split, "all" if limit is None else str(limit), slm.split("/")[-1],
             llm.split("/")[-1]]
    name = "-".join(_slug(p) for p in parts)
    if seed is not None:
        name += f"-seed{seed}"
    return Path("runs") / name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m corea.evaluate",
        description="Score both models once per item, then evaluate any threshold τ.")
    p.add_argument("--dataset", required=True,
                   help="gsm8k, math500, arc_challenge, bbh_mc, svamp, a .jsonl path or hf:<id>")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="number of items (default: all)")
    p.add_argument("--seed", type=int, default=None,
                   help="with --limit, a random subset with this seed (default: the first items)")
    p.add_argument("--data-dir", default=None, help="benchmark root (default: COREA_DATA_DIR)")
    p.add_argument("--config", default=None, help="YAML settings file")
    backends = ["llamacpp", "transformers", "openai", "vllm", "fake"]
    p.add_argument("--slm-backend", choices=backends, default=None)
    p.add_argument("--slm", default=None, help="SLM model (embedded:slm, hub id, .gguf, API name, "
                   "checkpoint folder: llama.cpp for a LoRA adapter of a GGUF, else transformers, "
                   "unless --slm-backend says)")
    p.add_argument("--llm-backend", choices=backends, default=None)
    p.add_argument("--llm", default=None, help="LLM model")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation budget of both models (tokens)")
    p.add_argument("--run-dir", default=None,
                   help="results folder (default: runs/<dataset>-<split>-<limit>-<slm>-<llm>)")
    p.add_argument("--workers", type=int, default=1,
                   help="items in flight at once: concurrent requests for HTTP backends, "
                        "sequences decoded together (continuous batching) for llamacpp, "
                        "batched generate calls for transformers and vllm")
    p.add_argument("--threshold", type=float, default=None,
                   help="τ for the headline cascade row (default: settings threshold, 0.7)")
    p.add_argument("--slm-only", action="store_true",
                   help="run only the SLM (pass@1 and calibration of one model, e.g. a trained "
                        "checkpoint; no cascade metrics)")
    p.add_argument("--confidence-first", action="store_true",
                   help="also run the confidence-first turn (the SLM states its confidence "
                        "before solving) on every item, into priors.jsonl")
    p.add_argument("--summarize-only", action="store_true",
                   help="don't generate; summarize the existing run folder")
    p.add_argument("--overwrite", action="store_true",
                   help="discard existing results in the run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _settings_from_args(args) -> Settings:
    settings = load_settings(args.config)
    for side in ("slm", "llm"):
        ms = getattr(settings, side)
        upd = {}
        if getattr(args, f"{side}_backend"):
            upd["backend"] = getattr(args, f"{side}_backend")
        if getattr(args, side):
            upd["model"] = getattr(args, side)
            if not getattr(args, f"{side}_backend") and Path(upd["model"]).expanduser().is_dir():
                from .lora_gguf import checkpoint_backend  # a checkpoint folder: its engine

                upd["backend"] = checkpoint_backend(upd["model"], settings.cache_dir)
        if args.max_new_tokens is not None:
            upd["max_new_tokens"] = args.max_new_tokens
        if upd:
            new = type(ms).model_validate({**ms.model_dump(), **upd})
            prices = settings.prices
            if Path(new.model).expanduser().is_dir():  # a checkpoint folder: its base's price
                prices = priced_like(prices, new.name, ms.name)
            settings = settings.model_copy(update={side: new, "prices": prices})
    missing = missing_prices([settings.slm.name, settings.llm.name], settings.prices)
    if missing:
        print(f"[eval] no price for {', '.join(missing)}: costed at $0 "
              "(set COREA_PRICES or `prices:` in the YAML config)", file=sys.stderr)
    return settings


def _summary_mismatch(run_dir: Path, args) -> str | None:
    """With --summarize-only: the run folder must hold what --dataset/--split/--limit/--seed
    name (its run.json records them); returns the problem, or None."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    want = {"dataset": args.dataset, "split": args.split, "limit": args.limit, "seed": args.seed}
    diffs = [f"{k}: run has {rec.get(k)!r}, arguments say {v!r}" for k, v in want.items()
             if k in rec and rec.get(k) != v]
    if diffs:
        return (f"{run_dir} holds another run than the arguments name:\n  " + "\n  ".join(diffs)
                + "\nPass the run's own arguments (or another --run-dir).")
    return None


def batched(backend, ms, workers: int):
    """With ``workers > 1``, a transformers or vLLM backend is wrapped in
    :class:`corea.backends.batching.BatchingBackend`, so the items in flight are generated in
    batched calls; llama.cpp batches by itself (``n_parallel``), HTTP backends get concurrent
    requests."""
    if workers > 1 and ms.backend in ("transformers", "vllm"):
        from .backends.batching import BatchingBackend
        return BatchingBackend(backend, max_batch=workers)
    return backend


def _sigterm_as_interrupt() -> None:
    """SIGTERM (``kill``, a container stop) ends a run like Ctrl-C: the session is recorded in
    run.json and completed items are kept."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def with_parallel(settings: Settings, workers: int) -> Settings:
    """``settings`` with ``n_parallel = workers`` for each llama.cpp model, so that the items in
    flight are decoded together in one batched context (continuous batching) instead of queueing
    on one sequence."""
    upd = {}
    for side in ("slm", "llm"):
        ms = getattr(settings, side)
        if ms.backend == "llamacpp" and ms.n_parallel < workers:
            upd[side] = ms.model_copy(update={"n_parallel": workers})
    return settings.model_copy(update=upd) if upd else settings


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point. Exit status: 0 done, 1 aborted/interrupted, 2 bad arguments or a
    mismatching run folder."""
    args = build_parser().parse_args(argv)
    _sigterm_as_interrupt()
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        print("error: --max-new-tokens must be >= 1", file=sys.stderr)
        return 2
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print("error: --threshold must be in [0, 1]", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        settings = _settings_from_args(args)
    except Exception as exc:  # bad YAML / env / values
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threshold = settings.threshold if args.threshold is None else args.threshold
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(
        args.dataset, args.split, args.limit, settings.slm.name, settings.llm.name, args.seed)

    if args.summarize_only:
        problem = _summary_mismatch(run_dir, args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if not args.summarize_only:
        try:
            items = load_dataset(args.dataset, args.split, args.limit, args.seed, args.data_dir)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        workers = args.workers
        if workers > 1:
            settings = with_parallel(settings, workers)
        slm = batched(make_backend(settings.slm, settings.cache_dir), settings.slm, workers)
        llm = batched(make_backend(settings.llm, settings.cache_dir), settings.llm, workers)
        cascade = Cascade(slm, llm, settings)
        info = {"dataset": args.dataset, "split": args.split, "limit": args.limit,
                "seed": args.seed}
        print(f"[eval] {len(items)} items -> {run_dir}", file=sys.stderr)
        try:
            evaluate(items, cascade, run_dir, workers=workers, progress=not args.no_progress,
                     run_info=info, overwrite=args.overwrite, slm_only=args.slm_only)
        except RunMismatch as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except EvaluationAborted as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"\ninterrupted: completed items are saved in {run_dir / ITEMS_FILE}; rerun "
                  "the same command to resume", file=sys.stderr)
            return 1
        if args.confidence_first:
            try:
                score_priors(items, cascade, run_dir, workers, progress=not args.no_progress)
            except KeyboardInterrupt:
                print(f"\ninterrupted: completed priors are saved in {run_dir / PRIORS_FILE}",
                      file=sys.stderr)
                return 1
    try:
        summary = write_summary(run_dir, threshold)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"\nwrote {run_dir / SUMMARY_FILE} and {run_dir / SWEEP_FILE}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
