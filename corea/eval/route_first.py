"""Route, then answer first: a pre-generation router in front of the answer-first cascade, held out.

A tier with a route option (:class:`corea.model_config.RouteSettings`) reads a signal before it
writes a token — the prompt-position probe's P(correct) on its state after the question
(:mod:`corea.signals.probe`, ``position="prompt"``) — and, below the route threshold ``τ_r``, sends the
question straight to the next tier; otherwise it solves and decides answer-first as usual (its
deciding signal against τ). This module measures that policy on evaluation rows against
answer-first alone and the oracles, in USD and in seconds, with both thresholds chosen on train.

Per item (``p``, ``c``: the SLM's prompt and completion tokens; ``L``: the LLM's call):

* **routed** (route value < ``τ_r``): the SLM's prefill only, then the LLM; graded by the LLM's
  answer (the SLM wrote none to fall back on).
* **not routed**: the prefill of the route check **and** the SLM's whole call (the live tier
  reads the state in a separate prefill, :meth:`corea.backends.llamacpp.LlamaCppBackend.prompt_state`,
  so a question it keeps pays its prompt twice), then answer-first: kept, or deferred to the
  LLM, graded as the cascade grades (:meth:`corea.eval.scored.ScoredSet.correct_at`).
* answer-first alone (no route option) pays no route check.
* a signal that reads the LLM's state after its prompt (``llm_prefill``,
  :mod:`corea.eval.delegation_route`) also pays that LLM prefill on every item the LLM does not
  answer; a routed or deferred item's LLM answer starts from it (the engine's prefix cache).

USD: the SLM priced at ``ratio`` × the LLM's per-token prices (0: a free local SLM — routing
then saves no money, only time); seconds: a :class:`corea.timing.TimeModel` on the token counts
(the prefill is ``seconds(slm, p, 0)``: the model's overhead plus its prompt tokens).

**Choosing on train** (:func:`choose`): every ``(τ_r, τ)`` pair over the cross-fitted train
values (each train row scored by signals fit on the other folds), the cheapest in ``unit`` whose
pass@1 is within ``max_drop`` of LLM-only's; answer-first alone is the best pair with no
router. Routing *wins on train* when its best pair is cheaper there than answer-first's. The
pair is then applied unchanged to each test set, with the signals refit on all train rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..timing import TimeModel
from .compare import costs_at_ratio
from ..signals.registry import SIGNALS
from .heldout_signal import BASELINE, cross_fit_values, gradable
from .scored import ScoredSet, flat_row

__all__ = ["ROUTE_SIGNAL", "Policy", "RouteItems", "route_items", "outcome", "choose",
           "oracle_rows", "signal_values", "route_first_report", "route_first_variants",
           "route_first_lines", "keep_all"]

ROUTE_SIGNAL = "prior_probe"
"""The router: the prompt-position probe of the SLM's correctness (:data:`corea.signals.registry.SIGNALS`)."""

UNITS = ("seconds", "usd")


@dataclass(frozen=True)
class Policy:
    """``route_tau``: τ_r of the router (None: no router, answer-first alone); ``tau``: the
    answer-first τ (None: keep every usable answer of a question not routed)."""

    route_tau: float | None
    tau: float | None


@dataclass(frozen=True)
class RouteItems:
    """Gradable rows as arrays of length N: the answer-first ``scored`` set (its confidence,
    grades and usability), the router's value per item (NaN: none, never routed), and per-item
    USD and seconds of each outcome (the arrays ``slm``, ``prefill``, ``llm``)."""

    scored: ScoredSet
    route: np.ndarray
    usd: dict
    secs: dict | None


def _arr(x) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in x], dtype=float)


