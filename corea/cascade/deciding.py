"""The deciding number of a tier and its keep-or-defer decision.

:func:`deciding_number` picks the number compared with a tier's τ from its output and its
:class:`~corea.cascade.plan.TierOptions`: the stated (``verbal``) confidence, the token
probability of its solution (``tokprob``), a fitted calibrator's P(correct) (``calibrated``,
:mod:`corea.calibrator`), a hidden-state probe's (``probe``, :mod:`corea.probe`) or, for a tier
that solves both ways (``solve: mot``), whether its CoT and PoT answers agree (``agreement``:
1.0 or 0.0), all in [0, 1]; ``auto`` ranks the learned ones by their cards (:func:`auto_ranking`). A requested
signal whose inputs are missing falls back to ``verbal`` with a note saying why.

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
from ..calibrator import has_token_signals
from ..events import DecisionInfo, ModelOutput
from ..prompts import VERIFY_CANDIDATES, verify_messages
from ..signals import AGREEMENT, TOKPROB, token_probability
from .plan import TierOptions, TierPlan


def auto_ranking(calibrator, probe, stated_first: bool = False) -> list[str]:
    """``confidence_source=auto``'s preference among the learned signals, best first.

    ``stated_first``: the SLM's cross-fit card says its stated confidence ranks at least as well
    as the token calibrator on train (:func:`corea.selection.stated_decides`): then none is
    preferred and the stated confidence decides.

    Candidates: the end-of-solution ``probe`` (a :class:`corea.probe.LinearProbe`) and the
    ``calibrated`` confidence (a :class:`corea.calibrator.Calibrator`), each only if its card's
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

    ``auto`` picks, among the probe (its output needs hidden states) and the calibrator (needs
    token log-probabilities), the one with the higher held-out AUROC of those whose held-out
    AUROC beats the stated confidence's on the same data (their cards); else the stated one.
    ``engine`` names the tier's engine in fallback notes.

    Returns:
        ``(confidence in [0, 1] or None, signal, note)``: ``signal`` is ``verbal``,
        ``tokprob`` (:data:`corea.signals.TOKPROB`), ``calibrated``, ``probe`` or
        ``agreement`` (:data:`corea.signals.AGREEMENT`); ``note``
        says why a requested signal fell back to ``verbal``. A calibrator or probe that raises
        falls back too (never raises).
    """
    want = opts.signal
    if want == AGREEMENT:
        if out.agreement is None:
            why = ("the tier does not solve both ways (solve: mot)" if out.solve != "mot"
                   else "one of its two solutions failed")
            return out.confidence, "verbal", f"agreement requested but {why}; verbal used"
        return float(out.agreement), AGREEMENT, None
    out_d = {"confidence": out.confidence, "signals": out.signals}
    cal, probe = opts.calibrator, opts.probe
    tokens_ok = has_token_signals(out_d)
    probe_ok = probe is not None and probe.card.position == "end" and \
        bool((out.states or {}).get("end")) and (not probe.card.tokens or tokens_ok)

    def calibrated() -> tuple[float | None, str, str | None]:
        try:
            return cal.predict_one(out_d), "calibrated", None
        except Exception as exc:  # noqa: BLE001 — a broken calibrator must not stop answers
            return out.confidence, "verbal", f"the calibrator failed ({exc}); verbal used"

    def probed() -> tuple[float | None, str, str | None]:
        try:
            return probe.confidence_of(out.states, out_d), "probe", None
        except Exception as exc:  # noqa: BLE001 — a broken probe must not stop answers
            return out.confidence, "verbal", f"the probe failed ({exc}); verbal used"

    if want == "auto":
        for name in auto_ranking(cal, probe, opts.stated_first):  # the best one it has inputs for
            if name == "probe" and probe_ok:
                return probed()
            if name == "calibrated" and tokens_ok:
                return calibrated()
        return out.confidence, "verbal", None
    if want == "verbal":
        return out.confidence, "verbal", None
    if want == "probe":
        if probe_ok:
            return probed()
        why = ("no probe is available for this SLM" if probe is None else
               f"{engine} returned no token log-probabilities"
               if (out.states or {}).get("end") else f"{engine} returned no hidden states")
        return out.confidence, "verbal", f"probe requested but {why}; verbal used"
    if not tokens_ok:
        return out.confidence, "verbal", (f"{want} requested but {engine} returned no "
                                          "token log-probabilities; verbal used")
    if want == TOKPROB:
        return token_probability(out), TOKPROB, None
    if cal is None:
        return out.confidence, "verbal", ("calibrated requested but no calibrator is fitted "
                                          "for this SLM (corea calibrate); verbal used")
    return calibrated()


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
