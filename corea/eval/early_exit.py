"""Route, then early exit, then answer first: the SLM stopped while it writes, held out.

A tier with an early-exit option (:class:`corea.model_config.EarlyExitSettings`) reads its state
every ``k`` tokens of its decode; a checkpoint probe (:mod:`corea.signals.checkpoint_probe`) turns
it into P(correct), and below τ_e the decode stops and the question goes to the next tier with
the partial reasoning shown. This module measures the policy on evaluation rows whose states at
the checkpoints were read (``checkpoints.jsonl``, :mod:`corea.eval.checkpoints`), against
answer-first and route-first (:mod:`corea.eval.route_first`, whose items, policies and oracles it
extends), in USD and in seconds, with every threshold chosen on train.

Per item, in order (``p``, ``c``: the SLM's prompt and solution tokens; ``L``: the LLM's call):

* **routed** (route value < τ_r): as in :mod:`corea.eval.route_first` (prefill, then the LLM);
* **exited** (not routed, and the probe below τ_e at a checkpoint ``t`` it wrote past, the
  first such ``t``): the SLM is charged its prompt and the ``t + 1`` tokens it had written when
  the state at ``t`` was read (:mod:`corea.backends.llamacpp_states`), plus the route check's
  prefill when there is a router; then the LLM, graded by the LLM's answer (the partial
  reasoning has none to fall back on);
* otherwise as in route-first: answer-first decides on the whole solution.

**Choosing on train** (:func:`choose_exit`): every ``(τ_r, τ_e, τ)`` over candidate grids
(quantiles of the cross-fitted train values), the cheapest in ``unit`` within ``max_drop`` of
LLM-only pass@1. Early exit *wins on train* when that policy is cheaper than route-first's best
(chosen on the same rows); both are then applied unchanged to each test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..timing import TimeModel
from .route_first import Policy, RouteItems, oracle_rows, outcome

__all__ = ["ExitPolicy", "ExitItems", "exit_items", "exit_outcome", "choose_exit",
           "candidates"]

UNIT_KEYS = {"seconds": "time_fraction_of_llm_only", "usd": "cost_fraction_of_llm_only"}


@dataclass(frozen=True)
class ExitPolicy:
    """τ_r (None: no router), τ_e (None: no early exit) and the answer-first τ."""

    route_tau: float | None
    exit_tau: float | None
    tau: float | None


@dataclass(frozen=True)
class ExitItems:
    """:class:`RouteItems` plus, per item, the checkpoint trajectory: ``t`` (positions, tokens)
    and ``v`` (the probe's P(correct) there), and what stopping at each checkpoint costs the SLM
    (``usd``, ``secs``: its prompt and ``t + 1`` completion tokens; ``secs`` None without a time
    model)."""

    base: RouteItems
    t: list[np.ndarray]
    v: list[np.ndarray]
    usd: list[np.ndarray]
    secs: list[np.ndarray] | None
    solution_tokens: np.ndarray


def exit_items(base: RouteItems, rows: Sequence[dict],
               trajectories: Sequence[Sequence[tuple[int, float]]], slm_out_price: float,
               slm_in_price: float, tm: TimeModel | None) -> ExitItems:
    """:class:`ExitItems` of the same ``rows`` as ``base`` with one trajectory per row
    (:func:`corea.signals.checkpoint_probe.trajectory`; ``[]``: never checked).
    ``slm_in_price`` / ``slm_out_price``: the SLM's USD per 1M prompt / completion tokens.

    Raises:
        ValueError: another number of trajectories than rows.
    """
    if len(trajectories) != len(rows) or len(rows) != len(base.scored):
        raise ValueError("one trajectory per row, and the rows of the route items")
    ts, vs, usd, secs, n = [], [], [], [] if tm is not None else None, []
    for r, traj in zip(rows, trajectories):
        slm = r.get("slm") or {}
        p = int(slm.get("prompt_tokens") or 0)
        t = np.array([a for a, _ in traj], dtype=int)
        ts.append(t)
        vs.append(np.array([b for _, b in traj], dtype=float))
        usd.append((p * slm_in_price + (t + 1) * slm_out_price) / 1e6)
        if secs is not None:
            secs.append(np.array([tm.seconds(slm.get("model") or "", p, int(x) + 1) for x in t]))
        n.append(int((slm.get("signals") or {}).get("n_tokens")
                     or slm.get("completion_tokens") or 0))
    return ExitItems(base, ts, vs, usd, secs, np.array(n))


@dataclass(frozen=True)
class Exits:
    """Where a τ_e stops each item: ``at`` (bool), ``index`` into its trajectory (-1: never),
    ``tokens`` written when stopped (0 when not), and the stop's USD and seconds."""

    at: np.ndarray
    index: np.ndarray
    tokens: np.ndarray
    usd: np.ndarray
    secs: np.ndarray | None


def exits_at(items: ExitItems, exit_tau: float | None) -> Exits:
    """The first checkpoint of each item whose value is below ``exit_tau`` (none when None)."""
    n = len(items.t)
    idx = np.full(n, -1)
    if exit_tau is not None:
        for i, v in enumerate(items.v):
            below = np.flatnonzero(v < exit_tau)
            if below.size:
                idx[i] = below[0]
    at = idx >= 0

    def pick(arrs: list[np.ndarray]) -> np.ndarray:
        return np.array([a[j] if j >= 0 else 0.0 for a, j in zip(arrs, idx)])

    tokens = np.array([items.t[i][j] + 1 if j >= 0 else 0 for i, j in enumerate(idx)])
    return Exits(at, idx, tokens, pick(items.usd),
                 pick(items.secs) if items.secs is not None else None)


def exit_outcome(items: ExitItems, policy: ExitPolicy, exits: Exits | None = None) -> dict:
    """:func:`corea.eval.route_first.outcome`'s keys for the policy with early exit, plus
    ``exit_threshold``, ``exited_rate`` and ``slm_tokens_saved`` (solution tokens not written
    because of early exits, per item on average, and in all)."""
    base = items.base
    ex = exits if exits is not None else exits_at(items, policy.exit_tau)
    s = base.scored
    routed = np.zeros(len(s), dtype=bool) if policy.route_tau is None else \
        (~np.isnan(base.route)) & (base.route < policy.route_tau)
    exited = ex.at & ~routed
    tau = -np.inf if policy.tau is None else policy.tau
    deferred = s.defer(tau) & ~routed & ~exited
    correct = np.where(routed | exited, s.llm_correct, s.correct_at(tau))
    check = policy.route_tau is not None
    saved = np.where(exited, np.maximum(items.solution_tokens - ex.tokens, 0), 0)
    out = {"route_threshold": policy.route_tau, "exit_threshold": policy.exit_tau,
           "threshold": policy.tau, "routed_rate": float(routed.mean()),
           "exited_rate": float(exited.mean()), "deferred_rate": float(deferred.mean()),
           "llm_rate": float((routed | exited | deferred).mean()),
           "pass_at_1": float(correct.mean()), "pass_drop": s.llm_pass - float(correct.mean()),
           "slm_tokens_saved": int(saved.sum()),
           "slm_tokens_saved_per_item": float(saved.mean()) if len(s) else 0.0}
    for unit, parts, stop in (("cost", base.usd, ex.usd), ("time", base.secs, ex.secs)):
        if parts is None or stop is None:
            out[f"{unit}_fraction_of_llm_only"] = None
            continue
        pre = parts["prefill"] if check else 0.0
        kept = parts["slm"] + pre
        spent = np.where(routed, parts["prefill"] + parts["llm"],
                         np.where(exited, pre + stop + parts["llm"],
                                  np.where(deferred, kept + parts["llm"], kept)))
        alone = float(parts["llm"].sum())
        out[f"{unit}_fraction_of_llm_only"] = float(spent.sum()) / alone if alone > 0 else None
        if unit == "time":
            out["seconds_per_item"] = float(spent.mean()) if len(s) else None
    return out


def candidates(values: np.ndarray, most: int) -> list[float]:
    """At most ``most`` thresholds worth trying: quantiles of the values and just above the
    largest (everything below)."""
    v = np.unique(values[~np.isnan(values)])
    if v.size == 0:
        return []
    qs = np.unique(np.quantile(v, np.linspace(0, 1, min(most, v.size)))).tolist()
    return qs + [float(np.nextafter(v.max(), np.inf))]


def choose_exit(items: ExitItems, max_drop: float = 0.02, unit: str = "seconds",
                route: bool = True, exit_: bool = True, most: int = 40
                ) -> tuple[ExitPolicy, dict]:
    """The cheapest policy in ``unit`` within ``max_drop`` of LLM-only pass@1 (ties: higher
    pass@1) over the grids of τ_r (with ``route``), τ_e (with ``exit_``) and τ (each at most
    ``most`` candidates, :func:`candidates`; None — off — is always one). Defer-all qualifies.

    Raises:
        ValueError: an unknown unit, or a unit the items have no costs in.
    """
    if unit not in UNIT_KEYS:
        raise ValueError(f"unit must be one of {tuple(UNIT_KEYS)}, got {unit!r}")
    key = UNIT_KEYS[unit]
    if unit == "seconds" and items.secs is None:
        raise ValueError("choosing by seconds needs a time model")
    s = items.base.scored
    taus = candidates(s.confidence, most) + [0.0]
    routes = [None] + (candidates(items.base.route, most // 2) if route else [])
    allv = np.concatenate(items.v) if items.v else np.zeros(0)
    exit_taus = [None] + (candidates(allv, most) if exit_ else [])
    best = None
    floor = s.llm_pass - max_drop - 1e-12
    for te in exit_taus:
        ex = exits_at(items, te)
        for rt in routes:
            for t in taus:
                o = exit_outcome(items, ExitPolicy(rt, te, t), ex)
                if o["pass_at_1"] < floor:
                    continue
                rank = (o[key] if o[key] is not None else 0.0, -o["pass_at_1"])
                if best is None or rank < best[0]:
                    best = (rank, ExitPolicy(rt, te, t), o)
    return best[1], best[2]


def with_oracles(items: ExitItems) -> dict:
    """:func:`corea.eval.route_first.oracle_rows` of the base items (for the report's bounds)."""
    return oracle_rows(items.base)


def route_first_outcome(items: ExitItems, policy: ExitPolicy) -> dict:
    """A policy without early exit measured by route-first's own :func:`outcome` (a check that
    both modules charge the same)."""
    return outcome(items.base, Policy(policy.route_tau, policy.tau))
