"""Held-out comparison, one signal at a time: fit and choose τ on train, measure on test.

The report that runs every signal, and its markdown, are :mod:`corea.eval.heldout`.

For each signal of :mod:`corea.signals.registry`:

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
pays the SLM (plus the signal's own tokens, :func:`corea.signals.registry.extra_cost`); a deferred
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
from ..signals.base import Signal
from ..signals.registry import extra_cost
from .routing import ItemSeconds, item_seconds, random_at, routing_summary
from .scored import ScoredSet, best_saving_within, flat_row
from .thresholds import certified_threshold

DEFAULT_RATIOS = (0.0, 1 / 3)
BASELINE = "calibrator_tokens"
"""The signal that decides by default: the calibrator on token signals shipped with the adapted
embedded SLM (:data:`corea.signals.registry.SIGNALS`). A signal that covers part of a test set or
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


def usd_costs(signal: Signal, rows: Sequence[dict], llm_price, ratio: float):
    """``(kept, deferred, llm_only)`` USD per row for ``signal`` at this SLM price."""
    slm, llm, _ = costs_at_ratio(rows, llm_price, ratio)
    extra = extra_cost(signal, rows, llm_price[0] * ratio, llm_price[1] * ratio)
    # a signal that reads the LLM's state after its prompt pays that prefill where the LLM does
    # not answer; on a deferred item it is the start of the LLM's answer
    pre = np.array([int((r.get("llm") or {}).get("prompt_tokens") or 0) * llm_price[0] / 1e6
                    for r in rows]) if signal.llm_prefill else np.zeros(len(rows))
    # a signal that makes its own LLM call (the LLM's P(True)) pays it on every item
    call = np.array([signal.llm_call(r) * llm_price[0] / 1e6 for r in rows]) \
        if signal.llm_call else np.zeros(len(rows))
    kept = slm + extra + pre + call
    # a pre-generation signal pays its own turn (confidence-first) or the SLM's prompt (a probe
    # on the state after the question) on the items it defers, then the LLM
    before = np.where(extra > 0, extra, _prompt_cost(rows, llm_price, ratio))
    deferred = (before + llm) if signal.when == "before" else slm + extra + call + llm
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
    probability = signal.when != "oracle" and not signal.needs_llm  # a P(correct)
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
    (:attr:`~corea.signals.base.Signal.covers`: self-consistency on the items with samples);
    a plain signal that no train row with both grades covers gets no τ (its ``thresholds`` and
    test ``by_ratio`` stay empty) but still its AUROC / ECE / Brier.

    Raises:
        ValueError: a learned signal without train rows to fit on or to choose τ on, or one
            that cannot be fit (too few labels of a class).
    """
    fit_rows = signal_rows(signal, train)
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
                                  zip(flat_rows(tr_rows, signal), both)])
        train_at = {}
        tr_secs = signal_seconds(signal, tr_rows, time_model)
        for ratio in ratios:
            kept, deferred, llm = usd_costs(signal, tr_rows, llm_price, ratio)
            s = tr.with_costs(kept, llm)
            taus[ratio] = choose_tau(s, kept, deferred, max_drop)
            train_at[ratio] = at_costs(s, kept, deferred, taus[ratio], tr_secs)
        cert = certified_threshold([cf[i] for i in both], tr.slm_correct, tr.llm_correct,
                                   alpha=alpha, delta=delta, loss="harm", usable=tr.usable,
                                   llm_usable=tr.llm_usable)
        out["train"].update(thresholds={ratio_key(r): taus[r] for r in ratios},
                            at={ratio_key(r): train_at[r] for r in ratios})
        out["certified"]["threshold"] = cert.threshold
    for name, rows in tests.items():
        rows = signal_rows(signal, rows)
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
                                  for flat, i in zip(flat_rows(crows, signal), idx)])
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
    priced = {ratio: usd_costs(signal, crows, llm_price, ratio) for ratio in ratios}
    secs = signal_seconds(signal, crows, time_model)
    extra = float(np.mean([sum(signal.extra_tokens(r)) for r in crows]))
    out: dict = {"by_ratio": {ratio_key(ratio): {**against_llm_only(te, *priced[ratio], taus[ratio],
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


def signal_seconds(signal: Signal, rows: Sequence[dict], tm: TimeModel | None
                   ) -> ItemSeconds | None:
    """Per-row seconds of ``signal`` on ``rows`` (None without a time model)."""
    if tm is None:
        return None
    return item_seconds(rows, tm, signal.extra_tokens, before=signal.when == "before",
                        llm_prefill=signal.llm_prefill, llm_call=signal.llm_call)


def signal_rows(signal: Signal, rows: Sequence[dict]) -> list[dict]:
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
    fitted = {s.name: s.fit(signal_rows(s, train), slm) if s.learned else None
              for s in (signal, baseline)}
    out = {}
    for name, rows in tests.items():
        rows = [r for r in signal_rows(signal, rows) if signal_rows(baseline, [r])]
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


def flat_rows(rows: Sequence[dict], signal: Signal) -> list[dict]:
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


def ratio_key(ratio: float) -> str:
    """The report's JSON key of an SLM price ratio (``1/3`` → ``"0.3333"``)."""
    return f"{ratio:.4g}"
