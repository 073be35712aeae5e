"""Delegation routing: a deciding tier that sends a question on where the next model helps.

A tier with a :class:`Delegator` (``route: {by: delegation}`` in its settings,
:class:`corea.model_config.RouteSettings`) checks before it writes a token, like a probe router
(:mod:`corea.cascade.route`), but with both models' reading of the question:

1. the tier prefills its own chain-of-thought chat (:func:`corea.prompts.slm_messages`) and reads
   its final-layer state after it (``Backend.prompt_state``);
2. the **next** tier's engine prefills the prompt it would answer from
   (:func:`corea.prompts.llm_messages`) and reads its own state after it;
3. the saved delegation model (:mod:`corea.signals.delegation_files`, both prompt probes and the
   ``before`` head) turns the two states into P(delegation) = P(the next model is right and this
   one wrong); the check's value is ``1 - P``. Below τ_r the question goes straight to the next
   tier (decision reason ``routed``, signal ``delegation``, and why in plain words); otherwise
   the tier solves and decides as usual.

Costs: this tier's prefill is charged to its output (all of it when routed, as with the probe
router); the next tier's prefill (:attr:`RouteCheck.handoff`) to the next tier's output when the
question goes on (routed or deferred: its answer call evaluates the prompt again unless the
engine reuses its cache, ``reuse_prefix``), else — the answer kept — to this tier's output, at
the next model's prices: the record holds only tiers that answered, and this tier's decision is
what the prefill paid for.

Only for a tier whose next tier runs the model the delegation model's LLM probe was fit for
(the card's ``llm``): with N > 2 tiers that is the first tier only when tier 2 runs that model;
the service sets it on the first tier only (``slm.route``) and leaves every other tier as it
is. Nothing here stops an answer: an engine of either model that reads no hidden states, a
next tier that runs another model, or a failed read leaves the tier to solve, with
:attr:`RouteCheck.note` saying why (shown beside its decision). Held out:
:mod:`corea.eval.delegation_route`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import ROUTED, DecisionInfo, ModelOutput
from ..policy import check_threshold, shown
from ..prompts import llm_messages, slm_messages
from ..signals.delegation import value_before
from .route import RouteCheck
from .stream import close_output, record_fault

__all__ = ["DELEGATION", "Delegator", "check_delegation", "delegation_decision",
           "load_delegator"]

log = logging.getLogger(__name__)

DELEGATION = "delegation"
"""The signal name of a delegation route check in decisions."""


@dataclass(frozen=True)
class Delegator:
    """A tier's delegation router: a fitted :class:`corea.signals.delegation.Delegation` (its
    probes and ``before`` head), the next tier's model name ``llm`` (the one its LLM probe was
    fit for) and τ_r in [0, 1] on ``1 - P(delegation)``.

    Raises:
        ValueError: τ_r outside [0, 1].
    """

    model: Any
    llm: str
    threshold: float
    signal: str = DELEGATION

    def __post_init__(self):
        check_threshold(self.threshold, "route threshold")

    def check(self, task, next_plan) -> RouteCheck:
        """:func:`check_delegation`."""
        return check_delegation(task, self, next_plan)

    def decision(self, check: RouteCheck, who: str | None, to: str | None) -> DecisionInfo:
        """:func:`delegation_decision`."""
        return delegation_decision(check, who, to)


def _read(backend, messages, model: str, prices: dict
          ) -> tuple[Any, ModelOutput, Exception | None]:
    """One prefill: ``(state, output, None)``, or ``(None, output, the exception)`` when the
    engine failed; the output holds its tokens, seconds and USD either way. Never raises."""
    out = ModelOutput(model=model)
    t_start = time.perf_counter()
    try:
        got = backend.prompt_state(messages)
        out.prompt_tokens += int(got.prompt_tokens)
        return got.state, out, None
    except Exception as exc:  # noqa: BLE001 — a router that fails must not stop answers
        return None, out, exc
    finally:
        close_output(out, t_start, prices)


def _why(exc: Exception, whose: str) -> str:
    kind = record_fault(ModelOutput(model=""), exc)
    if kind == "unsupported":
        return f"not routed: {whose} engine reads no hidden states"
    return f"not routed: reading {whose} state after the question failed ({kind})"


def check_delegation(task, delegator: Delegator, next_plan) -> RouteCheck:
    """Prefill ``task``'s question on its tier's engine and on ``next_plan``'s (the next tier's),
    read the delegation value, decide whether to route (see the module docstring). A failed
    read, or a next tier that runs another model than ``delegator.llm``, returns a check with a
    note and no value (the tier then solves). Never raises."""
    tau, prices = delegator.threshold, task.settings.prices
    if next_plan is None or next_plan.model != delegator.llm:
        other = "no next tier" if next_plan is None else f"the next tier runs {next_plan.model}"
        return RouteCheck(None, tau, False, f"not routed: the delegation model was fit for "
                                            f"{delegator.llm}, and {other}")
    q = (task.question, task.choices, task.context)
    mine, prefill, exc = _read(task.plan.backend, slm_messages(*q), task.plan.model, prices)
    if exc is not None:
        return RouteCheck(None, tau, False, _why(exc, "its"), prefill)
    theirs, handoff, exc = _read(next_plan.backend, llm_messages(*q), next_plan.model, prices)
    if exc is not None:
        return RouteCheck(None, tau, False, _why(exc, f"{next_plan.words or 'the large model'}'s"),
                          prefill, handoff)
    try:
        value = value_before(delegator.model, mine, theirs)
    except Exception as exc:  # noqa: BLE001 — e.g. a state of the wrong size
        return RouteCheck(None, tau, False, f"not routed: the delegation model could not read "
                                            f"the states ({type(exc).__name__})", prefill, handoff)
    routed = value < tau
    if routed:
        prefill.finish_reason = ROUTED
    return RouteCheck(value, tau, routed, None, prefill, handoff)


def delegation_decision(check: RouteCheck, who: str | None, to: str | None) -> DecisionInfo:
    """The decision of a question routed by delegation: deferred, reason ``routed``, signal
    ``delegation``, ``1 - P(delegation)`` against τ_r, and the message the visitor reads."""
    v, t = check.value, check.threshold
    who_, to_ = who or "the small model", to or "the large model"
    p = shown(1 - v, 1 - t, percent=True)
    msg = (f"Sent straight to {to_} — before {who_} wrote anything, both models read the "
           f"question: the chance that {to_} gets it right and {who_} gets it wrong is {p}, "
           f"high enough to ask {to_} directly (1 − {p} = {shown(v, t, percent=True)}, below "
           f"the routing threshold {shown(t, v, percent=True)})")
    return DecisionInfo(True, ROUTED, v, t, msg, DELEGATION)


def load_delegator(route, model: str, llm: str, base: str | None = None) -> Delegator | None:
    """The :class:`Delegator` of a tier's ``route`` settings (``by: delegation``) for the tier's
    model ``model`` in front of a tier running ``llm``: its ``probe`` folder, else the one
    shipped for ``model`` (or, ``base`` given, for ``base``, as
    :func:`corea.cascade.route.load_router`); τ_r the settings' ``threshold`` or, when None,
    the card's. None (with a warning in the log) when no model is found or it was fit in front
    of another LLM.

    Raises:
        OSError, ValueError: the folder cannot be read or was fit for another model.
    """
    from ..signals.delegation_files import load_delegation, shipped_delegation_dir

    owners = [model] if route.probe else [model, *([base] if base else [])]
    folder = Path(route.probe).expanduser() if route.probe else next(
        (d for d in map(shipped_delegation_dir, owners) if d is not None), None)
    if folder is None:
        log.warning("slm.route.by is delegation but no delegation model ships for %s; the "
                    "small model solves every question (make one with `corea delegation` and "
                    "set slm.route.probe)", model)
        return None
    saved = load_delegation(folder)
    if saved.card.slm not in owners:
        raise ValueError(f"the delegation model at {folder} was fit for {saved.card.slm}, "
                         f"not {model}")
    if saved.card.llm != llm:
        log.warning("the delegation model at %s was fit in front of %s, but the next tier runs "
                    "%s; delegation routing is off", folder, saved.card.llm, llm)
        return None
    tau = saved.card.route_threshold if route.threshold is None else route.threshold
    return Delegator(saved.model, saved.card.llm, tau)
