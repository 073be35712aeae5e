"""The registry of deciding signals: one entry per signal, read by every part of COREA.

The live cascade (:func:`corea.cascade.deciding.deciding_number`, ``confidence_source`` in the
settings), the held-out report (``corea heldout``), the signal comparison
(:mod:`corea.eval.compare`, ``corea report``) and the explorer's deciding-signal menu all read
:data:`SIGNALS`. To add a signal, write its functions in one module of this package and add one
:class:`~corea.signals.base.Signal` entry below (docs/architecture.md, "Add a deciding signal").

======================  =====================================================  ===============
name (live setting)     what                                                   when it decides
======================  =====================================================  ===============
``verbal`` (verbal)     the SLM's stated confidence (the COREA paper's)        after solving
``tokprob`` (tokprob)   geometric-mean token probability of the solution       after solving
``answer_prob``         ... of the final answer's tokens                       after solving
``min_prob``            smallest token probability of the solution            after solving
``p_true``              self-verification P("Yes") (AutoMix's signal)          after solving
``agreement`` (same)    the SLM's CoT and program answers agree (``mot``)      after solving
``sc2`` / ``sc4``       agreement of 2 / 4 sampled solutions with the greedy   after solving
``calibrator``          logistic regression on verbal + token signals          after solving
  (``calibrated``)
``calibrator_tokens``   the same on the token signals only (no stated conf.)   after solving
``calibrator_helps``    the same, fit to "the LLM fixes an SLM error"          after solving
``calibrator_sc4``      the calibrator's features + ``sc4``'s agreement        after solving
``probe`` (probe)       linear probe on the state at the end of the solution   after solving
``probe_tokens``        the same state + the calibrator's 7 features           after solving
``probe_helps``         the same, fit to "the LLM fixes an SLM error"          after solving
``prior``               the confidence stated before solving (confidence-first) before solving
``prior_probe``         linear probe on the state after the question           before solving
``prior_probe_helps``   the same, fit to "the LLM fixes an SLM error"          before solving
``llm_prior_probe``     probe on the LLM's state after its prompt: 1 − P(LLM   before solving
                        right); one LLM prefill
``llm_p_true``          the LLM's P("Yes") that the SLM's answer is right;     after solving
                        one LLM prefill (``corea llm-verify``)
``delegation``          1 − P(LLM right and SLM wrong) from both prompt probes before solving
                        (:mod:`corea.signals.delegation`); one LLM prefill
``delegation_after``    the same + the token calibrator's value                after solving
``delegation_verify``   the same + the LLM's P(True) on the SLM's answer       after solving
``early_exit``          checkpoint probe on the state every k tokens (lowest)  while solving
``oracle``              defers exactly the SLM's errors (not a signal)         —
``oracle_gain``         defers only where the LLM fixes an SLM error           —
======================  =====================================================  ===============

Live, ``confidence_source`` is one of :data:`SETTINGS` (the signals with a live part) or
``auto`` (:func:`corea.cascade.deciding.auto_ranking`); a tier that is neither the first nor the
last takes one of :data:`MIDDLE_SETTINGS` (the live signals that need no fitted model). The
confidence stated before solving decides live through a tier's ``confidence_first`` option.
``tokprob``'s old names (``avgprob``, ``solution_prob``) are still read
(:func:`corea.signals.tokens.signal_name`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import deciders as d
from . import delegation
from . import live
from .base import Signal, has_samples
from .calibrator import TOKEN_FEATURES
from .tokens import AGREEMENT, OLD_TOKPROB_NAMES, TOKPROB, signal_name, token_probability

__all__ = ["AUTO", "MIDDLE_SETTINGS", "NAMES", "SETTINGS", "SIGNALS", "Signal", "available",
           "by_setting", "extra_cost", "get", "plain", "register", "word"]

_BUILTIN = (
    Signal("verbal", "stated confidence (after solving)", "after", d.verbal,
           setting="verbal", live=live.VERBAL,
           plain="the small model's own stated confidence"),
    Signal(TOKPROB, "token probability of the solution (AvgProb)", "after",
           lambda rows, _f: [token_probability(d.slm_of(r)) for r in rows], needs=("logprobs",),
           setting=TOKPROB, live=live.TOKPROB, word="token-probability confidence",
           plain="how likely the small model found its own words"),
    Signal("answer_prob", "token probability of the final answer", "after",
           d.token_signal("answer_prob"), needs=("logprobs",)),
    Signal("min_prob", "minimum token probability", "after", d.token_signal("min_prob"),
           needs=("logprobs",)),
    Signal("p_true", "self-verification P(True)", "after", d.p_true, needs=("verify",),
           extra_tokens=d.verify_tokens),
    Signal("sc2", "self-consistency, 2 samples", "after", d.self_consistency(2),
           needs=("samples2",), extra_tokens=d.sample_tokens(2), covers=has_samples(2)),
    Signal("sc4", "self-consistency, 4 samples", "after", d.self_consistency(4),
           needs=("samples4",), extra_tokens=d.sample_tokens(4), covers=has_samples(4)),
    Signal(AGREEMENT, "CoT/PoT agreement (solve: mot)", "after", d.agreement_values,
           needs=("mot",), covers=d.has_agreement, setting=AGREEMENT, live=live.AGREEMENT,
           word="CoT/PoT agreement",
           plain="whether its chain of thought and its program agree"),
    Signal("calibrator", "calibrator (logistic on stated + token signals)", "after",
           d.calibrated, fit=d.fit_calibrator_on(), needs=("logprobs",),
           setting="calibrated", live=live.CALIBRATED, word="calibrated confidence",
           plain="how sure the small model is, calibrated on past answers"),
    Signal("calibrator_tokens", "calibrator on token signals only", "after", d.calibrated,
           fit=d.fit_calibrator_on(TOKEN_FEATURES), needs=("logprobs",)),
    Signal("calibrator_helps", "calibrator fit to 'LLM fixes it'", "after", d.calibrated,
           fit=d.fit_calibrator_helps, needs=("logprobs",), needs_llm=True),
    Signal("calibrator_sc4", "calibrator + self-consistency (4 samples)", "after",
           d.calibrated_sc(4), fit=d.fit_calibrator_sc(4), needs=("logprobs", "samples4"),
           extra_tokens=d.sample_tokens(4), covers=has_samples(4)),
    Signal("probe", "probe on the end-of-solution state", "after", d.probe_score,
           fit=d.fit_probe_on("end", "slm_correct"), needs=("states",),
           setting="probe", live=live.PROBE, word="probe confidence",
           plain="how sure the small model's inner state says it is"),
    Signal("probe_tokens", "probe on the end-of-solution state + stated and token signals",
           "after", d.probe_score, fit=d.fit_probe_on("end", "slm_correct", tokens=True),
           needs=("states", "logprobs")),
    Signal("probe_helps", "probe on the end-of-solution state, fit to 'LLM fixes it'", "after",
           d.probe_score, fit=d.fit_probe_on("end", "llm_helps"), needs=("states",),
           needs_llm=True),
    Signal("prior", "confidence-first (stated before solving)", "before", d.prior,
           needs=("prior",), extra_tokens=d.prior_tokens,
           plain="the small model's own stated confidence, before solving"),
    Signal("prior_probe", "probe on the state after the question (pre-generation)", "before",
           d.probe_score, fit=d.fit_probe_on("prompt", "slm_correct"), needs=("states",),
           plain="its chance of answering right, read from its state before it wrote"),
    Signal("prior_probe_helps", "pre-generation probe, fit to 'LLM fixes it'", "before",
           d.probe_score, fit=d.fit_probe_on("prompt", "llm_helps"), needs=("states",),
           needs_llm=True),
    Signal("llm_prior_probe", "probe on the LLM's state after its prompt (one LLM prefill)",
           "before", d.probe_score,
           fit=d.fit_probe_on("prompt", "llm_correct", tier="llm", cs=delegation.BASE_CS),
           needs=("llm_states",), needs_llm=True, llm_prefill=True),
    Signal("llm_p_true", "the LLM's P(True) on the SLM's answer (one LLM prefill)", "after",
           d.llm_p_true, needs=("llm_verify",), llm_call=d.llm_verify_tokens,
           covers=d.has_llm_verify,
           plain="the large model's judgement of the small model's answer"),
    Signal("delegation", "delegation value, before the SLM writes (both prompt probes)",
           "before", delegation.score_before, fit=delegation.fit_cached,
           needs=("states", "llm_states"), needs_llm=True, llm_prefill=True,
           plain="the chance of keeping the small model: 1 − the chance that the large model "
                 "gets it right and the small one wrong"),
    Signal("delegation_after", "delegation value after the SLM answers (+ token calibrator)",
           "after", delegation.score_after, fit=delegation.fit_cached,
           needs=("states", "llm_states", "logprobs"), needs_llm=True, llm_prefill=True),
    Signal("delegation_verify", "delegation value after the SLM answers (+ calibrator and the "
           "LLM's P(True))", "after", delegation.score_verify, fit=delegation.fit_cached,
           needs=("states", "llm_states", "logprobs", "llm_verify"), needs_llm=True,
           llm_prefill=True, llm_call=d.llm_verify_tokens, covers=d.has_llm_verify),
    Signal("early_exit", "checkpoint probe while writing (lowest over every k tokens)", "during",
           d.early_exit_score, fit=d.fit_early_exit, needs=("checkpoints",),
           plain="its chance of answering right, read from its state while it wrote"),
    Signal("oracle", "oracle: defers exactly the SLM's errors", "oracle", d.oracle),
    Signal("oracle_gain", "oracle: defers only where the LLM fixes an SLM error", "oracle",
           d.oracle_gain, needs_llm=True),
)

SIGNALS: dict[str, Signal] = {s.name: s for s in _BUILTIN}
"""Every deciding signal by name, in report order."""

AUTO = "auto"
"""The ``confidence_source`` that lets the cards choose among the learned live signals."""

SETTINGS: tuple[str, ...] = tuple(s.setting for s in _BUILTIN if s.setting)
"""The ``confidence_source`` values of the live signals (``auto`` besides)."""

MIDDLE_SETTINGS: tuple[str, ...] = tuple(s.setting for s in _BUILTIN
                                         if s.setting and not s.learned)
"""The live signals a middle tier can decide with: those that need no fitted model."""

NAMES: tuple[str, ...] = (*SIGNALS, *OLD_TOKPROB_NAMES[:1])
"""Every name a command accepts for a signal: the registry's, and ``avgprob`` (the old name of
``tokprob``)."""


def register(signal: Signal) -> Signal:
    """Add (or replace) ``signal`` in :data:`SIGNALS`; every reader sees it from then on.

    The built-in signals are listed above; a new one normally becomes an entry there. This is for
    a plug-in outside the package (and tests). A live signal's ``setting`` must still be an
    accepted ``confidence_source`` to be chosen from the settings; the cascade takes it from a
    tier's options directly (:class:`corea.cascade.plan.TierOptions`).
    """
    SIGNALS[signal.name] = signal
    return signal


def get(name: str) -> Signal:
    """The signal ``name``: a registry name, an old name of ``tokprob``, or a live setting
    (``calibrated`` is the ``calibrator``).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    sig = SIGNALS.get(signal_name(name)) or by_setting(name)
    if sig is None:
        raise KeyError(f"unknown signal {name!r}; known: {', '.join(SIGNALS)}")
    return sig


