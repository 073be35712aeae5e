"""Evaluating an N-tier cascade: score each tier once per item, then sweep τ vectors.

The harness (:mod:`corea.eval.harness`) scores every tier once per item, one record per tier
(:mod:`corea.eval.records`); :class:`corea.eval.scored.ScoredSet` evaluates any τ of the first
tier against the last. This module evaluates τ vectors over all N tiers (``settings.tiers``):

- :func:`tier_item` / :func:`load_tier_items` read a row's tier records as one typed
  :class:`TierItem`.
- :func:`evaluate_taus` evaluates one τ vector (one τ per tier but the last) on scored items,
  without generating again: pass@1, cost, how many items each tier answered and each deciding
  tier's deferral rate (:class:`TierOutcome`).
- :func:`sweep` evaluates a grid of τ vectors (:func:`tau_grid`); :func:`pareto` keeps the
  vectors no other beats on both pass@1 and cost; :func:`single_tier` is one tier alone.

The routing of one item follows the live cascade's rules, applied with :func:`corea.policy.decide`
(the deferral rule's one home): tier k keeps its answer iff it is usable (not cut off, parsed, no
error: :func:`corea.policy.unusable`) and its deciding confidence ≥ τ_k; otherwise it defers to
the next, up to the last tier. The answer graded is the cascade's final answer
(:func:`corea.policy.final_tier`): the last tier's, unless it is not an answer (cut off at its
budget, none parsed, an error), when the latest earlier usable answer is final (none: wrong).
Cost convention (USD): every tier that ran on an item is charged on it, i.e. tiers 0 … the tier
the item was routed to.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from .. import policy

__all__ = ["TierScore", "TierItem", "TierOutcome", "keeps", "route", "final", "evaluate_taus",
           "tau_grid", "sweep", "pareto", "single_tier", "tier_item",
           "load_tier_items", "default_tau_values", "outcome_dict"]


@dataclass(frozen=True)
class TierScore:
    """One tier's graded output on one item.

    Attributes:
        correct: whether its parsed answer is right (an error or no answer: False).
        cost_usd: what this tier's output cost on the item (USD).
        confidence: its deciding confidence in [0, 1] (the stated one, or the token
            probability), ``None`` when it stated none; unused for the last tier.
        usable: its output can be kept as an answer (no error, not cut off at its token budget,
            an answer parsed); an unusable output always defers, whatever its confidence.
    """

    correct: bool
    cost_usd: float
    confidence: float | None = None
    usable: bool = True


@dataclass(frozen=True)
class TierItem:
    """One item scored by every tier, in cascade order (``len(tiers)`` = the number of tiers)."""

    id: str
    tiers: tuple[TierScore, ...]


@dataclass(frozen=True)
class TierOutcome:
    """The cascade's result on a set of items at one τ vector.

    Attributes:
        taus: τ of every tier but the last, in cascade order.
        n_items: items evaluated.
        pass_at_1: share of items answered correctly, in [0, 1].
        cost_usd: total cost over the items (USD).
        cost_per_item: ``cost_usd / n_items`` (USD).
        answered: share of the items whose final answer is each tier's (length N; sums to 1
            less the share with no final answer at all: :func:`final`).
        reached: share of the items each tier ran on (length N; the first is 1).
        deferral_rate: per deciding tier (length N-1), the share of the items it ran on that it
            deferred (``None`` when it ran on none).
    """

    taus: tuple[float, ...]
    n_items: int
    pass_at_1: float
    cost_usd: float
    cost_per_item: float
    answered: tuple[float, ...]
    reached: tuple[float, ...]
    deferral_rate: tuple[float | None, ...]


def keeps(score: TierScore, tau: float) -> bool:
    """Whether a deciding tier keeps its answer at τ (:func:`corea.policy.unusable` first, then
    :func:`corea.policy.decide`: a confidence equal to τ is kept, a missing one defers)."""
    if not score.usable:
        return False
    return not policy.decide(score.confidence, tau).defer


def route(item: TierItem, taus: Sequence[float]) -> int:
    """The index of the tier that answers ``item`` at ``taus`` (one τ per tier but the last).

    Raises:
        ValueError: ``taus`` has not ``len(item.tiers) - 1`` values, or one is outside [0, 1].
    """
    n = len(item.tiers)
    if len(taus) != n - 1:
        raise ValueError(f"item {item.id}: {len(taus)} thresholds for {n} tiers "
                         f"(one per tier but the last: {n - 1})")
    for k, tau in enumerate(taus):
        if keeps(item.tiers[k], tau):
            return k
    return n - 1


def final(item: TierItem, taus: Sequence[float]) -> int | None:
    """The index of the tier whose answer is final for ``item`` at ``taus``
    (:func:`route`, then :func:`corea.policy.final_tier`: a last-tier output that is not an
    answer falls back to the latest earlier usable one), ``None`` when no tier that ran has one.

    Raises:
        ValueError: as :func:`route`.
    """
    k = route(item, taus)
    ran = [policy.TierRun(t.usable, deferred=j < k) for j, t in enumerate(item.tiers[:k + 1])]
    return policy.final_tier(ran, len(item.tiers))


def evaluate_taus(items: Sequence[TierItem], taus: Sequence[float]) -> TierOutcome:
    """pass@1, cost and per-tier shares of the cascade at one τ vector (see
    :class:`TierOutcome`).

    Raises:
        ValueError: no items, items with different tier counts, or a bad τ vector.
    """
    if not items:
        raise ValueError("no items to evaluate")
    n = len(items[0].tiers)
    if any(len(it.tiers) != n for it in items):
        raise ValueError("every item needs a score for each of the same tiers")
    answered = [0] * n
    reached = [0] * n
    routed = [0] * n
    correct = 0
    cost = 0.0
    for it in items:
        k = route(it, taus)
        f = final(it, taus)
        routed[k] += 1
        for j in range(k + 1):
            reached[j] += 1
            cost += it.tiers[j].cost_usd
        if f is not None:
            answered[f] += 1
            correct += bool(it.tiers[f].correct)
    m = len(items)
    deferral = tuple(None if reached[j] == 0 else (reached[j] - routed[j]) / reached[j]
                     for j in range(n - 1))
    return TierOutcome(taus=tuple(float(t) for t in taus), n_items=m, pass_at_1=correct / m,
                       cost_usd=cost, cost_per_item=cost / m,
                       answered=tuple(a / m for a in answered),
                       reached=tuple(r / m for r in reached), deferral_rate=deferral)


def tau_grid(values: Sequence[float] | Sequence[Sequence[float]], n_tiers: int
             ) -> list[tuple[float, ...]]:
    """Every τ vector over ``n_tiers`` tiers: the same candidate values for each deciding tier
    (a flat sequence), or one candidate list per deciding tier (length ``n_tiers - 1``).

    >>> tau_grid([0.5, 0.9], 3)
    [(0.5, 0.5), (0.5, 0.9), (0.9, 0.5), (0.9, 0.9)]
    """
    if n_tiers < 2:
        raise ValueError(f"a cascade has at least 2 tiers, got {n_tiers}")
    if values and isinstance(values[0], (list, tuple)):
        per = [list(v) for v in values]
        if len(per) != n_tiers - 1:
            raise ValueError(f"{len(per)} candidate lists for {n_tiers - 1} deciding tiers")
    else:
        per = [list(values)] * (n_tiers - 1)
    return [tuple(float(t) for t in combo) for combo in itertools.product(*per)]


def sweep(items: Sequence[TierItem], grid: Iterable[Sequence[float]]) -> list[TierOutcome]:
    """:func:`evaluate_taus` at every τ vector of ``grid`` (e.g. :func:`tau_grid`), in order."""
    return [evaluate_taus(items, taus) for taus in grid]


def pareto(outcomes: Sequence[TierOutcome]) -> list[TierOutcome]:
    """The outcomes no other beats on both counts (at most the cost and at least the pass@1,
    one of them strictly), cheapest first; of equal (cost, pass@1) the first is kept."""
    best: list[TierOutcome] = []
    for o in sorted(outcomes, key=lambda o: (o.cost_usd, -o.pass_at_1)):
        if not best or o.pass_at_1 > best[-1].pass_at_1:
            best.append(o)
    return best


def single_tier(items: Sequence[TierItem], k: int) -> dict:
    """Tier ``k`` alone on every item: ``{"tier", "pass_at_1", "cost_usd", "cost_per_item"}``
    (its own cost only: no earlier tier ran)."""
    if not items:
        raise ValueError("no items to evaluate")
    m = len(items)
    right = sum(bool(it.tiers[k].correct) for it in items)
    cost = sum(it.tiers[k].cost_usd for it in items)
    return {"tier": k, "pass_at_1": right / m, "cost_usd": cost, "cost_per_item": cost / m}


# ----------------------------------------------------------------------------- run folders

def tier_item(row: dict) -> TierItem | None:
    """The :class:`TierItem` of one run row's tier records (:mod:`corea.eval.records`), or
    ``None`` when a tier's grade is undecided (``correct`` None: ungradable gold, grader
    timeout) or the row has fewer than two records (pending, ``--slm-only``): such items are
    left out of every N-tier metric, as in the two-tier summary."""
    scores = []
    for t in row.get("tiers") or []:
        if t.get("correct") is None:
            return None
        conf = t.get("confidence")
        scores.append(TierScore(correct=bool(t["correct"]),
                                cost_usd=float(t.get("cost_usd") or 0.0),
                                confidence=None if conf is None else float(conf),
                                usable=bool(t.get("usable", True))))
    if len(scores) < 2:
        return None
    return TierItem(str(row["id"]), tuple(scores))


def load_tier_items(run_dir: str | os.PathLike) -> list[TierItem]:
    """The gradable, completed items of a run folder as :class:`TierItem` (id order, the last
    row of a repeated id; :func:`corea.eval.runs.load_results`), every tier of each.

    Raises:
        FileNotFoundError: no ``items.jsonl``.
        ValueError: a corrupt line other than the last.
    """
    from .records import is_pending
    from .runs import load_results

    return [x for x in map(tier_item, (r for r in load_results(run_dir) if not is_pending(r)))
            if x is not None]


def default_tau_values(n_tiers: int, max_vectors: int = 2_000) -> list[float]:
    """The candidate τ of each deciding tier for a sweep: 0, 0.05, …, 1 (21 values), with a
    coarser step (0.1, 0.2, 0.25, 0.5, 1) when the grid (``len(values) ** (n_tiers - 1)``
    vectors) would exceed ``max_vectors``.

    >>> len(default_tau_values(3)), len(default_tau_values(4)), default_tau_values(6)
    (21, 11, [0.0, 0.5, 1.0])
    """
    for steps in (20, 10, 5, 4, 2, 1):
        if (steps + 1) ** max(1, n_tiers - 1) <= max_vectors or steps == 1:
            return [round(i / steps, 4) for i in range(steps + 1)]
    raise AssertionError("unreachable")


def outcome_dict(o: TierOutcome) -> dict:
    """A :class:`TierOutcome` as a JSON-ready dict (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(o).items()}
