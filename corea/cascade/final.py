"""After the tiers ran: the last tier's answer checked, and the run's final answer and totals.

The last tier always answers, but its answer is not always final: when it failed, or was cut off
at its token budget, or has no parsable answer, the decision of the tier that deferred to it
says so (:func:`corea.policy.llm_failed` / :func:`corea.policy.llm_unusable`), a warning is
added, and the latest earlier tier with a usable answer is shown (:func:`fallback_step`).
:func:`finish` sets the final answer — which tier gave it is :func:`corea.policy.final_tier`'s
rule (``TierStep.answered``, ``CascadeResult.answered_tier``) — the totals (seconds, USD) and
the status.
"""

from __future__ import annotations

import time
from typing import Sequence

from .. import policy
from ..events import CascadeResult, TierStep
from .plan import TierPlan


def fallback_step(result: CascadeResult) -> TierStep | None:
    """The latest tier before the last one that ran whose output is a usable answer (no error,
    not cut off, parsed): what is shown when the last tier's answer is not."""
    for step in reversed(result.tiers[:-1]):
        o = step.output
        if o.error is None and policy.unusable(o.answer, o.finish_reason) is None:
            return step
    return None


def check_last(result: CascadeResult, plans: Sequence[TierPlan]) -> None:
    """The last tier answered (``result.tiers[-1]``): when its answer is not final, the decision
    of the tier that deferred to it says why, with a warning, naming the latest earlier usable
    answer shown instead (:func:`fallback_step`) or saying there is none.

    - it failed: ``llm_error`` (:func:`corea.policy.llm_failed`);
    - it was cut off at its budget or has no parsable answer: ``llm_truncated`` /
      ``llm_no_answer`` (:func:`corea.policy.llm_unusable`).
    """
    if len(result.tiers) < 2 or result.tiers[-2].decision is None:
        return
    last, prev = result.tiers[-1].output, result.tiers[-2]
    shown = fallback_step(result)
    to = plans[-1].words
    if last.error is not None:
        info = policy.llm_failed(prev.decision, last.error.split(":", 1)[0],
                                 who=None if shown is None else plans[shown.index].words, to=to,
                                 slm_has_answer=shown is not None)
    elif (why := policy.unusable(last.answer, last.finish_reason)) is not None:
        who = plans[shown.index if shown is not None else prev.index].words
        info = policy.llm_unusable(prev.decision, f"llm_{why}", shown is not None, who=who,
                                   to=to)
    else:
        return
    if last.program_error and last.answer is None:
        info.message += f" (its program gave none — {last.program_error})"
    prev.decision = info
    result.warnings.append(info.message)


def finish(result: CascadeResult, t0: float, n_tiers: int, cancelled: bool = False) -> None:
    """Totals (latency in s since ``t0``, cost in USD), the final answer and the status of a
    finished (or stopped) run of a cascade of ``n_tiers`` tiers. Which tier's answer is final
    is :func:`corea.policy.final_tier`'s rule, the one offline scoring applies too."""
    steps = result.tiers
    result.latency_s = time.perf_counter() - t0
    result.cost_usd = sum(st.output.cost_usd for st in steps)
    ran = [policy.TierRun.of_output(st.output.answer, st.output.finish_reason, st.output.error,
                                    deferred=st.decision is not None and st.decision.defer)
           for st in steps]
    k = policy.final_tier(ran, n_tiers, cancelled) if steps else None
    src = None if k is None else steps[k]
    for st in steps:
        st.answered = st is src
    if src is not None:
        o = src.output
        result.final_answer, result.final_model, result.final_text = o.answer, o.model, o.text
        result.answered_tier = src.index
    if cancelled:
        result.status = "cancelled"
    elif all(st.output.error is not None for st in steps):
        result.status = "error"
