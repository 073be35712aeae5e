"""Delegate where the LLM helps: the delegation value routing before, and deciding after, the SLM.

The policy (held out like :mod:`corea.eval.route_first`, whose accounting and :func:`choose` it
reuses): before the SLM writes, both models prefill the question (the SLM's state for its prompt
probe, the LLM's for its own, :mod:`corea.signals.delegation`);

(a) when the delegation value before the SLM writes, P(LLM right and SLM wrong), is high —
    its confidence ``1 - P`` (signal ``delegation``) below τ_r — the question goes straight to the
    LLM, whose answer starts from the prefill it already did;
(b) otherwise the SLM answers, and its answer is kept unless the delegation value after it
    answered (``delegation_after``: the same with the token calibrator's value) puts
    ``1 - P`` below τ: then the LLM answers.

Costs per item: a routed item pays the SLM's prefill and the LLM's answer; a kept item the SLM's
prefill, its answer and the LLM's prefill (prompt tokens at the LLM's input price; seconds: the
time model's LLM call with no completion, i.e. its per-call overhead, which the shipped model
measures as the time to first token of a ~100-token prompt); a deferred item the SLM's prefill
and answer and the LLM's answer (its prefill reused).

Both thresholds are chosen on train (cross-fitted values) as the cheapest within ``max_drop`` of
LLM-only pass@1, in seconds with a free SLM, in USD with a free SLM and in USD with the SLM at 1/3
of the LLM's prices (:data:`VARIANTS`), then applied unchanged to the test sets, next to
answer-first, today's route-first (:func:`corea.eval.route_first.route_first_report`), random
routing (a coin before the SLM writes, sending the same share of items to the LLM) and both
oracles; ``oracle_share`` is the share of an oracle's saving (1 − its fraction of LLM-only)
that the policy reaches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..signals.registry import SIGNALS
from ..timing import TimeModel
from .heldout_signal import BASELINE, cross_fit_values, gradable
from .route_first import (ORACLE_LABELS, ROUTE_SIGNAL, RouteItems, choose, keep_all, outcome,
                          pct, route_first_report, route_items)
from .route_first import signal_values as route_signal_values

__all__ = ["VARIANTS", "BEFORE", "AFTER", "AUROC_SIGNALS", "delegation_values", "signal_aurocs",
           "random_pregen",
           "oracle_share", "delegation_report", "delegation_variants", "delegation_lines"]

BEFORE, AFTER = "delegation", "delegation_after"
VARIANTS = (("seconds", 0.0), ("usd", 0.0), ("usd", 1 / 3))
"""The (unit, SLM price ratio) pairs the thresholds are chosen in."""

_KEYS = {"seconds": "time_fraction_of_llm_only", "usd": "cost_fraction_of_llm_only"}


def delegation_values(train: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str
                      ) -> dict:
    """``{"route": (train values, {test: values}), "answer": (...)}``: the ``delegation`` and
    ``delegation_after`` confidences, cross-fitted on the gradable ``train`` rows and fit on all
    of them for the tests (same shape as :func:`corea.eval.route_first.signal_values`).

    Raises:
        ValueError: the model cannot be fit (too few rows with both prompt states).
    """
    out = {}
    for key, name in (("route", BEFORE), ("answer", AFTER)):
        sig = SIGNALS[name]
        fitted = sig.fit(train, slm)
        out[key] = (cross_fit_values(sig, train, slm),
                    {k: sig.values(v, fitted) for k, v in tests.items()})
    return out


def _auroc(vals, y) -> float | None:
    from ..metrics import auroc

    idx = [i for i, v in enumerate(vals) if v is not None]
    yy = np.array([y[i] for i in idx], dtype=bool)
    if len(idx) < 2 or yy.all() or not yy.any():
        return None
    return float(auroc(np.array([vals[i] for i in idx], dtype=float), yy))


AUROC_SIGNALS = ("llm_prior_probe", "prior_probe", "calibrator_tokens", BEFORE, AFTER)


def signal_aurocs(train: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                  values: dict, baseline_values: dict) -> dict:
    """How well each part ranks what it is for, on train (cross-fitted) and each test set:
    ``{signal: {set: {"llm_right", "helps"}}}``, AUROC of ``1 - confidence`` against "the LLM
    is right" and against "the LLM fixes the SLM" (``llm_helps``), for
    :data:`AUROC_SIGNALS` (the delegation values from ``values``, :func:`delegation_values`;
    the prompt probe's and the calibrator's from ``baseline_values``, route-first's)."""
    sets = {"train": train, **tests}
    known = {BEFORE: values["route"], AFTER: values["answer"],
             ROUTE_SIGNAL: baseline_values["route"], BASELINE: baseline_values["answer"]}
    out: dict = {}
    for name in AUROC_SIGNALS:
        if name in known:
            vals = {"train": known[name][0], **known[name][1]}
        else:
            sig = SIGNALS[name]
            fitted = sig.fit(train, slm)
            vals = {"train": cross_fit_values(sig, train, slm),
                    **{k: sig.values(v, fitted) for k, v in tests.items()}}
        out[name] = {}
        for where, rows in sets.items():
            risk = [None if c is None else 1.0 - c for c in vals[where]]
            out[name][where] = {
                "llm_right": _auroc(risk, [bool(r["llm_correct"]) for r in rows]),
                "helps": _auroc(risk, [bool(r["llm_correct"]) and not r["slm_correct"]
                                       for r in rows])}
    return out


def random_pregen(items: RouteItems, rate: float) -> dict:
    """Random routing before the SLM writes: each item sent to the LLM with probability
    ``rate`` (its SLM prefill then the LLM), else the SLM's answer kept; expected ``pass_at_1``
    and fractions of LLM-only in USD and seconds (no signal, so no route check or LLM prefill)."""
    s = items.scored
    out = {"llm_rate": float(rate), "pass_at_1": float((1 - rate) * s.slm_pass + rate * s.llm_pass)}
    for unit, parts in (("cost", items.usd), ("time", items.secs)):
        if parts is None:
            out[f"{unit}_fraction_of_llm_only"] = None
            continue
        spent = (1 - rate) * parts["slm"].sum() + rate * (parts["prefill"] + parts["llm"]).sum()
        alone = float(parts["llm"].sum())
        out[f"{unit}_fraction_of_llm_only"] = float(spent) / alone if alone > 0 else None
    return out


def oracle_share(policy: dict, oracle: dict, key: str) -> float | None:
    """The share of ``oracle``'s saving (1 − its ``key`` fraction) that ``policy`` reaches;
    None when either fraction is missing or the oracle saves nothing."""
    p, o = policy.get(key), oracle.get(key)
    if p is None or o is None or o >= 1.0:
        return None
    return (1.0 - p) / (1.0 - o)


def _policy_rows(items: RouteItems, chosen: dict) -> dict:
    return {k: outcome(keep_all(items) if k == "delegation_route_only" else items, p)
            for k, (p, _) in chosen.items()}


def delegation_report(train_rows: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                      llm_price: tuple[float, float], tm: TimeModel | None,
                      max_drop: float = 0.02, ratio: float = 0.0, unit: str = "seconds",
                      values: dict | None = None, baseline_values: dict | None = None) -> dict:
    """The delegation policy chosen on train in ``unit`` (``seconds`` / ``usd``) with the SLM at
    ``ratio`` × the LLM's prices, beside :func:`route_first_report`'s policies and oracles, on
    train and on each test set. ``values``: :func:`delegation_values`; ``baseline_values``:
    route-first's (:func:`corea.eval.route_first.signal_values`); each computed when None.

    Returns:
        ``{"unit", "ratio", "max_drop", "wins_on_train": {"answer_first", "route_first"},
        "train": {policy: {"policy"?, **outcome}}, "tests": {name: {policy: outcome}}}``; the
        policies ``delegation`` (route on ``delegation``, then decide on ``delegation_after``),
        ``delegation_route_only`` (route, keep every other answer), ``random`` (at the
        delegation policy's share of LLM calls), and route-first's; each test's ``delegation``
        row carries ``oracle_share`` (of ``oracle_gain`` and ``route_oracle_gain``).

    Raises:
        ValueError: no gradable train rows, a model that cannot be fit, or a bad unit.
    """
    train = gradable(train_rows)
    tests = {k: gradable(v) for k, v in tests.items()}
    v = values or delegation_values(train, tests, slm)
    base = route_first_report(train, tests, slm, llm_price, tm, max_drop, ratio, unit,
                              values=baseline_values)
    key = _KEYS[unit]
    tr = route_items(train, v["route"][0], v["answer"][0], llm_price, ratio, tm, llm_prefill=True)
    chosen = {"delegation": choose(tr, max_drop, unit, route=True),
              "delegation_route_only": choose(keep_all(tr), max_drop, unit, route=True)}
    mine = chosen["delegation"][1]
    out = {"unit": unit, "ratio": ratio, "max_drop": max_drop,
           "wins_on_train": {
               "answer_first": mine[key] < base["train"]["answer_first"][key] - 1e-12,
               "route_first": mine[key] < base["train"]["route_then_answer_first"][key] - 1e-12},
           "train": {**{k: {"policy": vars(p), **o} for k, (p, o) in chosen.items()},
                     **base["train"]}, "tests": {}}
    out["train"]["random"] = random_pregen(tr, mine["llm_rate"])
    for name, rows in tests.items():
        te = route_items(rows, v["route"][1][name], v["answer"][1][name], llm_price, ratio, tm,
                         llm_prefill=True)
        res = {**_policy_rows(te, chosen), **base["tests"][name]}
        res["random"] = random_pregen(te, res["delegation"]["llm_rate"])
        res["delegation"]["oracle_share"] = {
            o: {u: oracle_share(res["delegation"], res[o], k) for u, k in _KEYS.items()}
            for o in ("oracle_gain", "route_oracle_gain")}
        out["tests"][name] = res
    return out


def delegation_variants(train_rows: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                        llm_price: tuple[float, float], tm: TimeModel | None,
                        max_drop: float = 0.02) -> list[dict]:
    """:func:`delegation_report` in each of :data:`VARIANTS` (the seconds variant only with a
    time model), the model fit once, on the gradable rows that carry both prompt states (every
    policy, baseline and oracle on the same rows; each report's ``n`` says how many).

    Raises:
        ValueError: as :func:`delegation_report`.
    """
    carried = SIGNALS[BEFORE].carried_by
    train = [r for r in gradable(train_rows) if carried(r)]
    if not train:
        raise ValueError("no train rows with both models graded and both prompt states "
                         "(corea llm-states)")
    tests = {k: [r for r in gradable(v) if carried(r)] for k, v in tests.items()}
    values = delegation_values(train, tests, slm)
    base = route_signal_values(train, tests, slm)
    reps = [delegation_report(train, tests, slm, llm_price, tm, max_drop, ratio, unit, values,
                              base)
            for unit, ratio in VARIANTS if unit != "seconds" or tm is not None]
    for rep in reps:
        rep["n"] = {"train": len(train), **{k: len(v) for k, v in tests.items()}}
    if reps:
        reps[0]["aurocs"] = signal_aurocs(train, tests, slm, values, base)
    return reps


_LABELS = {"delegation": "**delegation value: route, then decide after the SLM**",
           "delegation_route_only": "delegation value: route only (every other answer kept)",
           "random": "random routing before the SLM writes (same share to the LLM)",
           "answer_first": "answer-first (default signal)",
           "route_only": "today's route only (SLM prompt probe)",
           "route_then_answer_first": "today's route-first (prompt probe, then answer-first)",
           **ORACLE_LABELS}


def _thr(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def delegation_lines(rep: dict) -> list[str]:
    """Markdown of :func:`delegation_report`: the AUROCs when it has them, one table per set,
    then the oracle shares."""
    unit = "seconds" if rep["unit"] == "seconds" else "price"
    w = rep["wins_on_train"]
    lines = _auroc_lines(rep.get("aurocs")) + [f"### Chosen in {unit}, SLM at {rep['ratio']:.3g}× the LLM's prices",
             "", f"Rows with both grades and both prompt states: "
             + ", ".join(f"{k} {v}" for k, v in (rep.get("n") or {}).items())
             + f". Both thresholds chosen on train as the cheapest in {unit} within "
             f"{rep['max_drop'] * 100:.0f} points of LLM-only. On train the delegation policy "
             f"is {'cheaper' if w['answer_first'] else 'not cheaper'} than answer-first and "
             f"{'cheaper' if w['route_first'] else 'not cheaper'} than today's route-first.", ""]
    head = ["policy", "τ_r", "τ", "pass@1", "to the LLM", "routed", "solved then deferred",
            "price vs LLM-only", "time vs LLM-only"]
    for where, res in [("train", rep["train"]), *rep["tests"].items()]:
        lines += [f"*{where}*", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in _LABELS:
            o = res.get(name)
            if o is None:
                continue
            lines.append("| " + " | ".join([
                _LABELS[name], _thr(o.get("route_threshold")), _thr(o.get("threshold")),
                pct(o["pass_at_1"]), pct(o.get("llm_rate")), pct(o.get("routed_rate")),
                pct(o.get("deferred_rate")), pct(o["cost_fraction_of_llm_only"]),
                pct(o["time_fraction_of_llm_only"])]) + " |")
        share = (res.get("delegation") or {}).get("oracle_share")
        if share:
            lines += ["", "Share of the oracle's saving reached by the delegation policy: "
                      + "; ".join(f"{_LABELS[o].split(': ', 1)[1]}: price {pct(s['usd'])}, "
                                  f"time {pct(s['seconds'])}" for o, s in share.items())]
        lines.append("")
    return lines


def _auroc_lines(aur: dict | None) -> list[str]:
    """Markdown: AUROC of each part against "LLM right" and "LLM fixes it", per set."""
    if not aur:
        return []
    sets = list(next(iter(aur.values())))
    head = ["signal", *(f"{s}: LLM right" for s in sets), *(f"{s}: LLM fixes it" for s in sets)]
    lines = ["AUROC of 1 − confidence (train: cross-fitted, 5 folds):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, by in aur.items():
        cells = [by[s]["llm_right"] for s in sets] + [by[s]["helps"] for s in sets]
        lines.append("| " + " | ".join([f"`{name}`", *("—" if c is None else f"{c:.2f}"
                                                          for c in cells)]) + " |")
    return lines + [""]
