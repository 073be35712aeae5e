"""The plan of tiers: what each tier of one run is, before anything runs.

A cascade of N ≥ 2 tiers is N :class:`TierPlan` rows, in cascade order: the tier's backend, its
role (``slm`` the first, ``mid`` a middle one, ``llm`` the last, which always answers), its τ in
[0, 1] (``None`` for the last), its generation settings and its :class:`TierOptions` — how it
solves and which number decides for it. The loop (:mod:`corea.cascade.loop`) runs the plan;
one tier's step is :mod:`corea.cascade.step`, its deciding number :mod:`corea.cascade.deciding`.

Defaults keep the two-tier design's behaviour: the first tier decides with
``settings.confidence_source`` (which may use the probe and the calibrator) and states its
confidence first when ``settings.deferral_order == "confidence_first"``; a middle tier decides
with its ``tiers[k].confidence_source`` (``verbal`` or ``tokprob``). Any deciding tier can be
given other options (``Cascade(..., options=...)``): a probe, a calibrator or confidence-first on
a middle tier.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from ..backends.base import Backend
from ..config import ModelSettings, Settings
from ..events import TierRole
from ..policy import check_threshold
from ..selection import stated_decides_for
from ..types import GenerationParams

@dataclass(frozen=True)
class TierOptions:
    """How one tier solves and decides.

    Attributes:
        signal: the number compared with τ (a ``confidence_source``: ``verbal``, ``tokprob``,
            ``calibrated``, ``probe``, ``auto`` or ``agreement``;
            :func:`corea.cascade.deciding.deciding_number`).
        confidence_first: state the confidence in a short turn before solving
            (:data:`corea.prompts.PRIOR_SYSTEM`); below τ the tier defers without solving.
        calibrator: a :class:`corea.signals.calibrator.Calibrator` fitted for this tier's model, or None.
        probe: a :class:`corea.signals.probe.LinearProbe` on this tier's end-of-solution hidden state,
            or None.
        solve: how the tier solves: a mode of :data:`corea.cascade.solvers.SOLVERS` (``cot``,
            the default: it reasons in text; ``pot``: a program run in the sandbox; ``mot``:
            both).
        stated_first: ``auto`` lets the stated confidence decide ahead of any learned signal:
            its cross-fit card says it ranks at least as well as the token calibrator on train
            (:func:`corea.selection.stated_decides`).
        route: a :class:`corea.cascade.route.Router` or a
            :class:`corea.cascade.delegate.Delegator` (``check(task, next_plan)`` and
            ``decision(check, who, to)``): before writing, the tier may send the question
            straight to the next tier; None (default): it always solves.
        early_exit: a :class:`corea.cascade.early_exit.EarlyExit`: while it writes (``cot``),
            the tier may stop and defer; None (default): it always writes to its end.

    Options of the last tier other than ``solve`` are ignored: it decides nothing.
    """

    signal: str = "verbal"
    confidence_first: bool = False
    calibrator: Any = None
    probe: Any = None
    solve: str = "cot"
    stated_first: bool = False
    route: Any = None
    early_exit: Any = None


@dataclass
class TierPlan:
    """One tier of one run.

    Attributes:
        index: position in the cascade (0 = first).
        role: ``slm`` / ``mid`` / ``llm``.
        backend: the engine that runs the tier.
        threshold: τ in [0, 1]; ``None`` for the last tier.
        params: generation settings of its solution (tokens, sampling).
        options: how it solves and decides.
        words: the tier in words for decision messages (``"tier 2 (name)"``, 1-based); ``None``
            with two tiers, whose messages say "the small model" / "the large model".
    """

    index: int
    role: TierRole
    backend: Backend
    threshold: float | None
    params: GenerationParams
    options: TierOptions
    words: str | None = None

    @property
    def model(self) -> str:
        return self.backend.model_name

    @property
    def last(self) -> bool:
        """The last tier: it always answers."""
        return self.role == "llm"

    @property
    def adapter(self) -> bool:
        """Its backend runs a confidence-scoped calibration adapter (:data:`corea.adapters.SCOPES`):
        the adapted model writes the confidence line after the base model's solution."""
        return bool(getattr(self.backend, "confidence_adapter", False))

    @property
    def who(self) -> str | None:
        """The tier in decision messages: the first tier is "the small model" (``None``)."""
        return None if self.index == 0 else self.words


def tier_settings(settings: Settings, k: int, n_tiers: int) -> ModelSettings:
    """Model settings of tier ``k`` (generation budget and sampling): ``settings.tiers`` when
    it describes this cascade, else ``slm`` for a deciding tier and ``llm`` for the last."""
    models = settings.tier_models()
    if len(models) == n_tiers:
        return models[k]
    return settings.llm if k == n_tiers - 1 else settings.slm


