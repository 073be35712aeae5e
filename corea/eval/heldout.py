"""Held-out comparison of deferral signals: fit and choose τ on train, report on test.

Every available signal of :mod:`corea.signals.registry` is measured by
:func:`corea.eval.heldout_signal.evaluate_signal` (fit and τ on train, applied unchanged to each
test set; the method is described there); :func:`heldout_report` assembles them with each set's
pass@1 and the paired comparisons against :data:`BASELINE`, and :func:`format_report` writes the
markdown (``corea heldout``).
"""

from __future__ import annotations

from typing import Sequence

from ..timing import TimeModel
from ..signals.registry import SIGNALS, available
from .heldout_signal import (BASELINE, DEFAULT_RATIOS, against_llm_only, at_costs, choose_tau,
                             cross_fit_values, evaluate_signal, gradable, ratio_key, same_items,
                             slm_graded, within)
from .routing import routing_lines, time_model_lines
from .thresholds import min_items_to_certify

__all__ = ["BASELINE", "DEFAULT_RATIOS", "against_llm_only", "at_costs", "choose_tau",
           "cross_fit_values", "evaluate_signal", "format_report", "gradable", "heldout_report",
           "same_items", "slm_graded", "within"]


def heldout_report(train_rows: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                   llm_price: tuple[float, float], signals: Sequence[str] | None = None,
                   ratios: Sequence[float] = DEFAULT_RATIOS, max_drop: float = 0.02,
                   alpha: float = 0.02, delta: float = 0.1,
                   fixed_threshold: float | None = None,
                   time_model: TimeModel | None = None) -> dict:
    """Every available signal, fit and tuned on ``train_rows``, measured on each test set.

    Args:
        train_rows: evaluation rows of a train split (the only rows anything is fit or tuned on).
        tests: ``{name: rows}`` of held-out sets (e.g. ``gsm8k-test``, ``svamp``).
        slm: the SLM's name (recorded on fitted artifacts).
        llm_price: the LLM's ``(input, output)`` USD per 1M tokens.
        signals: names from :data:`corea.signals.registry.SIGNALS` (default: all the rows support).
        ratios: SLM per-token price as fractions of the LLM's.
        max_drop: tolerated pass@1 drop versus LLM-only when choosing τ (0-1 scale).
        alpha, delta: Learn-then-Test's tolerated drop and error level.
        fixed_threshold: also measure every signal at this τ on each test set (the app's
            default τ, chosen on nothing), SLM free.
        time_model: seconds per call (:class:`corea.timing.TimeModel`): every τ also gets
            seconds per item and ``time_fraction_of_llm_only``; recorded as ``time_model``.

    Returns:
        ``{"train": {...}, "tests": {name: {n, slm_pass_at_1, llm_pass_at_1}}, "signals":
        [evaluate_signal(...) or {"name", "error"}], ...}``.

    Raises:
        ValueError: no gradable train rows.
    """
    train = slm_graded(train_rows)
    if not gradable(train):
        raise ValueError("no train rows with both models graded")
    tests = {k: slm_graded(v) for k, v in tests.items()}
    every = [r for rows in tests.values() for r in rows]
    in_train = set(available(train, signals))
    # a learned signal needs its inputs on train; a plain one is measured wherever it has them
    # (self-consistency drawn on test only: AUROC, no τ)
    names = [n for n in available(every, signals) if n in in_train or not SIGNALS[n].learned] \
        if every else [n for n in available(train, signals)]
    out = {"slm": slm, "llm_price_per_mtok": list(llm_price), "ratios": list(ratios),
           "max_drop": max_drop, "fixed_threshold": fixed_threshold, "train": _pass(train),
           "tests": {k: _pass(v) for k, v in tests.items()}, "signals": []}
    if time_model is not None:  # seconds: the time model on each row's token counts
        out["time_model"] = {**time_model.model_dump(), "applied_to": "token counts"}
    for name in names:
        try:
            out["signals"].append(evaluate_signal(SIGNALS[name], train, tests, slm, llm_price,
                                                  ratios, max_drop, alpha, delta,
                                                  fixed_threshold, time_model))
        except ValueError as exc:  # e.g. too few labels of a class to fit
            out["signals"].append({"name": name, "label": SIGNALS[name].label,
                                   "error": str(exc)})
    # a signal measured on part of a set only (self-consistency: the items with samples), or one
    # that costs extra SLM tokens, is compared with the free default signal on exactly the items it
    # covers, paired: is what it costs bought with a better ranking?
    if any(s["name"] == BASELINE and "error" not in s for s in out["signals"]):
        for s in out["signals"]:
            compared = [t for t, e in s.get("tests", {}).items()
                        if 0 < e["n"] and (e["n"] < out["tests"][t]["n"]
                                           or e.get("extra_tokens_per_item"))]
            if "error" in s or s["name"] == BASELINE or not compared:
                continue
            s["same_items"] = same_items(SIGNALS[s["name"]], SIGNALS[BASELINE], train,
                                         {t: tests[t] for t in compared}, slm)
    return out


