"""Scoring a benchmark with every tier: score once, sweep many.

(Over 400 lines: the run's identity check, the per-item scoring and the thread pool that
writes and cancels items share the run folder's invariants.)

For every item each tier of the cascade (two or more) is run once, in cascade order,
**independently of any threshold** (:meth:`corea.cascade.Cascade.tier_output`: the same prompt,
parsing and forced suffix as the live cascade), and its answer graded with
:func:`corea.grading.grade`. Any τ (any τ vector over N tiers) can then be evaluated afterwards
without generating again (:class:`corea.eval.scored.ScoredSet`, :mod:`corea.eval.tiers`,
:mod:`corea.eval.summary`).

The rows go to a run folder (:mod:`corea.eval.runs`): ``items.jsonl`` is appended and fsynced item
by item, so a rerun resumes where an interrupted one stopped; each row is one record per tier
(:mod:`corea.eval.records`, which also derives the two-tier keys ``slm`` / ``llm`` / ... that
every reader knows). ``run.json`` records the configuration, and a folder made with another
configuration (models, tiers, dataset, prompts, budgets...) is refused unless ``overwrite``.
Options work for any number of tiers: ``slm_first`` (one phase per tier), ``verify`` (every
deciding tier's P(True)), hidden states (the settings' ``hidden_states``, kept in each tier's
output), and the side files of sampled solutions (:mod:`corea.eval.samples`) and
confidence-first turns (:func:`score_priors`).

Grading: each tier is graded on its parsed answer (``ModelOutput.answer``, what the cascade
shows); no parsed answer is ``no_prediction`` (incorrect). Items where a grade is undecided
(``correct`` None: ``ungradable`` gold or grader ``timeout``) are excluded from every accuracy,
calibration and cost metric, and listed.

Cost convention (USD, from token counts and the price table in the settings): the first tier is
charged on every item, each later tier only when the item reaches it; the last tier alone
(LLM-only) costs the sum of its costs.

The command line is ``corea evaluate`` (:mod:`corea.cli.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from contextlib import nullcontext
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from pathlib import Path
from typing import Sequence

from ..cascade import Cascade
from ..config import Settings
from ..datasets import Item
from ..events import ModelOutput
from ..grading import Grade, grade
from ..cascade.program import MOT_SEPARATOR
from ..pot import POT_RULES
from ..stopping import STOP_RULES
from ..prompts import (ANSWER_SUFFIX, ASK_CONFIDENCE_PROMPT, CONFIDENCE_SUFFIX, LLM_SYSTEM,
                       POT_SLM_SYSTEM, POT_SYSTEM, POT_VERSION, SLM_RULES, SLM_SYSTEM,
                       VERIFY_PROMPT, format_question, pot_question)
from .records import LLM_DROP, PENDING, as_record, is_pending, output_dict, tier_record
from .runs import (ITEMS_FILE, PRIORS_FILE, RUN_FILE, SUMMARY_FILE, SWEEP_FILE, TIERS_FILE,
                   append_json_line, machine_info, now, read_items, record_side_session, run_lock,
                   unpack_run, write_json)

__all__ = ["evaluate", "score_item", "complete_item", "is_pending", "PENDING", "PHASES",
           "score_priors", "RunMismatch", "EvaluationAborted", "prompt_version", "batched",
           "with_parallel", "FATAL_ERROR_KINDS", "LLM_DROP", "output_dict", "fatal_error", "grade_output",
           "prepare_run", "score_each", "close_session", "score_tier", "tier_signals",
           "adopt_tiers_file"]

#: Backend error kinds that no retry of the next item can fix: the run stops instead of recording
#: the same failure on every item.
FATAL_ERROR_KINDS = ("auth", "model_missing", "unsupported")

PHASES = ("both", "slm", "llm")
"""What :func:`evaluate`'s ``phase`` may be: all of an SLM-first run, only its first tier's phase
(``slm``), or only its later tiers' phases (``llm``)."""


