"""The scored set: the gradable rows of an evaluation as arrays, and the cascade at any τ.

(Over 400 lines: the set, its deferral and final-answer twins and the sweep-row metrics share one
vocabulary and are read together.)

:class:`ScoredSet` is what every cascade metric, sweep, threshold rule, comparison and chart works
on. It holds, per item, the SLM's deciding confidence (NaN where there is none), whether each
model's answer is correct, and what each model cost (USD). :meth:`ScoredSet.defer` is the
**vector twin of** :func:`corea.policy.decide`, and the only vectorised copy of the deferral rule:

    an item is deferred to the LLM iff its SLM output is not an answer (cut off at its token
    budget, or no parsable answer: :func:`corea.policy.unusable`), or its confidence is missing
    or strictly below τ.

Every item pays the SLM; a deferred item also pays the LLM. Each item is graded by the cascade's
**final answer** (:func:`corea.policy.final_tiers`, the vector twin of the live cascade's rule): a
kept item by the SLM's answer, a deferred one by the LLM's — unless the LLM's output is not an
answer (cut off at its budget, no parsable answer, an error), when the SLM's usable answer is final
(and without one, nothing: wrong) (:meth:`ScoredSet.correct_at`). A test draws random confidences
(missing ones and exact ties with τ included) and checks that both rules agree element by element.

Rows (:meth:`ScoredSet.from_rows`) are either evaluation item rows (``items.jsonl``: nested
``slm``/``llm`` output dicts with ``confidence`` and ``cost_usd``) or flat rows ``{id,
confidence, slm_correct, llm_correct, slm_cost, llm_cost, ...}`` (:func:`flat_row`); a row with an
undecided label (None) is left out and counted in ``n_dropped``.

The functions at the bottom (:func:`cascade_at`, :func:`sweep`, :func:`random_routing_baseline`,
:func:`best_saving_within`, :func:`apgr`, :func:`cpt`) are the same numbers for callers that hold
plain arrays or sweep rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..metrics import as_bool_array
from ..policy import final_tiers
from ..signals.tokens import TOKPROB, token_probability
from .records import output_usable

__all__ = ["ScoredSet", "flat_row", "confidence_array", "cascade_at", "sweep", "random_routing_baseline",
           "best_saving_within", "apgr", "cpt"]


def _call(out: dict) -> dict:
    """An output's model and token counts (what a time model needs for its seconds)."""
    return {"model": out.get("model"), "prompt_tokens": out.get("prompt_tokens"),
            "completion_tokens": out.get("completion_tokens")}


def flat_row(row: dict) -> dict:
    """One row as ``{id, confidence, usable, llm_usable, slm_correct, llm_correct, slm_cost,
    llm_cost, tokprob, slm_call, llm_call}`` (``tokprob``: the solution's geometric-mean token
    probability, None without log-probs; ``usable`` / ``llm_usable``: False when the SLM's /
    LLM's output is not an answer, :func:`unusable`; ``slm_call`` / ``llm_call``: each output's
    ``{model, prompt_tokens, completion_tokens}``, for seconds from a time model).

    Accepts an evaluation item row (nested ``slm``/``llm`` output dicts) or an already flat row
    (returned with missing keys filled: confidence None, costs 0.0, labels None).
    """
    if isinstance(row.get("slm"), dict) or isinstance(row.get("llm"), dict):
        slm, llm = row.get("slm") or {}, row.get("llm") or {}
        return {"id": row.get("id"), "confidence": slm.get("confidence"),
                "usable": output_usable(slm), "llm_usable": output_usable(llm),
                "slm_correct": row.get("slm_correct"), "llm_correct": row.get("llm_correct"),
                "slm_cost": float(slm.get("cost_usd") or 0.0),
                "llm_cost": float(llm.get("cost_usd") or 0.0),
                TOKPROB: token_probability(slm),
                "slm_call": _call(slm), "llm_call": _call(llm)}
    out = dict(row)
    out.setdefault("confidence", None)
    out.setdefault("usable", True)
    out.setdefault("llm_usable", True)
    out.setdefault("slm_correct", None)
    out.setdefault("llm_correct", None)
    out["slm_cost"] = float(row.get("slm_cost") or 0.0)
    out["llm_cost"] = float(row.get("llm_cost") or 0.0)
    return out