def route_items(rows: Sequence[dict], route_vals: Sequence[float | None],
                answer_vals: Sequence[float | None], llm_price: tuple[float, float],
                ratio: float = 0.0, tm: TimeModel | None = None,
                llm_prefill: bool = False) -> RouteItems:
    """:class:`RouteItems` of gradable ``rows`` (both models graded) with the router's and the
    answer-first signal's value per row (same length as ``rows``). ``llm_prefill``: a signal
    reads the LLM's state after its prompt (:mod:`corea.signals.delegation`): its prefill (the
    LLM's prompt tokens at its input price; in seconds its call with no completion) is charged
    to every item the LLM does not answer (part ``llm_prefill``).

    Raises:
        ValueError: value lists of another length than ``rows``, or a row without both grades.
    """
    if not (len(rows) == len(route_vals) == len(answer_vals)):
        raise ValueError("one router value and one answer-first value per row")
    if len(gradable(rows)) != len(rows):
        raise ValueError("route_items needs rows with both grades (gradable)")
    flat = [{**flat_row(r), "confidence": v} for r, v in zip(rows, answer_vals)]
    scored = ScoredSet.from_rows(flat)
    slm, llm, _ = costs_at_ratio(rows, llm_price, ratio)
    pi = llm_price[0] * ratio
    ptok = [int((r.get("slm") or {}).get("prompt_tokens") or 0) for r in rows]
    usd = {"slm": slm, "llm": llm, "prefill": np.array([p * pi / 1e6 for p in ptok])}
    lptok = [int((r.get("llm") or {}).get("prompt_tokens") or 0) for r in rows]
    if llm_prefill:
        usd["llm_prefill"] = np.array([p * llm_price[0] / 1e6 for p in lptok])
    secs = None
    if tm is not None:
        def call(o):
            o = o or {}
            return tm.seconds(o.get("model") or "", int(o.get("prompt_tokens") or 0),
                              int(o.get("completion_tokens") or 0))
        secs = {"slm": np.array([call(r.get("slm")) for r in rows]),
                "llm": np.array([call(r.get("llm")) for r in rows]),
                "prefill": np.array([tm.seconds((r.get("slm") or {}).get("model") or "", p, 0)
                                     for r, p in zip(rows, ptok)])}
        if llm_prefill:
            secs["llm_prefill"] = np.array([tm.seconds((r.get("llm") or {}).get("model") or "",
                                                       p, 0) for r, p in zip(rows, lptok)])
    return RouteItems(scored, _arr(route_vals), usd, secs)


def _spent(parts: dict, routed: np.ndarray, deferred: np.ndarray, check: bool) -> np.ndarray:
    """Per-item spending of one outcome (see the module docstring)."""
    kept = parts["slm"] + (parts["prefill"] if check else 0.0)
    return np.where(routed, parts["prefill"] + parts["llm"],
                    np.where(deferred, kept + parts["llm"], kept + parts.get("llm_prefill", 0.0)))


def outcome(items: RouteItems, policy: Policy) -> dict:
    """The cascade under ``policy``: ``routed_rate`` (sent straight to the LLM), ``deferred_rate``
    (solved, then deferred), ``llm_rate`` (both), ``pass_at_1``, ``pass_drop`` (vs LLM-only,
    0-1), ``cost_fraction_of_llm_only`` and ``time_fraction_of_llm_only`` (None without a time
    model or when LLM-only costs nothing), ``seconds_per_item``."""
    s = items.scored
    n = len(s)
    routed = np.zeros(n, dtype=bool) if policy.route_tau is None else \
        (~np.isnan(items.route)) & (items.route < policy.route_tau)
    tau = -np.inf if policy.tau is None else policy.tau
    deferred = s.defer(tau) & ~routed
    correct = np.where(routed, s.llm_correct, s.correct_at(tau))
    check = policy.route_tau is not None
    out = {"route_threshold": policy.route_tau, "threshold": policy.tau,
           "routed_rate": float(routed.mean()), "deferred_rate": float(deferred.mean()),
           "llm_rate": float((routed | deferred).mean()), "pass_at_1": float(correct.mean()),
           "pass_drop": s.llm_pass - float(correct.mean())}
    for unit, parts in (("cost", items.usd), ("time", items.secs)):
        if parts is None:
            out[f"{unit}_fraction_of_llm_only"] = None
            continue
        spent, alone = float(_spent(parts, routed, deferred, check).sum()), \
            float(parts["llm"].sum())
        out[f"{unit}_fraction_of_llm_only"] = spent / alone if alone > 0 else None
        if unit == "time":
            out["seconds_per_item"] = spent / n if n else None
    return out


def _candidates(values: np.ndarray, most: int = 60) -> list[float]:
    """Router thresholds worth trying: at most ``most`` quantiles of the values, and just above
    the largest (route everything)."""
    v = np.unique(values[~np.isnan(values)])
    if v.size == 0:
        return []
    qs = np.unique(np.quantile(v, np.linspace(0, 1, min(most, v.size)))).tolist()
    return qs + [float(np.nextafter(v.max(), np.inf))]


