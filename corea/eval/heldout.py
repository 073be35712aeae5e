"""Held-out comparison of deferral signals: fit and choose τ on train, report on test.

For each signal of :mod:`corea.eval.deciders`:

1. **Fit** (learned signals) on the train rows.
2. **Choose τ on train** from *cross-fitted* values (each train row scored by a model fit on the
   other folds, so τ is not chosen on in-sample predictions): per SLM price, the cheapest τ whose
   train pass@1 is within ``max_drop`` of LLM-only's on train (:func:`best_saving_within`). When
   no τ qualifies, the signal defers everything there.
3. **Apply** the signal fit on all train rows and that τ, unchanged, to each test set: AUROC (with
   its 95% percentile bootstrap interval over items, :func:`corea.metrics.auroc_ci`), ECE
   and Brier score of the confidence against the SLM's correctness, and the cascade's cost and
   pass@1 against LLM-only at each price. Nothing here looks at a test row before step 3; a test
   (``tests/test_heldout.py``) fails if a test row changes a τ.

Also per signal: the Learn-then-Test τ certified on the train rows (``harm`` loss,
:func:`corea.eval.thresholds.certified_threshold`) and whether the test drop stays within α there;
and, for a signal that covers part of a test set or costs extra SLM tokens (self-consistency,
P(True)), its AUROC against the free default signal (:data:`BASELINE`) on the same items, with a
paired bootstrap interval (:func:`same_items`).

Costs (USD) are recomputed from token counts with the SLM priced at ``ratio`` × the LLM's
per-token prices (0: a free local SLM; 1/3: about the embedded pair's parameter ratio). A kept item
pays the SLM (plus the signal's own tokens, :func:`corea.eval.deciders.extra_cost`); a deferred
item also pays the LLM — except for a pre-generation signal, where it pays only the SLM's prompt
and the LLM. The deferral rule is :meth:`corea.eval.scored.ScoredSet.defer`, the graded answer the
cascade's final one (:meth:`corea.eval.scored.ScoredSet.correct_at`): a cut-off or answerless SLM
answer is never kept, whatever the signal says (for the signals that decide after solving), and a
deferred item whose LLM answer is cut off or answerless keeps the SLM's usable one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import metrics
from .compare import costs_at_ratio
from ..timing import TimeModel
from .deciders import SIGNALS, Signal, available, extra_cost
from .routing import (ItemSeconds, item_seconds, random_at, routing_lines, routing_summary,
                      time_model_lines)
from .scored import ScoredSet, best_saving_within, flat_row
from .thresholds import certified_threshold, min_items_to_certify

DEFAULT_RATIOS = (0.0, 1 / 3)
BASELINE = "calibrator_tokens"
"""The signal that decides by default: the calibrator on token signals shipped with the adapted
embedded SLM (:data:`corea.eval.deciders.SIGNALS`). A signal that covers part of a test set or
costs extra SLM tokens is compared with it on the same items, paired."""


def gradable(rows: Sequence[dict]) -> list[dict]:
    """Rows whose SLM and LLM grades are both decided."""
    return [r for r in rows if r.get("slm_correct") is not None
            and r.get("llm_correct") is not None]


def slm_graded(rows: Sequence[dict]) -> list[dict]:
    """Rows whose SLM grade is decided (the LLM's may still be pending: an SLM-first run)."""
    return [r for r in rows if r.get("slm_correct") is not None]


def cross_fit_values(signal: Signal, rows: Sequence[dict], slm: str, folds: int = 5,
                     seed: int = 0) -> list[float | None]:
    """Each row's value from a ``signal`` fit on the other folds (plain signals: their values).

    Raises:
        ValueError: the signal cannot be fit on some fold (too few labels of a class).
    """
    if not signal.learned:
        return signal.values(rows)
    from sklearn.model_selection import StratifiedKFold

    y = np.array([bool(r["slm_correct"]) for r in rows])
    k = max(2, min(folds, int(y.sum()), int((~y).sum())))
    out: list = [None] * len(rows)
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        fitted = signal.fit([rows[i] for i in tr], slm)
        for i, v in zip(te, signal.values([rows[i] for i in te], fitted)):
            out[i] = v
    return out


def _prompt_cost(rows: Sequence[dict], llm_price: tuple[float, float], ratio: float
                 ) -> np.ndarray:
    pi = llm_price[0] * ratio
    return np.array([int((r.get("slm") or {}).get("prompt_tokens") or 0) * pi / 1e6
                     for r in rows])


def _costs(signal: Signal, rows: Sequence[dict], llm_price, ratio: float):
    """``(kept, deferred, llm_only)`` USD per row for ``signal`` at this SLM price."""
    slm, llm, _ = costs_at_ratio(rows, llm_price, ratio)
    extra = extra_cost(signal, rows, llm_price[0] * ratio, llm_price[1] * ratio)
    kept = slm + extra
    deferred = (_prompt_cost(rows, llm_price, ratio) + llm) if signal.when == "before" \
        else kept + llm
    return kept, deferred, llm


def at_costs(scored: ScoredSet, kept: np.ndarray, deferred: np.ndarray, tau: float,
             secs: ItemSeconds | None = None) -> dict:
    """Pass@1, deferral rate and cost (USD) at ``tau`` with per-row kept / deferred costs; with
    per-row seconds (:func:`corea.eval.routing.item_seconds`) also ``seconds_per_item`` and
    ``time_fraction_of_llm_only``."""
    d = scored.defer(tau)
    cost = float(np.where(d, deferred, kept).sum())
    llm_only = float(scored.llm_cost.sum())
    out = {"threshold": float(tau), "deferral_rate": float(d.mean()),
           "pass_at_1": float(scored.correct_at(tau).mean()),
           "cost": cost, "cost_fraction_of_llm_only": cost / llm_only if llm_only > 0 else None}
    if secs is not None:
        spent, alone = float(np.where(d, secs.deferred, secs.kept).sum()), float(secs.llm.sum())
        out.update(seconds_per_item=spent / len(d) if len(d) else None,
                   time_fraction_of_llm_only=spent / alone if alone > 0 else None)
    return out


def against_llm_only(scored: ScoredSet, kept: np.ndarray, deferred: np.ndarray,
                     llm: np.ndarray, tau: float, secs: ItemSeconds | None = None) -> dict:
    """:func:`at_costs` at ``tau`` (``scored`` priced with these per-row USD costs), plus the
    cost change (fraction, negative = cheaper) and the pass@1 drop (0-1) versus LLM-only, and
    random routing at the same deferral rate (:func:`corea.eval.routing.random_at`)."""
    s = scored.with_costs(kept, llm)
    at = at_costs(s, kept, deferred, tau, secs)
    frac = at["cost_fraction_of_llm_only"]
    rnd = random_at(s, at["deferral_rate"], kept, deferred, llm, secs)
    return {**at, "cost_change": (frac - 1.0) if frac is not None else None,
            "pass_drop": s.llm_pass - at["pass_at_1"], "random": rnd,
            "pass_vs_random": at["pass_at_1"] - rnd["pass_at_1"]}


def choose_tau(scored: ScoredSet, kept, deferred, max_drop: float) -> float:
    """The cheapest τ within ``max_drop`` of LLM-only pass@1 on these rows; above every value
    (defer all) when none qualifies."""
    sweep = [at_costs(scored, kept, deferred, t) for t in scored.thresholds()]
    best = best_saving_within(sweep, scored.llm_pass, max_drop)
    return float(best["threshold"]) if best else float(scored.thresholds()[-1])


def _calibration(signal: Signal, conf: list, rows: Sequence[dict]) -> dict:
    idx = [i for i, v in enumerate(conf) if v is not None]
    y = np.array([bool(rows[i]["slm_correct"]) for i in idx])
    c = np.array([conf[i] for i in idx], dtype=float)
    probability = signal.when != "oracle" and not signal.name.endswith("_helps")
    ci = metrics.auroc_ci(c, y) if len(idx) >= 2 else None
    return {"n_with_value": len(idx),
            "auroc": metrics.auroc(c, y) if len(idx) >= 2 else None,
            "auroc_ci95": list(ci) if ci is not None and not np.isnan(ci).any() else None,
            "ece": metrics.ece(c, y, 10) if probability and idx else None,
            "brier": metrics.brier_score(c, y) if probability and idx else None}


def evaluate_signal(signal: Signal, train: Sequence[dict], tests: dict[str, Sequence[dict]],
                    slm: str, llm_price: tuple[float, float],
                    ratios: Sequence[float] = DEFAULT_RATIOS, max_drop: float = 0.02,
                    alpha: float = 0.02, delta: float = 0.1,
                    fixed_threshold: float | None = None,
                    time_model: TimeModel | None = None) -> dict:
    """One signal: fit on ``train``, τ per price from cross-fitted train values, applied to each
    test set (see the module docstring). Returns a JSON-ready dict.

    ``fixed_threshold``: also measure each test set at this τ, chosen on nothing (e.g. the app's
    default τ), at the first price of ``ratios`` (``tests[name]["at_fixed"]``).

    ``time_model``: also seconds and the time fraction of LLM-only at every τ. Each test set also
    gets ``routing`` (:func:`corea.eval.routing.routing_summary`; no τ is chosen from it).

    ``train`` and ``tests`` hold SLM-graded rows (:func:`slm_graded`); rows whose LLM has not run
    yet (an SLM-first run) count for fitting a signal whose label is the SLM's correctness and for
    AUROC / ECE / Brier, while τ and every cost or pass@1 figure use only the rows with both
    grades (:func:`gradable`). A signal is measured on the rows it covers
    (:attr:`~corea.eval.deciders.Signal.covers`: self-consistency on the items with samples);
    a plain signal that no train row with both grades covers gets no τ (its ``thresholds`` and
    test ``by_ratio`` stay empty) but still its AUROC / ECE / Brier.

    Raises:
        ValueError: a learned signal without train rows to fit on or to choose τ on, or one
            that cannot be fit (too few labels of a class).
    """
    fit_rows = _fit_rows(signal, train)
    if signal.learned and not fit_rows:
        raise ValueError("no train rows carry its inputs")
    fitted = signal.fit(fit_rows, slm) if signal.learned else None
    cf = cross_fit_values(signal, fit_rows, slm)
    both = [i for i, r in enumerate(fit_rows) if r.get("llm_correct") is not None]
    if not both and signal.learned:
        raise ValueError("no train rows with the LLM's grade to choose τ on")
    out = {"name": signal.name, "label": signal.label, "when": signal.when,
           "learned": signal.learned,
           "train": {"n": len(fit_rows), "n_costed": len(both),
                     **_calibration(signal, cf, fit_rows), "thresholds": None, "at": None},
           "certified": {"threshold": None, "alpha": alpha, "delta": delta},
           "tests": {}}
    taus: dict = {}
    cert = None
    if both:  # a plain signal no train row covers (samples drawn on test only) gets no τ
        tr_rows = [fit_rows[i] for i in both]
        tr = ScoredSet.from_rows([{**flat, "confidence": cf[i]} for flat, i in
                                  zip(_flat(tr_rows, signal), both)])
        train_at = {}
        tr_secs = _seconds(signal, tr_rows, time_model)
        for ratio in ratios:
            kept, deferred, llm = _costs(signal, tr_rows, llm_price, ratio)
            s = tr.with_costs(kept, llm)
            taus[ratio] = choose_tau(s, kept, deferred, max_drop)
            train_at[ratio] = at_costs(s, kept, deferred, taus[ratio], tr_secs)
        cert = certified_threshold([cf[i] for i in both], tr.slm_correct, tr.llm_correct,
                                   alpha=alpha, delta=delta, loss="harm", usable=tr.usable,
                                   llm_usable=tr.llm_usable)
        out["train"].update(thresholds={_r(r): taus[r] for r in ratios},
                            at={_r(r): train_at[r] for r in ratios})
        out["certified"]["threshold"] = cert.threshold
    for name, rows in tests.items():
        rows = _fit_rows(signal, rows)
        vals = signal.values(rows, fitted)
        entry = {"n": len(rows), **_calibration(signal, vals, rows),
                 "extra_tokens_per_item": float(np.mean([sum(signal.extra_tokens(r))
                                                         for r in rows])) if rows else None,
                 "by_ratio": {}}
        idx = [i for i, r in enumerate(rows) if r.get("llm_correct") is not None]
        crows = [rows[i] for i in idx]
        entry["n_costed"] = len(crows)
        if not crows or not taus:
            out["tests"][name] = entry
            continue
        te = ScoredSet.from_rows([{**flat, "confidence": vals[i]}
                                  for flat, i in zip(_flat(crows, signal), idx)])
        entry.update(_at_taus(signal, te, crows, taus, llm_price, time_model, fixed_threshold,
                              cert.threshold if cert is not None else None, alpha))
        out["tests"][name] = entry
    return out


def _at_taus(signal: Signal, te: ScoredSet, crows: Sequence[dict], taus: dict,
             llm_price, time_model: TimeModel | None, fixed_threshold: float | None,
             certified: float | None, alpha: float) -> dict:
    """One test set's ``by_ratio`` (at each price's train τ), ``routing``, ``at_fixed`` and
    ``certified`` entries of :func:`evaluate_signal` (``te``: its scored rows with both grades,
    ``crows`` those rows)."""
    ratios = list(taus)
    priced = {ratio: _costs(signal, crows, llm_price, ratio) for ratio in ratios}
    secs = _seconds(signal, crows, time_model)
    extra = float(np.mean([sum(signal.extra_tokens(r)) for r in crows]))
    out: dict = {"by_ratio": {_r(ratio): {**against_llm_only(te, *priced[ratio], taus[ratio],
                                                             secs),
                                          "extra_tokens_per_item": extra}
                              for ratio in ratios},
                 "routing": routing_summary(te)}
    if fixed_threshold is not None:
        out["at_fixed"] = {**against_llm_only(te, *priced[ratios[0]], fixed_threshold, secs),
                           "ratio": ratios[0]}
    if certified is not None:
        kept, deferred, llm = priced[ratios[0]]
        at = at_costs(te.with_costs(kept, llm), kept, deferred, certified, secs)
        drop = te.llm_pass - at["pass_at_1"]
        out["certified"] = {**at, "drop": drop, "holds": within(drop, alpha)}
    return out


def _seconds(signal: Signal, rows: Sequence[dict], tm: TimeModel | None) -> ItemSeconds | None:
    """Per-row seconds of ``signal`` on ``rows`` (None without a time model)."""
    if tm is None:
        return None
    return item_seconds(rows, tm, signal.extra_tokens, before=signal.when == "before")


def _fit_rows(signal: Signal, rows: Sequence[dict]) -> list[dict]:
    """The rows a signal is fit or measured on: those it covers (and with the LLM's grade too when
    its label needs it)."""
    return [r for r in (gradable(rows) if signal.needs_llm else rows) if signal.covers(r)]


def same_items(signal: Signal, baseline: Signal, train: Sequence[dict],
               tests: dict[str, Sequence[dict]], slm: str) -> dict:
    """``signal`` against ``baseline`` on the test items both cover (e.g. self-consistency on the
    items with samples against the shipped calibrator there), each fit on train as in
    :func:`evaluate_signal`.

    Returns:
        ``{test name: {"n", "baseline", "baseline_auroc", "difference", "ci95"}}``: AUROC(signal)
        − AUROC(baseline) on those items and its paired 95% bootstrap interval
        (:func:`corea.metrics.paired_auroc_ci`); a set with one class there is left out.

    Raises:
        ValueError: a learned signal that cannot be fit on train (as :func:`evaluate_signal`).
    """
    fitted = {s.name: s.fit(_fit_rows(s, train), slm) if s.learned else None
              for s in (signal, baseline)}
    out = {}
    for name, rows in tests.items():
        rows = [r for r in _fit_rows(signal, rows) if _fit_rows(baseline, [r])]
        a = signal.values(rows, fitted[signal.name])
        b = baseline.values(rows, fitted[baseline.name])
        keep = [i for i in range(len(rows)) if a[i] is not None and b[i] is not None]
        y = [bool(rows[i]["slm_correct"]) for i in keep]
        res = metrics.paired_auroc_ci([a[i] for i in keep], [b[i] for i in keep], y)
        if res is None or np.isnan(res[1:]).any():
            continue
        out[name] = {"n": len(keep), "baseline": baseline.name,
                     "baseline_auroc": metrics.auroc([b[i] for i in keep], y),
                     "difference": res[0], "ci95": [res[1], res[2]]}
    return out


def within(drop: float, alpha: float) -> bool:
    """Whether a pass@1 drop (0-1 scale) is at most ``alpha``; a drop of exactly ``alpha`` is
    (``0.76 - 0.74`` is 0.020000000000000018 in floating point)."""
    return drop <= alpha + 1e-9


def _flat(rows: Sequence[dict], signal: Signal) -> list[dict]:
    """The rows' ids, grades and, for a signal that decides after the SLM solved, whether each
    model's output is an answer (:func:`corea.eval.scored.flat_row`): a cut-off or answerless SLM
    answer is never kept, and a deferred item whose LLM output is no answer keeps the SLM's
    (:func:`corea.policy.final_tier`). A pre-generation signal decides before the SLM writes
    anything (the live confidence-first cascade keeps the solution it then writes, and a deferred
    item has no SLM answer to fall back on): its rows are graded by the answer of the model the
    signal chose."""
    keys = ("id", "slm_correct", "llm_correct") if signal.when == "before" else \
        ("id", "slm_correct", "llm_correct", "usable", "llm_usable")
    return [{k: f[k] for k in keys} for f in map(flat_row, rows)]


def _r(ratio: float) -> str:
    return f"{ratio:.4g}"


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
        signals: names from :data:`corea.eval.deciders.SIGNALS` (default: all the rows support).
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
    ratios = [_r(r) for r in rep["ratios"]]
    names = {"0": "SLM free", _r(1 / 3): "SLM at 1/3"}
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