def resolve_thresholds(settings: Settings, n_tiers: int,
                       threshold: float | Sequence[float] | None = None) -> list[float]:
    """τ of every tier but the last (length ``n_tiers - 1``) for one run.

    Args:
        threshold: ``None``: the configured ones (:meth:`Settings.tier_thresholds`; every tier
            ``settings.threshold`` when ``settings.tiers`` does not describe this cascade); one
            number: τ of the first tier, the others configured; a sequence: one τ per tier but
            the last.

    Raises:
        ValueError: a τ outside [0, 1] (:func:`corea.policy.check_threshold`) or a sequence of
            the wrong length.
    """
    n = n_tiers - 1
    base = settings.tier_thresholds()
    if len(base) != n:
        base = [settings.threshold] * n
    if threshold is None:
        taus = list(base)
    elif not isinstance(threshold, (list, tuple)):
        taus = [threshold, *base[1:]]
    else:
        taus = list(threshold)
        if len(taus) != n:
            raise ValueError(f"threshold: {len(taus)} values for a cascade of {n_tiers} tiers "
                             f"(give one τ per tier but the last: {n})")
    return [check_threshold(t) for t in taus]


def default_options(settings: Settings, k: int, n_tiers: int, calibrator=None,
                    probe=None, router=None, early_exit=None) -> TierOptions:
    """Tier ``k``'s options from the settings: the first tier's signal, confidence-first,
    calibrator, probe, router (:class:`corea.cascade.route.Router`) and early exit
    (:class:`corea.cascade.early_exit.EarlyExit`); a middle tier's
    ``tiers[k].confidence_source`` (``verbal`` when the settings do not describe this cascade);
    every tier's ``solve`` (:func:`tier_settings`)."""
    solve = tier_settings(settings, k, n_tiers).solve
    if k == 0:
        return TierOptions(signal=settings.confidence_source,
                           confidence_first=settings.deferral_order == "confidence_first",
                           calibrator=calibrator, probe=probe, solve=solve, route=router,
                           early_exit=early_exit,
                           stated_first=stated_decides_for(settings.slm.model))
    sources = settings.tier_sources()
    described = len(sources) == n_tiers - 2 and k < n_tiers - 1
    return TierOptions(signal=sources[k - 1] if described else "verbal", solve=solve)


def make_plan(backends: Sequence[Backend], settings: Settings, taus: Sequence[float],
              options: Sequence[TierOptions | None] = ()) -> list[TierPlan]:
    """The plan of one run: one :class:`TierPlan` per backend.

    Args:
        backends: every tier's backend in cascade order (2 or more).
        taus: τ of every tier but the last (:func:`resolve_thresholds`).
        options: per tier, options that replace the defaults (:func:`default_options` with no
            calibrator or probe); ``None`` or a missing entry keeps them.

    Raises:
        ValueError: fewer than two backends or a τ list of the wrong length.
    """
    n = len(backends)
    if n < 2 or len(taus) != n - 1:
        raise ValueError(f"a plan needs 2 tiers or more and one τ per tier but the last "
                         f"(got {n} tiers, {len(taus)} τ)")
    plans = []
    for k, backend in enumerate(backends):
        given = options[k] if k < len(options) else None
        opts = given if given is not None else default_options(settings, k, n)
        role: TierRole = "slm" if k == 0 else "llm" if k == n - 1 else "mid"
        plans.append(TierPlan(k, role, backend, None if k == n - 1 else taus[k],
                              tier_settings(settings, k, n).generation_params(), opts,
                              None if n == 2 else f"tier {k + 1} ({backend.model_name})"))
    return plans


def with_params(plan: TierPlan, params: GenerationParams | None) -> TierPlan:
    """``plan`` with its solution's generation settings replaced (``None`` keeps them)."""
    return plan if params is None else replace(plan, params=params)


__all__ = ["TierOptions", "TierPlan", "default_options",
           "make_plan", "resolve_thresholds", "tier_settings", "with_params"]


def draft_params(plan: TierPlan, earlier: Sequence[Any]) -> GenerationParams:
    """The last tier's generation settings with the earlier tiers' solutions as a draft hint
    (:attr:`GenerationParams.draft_hint`): an engine set to draft from it
    (``speculative: slm_lookup``, :mod:`corea.backends.speculative`) checks tokens looked up in
    them, losslessly under greedy decoding; other engines ignore it.

    Args:
        plan: the last tier's plan row.
        earlier: the :class:`~corea.events.TierStep` records of the tiers before it; only
            outputs with a parsed answer (a tier that solved, not one that deferred before
            solving) give text.
    """
    texts = [st.output.text for st in earlier if st.output.answer is not None and st.output.text]
    return replace(plan.params, draft_hint="\n\n".join(texts)) if texts else plan.params
