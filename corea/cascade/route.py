"""Pre-generation routing: a deciding tier that skips itself before it writes a token.

A tier with a :class:`Router` (``route:`` in its settings, :class:`corea.model_config.RouteSettings`)
first prefills the question only — the chain-of-thought chat it would solve
(:func:`corea.prompts.slm_messages`, the prompt the probe was fit after; also for a tier that
solves by program) — and reads its final-layer hidden state after it
(``Backend.prompt_state``, :class:`corea.backends.base.PromptState`). A prompt-position linear
probe (:mod:`corea.signals.probe`) turns that state into P(the tier's answer is correct); below the route
threshold τ_r the question goes straight to the next tier (decision reason ``routed``, signal
``prior_probe``, the probe value and why in the message) and the tier's output records only the
prefill (its prompt tokens, seconds and USD; ``finish_reason`` ``routed``, no text). At or above
τ_r the tier solves and decides as usual; the prefill is then charged to its output too (the
solving call evaluates the prompt again unless the engine reuses its cache).

A tier whose τ is 0 (keep every usable answer: the slider at 0, ``corea:0`` in the API) is not
routed either: asking for the small model's answer whatever its confidence overrides the router.
An engine that reads no hidden states never routes (the tier solves as usual, nothing is
noted); a read or probe that fails never stops an answer either: the tier solves and
:attr:`RouteCheck.note` says why it was not routed (shown beside its decision). Held out against answer-first: :mod:`corea.eval.route_first`.

Routing by the delegation value instead (``route: {by: delegation}``: the next tier prefills
too, and a model of P(the next tier right and this one wrong) decides) is
:mod:`corea.cascade.delegate`; both give the loop ``check(task, next_plan)`` and
``decision(check, who, to)``, and both checks are :class:`RouteCheck` rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import ROUTED, DecisionInfo, ModelOutput
from ..policy import check_threshold, shown
from ..prompts import slm_messages
from .stream import close_output, record_fault

__all__ = ["ROUTED", "Router", "RouteCheck", "check_route", "routed_decision", "add_prefill",
           "charge",
           "shipped_route_probe_dir", "load_router"]


@dataclass(frozen=True)
class Router:
    """A tier's pre-generation router: a prompt-position probe (:class:`corea.signals.probe.LinearProbe`
    with ``card.position == "prompt"``) and τ_r in [0, 1].

    Raises:
        ValueError: a probe of another position, or τ_r outside [0, 1].
    """

    probe: Any
    threshold: float

    def __post_init__(self):
        if getattr(self.probe.card, "position", None) != "prompt":
            raise ValueError("a router needs a probe fit at the prompt position "
                             "(corea probe --position prompt)")
        check_threshold(self.threshold, "route threshold")

    @property
    def signal(self) -> str:
        """The signal name in decisions (the probe card's, e.g. ``prior_probe``)."""
        return self.probe.card.signal

    def check(self, task, next_plan=None) -> "RouteCheck":
        """:func:`check_route` (``next_plan``, the next tier's, is not read)."""
        return check_route(task, self)

    def decision(self, check: "RouteCheck", who: str | None, to: str | None) -> DecisionInfo:
        """:func:`routed_decision` with this router's signal."""
        return routed_decision(check, self.signal, who, to)


@dataclass
class RouteCheck:
    """One route check: the probe's P(correct) (None when it could not be read), τ_r, whether
    the question was routed, ``note``: why it was not read (engine, probe fault), and
    ``prefill``: the prefill's output (prompt tokens, seconds, USD; ``finish_reason``
    ``routed`` when routed); ``handoff``: the next tier's prefill when the check made one
    (:mod:`corea.cascade.delegate`), charged to the next tier's output when the question goes
    on, else to this tier's."""

    value: float | None
    threshold: float
    routed: bool
    note: str | None = None
    prefill: ModelOutput | None = None
    handoff: ModelOutput | None = None


def check_route(task, router: Router) -> RouteCheck:
    """Prefill ``task``'s question on its tier's engine, read the probe, decide whether to route.
    A failed read returns a check with a note and no value (the tier then solves). Never
    raises."""
    backend = task.plan.backend
    read = getattr(backend, "prompt_state", None)
    if read is None:  # an engine that reads no states never routes (no note: nothing failed)
        return RouteCheck(None, router.threshold, False)
    out = ModelOutput(model=task.plan.model)
    t_start = time.perf_counter()
    try:
        got = read(slm_messages(task.question, task.choices, task.context))
        out.prompt_tokens += int(got.prompt_tokens)
        value = float(router.probe.confidence(got.state)[0])
    except Exception as exc:  # noqa: BLE001 — a router that fails must not stop answers
        kind = record_fault(ModelOutput(model=out.model), exc)
        if kind == "unsupported":  # e.g. hidden_states off: it never routes (nothing failed)
            return RouteCheck(None, router.threshold, False)
        return RouteCheck(None, router.threshold, False,
                          f"not routed: reading its state after the question failed ({kind})",
                          out)
    finally:
        close_output(out, t_start, task.settings.prices)
    routed = value < router.threshold
    if routed:
        out.finish_reason = ROUTED
    return RouteCheck(value, router.threshold, routed, None, out)


def add_prefill(out: ModelOutput, check: RouteCheck) -> None:
    """Charge a route check that did not route to the tier's output: its prompt tokens, USD and
    seconds (the solving call evaluated the prompt again)."""
    charge(out, check.prefill)


def charge(out: ModelOutput, p: ModelOutput | None) -> None:
    """Add prefill ``p``'s prompt tokens, USD and seconds to ``out`` (nothing when None)."""
    if p is None:
        return
    out.prompt_tokens += p.prompt_tokens
    out.cost_usd += p.cost_usd
    out.latency_s += p.latency_s


def routed_decision(check: RouteCheck, signal: str, who: str | None,
                    to: str | None) -> DecisionInfo:
    """The decision of a routed question: deferred, reason ``routed``, the probe value against
    τ_r, and the message the visitor reads ("Sent straight to the large model: ...")."""
    v, t = check.value, check.threshold
    who_, to_ = who or "the small model", to or "the large model"
    msg = (f"Sent straight to {to_} — before {who_} wrote anything, a probe on its reading "
           f"of the question put its chance of answering right at {shown(v, t, percent=True)}, "
           f"below the routing threshold {shown(t, v, percent=True)}")
    return DecisionInfo(True, ROUTED, v, t, msg, signal)


def shipped_route_probe_dir(model: str) -> Path | None:
    """The prompt-position probe shipped for ``model`` (``corea/assets/probes/<model>/prompt/``),
    or None when none ships."""
    from ..signals.probe import SHIPPED
    from ..shipped import slug

    d = SHIPPED / slug(model) / "prompt"
    return d if (d / "probe.npz").is_file() and (d / "card.json").is_file() else None


def load_router(route, model: str, base: str | None = None) -> Router | None:
    """The :class:`Router` of a tier's ``route`` settings (:class:`corea.model_config.RouteSettings`)
    for the model named ``model``: its ``probe`` folder, else the one shipped for ``model``, else
    (``base`` given) the one shipped for ``base``; None when ``route`` is None or no probe is
    found.

    ``base``: the model whose hidden states ``model`` reads after the question — the embedded
    SLM for the SLM with the shipped confidence-scoped calibration adapter, which only writes
    the confidence line after the base model's solution (:data:`corea.adapters.SCOPES`), so a
    probe fit on the base model's prompt states reads the adapted SLM's.

    Raises:
        OSError, ValueError: the probe cannot be read, was fit for another model, or is not a
            prompt-position probe.
    """
    if route is None:
        return None
    from ..signals.probe import LinearProbe

    owners = [model] if route.probe else [model, *([base] if base else [])]
    folder = Path(route.probe).expanduser() if route.probe else next(
        (d for d in map(shipped_route_probe_dir, owners) if d is not None), None)
    if folder is None:
        return None
    probe = LinearProbe.load(folder)
    if probe.card.slm not in owners:
        raise ValueError(f"the route probe at {folder} was fit for {probe.card.slm}, not {model}")
    return Router(probe, route.threshold)