def _pass(rows: Sequence[dict]) -> dict:
    """SLM pass@1 over the SLM-graded rows; LLM pass@1 (and the SLM's on the same items) over the
    rows with both grades."""
    n, both = len(rows), gradable(rows)
    m = len(both)
    return {"n": n, "n_costed": m,
            "slm_pass_at_1": sum(bool(r["slm_correct"]) for r in rows) / n if n else None,
            "llm_pass_at_1": sum(bool(r["llm_correct"]) for r in both) / m if m else None,
            "slm_pass_at_1_costed": sum(bool(r["slm_correct"]) for r in both) / m if m else None}


# ----------------------------------------------------------------------------- markdown

def _pct(x, signed=True) -> str:
    if x is None:
        return "—"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _items(info: dict) -> str:
    """"N items (SLM pass@1 …), LLM run on M (LLM-only pass@1 …)"."""
    n, m = info["n"], info.get("n_costed", info["n"])
    text = f"{n} items, SLM pass@1 {_pct(info['slm_pass_at_1'], False)}"
    if m == n:
        return text + f", LLM-only {_pct(info['llm_pass_at_1'], False)}"
    return (text + f"; the LLM has run on {m} of them so far (there: SLM "
            f"{_pct(info.get('slm_pass_at_1_costed'), False)}, LLM-only "
            f"{_pct(info['llm_pass_at_1'], False)})")