class RunMismatch(ValueError):
    """The run folder holds results of a different configuration."""


class EvaluationAborted(RuntimeError):
    """A configuration fault (missing model, no API key, ...) makes every item fail."""


# ----------------------------------------------------------------------------- identity

def prompt_version(program: bool = False) -> str:
    """A short hash of the prompts, forced-suffix strings and SLM output rules (changes whenever
    they change, so a run made under other ones is not resumed with these). ``program``: a tier
    solves with a program (``pot`` / ``mot``): the program-of-thought prompts, their version
    (:data:`corea.prompts.POT_VERSION`) and how a reply becomes an answer
    (:data:`corea.pot.POT_RULES`) are hashed too; a chain-of-thought run's hash is unchanged by
    them, and only it hashes the stop rule (:data:`corea.stopping.STOP_RULES`)."""
    h = hashlib.sha256()
    parts = [SLM_SYSTEM, LLM_SYSTEM, ANSWER_SUFFIX, CONFIDENCE_SUFFIX,
             format_question("Q", ["x", "y"]), ASK_CONFIDENCE_PROMPT, VERIFY_PROMPT, SLM_RULES]
    if not program:  # the stop rule ends a chain-of-thought solution (not a program)
        parts.append(STOP_RULES)
    if program:
        parts += [POT_VERSION, POT_SYSTEM, POT_SLM_SYSTEM, pot_question("Q", ["x", "y"]),
                  POT_RULES, MOT_SEPARATOR]
    for part in parts:
        h.update(part.encode("utf-8") + b"\0")
    return "sha256:" + h.hexdigest()[:12]


def _model_identity(ms, name: str, solve: str = "cot") -> dict:
    """A model's part of a run's identity; ``solve`` only when not ``cot`` (a chain-of-thought
    run's identity is unchanged)."""
    return {"backend": ms.backend, "model": ms.model, "name": name,
            "max_new_tokens": ms.max_new_tokens, "temperature": ms.temperature, "top_p": ms.top_p,
            **({"solve": solve} if solve != "cot" else {})}


def _price(settings: Settings, name: str) -> dict | None:
    p = settings.prices.get(name)
    return p.model_dump() if p is not None else None


def _identity(cascade: Cascade, run_info: dict) -> dict:
    """What must be equal for two runs to share one items.jsonl."""
    s = cascade.settings
    slm_name, llm_name = cascade.slm.model_name, cascade.llm.model_name
    solves = [cascade.tier_options(k).solve for k in range(cascade.n_tiers)]
    program = any(m != "cot" for m in solves)
    return {
        "dataset": run_info.get("dataset"),
        "split": run_info.get("split"),
        "limit": run_info.get("limit"),
        "seed": run_info.get("seed"),
        "slm": _model_identity(s.slm, slm_name, solves[0]),
        "llm": _model_identity(s.llm, llm_name, solves[-1]),
        "prices": {"slm": _price(s, slm_name), "llm": _price(s, llm_name)},
        "confidence_mode": s.confidence_mode,
        "forced_max_new_tokens": s.forced_max_new_tokens,
        "prompt_version": prompt_version(program),
        **({"pot_version": POT_VERSION} if program else {}),
        **({"slm_only": True} if run_info.get("slm_only") else {}),
        **({"hidden_states": True} if s.slm.hidden_states else {}),
        **({"verify": True} if run_info.get("verify") else {}),
        **({"tiers": _tiers_identity(cascade)} if cascade.n_tiers > 2 else {}),
    }


