"""A shareable report of one evaluation run: ``report.md`` plus the explorer's charts.

Usage (:mod:`corea.cli.report`)::

    corea report RUN_DIR [--out DIR] [--threshold 0.7] [--n-boot 1000]

Writes into ``DIR`` (default ``RUN_DIR/report``):

* ``report.md``: the summary table (:func:`corea.eval.summary.format_summary` of
  :func:`corea.eval.summary.summarize`), the τ chosen by each rule of :mod:`.thresholds` on the
  whole run with the cascade it gives (in-sample: the run is its own calibration set), and links
  to the charts;
* ``frontier.html``, ``reliability.html``, ``confidence_histogram.html``
  (:mod:`.charts`, saved with Altair's ``chart.save``; self-contained Vega-Lite pages that
  load the Vega JavaScript from a CDN when opened);
* the same charts as ``.png`` only when ``vl-convert-python`` is installed (it is not a
  dependency and is never installed here);
* for a run of three tiers or more: an "N tiers" section (the summary's ``tiers`` block,
  :func:`corea.eval.summary.format_tiers`, at the τ vector its run.json records) and
  ``tiers_pareto.html``
  (:func:`corea.eval.charts.tier_pareto_chart`); the rest of the report is then the first tier
  against the last.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from ..signals.registry import get
from . import charts, compare, thresholds
from . import tiers as tiermod
from .records import is_pending
from .runs import load_results, read_run
from .scored import ScoredSet, apgr, cpt, flat_row
from .summary import format_summary, format_tiers, summarize

__all__ = ["write_report", "signals_section"]

CHARTS = (("frontier", "Accuracy vs cost over τ"),
          ("reliability", "Reliability diagram of the SLM's confidence"),
          ("confidence_histogram", "SLM confidence by outcome"))


def _png_available() -> bool:
    return importlib.util.find_spec("vl_convert") is not None


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _rule_rows(rows: Sequence[dict]) -> list[str]:
    scored = ScoredSet.from_rows(rows)
    conf, s, l_ = scored.confidence_list(), scored.slm_correct, scored.llm_correct
    if s.size == 0:
        return ["No item has both labels: no threshold rule applies."]
    rules: list[tuple[str, float | None, str]] = [
        ("paper: τ = LLM pass@1", thresholds.paper_threshold(l_), ""),
        ("30% deferral", thresholds.target_deferral_threshold(conf, 0.3), ""),
    ]
    for loss in ("drop", "harm"):
        res = thresholds.certified_threshold(conf, s, l_, alpha=0.02, delta=0.1, loss=loss,
                                             usable=scored.usable,
                                             llm_usable=scored.llm_usable)
        note = "" if res.threshold is not None else "nothing certified: LLM only"
        rules.append((f"Learn-then-Test, α=0.02, δ=0.1, loss={loss}", res.threshold, note))
    crc = thresholds.conformal_risk_control_threshold(conf, s, 0.05)
    rules.append(("Conformal risk control, P(kept and wrong) ≤ 0.05", crc,
                  "" if crc is not None else "too few items"))
    out = ["| rule | τ | pass@1 | deferral | cost vs LLM-only | note |",
           "|---|---|---|---|---|---|"]
    for name, tau, note in rules:
        if tau is None:
            out.append(f"| {name} | – | {_pct(float(l_.mean()))} | 100.0% | 100.0% | {note} |")
            continue
        r = scored.at(tau)
        out.append(f"| {name} | {tau:.4g} | {_pct(r['pass_at_1'])} | {_pct(r['deferral_rate'])}"
                   f" | {_pct(r['cost_fraction_of_llm_only'])} | {note} |")
    return out


def _heldout_rows(rows: Sequence[dict], seed: int = 0, alpha: float = 0.02,
                  delta: float = 0.1) -> list[str]:
    """τ chosen on a random half (calibration), applied to the other half (test)."""
    scored = ScoredSet.from_rows(rows)
    n = len(scored)
    if n < 20:
        return [f"Only {n} labelled items: too few for a calibration/test split."]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    cal, test = scored.subset(perm[: n // 2]), scored.subset(perm[n // 2:])
    rules: list[tuple[str, float | None]] = [("paper: τ = LLM pass@1 on the calibration half",
                                              thresholds.paper_threshold(cal.llm_correct))]
    for loss in ("harm", "drop"):
        res = thresholds.certified_threshold(cal.confidence_list(), cal.slm_correct,
                                             cal.llm_correct, alpha=alpha, delta=delta,
                                             loss=loss, usable=cal.usable,
                                             llm_usable=cal.llm_usable)
        rules.append((f"certified (LTT, α={alpha}, δ={delta}, loss={loss})", res.threshold))
    out = [f"Calibration half: {len(cal)} items; test half: {len(test)} items (seed {seed}). "
           f"Test-half LLM-only pass@1 {_pct(test.llm_pass)}, SLM-only "
           f"{_pct(test.slm_pass)}.", "",
           "| rule (τ from the calibration half) | τ | test pass@1 | drop vs LLM-only | "
           "test deferral | test cost vs LLM-only |", "|---|---|---|---|---|---|"]
    for name, tau in rules:
        if tau is None:
            out.append(f"| {name} | nothing certified → LLM only | {_pct(test.llm_pass)}"
                       " | 0.0 pt | 100.0% | 100.0% (no SLM call) |")
            continue
        r = test.at(tau)
        drop = test.llm_pass - r["pass_at_1"]
        out.append(f"| {name} | {tau:.4g} | {_pct(r['pass_at_1'])} | {100 * drop:+.1f} pt | "
                   f"{_pct(r['deferral_rate'])} | {_pct(r['cost_fraction_of_llm_only'])} |")
    out.append("")
    for loss in ("harm", "drop"):
        v = thresholds.validate_guarantee(rows, alpha=alpha, delta=delta, n_splits=200,
                                          loss=loss, seed=seed)
        out.append(f"- Guarantee check, loss={loss}, 200 random 50/50 splits: test drop ≤ α in "
                   f"{_pct(v['coverage'])} of splits (target ≥ {_pct(v['target'])}); mean test "
                   f"drop {100 * v['mean_test_drop']:+.2f} pt; mean saving "
                   f"{_pct(v['mean_saving'])}; nothing certified in {_pct(v['refused_share'])} "
                   "of splits.")
    return out


def _routing_rows(raw: Sequence[dict]) -> list[str]:
    """RouteLLM's APGR and CPT for each signal (default prices)."""
    ok = [r for r in raw if r.get("slm_correct") is not None and r.get("llm_correct") is not None]
    if not ok:
        return ["No gradable items."]
    scored = ScoredSet.from_rows(ok)
    sp, lp = scored.slm_pass, scored.llm_pass
    out = ["| signal | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|"]
    for name in compare.DEFAULT_SIGNALS:
        if get(name).learned:
            continue
        vals = compare.signal_values(ok, name)
        if all(v is None for v in vals):
            continue
        sw = scored.with_confidence(vals).sweep()
        cells = [apgr(sw, sp, lp), cpt(sw, sp, lp, 0.5), cpt(sw, sp, lp, 0.8)]
        out.append(f"| {get(name).label} | " + " | ".join(
            "–" if c is None else f"{c:.3f}" if i == 0 else _pct(c)
            for i, c in enumerate(cells)) + " |")
    out += ["", "APGR: area under the share of the SLM→LLM pass@1 gap recovered vs the share of "
            "calls sent to the LLM (random routing: 0.5). CPT(x): the deferral rate needed to "
            "recover x of the gap (RouteLLM, Ong et al. 2024)."]
    return out


