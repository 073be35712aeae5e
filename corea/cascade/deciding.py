"""The deciding number of a tier and its keep-or-defer decision.

:func:`deciding_number` picks the number compared with a tier's τ from its output and its
:class:`~corea.cascade.plan.TierOptions`: the live part of the signal its ``signal`` names in the
registry of deciding signals (:mod:`corea.signals.registry`: the stated ``verbal`` confidence,
``tokprob``, a fitted calibrator's ``calibrated``, a hidden-state ``probe``'s, ``agreement`` of a
tier that solves both ways, or one registered later), in [0, 1]; ``auto`` ranks the learned ones
by their cards (:func:`auto_ranking`). A requested signal whose inputs are missing falls back to
``verbal`` with a note saying why.

:func:`decide_tier` applies :mod:`corea.policy` to one deciding tier: a failed tier is skipped,
an output that is no answer (cut off, nothing parsable) defers, otherwise the deciding number
against τ — or, for a tier that stated its confidence first, that stated confidence.

:func:`verify` computes one more signal for evaluation, self-verification P(True).
"""

from __future__ import annotations

import math
from typing import Sequence

from .. import policy
from ..backends.base import Backend
from ..events import DecisionInfo, ModelOutput
from ..prompts import VERIFY_CANDIDATES, verify_messages
from ..signals.base import Signal
from ..signals.registry import AUTO, by_setting
from .plan import TierOptions, TierPlan


def auto_ranking(calibrator, probe, stated_first: bool = False) -> list[str]:
    """``confidence_source=auto``'s preference among the learned signals, best first.

    ``stated_first``: the SLM's cross-fit card says its stated confidence ranks at least as well
    as the token calibrator on train (:func:`corea.selection.stated_decides`): then none is
    preferred and the stated confidence decides.

    Candidates: the end-of-solution ``probe`` (a :class:`corea.signals.probe.LinearProbe`) and the
    ``calibrated`` confidence (a :class:`corea.signals.calibrator.Calibrator`), each only if its card's
    held-out AUROC beats the stated confidence's on the same items (or the card has no
    out-of-sample stated confidence to compare with, as for a confidence adapter trained on
    every train item); ordered by that held-out AUROC, the probe first on a tie. Empty: the
    stated confidence decides. :func:`deciding_number` takes the first one an output has the
    inputs for; the Ask tab names the first.
    """
    if stated_first:
        return []
    options = []
    if probe is not None and probe.card.position == "end" and probe.card.beats_verbal():
        options.append((probe.card.cv.get("auroc") or 0.0, 1, "probe"))
    if calibrator is not None and calibrator.card.beats_verbal():
        options.append((calibrator.card.held_out.get("auroc") or 0.0, 0, "calibrated"))
    return [name for *_, name in sorted(options, reverse=True)]


def deciding_number(out: ModelOutput, opts: TierOptions,
                    engine: str = "the SLM engine") -> tuple[float | None, str, str | None]:
    """The number compared with τ for one deciding tier's output, per ``opts.signal``.

    ``opts.signal`` is a live signal's setting (:data:`corea.signals.registry.SETTINGS`, or one
    :func:`corea.signals.registry.register` added) or ``auto``: among the probe (its output needs
    hidden states) and the calibrator (needs token log-probabilities), the one with the higher
    held-out AUROC of those whose held-out AUROC beats the stated confidence's on the same data
    (their cards, :func:`auto_ranking`); else the stated one. ``engine`` names the tier's engine
    in fallback notes.

    Returns:
        ``(confidence in [0, 1] or None, signal, note)``: ``signal`` is the setting that decided
        (``verbal``, ``tokprob``, ``calibrated``, ``probe``, ``agreement``, ...); ``note`` says
        why a requested signal fell back to ``verbal``. A signal whose inputs the output lacks
        (:attr:`corea.signals.base.Live.missing`), an unknown one, or one that raises falls back
        too (never raises).
    """
    want = opts.signal
    if want == AUTO:
        for name in auto_ranking(opts.calibrator, opts.probe, opts.stated_first):  # the best
            # one this output has the inputs for
            sig = by_setting(name)
            if sig is not None and sig.live.missing(out, opts, engine) is None:
                return _live_value(sig, out, opts)
        return out.confidence, "verbal", None
    sig = by_setting(want)
    if sig is None:
        return out.confidence, "verbal", f"{want} is not a known deciding signal; verbal used"
    why = sig.live.missing(out, opts, engine)
    if why is not None:
        return out.confidence, "verbal", f"{want} requested but {why}; verbal used"
    return _live_value(sig, out, opts)