def _tiers_identity(cascade: Cascade) -> list[dict]:
    """Every tier of an N-tier cascade (more than two tiers), in order: its model, price and
    deciding signal (no τ: an N-tier run is swept over τ vectors). A two-tier run's identity has
    no ``tiers`` key, so it is unchanged."""
    s = cascade.settings
    models = s.tier_models()
    sources = s.tier_sources()
    out = []
    for k, backend in enumerate(cascade.backends):
        ms = models[k] if len(models) == cascade.n_tiers else (s.llm if k else s.slm)
        name = backend.model_name
        middle = 0 < k < cascade.n_tiers - 1
        out.append({**_model_identity(ms, name, cascade.tier_options(k).solve),
                    "price": _price(s, name),
                    **({"confidence_source": sources[k - 1] if len(sources) ==
                        cascade.n_tiers - 2 else "verbal"} if middle else {})})
    return out


def _diff(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):  # N tiers
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _diff(a, b, f"{path}.{i}")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def score_each(items: Sequence[Item], one, run_dir: str | os.PathLike, file_name: str,
               workers: int = 1, progress: bool = True, cancel: threading.Event | None = None,
               locked: bool = False) -> int:
    """Append ``one(item)`` (a dict with the item's ``id``) as a line of ``<run_dir>/<file_name>``
    for every item without a line there yet (fsynced; a torn last line is dropped), with
    ``workers`` items in flight, each written as soon as it is done (not in item order: a slow
    item does not hold back finished ones, which an interrupted run would otherwise lose). The
    side files of a run (``priors.jsonl``, ``samples.jsonl``) are made this way. ``locked``: the
    caller already holds the folder's :func:`run_lock` (and records its own session). Otherwise
    the session (``stage``: the file's stem, items done, minutes, ``status``) is recorded in
    ``run.json`` ``sessions`` like an evaluation session, when the folder has a run
    (:func:`~corea.eval.runs.record_side_session`).

    Returns:
        the number of items scored now.

    Raises:
        RuntimeError: another process is writing the run folder.
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / file_name
    with nullcontext() if locked else run_lock(run_dir):
        unpack_run(run_dir)
        path.touch()
        done = {str(r["id"]) for r in read_items(path, repair=True)}
        todo = [it for it in items if it.id not in done]
        bar = tqdm(total=len(todo), unit="item", desc=f"{path.stem} {run_dir.name}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        lock = threading.Lock()
        session = {"stage": path.stem, "started_at": now(), "workers": workers,
                   "n_todo": len(todo), "n_already_done": len(done), "n_generated": 0,
                   "elapsed_s": 0.0, "items_per_minute": None, "status": "running"}
        t0 = time.perf_counter()
        status = "interrupted"
        record = bool(todo) and not locked

        def write(row: dict) -> None:
            with lock:
                append_json_line(path, row)
                session["n_generated"] += 1
                bar.update(1)

        if record:
            record_side_session(run_dir, session)
        try:
            if workers == 1:
                for it in todo:
                    write(one(it))
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = [pool.submit(one, it) for it in todo]
                    try:
                        for fut in as_completed(futures):
                            write(fut.result())
                    finally:
                        for fut in futures:  # queued items never start
                            fut.cancel()
                        if cancel is not None:  # in-flight generations stop at their next token
                            cancel.set()
            status = "complete"
        finally:
            bar.close()
            if record:
                finish_session(session, status, time.perf_counter() - t0,
                               session["n_generated"])
                record_side_session(run_dir, session)
    return len(todo)


def score_priors(items: Sequence[Item], cascade: Cascade, run_dir: str | os.PathLike,
                 workers: int = 1, progress: bool = True) -> int:
    """Run the confidence-first turn (:meth:`Cascade.prior_output`) on every item of ``items``
    that has no line yet in ``<run_dir>/priors.jsonl`` (:func:`score_each`).

    Returns:
        the number of items scored now.
    """
    def one(it: Item) -> dict:
        out = cascade.prior_output(it.question, list(it.choices) if it.choices else None)
        return {"id": it.id, "slm_prior": output_dict(out)}

    return score_each(items, one, run_dir, PRIORS_FILE, workers, progress)


# ----------------------------------------------------------------------------- one item

def fatal_error(out: ModelOutput | None) -> str | None:
    """``out``'s error when it is a configuration fault (:data:`FATAL_ERROR_KINDS`) that no
    later item can escape, else None."""
    if out is not None and out.error and out.error.split(":", 1)[0] in FATAL_ERROR_KINDS:
        return out.error
    return None


def grade_output(out: ModelOutput, item: Item) -> Grade:
    """Grade ``out``'s parsed answer against ``item`` (:func:`corea.grading.grade`); a failed
    output without an answer is ``no_prediction`` (incorrect)."""
    if out.error is not None and not out.answer:
        return Grade(correct=False, status="no_prediction", note=f"model error: {out.error}")
    return grade(out.answer, item.answer, item.choices)


def tier_signals(cascade: Cascade) -> list[str]:
    """The deciding signal each tier but the last is swept on: ``verbal`` for the first (its
    stated confidence; the other signals of the first tier are computed from the rows,
    :mod:`corea.eval.deciders`), each middle tier's ``confidence_source`` (``verbal`` /
    ``tokprob`` / ``agreement``: :func:`corea.cascade.deciding_number`, the live rule)."""
    sources = cascade.settings.tier_sources()
    n = cascade.n_tiers
    mid = sources if len(sources) == n - 2 else ["verbal"] * (n - 2)
    return ["verbal", *mid]


def _who(cascade: Cascade, k: int, model: str) -> str:
    """Tier ``k`` in an abort message: ``SLM`` / ``LLM`` with two tiers, else ``tier k+1 (model)``."""
    if cascade.n_tiers == 2:
        return "SLM" if k == 0 else "LLM"
    return f"tier {k + 1} ({model})"


def score_tier(item: Item, cascade: Cascade, k: int, cancel: threading.Event | None = None,
               verify: bool = False) -> dict:
    """Run and grade tier ``k`` alone on one item (:meth:`Cascade.tier_output`: the live
    cascade's prompt, parsing and forced suffix); returns its record
    (:func:`corea.eval.records.tier_record`).

    ``verify``: a deciding tier is then asked whether its answer is right (P(True),
    :func:`corea.cascade.deciding.verify` on the tier's backend; its prompt reuses the tier's
    KV-cached completion), stored as the record's ``verify``.

    Raises:
        EvaluationAborted: the tier failed with a configuration fault (:data:`FATAL_ERROR_KINDS`).
    """
    from ..cascade import TierOptions, deciding_number
    from ..cascade.deciding import verify as verify_tier

    choices = list(item.choices) if item.choices else None
    out = cascade.tier_output(k, item.question, choices, cancel)
    if (err := fatal_error(out)) is not None:
        raise EvaluationAborted(f"{_who(cascade, k, out.model)} failed on item {item.id}: {err}")
    last = k == cascade.n_tiers - 1
    if last:
        return tier_record(out, grade_output(out, item), True)
    conf, signal, _ = deciding_number(out, TierOptions(signal=tier_signals(cascade)[k]))
    verified = verify_tier(cascade.backends[k], item.question, choices, out) if verify else None
    return tier_record(out, grade_output(out, item), False, signal, conf, verified)


def finish_session(session: dict, status: str, elapsed: float, n: int) -> None:
    """Finish a run.json ``session``: status, time, ``n`` items generated, items per minute."""
    session.update({"finished_at": now(), "elapsed_s": elapsed, "status": status,
                    "n_generated": n,
                    "items_per_minute": 60.0 * n / elapsed if n and elapsed > 0 else None})


def close_session(record: dict, session: dict, status: str, elapsed: float, n: int) -> None:
    """:func:`finish_session` and stamp ``record``'s ``updated_at``; the caller writes the
    record."""
    finish_session(session, status, elapsed, n)
    record["updated_at"] = now()


def score_item(item: Item, cascade: Cascade, slm_only: bool = False,
               cancel: threading.Event | None = None, verify: bool = False,
               llm_later: bool = False) -> dict:
    """Run and grade one item on every tier in order (only the first with ``slm_only``);
    returns its ``items.jsonl`` row (:mod:`corea.eval.records`: one record per tier).

    ``llm_later``: the first phase of an SLM-first run: only the first tier runs and the row is
    left *pending* (:func:`is_pending`) for :func:`complete_item` to fill.

    ``verify``: every deciding tier is asked whether its answer is right (:func:`score_tier`).

    ``cancel`` stops the in-flight generations at their next token (the pool sets it on the way
    out).

    Raises:
        EvaluationAborted: a model failed with a configuration fault (:data:`FATAL_ERROR_KINDS`).
    """
    row = {"id": item.id, "dataset": item.dataset, "question": item.question,
           "choices": list(item.choices) if item.choices else None, "gold": item.answer,
           "n_tiers": cascade.n_tiers, **({"slm_only": True} if slm_only else {}),
           "tiers": []}
    upto = 1 if slm_only or llm_later else cascade.n_tiers
    return complete_item(row, item, cascade, cancel, verify, upto)


def complete_item(row: dict, item: Item, cascade: Cascade,
                  cancel: threading.Event | None = None, verify: bool = False,
                  upto: int | None = None) -> dict:
    """``row`` with its next tiers run and graded, up to tier ``upto - 1`` (default: the last);
    the tiers it holds are kept as they were generated. A pending row written with only the
    two-tier keys is first turned into records (:func:`corea.eval.records.as_record`).

    Raises:
        EvaluationAborted: a tier failed with a configuration fault.
    """
    t0 = time.perf_counter()
    row = as_record(row)
    tiers = list(row["tiers"])
    for k in range(len(tiers), cascade.n_tiers if upto is None else upto):
        tiers.append(score_tier(item, cascade, k, cancel, verify))
    return {**row, "tiers": tiers,
            "wall_s": float(row.get("wall_s") or 0.0) + time.perf_counter() - t0,
            "done_at": now()}


# ----------------------------------------------------------------------------- generation

def prepare_run(run_dir: Path, cascade: Cascade, run_info: dict, overwrite: bool) -> dict:
    """Create/validate run.json; returns the run record (not yet written)."""
    identity = _identity(cascade, run_info)
    run_path, items_path = run_dir / RUN_FILE, run_dir / ITEMS_FILE
    if overwrite:
        for name in (ITEMS_FILE, SUMMARY_FILE, SWEEP_FILE, RUN_FILE, ITEMS_FILE + ".gz",
                     TIERS_FILE, TIERS_FILE + ".gz"):
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
        record = {"identity": identity, "started_at": now(), "sessions": []}
    s = cascade.settings
    record.update({
        "identity": identity,
        "dataset": identity["dataset"], "split": identity["split"],
        "limit": identity["limit"], "seed": identity["seed"],
        "models": {"slm": identity["slm"]["name"], "llm": identity["llm"]["name"]},
        "backends": {"slm": s.slm.backend, "llm": s.llm.backend},
        "prices": identity["prices"],
        "prompt_version": identity["prompt_version"],
        **({"pot_prompts": {"version": POT_VERSION, "rules": POT_RULES, "system": POT_SYSTEM,
                            "deciding_system": POT_SYSTEM}}
           if "pot_version" in identity else {}),
        "settings": s.model_dump(mode="json"),
        "machine": machine_info(),
        "updated_at": now(),
        **({"tiers": [t["name"] for t in identity["tiers"]]} if "tiers" in identity else {}),
    })
    record.setdefault("sessions", [])
    return record


def evaluate(items: Sequence[Item], cascade: Cascade, run_dir: str | os.PathLike,
             workers: int = 1, progress: bool = True, *, run_info: dict | None = None,
             overwrite: bool = False, slm_only: bool = False, verify: bool = False,
             slm_first: bool = False, phase: str = "both") -> Path:
    """Run every tier on every item not yet in ``<run_dir>/items.jsonl`` and append the rows.

    Each item runs its tiers in cascade order (:func:`score_item`: :meth:`Cascade.tier_output`
    per tier, graded), and one JSON line with one record per tier (:mod:`corea.eval.records`)
    is appended (flushed and fsynced) as soon as it is done, so an interrupted run loses at most
    the items in flight. Ids already present are skipped. Two tiers or more alike.

    Args:
        items: the benchmark items (ids must be unique).
        cascade: the tiers' backends and the settings.
        run_dir: the run folder (created if missing).
        workers: items processed concurrently (thread pool) when > 1; useful for HTTP backends.
        progress: show a tqdm bar (items/s and ETA) on stderr.
        run_info: ``dataset``, ``split``, ``limit``, ``seed`` to record and check in run.json
            (defaults: the items' dataset name, others None).
        overwrite: discard any existing results in ``run_dir`` first.
        slm_only: run only the first tier (``llm`` None, ``llm_correct`` None): pass@1 and
            calibration of one model, e.g. a trained checkpoint before/after.
        verify: also record each deciding tier's self-verification, P(True) (the first tier's
            is the row's ``slm_verify``).
        slm_first: one phase per tier: first the first tier (and ``verify``) on every item to
            do, each written as a *pending* row (:func:`is_pending`), then the next tier on every
            pending row, and so on to the last (:func:`complete_item`; each row appended
            supersedes the one before). The first tier's signals and probes can be studied long
            before the costlier tiers have run. Pending rows are completed by any later run of
            the folder, with or without ``slm_first``; the rows are the same as a one-phase
            run's.
        phase: which part of an SLM-first run to do now (:data:`PHASES`): ``"both"`` (default),
            ``"slm"`` (only the first tier's phase: every item not yet in the folder gets a
            pending row; implies ``slm_first``) or ``"llm"`` (only the later tiers' phases,
            completing the pending rows; items not yet started are left for a later run).

    Returns:
        the run folder.

    Raises:
        RunMismatch: ``run_dir`` holds a run with another configuration (and not ``overwrite``).
        EvaluationAborted: a model fails with a configuration fault (``auth``, ``model_missing``,
            ``unsupported``); completed items are kept.
        ValueError: duplicate item ids, a corrupt line in the middle of items.jsonl, or a
            ``phase`` other than :data:`PHASES` (or not ``"both"`` with ``slm_only``).
    """
    _check_args(items, workers, phase, slm_only)
    slm_first = slm_first or phase == "slm"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = _run_info(items, run_info, slm_only, verify)
    with run_lock(run_dir):
        unpack_run(run_dir)  # a packed (committed) run continues where it stopped
        if not overwrite:
            adopt_tiers_file(run_dir)
        record = prepare_run(run_dir, cascade, info, overwrite)
        write_json(run_dir / RUN_FILE, record)
        pending, todo = _progress(run_dir / ITEMS_FILE, items)
        session = _new_session(workers, len(todo), len(items) - len(todo))
        record["sessions"].append(session)
        write_json(run_dir / RUN_FILE, record)  # a killed process still leaves its session
        t0 = time.perf_counter()
        phases = _Phases(run_dir, pending, session, workers, progress, cascade, verify)
        status = "interrupted"
        try:
            phases.run_all(todo, phase, slm_first and not slm_only, slm_only)
            status = "complete" if phase == "both" else f"{phase} phase complete"
        except EvaluationAborted:
            status = "aborted"
            raise
        finally:
            close_session(record, session, status, time.perf_counter() - t0,
                          session["n_generated"])
            write_json(run_dir / RUN_FILE, record)
    return run_dir


def adopt_tiers_file(run_dir: Path) -> int:
    """A run folder of the former N-tier runner (``tiers.jsonl`` beside a derived
    ``items.jsonl``) becomes one of :func:`evaluate`: ``items.jsonl`` is rewritten from the
    ``tiers.jsonl`` rows (each already one record per tier, given its ``n_tiers``) and
    ``tiers.jsonl`` (and its ``.gz``) removed. Returns the rows adopted (0: nothing to do)."""
    tiers_path = run_dir / TIERS_FILE
    if not tiers_path.is_file():
        return 0
    rows = read_items(tiers_path, repair=True)
    items_path = run_dir / ITEMS_FILE
    tmp = items_path.with_name(ITEMS_FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    for row in rows:
        append_json_line(tmp, {**row, "n_tiers": len(row.get("tiers") or ())})
    tmp.touch()
    os.replace(tmp, items_path)
    for name in (TIERS_FILE, TIERS_FILE + ".gz", ITEMS_FILE + ".gz"):
        (run_dir / name).unlink(missing_ok=True)
    return len(rows)


def _run_info(items: Sequence[Item], run_info: dict | None, slm_only: bool,
              verify: bool) -> dict:
    """What run.json records and checks of an :func:`evaluate` call's run."""
    info = {"dataset": items[0].dataset if items else None, "split": None, "limit": None,
            "seed": None, **(run_info or {})}
    if slm_only:
        info["slm_only"] = True
    if verify:
        info["verify"] = True
    return info


def _progress(items_path: Path, items: Sequence[Item]) -> tuple[dict[str, dict], list[Item]]:
    """``(pending rows by id, items not done)`` from the run's ``items.jsonl`` (created empty
    if missing; a torn last line repaired): the latest row of an id counts."""
    items_path.touch()
    latest: dict[str, dict] = {}
    for r in read_items(items_path, repair=True):
        latest[str(r["id"])] = r
    pending = {i: r for i, r in latest.items() if is_pending(r)}
    done = {i for i in latest if i not in pending}
    return pending, [it for it in items if it.id not in done]


def _new_session(workers: int, n_todo: int, n_done: int) -> dict:
    """A new entry of run.json's ``sessions`` (counts of items; times in seconds)."""
    return {"started_at": now(), "workers": workers, "n_todo": n_todo,
            "n_already_done": n_done, "n_generated": 0, "n_slm_first": 0,
            "n_llm_completed": 0, "elapsed_s": 0.0, "items_per_minute": None,
            "status": "running"}


def _check_args(items: Sequence[Item], workers: int, phase: str, slm_only: bool) -> None:
    """Refuse :func:`evaluate`'s arguments that cannot run (see its ``Raises``)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    if phase != "both" and slm_only:
        raise ValueError("phase is an option of two-model runs; slm_only has one phase")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate item ids: {dup}")


class _Phases:
    """The phases of one :func:`evaluate` session: each runs its items (in a thread pool when
    ``workers`` > 1), appends every finished row to ``items.jsonl`` under one lock, keeps
    ``pending`` (id -> the pending row) and the session's counts up to date, and shows a tqdm
    bar with every tier's running accuracy."""

    def __init__(self, run_dir: Path, pending: dict[str, dict], session: dict, workers: int,
                 progress: bool, cascade: Cascade, verify: bool):
        self.run_dir, self.pending, self.session = run_dir, pending, session
        self.workers, self.progress = workers, progress
        self.cascade, self.verify = cascade, verify
        self.items_path = run_dir / ITEMS_FILE
        self.lock = threading.Lock()

    def _name(self, k: int) -> str:
        """Tier ``k``'s phase and bar name: ``slm`` / ``llm`` with two tiers, else ``tier k+1``."""
        if self.cascade.n_tiers == 2:
            return ("slm", "llm")[k]
        return f"tier {k + 1}"

    def run_all(self, todo: list[Item], phase: str, per_tier: bool, slm_only: bool) -> None:
        """Run ``todo`` as :func:`evaluate`'s ``phase`` says: one phase per tier
        (``per_tier``: the first tier's on the new items, unless ``"llm"``; then, unless
        ``"slm"``, each later tier's on the rows waiting for it), or each item whole."""
        cascade, verify = self.cascade, self.verify

        def whole(it: Item, cancel) -> dict:
            if it.id in self.pending:
                return complete_item(self.pending[it.id], it, cascade, cancel, verify)
            return score_item(it, cascade, slm_only, cancel, verify)

        if not per_tier and phase == "both":
            self.run("eval", todo, whole)
            return
        if phase != "llm":
            self.run(self._name(0), [it for it in todo if it.id not in self.pending],
                     lambda it, cancel: score_item(it, cascade, False, cancel, verify, True))
        if phase == "slm":
            return
        for k in range(1, cascade.n_tiers):
            jobs = [it for it in todo if it.id in self.pending
                    and len(as_record(self.pending[it.id])["tiers"]) == k]
            self.run(self._name(k), jobs, lambda it, cancel, k=k: complete_item(
                self.pending[it.id], it, cascade, cancel, verify, k + 1))

    def run(self, name: str, jobs: list[Item], job) -> None:
        """``job(item, cancel)`` for each of ``jobs``, each row written as it finishes."""
        from tqdm import tqdm

        n_tiers = self.cascade.n_tiers
        stats = {"n": 0, "right": [0] * n_tiers}
        bar = tqdm(total=len(jobs), unit="item", desc=f"{name} {self.run_dir.name}",
                   disable=not self.progress or not jobs, file=sys.stderr, dynamic_ncols=True,
                   smoothing=0.1)

        def write(row: dict) -> None:
            with self.lock:
                self._write(row)
                stats["n"] += 1
                for k, t in enumerate(row["tiers"]):
                    stats["right"][k] += t["correct"] is True
                n = stats["n"]
                bar.set_postfix_str(" ".join(f"{self._name(k)} {r / n:.0%}"
                                             for k, r in enumerate(stats["right"])),
                                    refresh=False)
                bar.update(1)

        try:
            if self.workers == 1:
                for it in jobs:
                    write(job(it, None))
            else:
                _run_pool(jobs, self.workers, write, job)
        finally:
            bar.close()

    def _write(self, row: dict) -> None:
        """Append one row and count it (the caller holds the lock)."""
        append_json_line(self.items_path, row)
        key = str(row["id"])
        if is_pending(row):
            self.session["n_slm_first"] += key not in self.pending
            self.pending[key] = row
        else:
            self.session["n_llm_completed"] += key in self.pending
            self.pending.pop(key, None)
            self.session["n_generated"] += 1


def _run_pool(todo: Sequence[Item], workers: int, write, job) -> None:
    """``write(job(item, cancel))`` for every item, ``workers`` at a time (at most
    ``2 * workers`` submitted); ``cancel`` is set on the way out."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="corea-eval")
    cancel = threading.Event()  # set on the way out: in-flight generations stop at their next token
    try:
        pending = set()
        it = iter(todo)
        for x in it:  # keep at most 2*workers futures in flight, so an abort wastes little
            pending.add(pool.submit(job, x, cancel))
            if len(pending) >= 2 * workers:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                write(fut.result())
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(job, nxt, cancel))
    finally:
        cancel.set()  # Ctrl-C / SIGTERM / an abort: don't wait minutes for unfinished items
        pool.shutdown(wait=True, cancel_futures=True)


def batched(backend, ms, workers: int):
    """With ``workers > 1``, a transformers or vLLM backend is wrapped in
    :class:`corea.backends.batching.BatchingBackend`, so the items in flight are generated in
    batched calls; llama.cpp batches by itself (``n_parallel``), HTTP backends get concurrent
    requests."""
    if workers > 1 and ms.backend in ("transformers", "vllm"):
        from ..backends.batching import BatchingBackend
        return BatchingBackend(backend, max_batch=workers)
    return backend


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

