"""What the cascade spent against the large model alone, in money and in seconds.

One rule, used by the session summary and the turn card (:mod:`corea.ui.cards`): a turn spent the
sum of its tiers' USD (:mod:`corea.costs`) and their measured compute seconds (each tier's
``latency_s``: request to last token). What the large model alone would have spent is

* for a turn the large model answered (deferred): its own USD and measured seconds;
* for a kept turn (the large model never ran): an **estimate** — the small model's token counts at
  the large model's prices (:func:`corea.costs.cost_usd`) and through the large model's time model
  (:class:`corea.timing.TimeModel`). Without a time model for the large model the seconds of such
  a turn are unknown (``None``). The time model was fit on one machine at rest; the turn ran on
  this one, maybe under load. So that measured and estimated seconds are on one footing, the
  estimate is scaled by the turn's **load factor**: the small model's measured seconds over what
  the time model gives it for the same tokens (:func:`load_factor`; 1 when the time model has no
  fit for the small model). Without it a busy machine would make every kept turn look slower
  than the large model alone, and the summary would blame deferrals that did not happen.

:func:`why_more` says in plain words why the cascade cost more than the large model alone (each
deferred question pays for both models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .costs import Price, cost_usd
from .timing import TimeModel

__all__ = ["Call", "Turn", "Spend", "AgainstLLM", "against_llm", "why_more", "change",
           "spend_text", "load_factor"]


@dataclass(frozen=True)
class Call:
    """One tier's call: tokens, USD and measured seconds (request to last token)."""

    role: str  # "slm", "mid" or "llm"
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float


@dataclass(frozen=True)
class Turn:
    """One answered question: its calls in tier order, the first one the small model's."""

    calls: tuple[Call, ...]

    @property
    def deferred(self) -> bool:
        """Whether the large model ran (and so was paid for)."""
        return any(c.role == "llm" for c in self.calls)

    @classmethod
    def from_row(cls, row: Mapping) -> "Turn":
        """A logged interaction (:meth:`corea.store.storage.Store.get_interaction` dict): its tier
        records when present, else the ``slm_*`` / ``llm_*`` columns."""
        tiers = row.get("tiers") or []
        if tiers:
            return cls(tuple(_call(t.get("role") or "slm", t) for t in tiers))
        calls = [Call("slm", row.get("slm_model") or "", int(row.get("slm_prompt_tokens") or 0),
                      int(row.get("slm_completion_tokens") or 0),
                      float(row.get("slm_cost_usd") or 0.0), float(row.get("slm_latency_s") or 0))]
        if row.get("llm_prompt_tokens") is not None:
            calls.append(Call("llm", row.get("llm_model") or "", int(row["llm_prompt_tokens"]),
                              int(row.get("llm_completion_tokens") or 0),
                              float(row.get("llm_cost_usd") or 0.0),
                              float(row.get("llm_latency_s") or 0.0)))
        if row.get("slm_cost_usd") is None:  # older rows: only the turn's total
            total = float(row.get("cost_usd") or 0.0)
            calls[0] = Call(**{**calls[0].__dict__,
                               "cost_usd": total - sum(c.cost_usd for c in calls[1:])})
        return cls(tuple(calls))

    @classmethod
    def from_result(cls, result) -> "Turn":
        """A finished :class:`corea.events.CascadeResult` (each tier that ran)."""
        return cls(tuple(Call(st.role, st.output.model, st.output.prompt_tokens,
                              st.output.completion_tokens, st.output.cost_usd,
                              st.output.latency_s) for st in result.tier_steps()
                         if st.output is not None))


def _call(role: str, t: Mapping) -> Call:
    return Call(role, t.get("model") or "", int(t.get("prompt_tokens") or 0),
                int(t.get("completion_tokens") or 0), float(t.get("cost_usd") or 0.0),
                float(t.get("latency_s") or 0.0))


@dataclass(frozen=True)
class Spend:
    """USD and seconds; ``seconds`` is None where a needed estimate has no time model."""

    usd: float
    seconds: float | None


@dataclass(frozen=True)
class AgainstLLM:
    """Turns' spending against the large model alone (see the module docstring).

    ``before_llm``: what the deferred turns spent before the large model (the small model's and
    middle tiers' USD and seconds: the price of deferring)."""

    n: int
    n_deferred: int
    spent: Spend
    alone: Spend
    before_llm: Spend
    estimated: bool  # some "alone" figure is an estimate (a kept turn)


def load_factor(call: Call, time_model: TimeModel) -> float:
    """How much slower (> 1) or faster (< 1) ``call`` ran than ``time_model`` predicts for its
    model and tokens: measured seconds / predicted seconds; 1.0 when the model has no fit, the
    prediction is 0 or the call measured no time."""
    if time_model.missing([call.model]) or call.latency_s <= 0:
        return 1.0
    predicted = time_model.seconds(call.model, call.prompt_tokens, call.completion_tokens)
    return call.latency_s / predicted if predicted > 0 else 1.0