def choose(items: RouteItems, max_drop: float = 0.02, unit: str = "seconds",
           route: bool = True) -> tuple[Policy, dict]:
    """The cheapest policy in ``unit`` (``seconds`` or ``usd``) within ``max_drop`` of LLM-only
    pass@1 on ``items`` (ties: higher pass@1), over every answer-first τ and, with ``route``,
    every router τ_r (:func:`_candidates`); without ``route``, answer-first alone. Defer-all is
    always a candidate, so something qualifies.

    Raises:
        ValueError: an unknown unit, or ``seconds`` without a time model.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if unit == "seconds" and items.secs is None:
        raise ValueError("choosing by seconds needs a time model")
    key = "time_fraction_of_llm_only" if unit == "seconds" else "cost_fraction_of_llm_only"
    taus = [float(t) for t in items.scored.thresholds()]
    routes: list = [None] + (_candidates(items.route) if route else [])
    best = None
    for rt in routes:
        for t in taus:
            o = outcome(items, Policy(rt, t))
            if o["pass_at_1"] < items.scored.llm_pass - max_drop - 1e-12:
                continue
            rank = (o[key] if o[key] is not None else 0.0, -o["pass_at_1"])
            if best is None or rank < best[0]:
                best = (rank, Policy(rt, t), o)
    return best[1], best[2]


def oracle_rows(items: RouteItems) -> dict:
    """The oracles on ``items``: answer-first (``oracle``: defer exactly the SLM's errors;
    ``oracle_gain``: defer only where the LLM fixes one) and pre-generation (``route_oracle``,
    ``route_oracle_gain``: the same items sent straight to the LLM, the others kept)."""
    s = items.scored
    err = (~s.slm_correct).astype(float)
    gain = ((~s.slm_correct) & s.llm_correct).astype(float)
    out = {}
    for name, bad in (("oracle", err), ("oracle_gain", gain)):
        answer_first = RouteItems(s.with_confidence(1.0 - bad), items.route, items.usd,
                                  items.secs)
        out[name] = outcome(answer_first, Policy(None, 0.5))
        routed = RouteItems(s.with_confidence([1.0] * len(s)), 1.0 - bad, items.usd, items.secs)
        out[f"route_{name}"] = outcome(routed, Policy(0.5, None))
    return out


def _values(name: str, train: Sequence[dict], tests: dict, slm: str):
    """Cross-fitted train values and, per test set, values of the signal fit on all train."""
    sig = SIGNALS[name]
    fitted = sig.fit(train, slm) if sig.learned else None
    return cross_fit_values(sig, train, slm), {k: sig.values(v, fitted) for k, v in tests.items()}


def route_first_report(train_rows: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                       llm_price: tuple[float, float], tm: TimeModel | None,
                       max_drop: float = 0.02, ratio: float = 0.0, unit: str = "seconds",
                       answer_signal: str = BASELINE, route_signal: str = ROUTE_SIGNAL,
                       values: dict | None = None) -> dict:
    """Answer-first, route-only and route-then-answer-first, chosen on ``train_rows`` in
    ``unit`` (:func:`choose`), measured on each test set, with the oracles.

    ``values``: the signals' values as :func:`signal_values` returns them (computed when None).

    Returns:
        ``{"answer_signal", "route_signal", "unit", "ratio", "max_drop", "train": {policy name:
        {"policy", **outcome}}, "wins_on_train": bool, "tests": {name: {policy name:
        outcome}}}``; policy names ``answer_first``, ``route_only`` (the router alone, every
        question not routed kept), ``route_then_answer_first`` and :func:`oracle_rows`' names.

    Raises:
        ValueError: no gradable train rows, a signal that cannot be fit, or a bad unit.
    """
    train = gradable(train_rows)
    if not train:
        raise ValueError("no train rows with both models graded")
    tests = {k: gradable(v) for k, v in tests.items()}
    v = values or signal_values(train, tests, slm, answer_signal, route_signal)
    tr = route_items(train, v["route"][0], v["answer"][0], llm_price, ratio, tm)
    chosen = {"answer_first": choose(tr, max_drop, unit, route=False),
              "route_then_answer_first": choose(tr, max_drop, unit, route=True),
              "route_only": choose(keep_all(tr), max_drop, unit, route=True)}
    key = "time_fraction_of_llm_only" if unit == "seconds" else "cost_fraction_of_llm_only"
    rf, af = chosen["route_then_answer_first"][1], chosen["answer_first"][1]
    out = {"answer_signal": answer_signal, "route_signal": route_signal, "unit": unit,
           "ratio": ratio, "max_drop": max_drop,
           "train": {k: {"policy": vars(p), **o} for k, (p, o) in chosen.items()},
           "wins_on_train": rf["route_threshold"] is not None and rf[key] < af[key] - 1e-12,
           "tests": {}}
    out["train"].update(oracle_rows(tr))
    for name, rows in tests.items():
        te = route_items(rows, v["route"][1][name], v["answer"][1][name], llm_price, ratio, tm)
        res = {k: outcome(keep_all(te) if k == "route_only" else te, p)
               for k, (p, _) in chosen.items()}
        res.update(oracle_rows(te))
        out["tests"][name] = res
    return out


def keep_all(items: RouteItems) -> RouteItems:
    """The same items with every usable answer kept: the router alone decides."""
    return RouteItems(items.scored.with_confidence([1.0] * len(items.scored)), items.route,
                      items.usd, items.secs)


def signal_values(train: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                  answer_signal: str = BASELINE, route_signal: str = ROUTE_SIGNAL) -> dict:
    """``{"route": (train values, {test: values}), "answer": (...)}`` over gradable rows:
    cross-fitted on train, fit on all train for the tests (:func:`_values`)."""
    return {"route": _values(route_signal, train, tests, slm),
            "answer": _values(answer_signal, train, tests, slm)}


VARIANTS = (("seconds", 0.0), ("usd", 1 / 3))
"""The units and SLM price ratios :func:`route_first_variants` chooses in: seconds with a free
SLM (time is what routing saves there), USD with the SLM at 1/3 of the LLM's prices."""


