"""The summary of a scored run: every metric at any τ, its markdown table, and summary.json.

:func:`summarize` turns the rows of a run (:func:`corea.eval.runs.load_results`) into pass@1 of
SLM-only, LLM-only and the cascade (95% bootstrap intervals), cost, deferral rate, calibration of
the SLM's confidence (ECE, Brier, AUROC, AURC), the τ sweep, random routing at the same deferral
rate, the paper's rule (τ = LLM pass@1) and the largest saving within 2 points of LLM-only.
:func:`format_summary` prints it as a markdown table; :func:`write_summary` writes
``summary.json`` and ``sweep.json`` into the run folder.

One summary for any number of tiers: the rows' two-tier keys (the first tier against the last,
:mod:`corea.eval.records`) give the table above, and a run of three tiers or more adds a
``tiers`` block from the same rows' tier records (:func:`summarize_tiers`, printed by
:func:`format_tiers`; both in :mod:`.tier_summary` and importable from here): pass@1, cost and
deferral per tier at the configured τ vector, each tier alone, and the Pareto front (cost vs
pass@1) of a τ-vector sweep.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .. import metrics
from ..parsing import confidence_echoes_answer
from .records import is_pending, n_tiers_of
from .runs import SUMMARY_FILE, SWEEP_FILE, clean, load_results, now, read_run, write_json
from .cells import num, pct, usd
from .scored import ScoredSet, best_saving_within
from .seconds import seconds_line, seconds_summary
from .tier_summary import format_tiers, recorded_taus, summarize_tiers

__all__ = ["summarize", "format_summary", "write_summary", "summarize_tiers", "format_tiers",
           "recorded_taus"]


def _mean(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def _counts(values: Iterable) -> dict:
    out: dict = {}
    for v in values:
        k = "none" if v is None else str(v)
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def echo_rates(outputs: Sequence[dict]) -> dict:
    """How often the SLM's stated confidence was its answer's digits
    (:func:`corea.parsing.confidence_echoes_answer`).

    ``before``: share of SLM outputs that stated a confidence whose first stated value echoed the
    answer (``confidence_echo`` set); ``after``: share whose final confidence still echoes (the
    echo is discarded and asked again, so this should be 0); ``asked_ok``: echoes replaced by a
    non-echo value from the separate turn.
    """
    stated = [o for o in outputs if o.get("confidence") is not None
              or o.get("confidence_echo") is not None]
    n = len(stated)
    before = sum(1 for o in stated if o.get("confidence_echo") is not None
                 or confidence_echoes_answer(o.get("answer"), o.get("confidence")))
    after = sum(1 for o in stated if confidence_echoes_answer(o.get("answer"),
                                                              o.get("confidence")))
    asked = sum(1 for o in stated if o.get("confidence_method") == "asked")
    return {"n_stated": n, "n_before": before, "n_after": after, "n_asked_ok": asked,
            "before": before / n if n else None, "after": after / n if n else None}


def summarize(rows: Sequence[dict], threshold: float = 0.7, run: dict | None = None,
              n_boot: int = 1000, seed: int = 0, taus: Sequence[float] | None = None,
              time_model=None) -> dict:
    """All metrics of a scored run, for any τ, without generating again.

    Args:
        rows: item rows (:func:`load_results`).
        threshold: τ for the headline cascade row.
        run: the run.json record, for generation throughput (items/minute over its sessions);
            without it items/minute is estimated from per-item wall times (sequential).
        n_boot: bootstrap resamples for the 95% intervals.
        seed: bootstrap seed.
        taus: the τ vector of the ``tiers`` block of a run of three tiers or more (one τ per
            tier but the last; default: the one ``run`` records, :func:`recorded_taus`).
        time_model: a :class:`corea.timing.TimeModel` for the ``seconds`` block's estimate.

    Returns:
        dict with ``n_rows``, ``n`` (gradable items used for metrics), ``n_pending`` (SLM-first
        rows whose LLM has not run: excluded), ``n_ungradable`` and
        ``ungradable_ids`` (either grade undecided: excluded), ``slm_pass_at_1`` /
        ``llm_pass_at_1`` / ``cascade`` pass@1 with ``ci95``, ``calibration``
        (:func:`corea.metrics.calibration_report` of the SLM confidence), ``slm_only_cost`` and
        ``llm_only_cost`` (USD), ``cascade`` (at ``threshold``) and ``paper_rule`` (at τ = LLM
        pass@1) each with a ``random_routing`` baseline at the same deferral rate,
        ``best_within_2pt`` (:func:`corea.eval.scored.best_saving_within`), ``sweep`` (every distinct
        τ), ``seconds`` (the cascade at ``threshold`` against LLM-only in seconds, measured and
        from ``time_model``, :func:`corea.eval.seconds.seconds_summary`), error/truncation
        counts, answer/confidence method counts and ``throughput``; with three tiers or more,
        ``tiers`` (:func:`summarize_tiers` of the completed rows).
        Metrics are None when no item is gradable.
    """
    rows = list(rows)
    ok = [r for r in rows if r.get("slm_correct") is not None and r.get("llm_correct") is not None]
    out = _counts_block(rows, len(ok), threshold, run)
    done = [r for r in rows if "tiers" in r and not is_pending(r)]
    if done and n_tiers_of(done[0]) > 2:
        n = n_tiers_of(done[0])
        out["tiers"] = summarize_tiers(done, taus if taus is not None
                                       else recorded_taus(run, n), n_boot=n_boot, seed=seed)
    if rows and all(r.get("llm") is None and r.get("llm_grade") == "not_run" for r in rows):
        # an --slm-only run: one model's pass@1 and calibration, no cascade
        return clean({**out, **_empty(), **_slm_only_metrics(rows, n_boot, seed)})
    if not ok:
        out.update(_empty())
        return out
    out.update(_cascade_metrics(ok, threshold, n_boot, seed))
    out["seconds"] = seconds_summary(ok, ScoredSet.from_rows(ok), float(threshold), run,
                                     time_model)
    return clean(out)


def _empty() -> dict:
    """The metrics of :func:`summarize` when no item is gradable (a new dict each time)."""
    return {"slm_pass_at_1": None, "llm_pass_at_1": None, "calibration": None,
            "slm_only_cost": None, "llm_only_cost": None, "cascade": None, "paper_rule": None,
            "best_within_2pt": None, "sweep": [], "seconds": None}


def _counts_block(rows: list[dict], n: int, threshold: float, run: dict | None) -> dict:
    """The counts of a summary: rows, gradable ``n``, ungradable and pending rows, errors,
    cut-off outputs, answer and confidence methods, confidence echoes and throughput."""
    pending = [r for r in rows if r.get("llm_grade") == "pending"]  # SLM-first, LLM not yet run
    ungradable = [r for r in rows if (r.get("slm_correct") is None or r.get("llm_correct") is None)
                  and r.get("llm_grade") != "pending"]
    slm = [r["slm"] or {} for r in rows]
    llm = [r["llm"] or {} for r in rows]
    return {
        "limit": (run or {}).get("limit"),
        "n_rows": len(rows),
        "n": n,
        "n_ungradable": len(ungradable),
        "n_pending": len(pending),
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
        "echo": echo_rates(slm),
        "llm_answer_methods": _counts(o.get("answer_method") for o in llm),
        "throughput": _throughput(rows, run),
    }


def _slm_only_metrics(rows: list[dict], n_boot: int, seed: int) -> dict:
    """An ``--slm-only`` run's metrics: the SLM's pass@1 (95% bootstrap interval), calibration
    and cost (USD) over its gradable rows."""
    graded = [r for r in rows if r.get("slm_correct") is not None]
    out: dict = {"slm_only_run": True, "n": len(graded),
                 "n_ungradable": len(rows) - len(graded),
                 "ungradable_ids": [str(r["id"]) for r in rows if r.get("slm_correct") is None]}
    if graded:
        y = np.array([bool(r["slm_correct"]) for r in graded])
        lo, hi = metrics.bootstrap_ci(lambda idx: float(y[idx].mean()), len(graded),
                                      n_boot=n_boot, seed=seed)
        out["slm_pass_at_1"] = {"value": float(y.mean()), "ci95": [lo, hi]}
        out["calibration"] = metrics.calibration_report(
            [(r["slm"] or {}).get("confidence") for r in graded], y)
        out["slm_only_cost"] = float(sum((r["slm"] or {}).get("cost_usd") or 0.0
                                         for r in graded))
    return out


def _cascade_metrics(ok: list[dict], threshold: float, n_boot: int, seed: int) -> dict:
    """The two-model metrics over the gradable rows ``ok``: each model's pass@1, the SLM's
    calibration, costs, the cascade at ``threshold`` and at the paper's rule, the best saving
    within 2 points and the τ sweep."""
    n = len(ok)
    scored = ScoredSet.from_rows(ok)
    s, l_ = scored.slm_correct, scored.llm_correct

    def pass_ci(y: np.ndarray) -> dict:
        lo, hi = metrics.bootstrap_ci(lambda idx: float(y[idx].mean()), n, n_boot=n_boot,
                                      seed=seed)
        return {"value": float(y.mean()), "ci95": [lo, hi]}

    def cascade_block(tau: float) -> dict:
        row = scored.at(tau)
        row["pass_at_1_ci95"] = pass_ci(scored.correct_at(tau))["ci95"]
        row["n_deferred"] = int(scored.defer(tau).sum())
        row["random_routing"] = scored.random_routing(row["deferral_rate"])
        return row

    llm_pass = scored.llm_pass
    sweep_rows = scored.sweep()
    out = {
        "slm_pass_at_1": pass_ci(s),
        "llm_pass_at_1": pass_ci(l_),
        "calibration": metrics.calibration_report(scored.confidence_list(), s),
        "slm_only_cost": float(scored.slm_cost.sum()),
        "llm_only_cost": scored.llm_only_cost,
        "cascade": cascade_block(float(threshold)),
        "paper_rule": cascade_block(llm_pass),
        "best_within_2pt": best_saving_within(sweep_rows, llm_pass, 0.02),
        "sweep": sweep_rows,
    }
    best = out["best_within_2pt"]
    if best is not None:
        best["random_routing"] = scored.random_routing(best["deferral_rate"])
    return out


def _parse_time(x):
    from datetime import datetime

    if not x:
        return None
    try:
        return datetime.fromisoformat(str(x))
    except ValueError:
        return None


def _throughput(rows: Sequence[dict], run: dict | None) -> dict:
    # the evaluation's own sessions (side-file stages such as samples make other things)
    sessions = [x for x in (run or {}).get("sessions") or [] if not x.get("stage")]
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


def _ci(block: dict | None) -> str:
    if not block:
        return "–"
    lo, hi = block["ci95"]
    ci = "" if lo is None else f" [{pct(lo)}, {pct(hi)}]"
    return pct(block["value"]) + ci


def _casc(row: dict | None) -> str:
    if not row:
        return "–"
    rr = row.get("random_routing") or {}
    return (f"pass@1 {pct(row['pass_at_1'])}, deferral {pct(row['deferral_rate'])}, "
            f"cost {usd(row['cost'])} ({pct(row.get('cost_fraction_of_llm_only'))} of LLM-only)"
            f"; random routing: pass@1 {pct(rr.get('pass_at_1'))}")


def _best_text(best: dict | None) -> str:
    if not best:
        return "no τ keeps pass@1 within 2 points"
    detail = (f"τ={best['threshold']:.4g}: pass@1 {pct(best['pass_at_1'])}, deferral "
              f"{pct(best['deferral_rate'])}")
    saving = best.get("saving")
    if saving is None or saving <= 1e-12:
        extra = "" if saving is None else f", cost {pct(-saving)} above LLM-only"
        return f"none: no τ within 2 points costs less than LLM-only (cheapest: {detail}{extra})"
    return f"saving {pct(saving)} ({detail})"


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
        *([("LLM still to run (SLM-first rows, excluded)", str(s["n_pending"]))]
          if s.get("n_pending") else []),
        ("SLM-only pass@1 [95% CI]", _ci(s.get("slm_pass_at_1"))),
        ("LLM-only pass@1 [95% CI]", _ci(s.get("llm_pass_at_1"))),
        ("SLM-only / LLM-only cost", f"{usd(s.get('slm_only_cost'))} / "
                                     f"{usd(s.get('llm_only_cost'))}"),
        ("SLM ECE-10 / ECE-15", f"{num(cal.get('ece_10'))} / {num(cal.get('ece_15'))}"),
        ("SLM Brier / AUROC / AURC", f"{num(cal.get('brier'))} / {num(cal.get('auroc'))} / "
                                     f"{num(cal.get('aurc'))}"),
        ("SLM without confidence", f"{pct(cal.get('share_no_confidence'))} "
                                   f"({cal.get('n_no_confidence', '–')})"),
        ("SLM distinct confidences / mean", f"{cal.get('n_distinct_confidences', '–')} / "
                                            f"{num(cal.get('mean_confidence'), '.3f')}"),
        (f"cascade τ={s.get('threshold')}", _casc(s.get("cascade"))),
        (f"cascade τ=LLM pass@1 ({num((s.get('paper_rule') or {}).get('threshold'), '.3f')})",
         _casc(s.get("paper_rule"))),
        ("best saving within 2 pt of LLM-only", _best_text(best)),
        (f"seconds at τ={s.get('threshold')}", seconds_line(s.get("seconds"))),
        ("errors SLM / LLM", f"{s.get('slm_errors')} / {s.get('llm_errors')}"),
        ("truncated (length) SLM / LLM", f"{s.get('slm_truncated')} / {s.get('llm_truncated')}"),
        ("SLM answer / confidence methods", f"{s.get('slm_answer_methods')} / "
                                            f"{s.get('slm_confidence_methods')}"),
        ("confidence echoing the answer: before / after",
         f"{pct((s.get('echo') or {}).get('before'))} "
         f"({(s.get('echo') or {}).get('n_before', '–')}) / "
         f"{pct((s.get('echo') or {}).get('after'))} "
         f"({(s.get('echo') or {}).get('n_after', '–')}); asked again with a new value: "
         f"{(s.get('echo') or {}).get('n_asked_ok', '–')}"),
        ("throughput", f"{num(tp.get('items_per_minute'), '.2f')} items/min "
                       f"(from {tp.get('source') or '–'}; mean latency per item with the others "
                       f"in flight: SLM {num(tp.get('mean_slm_latency_s'), '.1f')} s, "
                       f"LLM {num(tp.get('mean_llm_latency_s'), '.1f')} s)"),
    ]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    if s.get("tiers"):  # an N-tier run: the table above is the first tier against the last
        lines += ["", format_tiers(s["tiers"])]
    return "\n".join(lines)


def write_summary(run_dir: str | os.PathLike, threshold: float = 0.7,
                  taus: Sequence[float] | None = None) -> dict:
    """Summarize a run folder: writes ``summary.json`` and ``sweep.json``; returns the summary.

    An N-tier run's summary has a ``tiers`` block (:func:`summarize_tiers`) at ``taus`` (one τ
    per tier but the last; default: the τ its run.json records, :func:`recorded_taus`)."""
    run_dir = Path(run_dir)
    from ..timing import shipped_time_model

    rows = load_results(run_dir)
    run = read_run(run_dir)
    summary = summarize(rows, threshold=threshold, run=run, taus=taus,
                        time_model=shipped_time_model())
    write_json(run_dir / SWEEP_FILE, summary["sweep"])
    short = {k: v for k, v in summary.items() if k != "sweep"}
    short["sweep_file"] = SWEEP_FILE
    short["n_sweep_rows"] = len(summary["sweep"])
    if run:
        short["run"] = {k: run.get(k) for k in ("dataset", "split", "limit", "seed", "models",
                                                 "backends", "prompt_version")}
    short["summarized_at"] = now()
    write_json(run_dir / SUMMARY_FILE, short)
    return summary