def _alone(turn: Turn, prices: Mapping[str, Price], time_model: TimeModel | None,
           llm: str) -> tuple[float, float | None]:
    big = next((c for c in turn.calls if c.role == "llm"), None)
    if big is not None:
        return big.cost_usd, big.latency_s
    first = turn.calls[0]
    usd = cost_usd(llm, first.prompt_tokens, first.completion_tokens, prices)
    if time_model is None or time_model.missing([llm]):
        return usd, None
    seconds = time_model.seconds(llm, first.prompt_tokens, first.completion_tokens)
    return usd, seconds * load_factor(first, time_model)


def against_llm(turns: Iterable[Turn], prices: Mapping[str, Price],
                time_model: TimeModel | None, llm: str) -> AgainstLLM:
    """Sum of what ``turns`` spent and of what the large model ``llm`` alone would have."""
    turns = [t for t in turns if t.calls]
    spent_usd = spent_s = alone_usd = pre_usd = pre_s = 0.0
    alone_s: float | None = 0.0
    for t in turns:
        spent_usd += sum(c.cost_usd for c in t.calls)
        spent_s += sum(c.latency_s for c in t.calls)
        usd, s = _alone(t, prices, time_model, llm)
        alone_usd += usd
        alone_s = None if alone_s is None or s is None else alone_s + s
        if t.deferred:
            pre_usd += sum(c.cost_usd for c in t.calls if c.role != "llm")
            pre_s += sum(c.latency_s for c in t.calls if c.role != "llm")
    deferred = sum(t.deferred for t in turns)
    return AgainstLLM(len(turns), deferred, Spend(spent_usd, spent_s), Spend(alone_usd, alone_s),
                      Spend(pre_usd, pre_s), estimated=deferred < len(turns))


def change(spent: float, alone: float | None) -> float | None:
    """``spent / alone − 1`` (negative: the cascade was cheaper), None without a base."""
    if alone is None or alone <= 0:
        return None
    return spent / alone - 1.0


def _more_units(a: AgainstLLM) -> list[str]:
    units = []
    if (change(a.spent.usd, a.alone.usd) or 0.0) > 0:
        units.append("money")
    if (change(a.spent.seconds or 0.0, a.alone.seconds) or 0.0) > 0:
        units.append("time")
    return units


def why_more(a: AgainstLLM) -> str:
    """"" when the cascade spent no more than the large model alone in either unit; else one
    plain sentence naming the unit(s) and why, e.g. "It cost more time than the large model
    alone: it deferred 9 of 10 questions, and each deferred one paid for both models (17.2 s and
    $0.000120 before the large model ran)."."""
    units = _more_units(a)
    if not units:
        return ""
    what = " and ".join(units)
    if a.n == 1 and a.n_deferred:
        return (f"It cost more {what} than the large model alone: it was deferred, so it paid for "
                f"both models ({a.before_llm.seconds:.1f} s and ${a.before_llm.usd:.6f} before "
                "the large model ran).")
    if a.n_deferred:
        return (f"It cost more {what} than the large model alone: it deferred {a.n_deferred} of "
                f"{a.n} question(s), and each deferred one paid for both models "
                f"({a.before_llm.seconds:.1f} s and ${a.before_llm.usd:.6f} before the large "
                "model ran).")
    return (f"It cost more {what} than the large model alone: the small model took more than "
            "the large model would have on the same answers (an estimate from token counts).")


def _pct(x: float | None) -> str:
    return "" if x is None else f" ({x * 100:+.0f}%)"


def spend_text(a: AgainstLLM) -> str:
    """"cost $X vs large model alone ≈ $Y (+z%) · compute S s vs ≈ T s (+w%)" ("≈" when some
    figure is an estimate; "no time model for the large model" when seconds cannot be
    estimated)."""
    approx = "≈ " if a.estimated else ""
    money = (f"cost ${a.spent.usd:.6f} vs large model alone {approx}${a.alone.usd:.6f}"
             f"{_pct(change(a.spent.usd, a.alone.usd))}")
    if a.alone.seconds is None:
        return money + f" · compute {a.spent.seconds:.1f} s (no time model for the large model)"
    return (money + f" · compute {a.spent.seconds:.1f} s vs {approx}{a.alone.seconds:.1f} s"
            f"{_pct(change(a.spent.seconds or 0.0, a.alone.seconds))}")


def turns_of(rows: Sequence[Mapping]) -> list[Turn]:
    """The answered turns of logged interaction rows (those with a decision)."""
    return [Turn.from_row(r) for r in rows if r.get("decision_reason") is not None]