def route_first_variants(train_rows: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                         llm_price: tuple[float, float], tm: TimeModel | None,
                         max_drop: float = 0.02) -> list[dict]:
    """:func:`route_first_report` in each of :data:`VARIANTS` (seconds only with a time model
    that has a fit for every model of the rows; without one no seconds are reported).

    Raises:
        ValueError: as :func:`route_first_report`.
    """
    train = gradable(train_rows)
    if not train:
        raise ValueError("no train rows with both models graded")
    tests = {k: gradable(v) for k, v in tests.items()}
    values = signal_values(train, tests, slm)  # fit once, chosen in each unit
    models = {(r.get(k) or {}).get("model") or "" for rows in (train, *tests.values())
              for r in rows for k in ("slm", "llm")}
    timed = tm is not None and not tm.missing(sorted(models))
    return [route_first_report(train, tests, slm, llm_price, tm if timed else None, max_drop,
                               ratio, unit, values=values)
            for unit, ratio in VARIANTS if unit != "seconds" or timed]


ORACLE_LABELS = {"oracle": "oracle: defer the SLM's errors (after it answers)",
                 "oracle_gain": "oracle: defer where the LLM fixes it (after it answers)",
                 "route_oracle": "oracle: route the SLM's errors (before it writes)",
                 "route_oracle_gain": "oracle: route where the LLM fixes it (before it writes)"}
"""The oracle policies' names in reports (:func:`oracle_rows`), shared by every report built on
these items."""

_LABELS = {"answer_first": "answer-first (default signal)",
           "route_only": "route only (prompt probe; every other answer kept)",
           "route_then_answer_first": "route, then answer-first", **ORACLE_LABELS}


def pct(x) -> str:
    """A fraction as a report cell: ``0.931`` → ``93.1%``, ``None`` → ``—``."""
    return "—" if x is None else f"{x * 100:.1f}%"


def route_first_lines(rep: dict) -> list[str]:
    """Markdown of :func:`route_first_report`: the policies chosen on train, then per test set
    pass@1, routed / deferred shares, and price and time as fractions of LLM-only."""
    unit = "seconds" if rep["unit"] == "seconds" else "price"
    lines = [f"**Route, then answer first** (router: `{rep['route_signal']}`, answer-first "
             f"signal: `{rep['answer_signal']}`; both thresholds chosen on train as the cheapest "
             f"in {unit} within {rep['max_drop'] * 100:.0f} points of LLM-only, SLM at "
             f"{rep['ratio']:.3g}× the LLM's prices; a routed question costs the SLM its prefill, a "
             "question it keeps pays the prefill twice). Routing "
             + ("**wins** on train." if rep["wins_on_train"] else "does **not** win on train."),
             ""]
    head = ["policy", "τ_r", "τ", "pass@1", "routed", "solved then deferred",
            "price vs LLM-only", "time vs LLM-only"]
    for where, res in [("train", rep["train"]), *rep["tests"].items()]:
        lines += [f"*{where}*", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, o in res.items():
            rt, t = o.get("route_threshold"), o.get("threshold")
            lines.append("| " + " | ".join([
                _LABELS.get(name, name), "—" if rt is None else f"{rt:.3f}",
                "—" if t is None else f"{t:.3f}", pct(o["pass_at_1"]), pct(o["routed_rate"]),
                pct(o["deferred_rate"]), pct(o["cost_fraction_of_llm_only"]),
                pct(o["time_fraction_of_llm_only"])]) + " |")
        lines.append("")
    return lines