def signals_section(raw: Sequence[dict], llm_price: tuple[float, float] | None) -> list[str]:
    """Markdown: every deferral signal against the oracle (:func:`corea.eval.compare.compare_signals`),
    with a calibrator cross-fitted (5-fold) on the run's own items when there are enough."""
    from ..signals.calibrator import MIN_LABELS, cross_val_predictions, has_token_signals

    ok = [dict(r) for r in raw if r.get("slm_correct") is not None
          and r.get("llm_correct") is not None]
    if not ok or llm_price is None:
        return ["No gradable items or no LLM price: no signal comparison."]
    idx = [i for i, r in enumerate(ok) if has_token_signals(r.get("slm") or {})]
    y = [bool(ok[i]["slm_correct"]) for i in idx]
    note, values = "", {}
    if len(idx) >= MIN_LABELS and 5 <= sum(y) <= len(y) - 5:
        pred = cross_val_predictions([ok[i]["slm"] for i in idx], y, folds=5)
        values["calibrator"] = [None] * len(ok)
        for i, p in zip(idx, pred):
            values["calibrator"][i] = float(p)
        note = ("The calibrator row is cross-fitted: each item's P(correct) comes from a "
                "logistic calibrator fit on the other 4 folds of this run (never on the item "
                "itself).")
    cmp = compare.compare_signals(ok, llm_price, values=values)
    return [compare.format_table(cmp), "",
            f"n = {cmp['n']}; LLM-only pass@1 {_pct(cmp['llm_pass_at_1'])}, SLM-only "
            f"{_pct(cmp['slm_pass_at_1'])}. Cost change at the cheapest τ with pass@1 within "
            f"{100 * cmp['max_drop']:.0f} points of LLM-only (LLM x% = deferral rate); "
            f"LLM price ${llm_price[0]:g}/${llm_price[1]:g} per 1M input/output tokens, SLM "
            "priced at the stated fraction of it.", "", note]