def _num(x, nd=2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _auroc(t: dict) -> str:
    """"0.80 [0.72, 0.87]": AUROC with its 95% bootstrap interval (1,000 resamples)."""
    ci = t.get("auroc_ci95")
    if t.get("auroc") is None or not ci:
        return _num(t.get("auroc"))
    return f"{t['auroc']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _of(n: int, total: int) -> str:
    """" (on 56 items)" when a signal covers fewer rows than its set (samples on some only)."""
    return f" (on {n} items)" if 0 < n < total else ""


def format_report(rep: dict) -> str:
    """Markdown: one table per test set (signal rows), then the train-side choices."""
    ratios = [ratio_key(r) for r in rep["ratios"]]
    names = {"0": "SLM free", ratio_key(1 / 3): "SLM at 1/3"}
    lines = [f"Train: {_items(rep['train'])}. τ is chosen on train (cross-fitted "
             f"values) as the cheapest within {rep['max_drop'] * 100:.0f} points of LLM-only, "
             "then applied unchanged. AUROC, ECE and Brier use every SLM-graded item; τ, costs "
             "and pass@1 use the items where the LLM has run too.", ""]
    head = ["signal", "AUROC (cross-fitted) [95% interval]"] \
        + [f"τ ({names.get(r, r)})" for r in ratios] \
        + [f"train cost vs LLM-only ({names.get(r, r)})" for r in ratios]
    lines += ["**train** (where τ is chosen)", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    for s in rep["signals"]:
        if "error" in s:
            lines.append(f"| {s['label']} | not fit: {s['error'][:90]} |")
            continue
        t = s["train"]
        taus = t["thresholds"] or {}
        at = [(t["at"] or {}).get(r, {}).get("cost_fraction_of_llm_only") for r in ratios]
        lines.append("| " + " | ".join(
            [s["label"], _auroc(t) + _of(t["n"], rep["train"]["n"])]
            + [_num(taus.get(r), 3) for r in ratios]
            + [_pct(a - 1.0 if a is not None else None) for a in at]) + " |")
    lines.append("")
    lines += time_model_lines(rep)
    lines += _certified_lines(rep)
    lines += _fixed_lines(rep)
    for test, info in rep["tests"].items():
        lines += [f"**{test}** — {_items(info)}", ""]
        head = ["signal", "AUROC [95% bootstrap interval]", "ECE", "Brier"]
        for r in ratios:
            head += [f"{names.get(r, r)}: cost vs LLM-only", "pass@1 drop", "deferred"]
        head += ["extra SLM tokens/item"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in rep["signals"]:
            if "error" in s:
                lines.append(f"| {s['label']} | not fit: {s['error'][:80]} |")
                continue
            t = s["tests"][test]
            row = [s["label"], _auroc(t) + _of(t["n"], info["n"]), _num(t["ece"]),
                   _num(t["brier"])]
            for r in ratios:
                b = t["by_ratio"].get(r)
                if b is None:  # no item of this set has the LLM's grade yet, or no τ
                    row += ["—", "—", "—"]
                    continue
                row += [_pct(b["cost_change"]), f"{b['pass_drop'] * 100:+.1f} pt",
                        _pct(b["deferral_rate"], False)]
            extra = t.get("extra_tokens_per_item")
            row.append("—" if extra is None else f"{extra:.0f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        paired = [(s, s["same_items"][test]) for s in rep["signals"]
                  if test in s.get("same_items", {})]
        for s, p in paired:
            base = next((x["label"] for x in rep["signals"] if x["name"] == p["baseline"]),
                        p["baseline"])
            lines.append(f"- {s['label']} against {base}, on the {p['n']} items it covers: {base} "
                         f"{p['baseline_auroc']:.2f}; AUROC difference {p['difference']:+.2f} "
                         f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] (paired bootstrap, 95%)")
        if paired:
            lines.append("")
        if rep.get("time_model"):
            lines += routing_lines(rep, test)
    return "\n".join(lines)


def _fixed_lines(rep: dict) -> list[str]:
    """Markdown of every signal at the fixed τ (``--fixed-threshold``) on each test set, SLM
    free: what an app that keeps its default τ gets, next to the τ chosen on train."""
    tau = rep.get("fixed_threshold")
    sig = [s for s in rep["signals"] if "error" not in s and s["when"] != "oracle"]
    if tau is None or not sig:
        return []
    tests = list(rep["tests"])
    cols = ["signal"] + [f"{t}: cost vs LLM-only / pass@1 drop / deferred" for t in tests]
    lines = [f"**At a fixed τ = {tau:.2f}** (the app's default; chosen on nothing; SLM free):",
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in sig:
        row = [s["label"]]
        for t in tests:
            a = s["tests"].get(t, {}).get("at_fixed")
            row.append("—" if a is None else f"{_pct(a['cost_change'])} / "
                       f"{a['pass_drop'] * 100:+.1f} pt / {_pct(a['deferral_rate'], False)}")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _certified_lines(rep: dict) -> list[str]:
    """Markdown of the Learn-then-Test τ per signal (certified on the train rows with both
    grades) and, per test set, the pass@1 drop there and whether it stayed within α."""
    sig = [s for s in rep["signals"] if "error" not in s and s.get("certified")]
    if not sig:
        return []
    c0 = sig[0]["certified"]
    alpha, delta = c0["alpha"], c0["delta"]
    n = rep["train"].get("n_costed", rep["train"]["n"])
    head = (f"**Learn-then-Test** (the cheapest τ certified on the {n} train items with both "
            f"grades to lose at most {alpha * 100:.0f} points of pass@1 against LLM-only with "
            f"probability ≥ {1 - delta:.0%}; harm loss, fixed-sequence testing; "
            "`corea.eval.thresholds.certified_threshold`)")
    done = [s for s in sig if s["certified"]["threshold"] is not None]
    if not done:
        return [head + f": nothing is certified below \"defer everything\" for any signal "
                f"(with no harm observed, it takes at least {min_items_to_certify(alpha, delta)} "
                "items).", ""]
    tests = list(rep["tests"])
    cols = ["signal", "certified τ"] + [f"{t}: pass@1 drop at τ / deferred / holds"
                                        for t in tests]
    lines = [head + ":", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in sig:
        tau = s["certified"]["threshold"]
        if not s["train"].get("n_costed", 1):  # e.g. samples drawn on test items only
            row = [s["label"], "— (no train item has its inputs)"]
        else:
            row = [s["label"], "none" if tau is None else f"{tau:.2f}"]
        for t in tests:
            c = s["tests"].get(t, {}).get("certified")
            row.append("—" if c is None else
                       f"{c['drop'] * 100:+.1f} pt / {_pct(c['deferral_rate'], False)} / "
                       f"{'yes' if c['holds'] else 'no'}")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]