def _live_value(sig: Signal, out: ModelOutput, opts: TierOptions
                ) -> tuple[float | None, str, str | None]:
    """``sig``'s live value on ``out``; a signal that raises falls back to the stated one."""
    try:
        value = sig.live.value(out, opts)
    except Exception as exc:  # noqa: BLE001 — a broken signal must not stop answers
        return out.confidence, "verbal", f"{sig.live.what} failed ({exc}); verbal used"
    return (None if value is None else float(value)), sig.setting, None


def decide_tier(plan: TierPlan, out: ModelOutput, to: str | None,
                prior: ModelOutput | None = None) -> DecisionInfo:
    """Deciding tier ``plan``'s decision on its output ``out`` (``to``: the next tier in
    words). In order: a confidence-first tier that solved keeps its stated-before-solving
    decision; a failed tier is skipped (``slm_error``); an output that
    :func:`corea.policy.unusable` rejects defers; else its deciding number against τ
    (:func:`corea.policy.decide`).

    Raises:
        ValueError: a deciding number outside [0, 1] (:func:`corea.policy.decide`).
    """
    tau, who = plan.threshold, plan.who
    if prior is not None and out.error is None:
        decision = policy.decide(prior.confidence, tau, "prior", out.confidence, who=who, to=to)
        decision.message += " (stated before solving)"
        return decision
    if out.error is not None:
        return policy.slm_failed(tau, out.error.split(":", 1)[0], who=who, to=to)
    if (why := policy.unusable(out.answer, out.finish_reason)) is not None:
        decision = policy.not_an_answer(tau, why, out.confidence, "verbal", out.confidence,
                                        who=who, to=to)
        if out.program_error and out.answer is None:
            decision.message += f" (its program gave none — {out.program_error})"
        return decision
    engine = "the SLM engine" if plan.index == 0 else "the engine"
    conf, signal, note = deciding_number(out, plan.options, engine)
    decision = policy.decide(conf, tau, signal, out.confidence, who=who, to=to)
    decision.signal_note = note
    return decision


def decide_before_solving(plan: TierPlan, prior: ModelOutput, to: str | None) -> DecisionInfo:
    """The decision of a tier's confidence-first turn: skipped when it failed, else its stated
    confidence against τ (``signal`` ``prior``). A kept one lets the tier solve."""
    if prior.error is not None:
        return policy.slm_failed(plan.threshold, prior.error.split(":", 1)[0], who=plan.who,
                                 to=to)
    decision = policy.decide(prior.confidence, plan.threshold, "prior", who=plan.who, to=to)
    decision.message += " (stated before solving)"
    return decision


def verify(backend: Backend, question: str, choices: Sequence[str] | None,
           out: ModelOutput) -> dict:
    """Self-verification of an output, P(True): the tier's model is asked whether its own final
    answer is right, after its own solution (:func:`corea.prompts.verify_messages`).

    Returns:
        ``{"p_true": P("Yes") / (P("Yes") + P("No")) in [0, 1] or None, "logprobs":
        {"Yes": lp, "No": lp} (natural log), "error": str | None}``. ``p_true`` is None when
        the output has no answer or the backend cannot score next tokens. Never raises.
    """
    if not out.answer or out.error:
        return {"p_true": None, "logprobs": None, "error": "no answer"}
    score = getattr(backend, "next_token_logprobs", None)
    if score is None:
        return {"p_true": None, "logprobs": None, "error": "unsupported by the SLM backend"}
    try:
        lps = score(verify_messages(question, choices, out.text, out.answer), "",
                    VERIFY_CANDIDATES)
    except Exception as exc:  # noqa: BLE001 — a signal that cannot be computed is None
        return {"p_true": None, "logprobs": None, "error": f"{type(exc).__name__}: {exc}"}
    yes, no = (math.exp(lps[c]) for c in VERIFY_CANDIDATES)
    p = yes / (yes + no) if yes + no > 0 else None
    return {"p_true": p, "logprobs": lps, "error": None}