def _tiers_section(raw: Sequence[dict], block: dict | None, out: Path,
                   png: bool) -> list[str]:
    """The "N tiers" section of a run of three tiers or more (``block``: its summary's ``tiers``,
    :func:`corea.eval.summary.summarize_tiers`; ``[]`` without one), its chart saved."""
    if not block:
        return []
    taus = block["taus"]
    md = ["## N tiers", "",
          "Every tier answered every item once (one record per tier); each τ vector is evaluated "
          "afterwards. The sections above are the first tier against the last.", "",
          format_tiers(block), ""]
    items = [x for x in map(tiermod.tier_item, (r for r in raw if not is_pending(r)))
             if x is not None]
    title = "Accuracy vs cost over τ vectors"
    try:
        chart = charts.tier_pareto_chart(items, taus, block["models"])
    except ValueError as exc:
        return md + [f"- {title}: not drawn ({exc})", ""]
    chart.save(str(out / "tiers_pareto.html"))
    line = f"- [{title}](tiers_pareto.html)"
    if png:
        try:
            chart.save(str(out / "tiers_pareto.png"))
            line += f" · ![{title}](tiers_pareto.png)"
        except Exception as exc:  # noqa: BLE001 - PNG is optional
            line += f" (PNG failed: {exc})"
    return md + [line, ""]


def write_report(run_dir: str | Path, out: str | Path | None = None, threshold: float = 0.7,
                 n_boot: int = 1000, taus: Sequence[float] | None = None) -> Path:
    """Write the report of ``run_dir`` into ``out`` (default ``run_dir/report``); returns the path
    of ``report.md``. ``taus``: the τ vector of an N-tier run's section (default: its
    configured one).

    Raises:
        FileNotFoundError: no ``items.jsonl`` in ``run_dir``.
        ValueError: a corrupt line in ``items.jsonl``.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    raw = load_results(run_dir)
    run = read_run(run_dir)
    summary = summarize(raw, threshold=threshold, run=run, n_boot=n_boot, taus=taus)
    tiers_block = summary.pop("tiers", None)  # its own section below
    rows = [{**flat_row(r), "label_basis": "grader"} for r in raw]
    out.mkdir(parents=True, exist_ok=True)

    builders = {"frontier": lambda: charts.frontier_chart(rows, threshold),
                "reliability": lambda: charts.reliability_chart(rows),
                "confidence_histogram": lambda: charts.confidence_histogram(rows)}
    png = _png_available()
    chart_lines = []
    for name, title in CHARTS:
        try:
            chart = builders[name]()
        except ValueError as exc:
            chart_lines.append(f"- {title}: not drawn ({exc})")
            continue
        chart.save(str(out / f"{name}.html"))
        line = f"- [{title}]({name}.html)"
        if png:
            try:
                chart.save(str(out / f"{name}.png"))
                line += f" · ![{title}]({name}.png)"
            except Exception as exc:  # noqa: BLE001 - PNG is optional
                line += f" (PNG failed: {exc})"
        chart_lines.append(line)

    info = run or {}
    models = info.get("models") or {}
    head = [f"# COREA report: {run_dir.name}", ""]
    if info:
        subset = "the first items" if info.get("seed") is None else f"seed {info.get('seed')}"
        head += [f"Dataset `{info.get('dataset')}` / `{info.get('split')}`, limit "
                 f"{info.get('limit')} ({subset}); SLM `{models.get('slm')}`, LLM "
                 f"`{models.get('llm')}`; prompt version `{info.get('prompt_version')}`.", ""]
    md = head + [
        "## Summary", "", format_summary(summary), "",
        "## Thresholds chosen on this run (in-sample)", "",
        "Each rule uses the whole run as its calibration set, so the numbers below are "
        "optimistic for the certified rules; see `corea.eval.thresholds.validate_guarantee` for "
        "held-out checks.", "",
        *_rule_rows(rows), "",
        "## Thresholds chosen on a calibration half, checked on the test half", "",
        *_heldout_rows(rows), "",
        "## Deferral signals side by side", "",
        *signals_section(raw, _llm_price(info)), "",
        "## Routing metrics (RouteLLM)", "",
        *_routing_rows(raw), "",
        *_tiers_section(raw, tiers_block, out, png),
        "## Charts", "", *chart_lines, "",
        "" if png else "PNG export skipped: `vl-convert-python` is not installed.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return path


def _llm_price(run: dict) -> tuple[float, float] | None:
    p = ((run or {}).get("prices") or {}).get("llm")
    if not p:
        return None
    return float(p["input_per_mtok"]), float(p["output_per_mtok"])