def confidence_array(confidences) -> np.ndarray:
    """Floats in [0, 1] with NaN for None.

    Raises:
        ValueError: a value that is not None and not a finite number in [0, 1].
    """
    conf = confidences.tolist() if isinstance(confidences, np.ndarray) else list(confidences)
    c = np.array([np.nan if x is None else float(x) for x in conf], dtype=float).reshape(-1)
    given = np.array([x is not None for x in conf], dtype=bool)
    v = c[given]
    if v.size and (not np.all(np.isfinite(v)) or v.min() < 0.0 or v.max() > 1.0):
        raise ValueError("confidences must be finite and in [0, 1] (or None)")
    return c


def _flags(x, n: int, name: str) -> np.ndarray | None:
    """A bool per item (None stays None: every item)."""
    if x is None:
        return None
    a = np.asarray(list(x), dtype=bool).reshape(-1)
    if a.size != n:
        raise ValueError(f"{name} must have one value per item")
    return a


def _cost_array(x, n: int, name: str) -> np.ndarray:
    a = np.zeros(n) if x is None else np.asarray(x, dtype=float).reshape(-1)
    if a.size != n:
        raise ValueError(f"{name} has {a.size} values, expected {n}: confidences, slm_correct, "
                         "llm_correct, slm_cost and llm_cost must have equal length")
    if a.size and (not np.all(np.isfinite(a)) or a.min() < 0):
        raise ValueError("costs must be finite and >= 0 (USD per item)")
    return a


