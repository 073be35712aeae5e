"""The live parts of the deciding signals: each computed from one tier's output.

Each signal that can decide live has a ``value(out, opts)`` and a ``missing(out, opts, engine)``
here (bundled as :class:`corea.signals.base.Live` in :mod:`corea.signals.registry`): ``out`` is a
:class:`corea.events.ModelOutput`, ``opts`` the tier's :class:`corea.cascade.plan.TierOptions`
(its fitted ``calibrator`` and ``probe``, or None). Values are in [0, 1]; ``missing`` says in
words why an output lacks a signal's inputs (the tier then decides with its stated confidence).
"""

from __future__ import annotations

from .base import Live
from .calibrator import has_token_signals
from .tokens import token_probability


def _as_dict(out) -> dict:
    return {"confidence": out.confidence, "signals": out.signals}


def _no_logprobs(out, opts, engine: str) -> str | None:
    if not has_token_signals(_as_dict(out)):
        return f"{engine} returned no token log-probabilities"
    return None


def _calibrator_missing(out, opts, engine: str) -> str | None:
    return _no_logprobs(out, opts, engine) or (
        None if opts.calibrator is not None
        else "no calibrator is fitted for this SLM (corea calibrate)")


def _probe_missing(out, opts, engine: str) -> str | None:
    probe = opts.probe
    if probe is None:
        return "no probe is available for this SLM"
    has_end = bool((out.states or {}).get("end"))
    ok = probe.card.position == "end" and has_end and \
        (not probe.card.tokens or has_token_signals(_as_dict(out)))
    if ok:
        return None
    return (f"{engine} returned no token log-probabilities" if has_end
            else f"{engine} returned no hidden states")


def _agreement_missing(out, opts, engine: str) -> str | None:
    if out.agreement is not None:
        return None
    return ("the tier does not solve both ways (solve: mot)" if out.solve != "mot"
            else "one of its two solutions failed")


VERBAL = Live(lambda out, opts: out.confidence, what="the stated confidence")
TOKPROB = Live(lambda out, opts: token_probability(out), _no_logprobs,
               "the token probability")
CALIBRATED = Live(lambda out, opts: opts.calibrator.predict_one(_as_dict(out)),
                  _calibrator_missing, "the calibrator")
PROBE = Live(lambda out, opts: opts.probe.confidence_of(out.states, _as_dict(out)),
             _probe_missing, "the probe")
AGREEMENT = Live(lambda out, opts: float(out.agreement), _agreement_missing,
                 "the agreement")
