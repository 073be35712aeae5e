"""The summary of a scored run: every metric at any τ, its markdown table, and summary.json.

:func:`summarize` turns the rows of a run (:func:`corea.eval.runs.load_results`) into pass@1 of
SLM-only, LLM-only and the cascade (95% bootstrap intervals), cost, deferral rate, calibration of
the SLM's confidence (ECE, Brier, AUROC, AURC), the τ sweep, random routing at the same deferral
rate, the paper's rule (τ = LLM pass@1) and the largest saving within 2 points of LLM-only.
:func:`format_summary` prints it as a markdown table; :func:`write_summary` writes
``summary.json`` and ``sweep.json`` into the run folder.

An N-tier run (``tiers.jsonl``, :mod:`corea.eval.tier_runs`) adds a ``tiers`` block
(:func:`summarize_tiers`, printed by :func:`format_tiers`): pass@1, cost and deferral per tier at
the configured τ vector, each tier alone, and the Pareto front (cost vs pass@1) of a τ-vector
sweep. The rest of the summary is then the first tier against the last (``items.jsonl``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .. import metrics
from ..parsing import confidence_echoes_answer
from ..policy import check_threshold
from . import tiers as tiermod
from .runs import (SUMMARY_FILE, SWEEP_FILE, clean, load_results, load_tier_rows, now, read_run,
                   write_json)
from .scored import ScoredSet, best_saving_within

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
        dict with ``n_rows``, ``n`` (gradable items used for metrics), ``n_pending`` (SLM-first
        rows whose LLM has not run: excluded), ``n_ungradable`` and
        ``ungradable_ids`` (either grade undecided: excluded), ``slm_pass_at_1`` /
        ``llm_pass_at_1`` / ``cascade`` pass@1 with ``ci95``, ``calibration``
        (:func:`corea.metrics.calibration_report` of the SLM confidence), ``slm_only_cost`` and
        ``llm_only_cost`` (USD), ``cascade`` (at ``threshold``) and ``paper_rule`` (at τ = LLM
        pass@1) each with a ``random_routing`` baseline at the same deferral rate,
        ``best_within_2pt`` (:func:`corea.eval.scored.best_saving_within`), ``sweep`` (every distinct
        τ), error/truncation counts, answer/confidence method counts and ``throughput``.
        Metrics are None when no item is gradable.
    """
    rows = list(rows)
    pending = [r for r in rows if r.get("llm_grade") == "pending"]  # SLM-first, LLM not yet run
    ungradable = [r for r in rows if (r.get("slm_correct") is None or r.get("llm_correct") is None)
                  and r.get("llm_grade") != "pending"]
    ok = [r for r in rows if r.get("slm_correct") is not None and r.get("llm_correct") is not None]
    n = len(ok)
    slm = [r["slm"] or {} for r in rows]
    llm = [r["llm"] or {} for r in rows]
    out: dict = {
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
        return clean(out)
    if n == 0:
        out.update(empty)
        return out

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
    out.update({
        "slm_pass_at_1": pass_ci(s),
        "llm_pass_at_1": pass_ci(l_),
        "calibration": metrics.calibration_report(scored.confidence_list(), s),
        "slm_only_cost": float(scored.slm_cost.sum()),
        "llm_only_cost": scored.llm_only_cost,
        "cascade": cascade_block(float(threshold)),
        "paper_rule": cascade_block(llm_pass),
        "best_within_2pt": best_saving_within(sweep_rows, llm_pass, 0.02),
        "sweep": sweep_rows,
    })
    best = out["best_within_2pt"]
    if best is not None:
        best["random_routing"] = scored.random_routing(best["deferral_rate"])
    return clean(out)


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
        *([("LLM still to run (SLM-first rows, excluded)", str(s["n_pending"]))]
          if s.get("n_pending") else []),
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
        ("confidence echoing the answer: before / after",
         f"{_pct((s.get('echo') or {}).get('before'))} "
         f"({(s.get('echo') or {}).get('n_before', '–')}) / "
         f"{_pct((s.get('echo') or {}).get('after'))} "
         f"({(s.get('echo') or {}).get('n_after', '–')}); asked again with a new value: "
         f"{(s.get('echo') or {}).get('n_asked_ok', '–')}"),
        ("throughput", f"{_num(tp.get('items_per_minute'), '.2f')} items/min "
                       f"(from {tp.get('source') or '–'}; mean latency per item with the others "
                       f"in flight: SLM {_num(tp.get('mean_slm_latency_s'), '.1f')} s, "
                       f"LLM {_num(tp.get('mean_llm_latency_s'), '.1f')} s)"),
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
    rows = load_results(run_dir)
    run = read_run(run_dir)
    summary = summarize(rows, threshold=threshold, run=run)
    tier_rows = load_tier_rows(run_dir)
    if tier_rows:
        summary["tiers"] = summarize_tiers(tier_rows, taus if taus is not None
                                           else recorded_taus(run, len(tier_rows[0]["tiers"])))
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


# ----------------------------------------------------------------------------- N tiers

def recorded_taus(run: dict | None, n_tiers: int) -> list[float]:
    """The τ vector an N-tier run was configured with (its run.json ``settings``: each tier's
    ``threshold``, else the global one); the global τ (0.7 when unrecorded) for every deciding
    tier when the record does not describe ``n_tiers`` tiers."""
    st = (run or {}).get("settings") or {}
    glob = st.get("threshold")
    glob = 0.7 if glob is None else float(glob)
    tiers = st.get("tiers") or []
    if len(tiers) != n_tiers:
        return [glob] * (n_tiers - 1)
    return [glob if (t or {}).get("threshold") is None else float(t["threshold"])
            for t in tiers[:-1]]


def summarize_tiers(rows: Sequence[dict], taus: Sequence[float],
                    values: Sequence[float] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """The N-tier view of ``tiers.jsonl`` rows (:func:`corea.eval.runs.load_tier_rows`).

    Args:
        rows: the tiers rows (every one with the same number of tiers).
        taus: the τ vector of the headline cascade (one τ per tier but the last).
        values: candidate τ of each deciding tier for the sweep (default
            :func:`corea.eval.tiers.default_tau_values`).
        n_boot: bootstrap resamples of the 95% interval of pass@1 at ``taus``.
        seed: bootstrap seed.

    Returns:
        ``n_tiers``, ``models``, ``n_rows``, ``n`` (gradable items), ``n_ungradable`` /
        ``ungradable_ids`` (a tier's grade undecided: excluded), ``taus``, ``at_taus`` (the
        cascade at ``taus``: :class:`corea.eval.tiers.TierOutcome` fields plus
        ``pass_at_1_ci95`` and ``cost_fraction_of_last_only``), ``per_tier`` (per tier: model,
        τ, share reached / answered, deferral rate, pass@1 of its own answers, its cost at τ,
        and alone: pass@1 and cost, errors, cut off), ``last_only_cost``, ``n_swept`` and
        ``values`` of the sweep, ``pareto`` (the front, cheapest first) and ``best_within_2pt``
        (the cheapest swept vector within 2 points of the last tier alone). Metrics are None
        when no item is gradable.

    Raises:
        ValueError: rows with different tier counts, or a τ vector of the wrong length or
            outside [0, 1].
    """
    rows = list(rows)
    n_tiers = len(rows[0]["tiers"]) if rows else 0
    if any(len(r.get("tiers") or []) != n_tiers for r in rows):
        raise ValueError("every tiers row needs the same number of tiers")
    taus = [check_threshold(t, "τ") for t in taus]
    if rows and len(taus) != n_tiers - 1:
        raise ValueError(f"{len(taus)} thresholds for {n_tiers} tiers (one per tier but the "
                         f"last: {n_tiers - 1})")
    pairs = [(r, tiermod.tier_item(r)) for r in rows]
    ok = [it for _, it in pairs if it is not None]
    bad = [str(r["id"]) for r, it in pairs if it is None]
    models = [t.get("model") for t in rows[0]["tiers"]] if rows else []
    out: dict = {"n_tiers": n_tiers, "models": models, "n_rows": len(rows), "n": len(ok),
                 "n_ungradable": len(bad), "ungradable_ids": bad, "taus": taus,
                 "at_taus": None, "per_tier": [], "last_only_cost": None, "n_swept": 0,
                 "values": None, "pareto": [], "best_within_2pt": None}
    if not ok:
        return out
    o = tiermod.evaluate_taus(ok, taus)
    routed = [tiermod.route(it, taus) for it in ok]
    finals = [tiermod.final(it, taus) for it in ok]  # the graded answer (none: wrong)
    y = np.array([k is not None and bool(it.tiers[k].correct) for it, k in zip(ok, finals)])
    lo, hi = metrics.bootstrap_ci(lambda idx: float(y[idx].mean()), len(ok), n_boot=n_boot,
                                  seed=seed)
    alone = [tiermod.single_tier(ok, k) for k in range(n_tiers)]
    last_cost = alone[-1]["cost_usd"]

    def frac(cost: float):
        return cost / last_cost if last_cost > 0 else None

    at = {**tiermod.outcome_dict(o), "pass_at_1_ci95": [lo, hi],
          "cost_fraction_of_last_only": frac(o.cost_usd)}
    per = []
    for k in range(n_tiers):
        mine = [it for it, j in zip(ok, finals) if j == k]
        outs = [(r["tiers"][k].get("output") or {}) for r in rows]
        per.append({
            "tier": k, "model": models[k], "tau": taus[k] if k < n_tiers - 1 else None,
            "reached": o.reached[k], "answered": o.answered[k],
            "deferral_rate": o.deferral_rate[k] if k < n_tiers - 1 else None,
            "pass_at_1_of_answers": (sum(bool(it.tiers[k].correct) for it in mine) / len(mine)
                                     if mine else None),
            "cost_usd": sum(it.tiers[k].cost_usd for it, j in zip(ok, routed) if j >= k),
            "alone_pass_at_1": alone[k]["pass_at_1"], "alone_cost_usd": alone[k]["cost_usd"],
            "errors": sum(1 for x in outs if x.get("error")),
            "truncated": sum(1 for x in outs if x.get("finish_reason") == "length"),
        })
    values = list(values) if values is not None else tiermod.default_tau_values(n_tiers)
    swept = tiermod.sweep(ok, tiermod.tau_grid(values, n_tiers))
    front = [{**tiermod.outcome_dict(x), "cost_fraction_of_last_only": frac(x.cost_usd)}
             for x in tiermod.pareto(swept)]
    target = alone[-1]["pass_at_1"] - 0.02
    within = [x for x in front if x["pass_at_1"] >= target - 1e-12]
    out.update({"at_taus": at, "per_tier": per, "last_only_cost": last_cost,
                "n_swept": len(swept), "values": values, "pareto": front,
                "best_within_2pt": within[0] if within else None})
    return clean(out)


def _taus_text(taus) -> str:
    return "(" + ", ".join(f"{t:.2f}" for t in taus) + ")"


def format_tiers(block: dict | None, max_front: int = 20) -> str:
    """The N-tier block of a summary (:func:`summarize_tiers`) as markdown: the cascade at its
    τ vector, a table per tier and the Pareto front of the sweep (at most ``max_front`` rows)."""
    if not block:
        return ""
    b = block
    lines = [f"### N tiers ({b['n_tiers']}): " + " → ".join(f"`{m}`" for m in b["models"]), ""]
    ung = b.get("ungradable_ids") or []
    lines.append(f"Items (gradable / total): {b['n']} / {b['n_rows']}"
                 + (f"; ungradable (excluded): {', '.join(ung[:10])}"
                    + (", …" if len(ung) > 10 else "") if ung else "") + ".")
    at = b.get("at_taus")
    if not at:
        return "\n".join(lines)
    lo, hi = at.get("pass_at_1_ci95") or (None, None)
    ci = "" if lo is None else f" [{_pct(lo)}, {_pct(hi)}]"
    lines += ["", f"Cascade at τ = {_taus_text(b['taus'])}: pass@1 {_pct(at['pass_at_1'])}{ci}, "
              f"cost {_usd(at['cost_usd'])} ({_pct(at.get('cost_fraction_of_last_only'))} of "
              f"the last tier alone), answered per tier "
              + " / ".join(_pct(a) for a in at["answered"]) + ".", "",
              "| tier | model | τ | reached | answered | deferral | pass@1 of its answers | "
              "cost at τ | alone: pass@1 | alone: cost | errors / cut off |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in b["per_tier"]:
        lines.append(
            f"| {t['tier'] + 1} | `{t['model']}` | "
            f"{'–' if t['tau'] is None else format(t['tau'], '.2f')} | {_pct(t['reached'])} | "
            f"{_pct(t['answered'])} | {_pct(t['deferral_rate'])} | "
            f"{_pct(t['pass_at_1_of_answers'])} | {_usd(t['cost_usd'])} | "
            f"{_pct(t['alone_pass_at_1'])} | {_usd(t['alone_cost_usd'])} | "
            f"{t['errors']} / {t['truncated']} |")
    front = b.get("pareto") or []
    best = b.get("best_within_2pt")
    lines += ["", f"Pareto front of {b['n_swept']} swept τ vectors (each deciding tier's τ in "
              f"{{{', '.join(f'{v:g}' for v in b.get('values') or [])}}}; cheapest first; no "
              "other vector is both cheaper and better):", "",
              "| τ vector | pass@1 | cost | cost vs last tier alone | answered per tier |",
              "|---|---|---|---|---|"]
    for x in front[:max_front]:
        lines.append(f"| {_taus_text(x['taus'])} | {_pct(x['pass_at_1'])} | "
                     f"{_usd(x['cost_usd'])} | {_pct(x.get('cost_fraction_of_last_only'))} | "
                     + " / ".join(_pct(a) for a in x["answered"]) + " |")
    if len(front) > max_front:
        lines.append(f"| … {len(front) - max_front} more in summary.json | | | | |")
    lines += ["", "Cheapest swept τ vector within 2 points of the last tier alone: "
              + ("none" if not best else
                 f"{_taus_text(best['taus'])}, pass@1 {_pct(best['pass_at_1'])}, cost "
                 f"{_pct(best.get('cost_fraction_of_last_only'))} of the last tier alone") + "."]
    return "\n".join(lines)