@dataclass(frozen=True, eq=False)
class ScoredSet:
    """Gradable evaluation rows as parallel arrays of length N.

    Attributes:
        confidence: the deciding confidence per item, float in [0, 1], NaN where there is none.
        slm_correct, llm_correct: bool per item.
        slm_cost, llm_cost: USD per item (the cost of running that model on it).
        ids: the items' ids (empty when built from arrays).
        n_dropped: rows left out because a label was undecided.
        usable: bool per item, False where the SLM's output is not an answer (deferred at every
            τ); ``None`` means every item is usable.
        llm_usable: bool per item, False where the LLM's output is not an answer (a deferred item
            then keeps the SLM's usable answer); ``None`` means every item is usable.
    """

    confidence: np.ndarray
    slm_correct: np.ndarray
    llm_correct: np.ndarray
    slm_cost: np.ndarray
    llm_cost: np.ndarray
    ids: tuple = ()
    n_dropped: int = 0
    usable: np.ndarray | None = None
    llm_usable: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, confidences: Sequence[float | None], slm_correct, llm_correct,
                    slm_cost=None, llm_cost=None, ids: Sequence = (),
                    usable=None, llm_usable=None) -> "ScoredSet":
        """Validate and wrap parallel arrays (costs default to 0).

        Raises:
            ValueError: length mismatch, confidences outside [0, 1], a None label, negative or
                non-finite costs.
        """
        c = confidence_array(confidences)
        n = c.size
        s = as_bool_array(slm_correct, "slm_correct")
        l_ = as_bool_array(llm_correct, "llm_correct")
        if not (s.size == l_.size == n):
            raise ValueError("confidences, slm_correct and llm_correct must have equal length")
        u, lu = (_flags(x, n, name) for x, name in ((usable, "usable"),
                                                    (llm_usable, "llm_usable")))
        return cls(c, s, l_, _cost_array(slm_cost, n, "slm_cost"),
                   _cost_array(llm_cost, n, "llm_cost"), tuple(ids), usable=u, llm_usable=lu)

    @classmethod
    def from_rows(cls, rows: Sequence[dict], confidence: str = "confidence") -> "ScoredSet":
        """The rows whose SLM and LLM labels are both decided (see the module docstring).

        Args:
            rows: evaluation item rows or flat rows.
            confidence: the :func:`flat_row` key that decides (:data:`corea.signals.tokens.TOKPROB`:
                the token probability of the solution).
        """
        flat = [flat_row(r) for r in rows]
        ok = [r for r in flat if r["slm_correct"] is not None and r["llm_correct"] is not None]
        out = cls.from_arrays([r.get(confidence) for r in ok],
                              [bool(r["slm_correct"]) for r in ok],
                              [bool(r["llm_correct"]) for r in ok],
                              [r["slm_cost"] for r in ok], [r["llm_cost"] for r in ok],
                              [r.get("id") for r in ok], [r.get("usable", True) for r in ok],
                              [r.get("llm_usable", True) for r in ok])
        return replace(out, n_dropped=len(flat) - len(ok))

    def with_confidence(self, confidences: Sequence[float | None]) -> "ScoredSet":
        """The same items deciding on another signal (one value or None per item)."""
        c = confidence_array(confidences)
        if c.size != len(self):
            raise ValueError(f"{c.size} confidences for {len(self)} items")
        return replace(self, confidence=c)

    def with_costs(self, slm_cost, llm_cost) -> "ScoredSet":
        """The same items at other prices (USD per item)."""
        n = len(self)
        return replace(self, slm_cost=_cost_array(slm_cost, n, "slm_cost"),
                       llm_cost=_cost_array(llm_cost, n, "llm_cost"))

    def subset(self, idx) -> "ScoredSet":
        """The items at positions ``idx`` (an index or boolean array)."""
        idx = np.asarray(idx)
        ids = tuple(np.asarray(self.ids, dtype=object)[idx]) if self.ids else ()
        return ScoredSet(self.confidence[idx], self.slm_correct[idx], self.llm_correct[idx],
                         self.slm_cost[idx], self.llm_cost[idx], ids,
                         usable=None if self.usable is None else self.usable[idx],
                         llm_usable=None if self.llm_usable is None else self.llm_usable[idx])

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.confidence.size)

    @property
    def has_confidence(self) -> np.ndarray:
        """Bool per item: a confidence was stated (or computed)."""
        return ~np.isnan(self.confidence)

    def confidence_list(self) -> list[float | None]:
        """The confidences as a list, None where missing."""
        return [None if np.isnan(x) else float(x) for x in self.confidence]

    @property
    def slm_pass(self) -> float:
        return float(self.slm_correct.mean())

    @property
    def llm_pass(self) -> float:
        return float(self.llm_correct.mean())

    @property
    def llm_only_cost(self) -> float:
        return float(self.llm_cost.sum())

    def _fraction(self, cost: float) -> float | None:
        llm_only = self.llm_only_cost
        return cost / llm_only if llm_only > 0 else None

    # ------------------------------------------------------------------ the rule
    def defer(self, tau) -> np.ndarray:
        """Which items go to the LLM at threshold ``tau``: the SLM output is not an answer, or
        its confidence is missing or ``< tau``.

        ``tau`` is a number (result shape (N,)) or a 1-D array of G thresholds (shape (G, N)).
        The vector twin of the cascade's decision (:func:`corea.policy.unusable`, then
        :func:`corea.policy.decide`): a confidence equal to τ is kept.
        """
        t = np.asarray(tau, dtype=float)
        c = self.confidence
        u = self.usable if self.usable is not None else np.ones(c.size, dtype=bool)
        if t.ndim:
            c, t, u = c[None, :], t.reshape(-1)[:, None], u[None, :]
        return ~u | np.isnan(c) | (c < t)

    def final_at(self, tau) -> np.ndarray:
        """Per item, which answer is final at ``tau``: 0 the SLM's, 1 the LLM's, -1 none
        (:func:`corea.policy.final_tiers`: a deferred item whose LLM output is not an answer
        keeps the SLM's usable answer). Shape as :meth:`defer`."""
        d = self.defer(tau)
        n = len(self)
        u = self.usable if self.usable is not None else np.ones(n, dtype=bool)
        lu = self.llm_usable if self.llm_usable is not None else np.ones(n, dtype=bool)
        usable = np.stack(np.broadcast_arrays(u, lu, d)[:2], axis=-1)
        deferred = np.stack([d, np.zeros_like(d)], axis=-1)
        return final_tiers(usable, False, deferred, 1 + d.astype(int))

    def correct_at(self, tau) -> np.ndarray:
        """Per item, whether the cascade's final answer at ``tau`` is correct (shape as
        :meth:`defer`; no final answer is wrong)."""
        f = self.final_at(tau)
        return np.where(f == 1, self.llm_correct, np.where(f == 0, self.slm_correct, False))

    def at(self, tau: float) -> dict:
        """The cascade at ``tau``: ``threshold``, ``pass_at_1``, ``deferral_rate``, ``cost``
        (total USD) and ``cost_fraction_of_llm_only`` (None when LLM-only costs 0).

        Raises:
            ValueError: an empty set.
        """
        if len(self) == 0:
            raise ValueError("cascade metrics of an empty set are undefined")
        d = self.defer(tau)
        cost = float(self.slm_cost.sum() + self.llm_cost[d].sum())
        return {"threshold": float(tau),
                "pass_at_1": float(self.correct_at(tau).mean()),
                "deferral_rate": float(d.mean()),
                "cost": cost,
                "cost_fraction_of_llm_only": self._fraction(cost)}

    def thresholds(self) -> np.ndarray:
        """Every τ that gives a distinct deferral set, ascending: 0 (defer only the missing),
        each distinct confidence, and the float just above the largest (defer everything)."""
        vals = np.unique(self.confidence[self.has_confidence])
        top = float(vals.max()) if vals.size else 0.0
        return np.unique(np.concatenate([[0.0], vals, [np.nextafter(top, np.inf)]]))

    def sweep(self) -> list[dict]:
        """:meth:`at` at every :meth:`thresholds` value, in ascending order.

        Raises:
            ValueError: an empty set.
        """
        if len(self) == 0:
            raise ValueError("cascade metrics of an empty set are undefined")
        return [self.at(t) for t in self.thresholds()]

    def random_routing(self, rate: float) -> dict:
        """Expected result of deferring each item independently with probability ``rate``, the
        no-information router: ``pass_at_1 = (1-rate)*mean(slm) + rate*mean(llm)``,
        ``cost = sum(slm_cost) + rate*sum(llm_cost)``.

        Raises:
            ValueError: ``rate`` not in [0, 1], or an empty set.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be in [0, 1]")
        if len(self) == 0:
            raise ValueError("cascade metrics of an empty set are undefined")
        cost = float(self.slm_cost.sum() + rate * self.llm_cost.sum())
        return {"deferral_rate": float(rate),
                "pass_at_1": float((1 - rate) * self.slm_pass + rate * self.llm_pass),
                "cost": cost,
                "cost_fraction_of_llm_only": self._fraction(cost)}


# ----------------------------------------------------------------------------- plain arrays

def cascade_at(threshold: float, confidences: Sequence[float | None], slm_correct, llm_correct,
               slm_cost, llm_cost) -> dict:
    """:meth:`ScoredSet.at` of these arrays (confidences: floats in [0, 1] or None).

    Raises:
        ValueError: N = 0, length mismatch, confidences outside [0, 1], negative or NaN costs.
    """
    return ScoredSet.from_arrays(confidences, slm_correct, llm_correct, slm_cost,
                                 llm_cost).at(threshold)


def sweep(confidences: Sequence[float | None], slm_correct, llm_correct, slm_cost,
          llm_cost) -> list[dict]:
    """:meth:`ScoredSet.sweep` of these arrays."""
    return ScoredSet.from_arrays(confidences, slm_correct, llm_correct, slm_cost,
                                 llm_cost).sweep()


def random_routing_baseline(rate: float, slm_correct, llm_correct, slm_cost, llm_cost) -> dict:
    """:meth:`ScoredSet.random_routing` of these arrays."""
    slm_correct = list(slm_correct)
    return ScoredSet.from_arrays([None] * len(slm_correct), slm_correct, llm_correct, slm_cost,
                                 llm_cost).random_routing(rate)


# ----------------------------------------------------------------------------- sweep rows

def best_saving_within(sweep_rows: Sequence[dict], llm_only_pass: float,
                       max_drop: float = 0.02) -> dict | None:
    """The headline number: the largest cost saving with ``pass@1 >= LLM-only pass@1 - max_drop``.

    ``max_drop`` is on the 0-1 scale (0.02 = 2 percentage points). Among qualifying rows, the one
    with the lowest ``cost`` wins (ties: higher pass@1). A 1e-12 slack absorbs float error at the
    boundary.

    Returns:
        a copy of the winning row plus ``saving = 1 - cost_fraction_of_llm_only`` (None if that is
        None), ``llm_only_pass`` and ``max_drop``; None if no row qualifies.
    """
    ok = [r for r in sweep_rows if r["pass_at_1"] >= llm_only_pass - max_drop - 1e-12]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r["cost"], -r["pass_at_1"]))
    frac = best.get("cost_fraction_of_llm_only")
    return {**best, "saving": (1.0 - frac) if frac is not None else None,
            "llm_only_pass": float(llm_only_pass), "max_drop": float(max_drop)}


def _pgr_curve(sweep_rows: Sequence[dict], slm_pass: float, llm_pass: float):
    gap = llm_pass - slm_pass
    if abs(gap) < 1e-12:
        return None
    pts = {}
    for r in sweep_rows:
        x, y = float(r["deferral_rate"]), (float(r["pass_at_1"]) - slm_pass) / gap
        pts[x] = max(y, pts.get(x, -np.inf))  # several τ with one rate: the best
    xs = np.array(sorted(pts))
    ys = np.array([pts[x] for x in xs])
    return xs, ys


def apgr(sweep_rows: Sequence[dict], slm_pass: float, llm_pass: float) -> float | None:
    """Average performance gap recovered (RouteLLM; Ong et al., 2024, arXiv:2406.18665, §5.1).

    ``PGR(τ) = (pass@1(τ) - pass@1_SLM) / (pass@1_LLM - pass@1_SLM)``; APGR is the area under
    PGR as a function of the share of calls sent to the LLM (the deferral rate, 0..1), by the
    trapezoid rule over the sweep's points (plus 0 → PGR at the lowest deferral rate and 1 → 1 if
    the sweep misses the ends). 0.5 is what random routing gets; 1 is an oracle-like router.

    Returns:
        APGR, or None when the two models tie (no gap to recover).
    """
    curve = _pgr_curve(sweep_rows, slm_pass, llm_pass)
    if curve is None:
        return None
    xs, ys = curve
    if xs[0] > 0:
        xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[ys[0]], ys])
    if xs[-1] < 1:
        xs, ys = np.concatenate([xs, [1.0]]), np.concatenate([ys, [1.0]])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def cpt(sweep_rows: Sequence[dict], slm_pass: float, llm_pass: float,
        target: float) -> float | None:
    """Call-performance threshold CPT(x) (RouteLLM §5.1): the smallest deferral rate (share of
    calls to the LLM, 0-1) whose cascade recovers at least ``target`` (e.g. 0.5, 0.8) of the
    SLM→LLM performance gap. None if the models tie or no τ reaches it."""
    curve = _pgr_curve(sweep_rows, slm_pass, llm_pass)
    if curve is None:
        return None
    xs, ys = curve
    ok = xs[ys >= target - 1e-12]
    return float(ok.min()) if ok.size else None