def by_setting(setting: str) -> Signal | None:
    """The live signal a ``confidence_source`` value names (None: none does)."""
    return next((s for s in SIGNALS.values() if s.setting == setting), None)


def word(setting: str) -> str:
    """A live decision's signal in words for its message ("token-probability confidence");
    ``prior`` (stated before solving) reads "confidence", an unknown one its own name."""
    sig = by_setting(setting)
    return sig.word if sig is not None else "confidence" if setting == "prior" else setting


def plain(signal: str) -> str:
    """A decision's signal in plain words for a visitor (:attr:`Signal.plain`): ``signal`` is a
    live setting (:attr:`corea.events.DecisionInfo.signal`) or a signal's name (``prior`` and
    ``prior_probe`` decide live without a setting); one with no plain words, or unknown, reads
    ``"<signal> confidence"``."""
    sig = by_setting(signal) or SIGNALS.get(signal)
    return sig.plain if sig is not None and sig.plain else f"{signal} confidence"


def available(rows: Sequence[dict], names: Sequence[str] | None = None) -> list[str]:
    """The signals (of ``names``, default all; old names read as their current ones) that
    ``rows`` carry the inputs for: at least one row carries every input a signal
    :attr:`~corea.signals.base.Signal.needs`."""
    names = [signal_name(n) for n in (names or SIGNALS)]
    return [n for n in names if n not in SIGNALS or not SIGNALS[n].needs
            or any(SIGNALS[n].carried_by(r) for r in rows)]


def extra_cost(signal: Signal, rows: Sequence[dict], price_in: float, price_out: float
               ) -> np.ndarray:
    """USD per row of computing ``signal`` (SLM prices per 1M tokens)."""
    return np.array([(a * price_in + b * price_out) / 1e6
                     for a, b in (signal.extra_tokens(r) for r in rows)], dtype=float)
