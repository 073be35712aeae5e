"""The cascade: one loop over the plan of tiers, and the single-tier entry points for evaluation.

:meth:`Cascade.run` streams typed events (:mod:`corea.events`) for one question; the app, the
API, the CLI and the evaluation harness all go through it. For each tier of the plan
(:mod:`corea.cascade.plan`), in order (COREA paper, §3):

1. **solve** (:func:`corea.cascade.solvers.solve`): the tier's model answers; a deciding tier (every
   tier but the last) ends with ``\\boxed{answer}`` and ``Confidence: c``, whatever is missing
   is elicited (forced suffix, echo re-ask, calibration adapter line). A tier with
   ``confidence_first`` states its confidence in a short turn first and, below τ, defers
   without solving.
2. **decide** (:func:`corea.cascade.deciding.decide_tier`): its deciding number against its own τ
   with :func:`corea.policy.decide`; an output that is no answer defers; a failed tier is
   skipped. **Keep** ends the run; **defer** goes on to the next tier.
3. **the last tier always answers**; a failed, cut-off or answerless last answer is replaced by
   the latest usable earlier one (:mod:`corea.cascade.final`).

Events: ``TierStarted(k), TierDelta(k)*, TierDone(k)`` for every tier that runs, then
``Decision(tier=k)`` for a deciding tier, and a ``Final`` carrying the
:class:`~corea.events.CascadeResult`, whose ``tiers`` is one :class:`~corea.events.TierStep` per
tier that ran. Faults never raise out of :meth:`Cascade.run`.

**Context**: ``run(..., context=[Message...])`` puts a conversation's earlier turns into every
tier's chat messages before the question (:func:`corea.prompts.with_context`).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Sequence

from ..backends.base import Backend
from ..config import Settings
from ..events import (CascadeResult, Decision, DecisionInfo, Event, Final, ModelOutput,
                      TierDone, TierStarted, TierStep)
from ..types import GenerationParams, Message
from ..validation import InvalidQuestion, validate_question
from .deciding import decide_before_solving, decide_tier, deciding_number, verify
from .final import check_last, finish
from .plan import (TierOptions, TierPlan, default_options, draft_params, make_plan,
                   resolve_thresholds)
from .route import add_prefill, charge
from .early_exit import exit_decision
from .solvers import check_solve_mode, solve
from .step import TierTask, add_prior, prior_as_output, state_first
from .stream import Cancelled

_ROLES = ("system", "user", "assistant")


def check_context(context: Sequence[Message] | None, question: str,
                  limit: int) -> list[Message]:
    """Earlier turns as :class:`Message` objects; their text and the question's count toward
    ``limit`` (characters).

    Raises:
        InvalidQuestion: a turn that is not system / user / assistant text, or too long.
    """
    out = []
    for i, m in enumerate(context or ()):
        if isinstance(m, dict):
            m = Message(m.get("role"), m.get("content"))
        if m.role not in _ROLES or not isinstance(m.content, str):
            raise InvalidQuestion(f"context[{i}]: a turn must be system, user or assistant text")
        out.append(m)
    total = len(question) + sum(len(m.content) for m in out)
    if out and total > limit:
        raise InvalidQuestion(f"The question is too long: {total:,} characters with its "
                              f"earlier turns (the limit is {limit:,}).")
    return out


def _drive(gen):
    """Run a step without a consumer (evaluation): drop its events."""
    for _ in gen:
        pass


class Cascade:
    """A cascade of N ≥ 2 tiers: the SLM, optional ``middle`` tiers, the LLM.

    Args:
        slm: the first tier's backend.
        llm: the last tier's backend (it always answers).
        settings: thresholds, generation budgets, confidence mode, deciding signals and prices.
            With ``settings.tiers`` its middle tiers give the middle backends' τ, generation
            settings and deciding signal.
        calibrator / probe: the first tier's calibrator (:mod:`corea.signals.calibrator`) and
            end-of-solution probe (:mod:`corea.signals.probe`), or None.
        router: the first tier's pre-generation router (:class:`corea.cascade.route.Router`,
            or :class:`corea.cascade.delegate.Delegator`, which also prefills the next tier),
            or None (it always solves).
        early_exit: the first tier's early exit (:class:`corea.cascade.early_exit.EarlyExit`),
            or None (it always writes to its end).
        middle: the backends of the tiers between the SLM and the LLM, in cascade order.
        options: per tier, :class:`~corea.cascade.plan.TierOptions` that replace the defaults
            (:func:`~corea.cascade.plan.default_options`), e.g. a probe or confidence-first on a
            middle tier; ``None`` entries keep them.

    ``slm``, ``middle``, ``llm``, ``calibrator``, ``probe`` and ``router`` may be replaced before a run
    (:meth:`corea.service.CoreaService.ask` wraps backends with per-request settings).
    """

    def __init__(self, slm: Backend, llm: Backend, settings: Settings, calibrator=None,
                 probe=None, middle: Sequence[Backend] = (),
                 options: Sequence[TierOptions | None] = (), router=None, early_exit=None):
        self.slm = slm
        self.llm = llm
        self.middle = list(middle)
        self.settings = settings
        self.calibrator = calibrator
        self.probe = probe
        self.router = router
        self.early_exit = early_exit
        self.options = list(options)

    # ------------------------------------------------------------------ the plan
    @property
    def backends(self) -> list[Backend]:
        """Every tier's backend in cascade order: ``[slm, *middle, llm]``."""
        return [self.slm, *self.middle, self.llm]

    @property
    def n_tiers(self) -> int:
        """How many tiers the cascade has (2 without middle tiers)."""
        return 2 + len(self.middle)

    def thresholds(self, threshold: float | Sequence[float] | None = None) -> list[float]:
        """τ of every tier but the last (length ``n_tiers - 1``) for one run
        (:func:`corea.cascade.plan.resolve_thresholds`).

        Raises:
            ValueError: a τ outside [0, 1] or a sequence of the wrong length.
        """
        return resolve_thresholds(self.settings, self.n_tiers, threshold)

    def tier_options(self, k: int) -> TierOptions:
        """Tier ``k``'s options: the given ones, else the defaults (the first tier's with this
        cascade's calibrator, probe, router and early exit)."""
        given = self.options[k] if k < len(self.options) else None
        return given if given is not None else \
            default_options(self.settings, k, self.n_tiers, self.calibrator, self.probe,
                            self.router, self.early_exit)

    def plan(self, threshold: float | Sequence[float] | None = None) -> list[TierPlan]:
        """The plan of one run: one :class:`~corea.cascade.plan.TierPlan` per tier.

        Raises:
            ValueError: a bad τ (:meth:`thresholds`) or an unknown solve mode.
        """
        plans = make_plan(self.backends, self.settings, self.thresholds(threshold),
                          [self.tier_options(k) for k in range(self.n_tiers)])
        for p in plans:
            check_solve_mode(p)
        return plans

    def deciding_confidence(self, out: ModelOutput) -> tuple[float | None, str, str | None]:
        """The number compared with τ for one output of the first tier, per its options
        (``settings.confidence_source``; :func:`corea.cascade.deciding.deciding_number`).

        Returns:
            ``(confidence, signal, note)``: ``signal`` is ``verbal``, ``tokprob``,
            ``calibrated`` or ``probe``; ``note`` says why a requested signal fell back to
            ``verbal``.
        """
        return deciding_number(out, self.tier_options(0), "the SLM engine")

    # ------------------------------------------------------------------ the run
    def run(self, question: str, threshold: float | Sequence[float] | None = None,
            choices: Sequence[str] | None = None, cancel: threading.Event | None = None,
            on_result: Callable[[CascadeResult], None] | None = None,
            context: Sequence[Message] | None = None) -> Iterator[Event]:
        """Answer one question, streaming events.

        Args:
            question: the user's question (validated with
                :func:`corea.validation.validate_question`).
            threshold: τ in [0, 1]; defaults to the configured ones. Over N tiers a single τ
                is the first tier's (the others keep their configured τ) and a sequence gives
                one τ per tier but the last (:meth:`thresholds`).
            choices: option texts for a multiple-choice question (answers are then letters).
            cancel: set it from another thread to stop generation; the run ends with status
                ``cancelled``.
            on_result: called exactly once with the final :class:`CascadeResult` — also when the
                run is cancelled or the consumer closes the iterator early (status ``cancelled``).
                Used to log every interaction.
            context: earlier turns of the conversation (system / user / assistant
                :class:`~corea.types.Message`), put into every tier's chat messages before the
                question; their text counts toward ``settings.max_question_chars``.

        Yields:
            :data:`corea.events.Event` objects in the order documented in :mod:`corea.events`.

        Raises:
            corea.validation.InvalidQuestion: bad question or context (raised before any event).
            ValueError: threshold outside [0, 1] (or a τ list of the wrong length).
        """
        question = validate_question(question, self.settings.max_question_chars)
        ctx = check_context(context, question, self.settings.max_question_chars)
        plans = self.plan(threshold)
        tasks = [TierTask(p, self.settings, cancel or threading.Event(), question, choices, ctx)
                for p in plans]
        return self._run(tasks, on_result)

    def _run(self, tasks: list[TierTask], on_result) -> Iterator[Event]:
        t0 = time.perf_counter()
        first = tasks[0]
        result = CascadeResult(question=first.question, context=list(first.context))
        reported = False

        def report(cancelled: bool) -> None:
            nonlocal reported
            if not reported:
                reported = True
                finish(result, t0, len(tasks), cancelled=cancelled)
                if on_result is not None:
                    on_result(result)

        try:
            yield from self._tiers(tasks, result)
            report(cancelled=False)
            yield Final(result)
        except Cancelled:
            report(cancelled=True)
            yield Final(result)
        except GeneratorExit:  # the consumer closed the stream (e.g. the user pressed Stop)
            report(cancelled=True)
            raise

    def _tiers(self, tasks: list[TierTask], result: CascadeResult):
        """The loop: each tier solves, then decides against its τ; keep ends it, the last tier
        always answers."""
        plans = [t.plan for t in tasks]
        handoff = None  # the previous tier's prefill of this tier's prompt (delegation routing)
        for task in tasks:
            plan = task.plan
            step = TierStep(plan.index, plan.role, plan.model, ModelOutput(model=plan.model),
                            plan.threshold)
            result.tiers.append(step)
            yield TierStarted(plan.index, plan.model, plan.role)
            if plan.last:
                try:
                    yield from solve(task, step.output, draft_params(plan, result.tiers[:-1]))
                finally:  # also when the visitor stops it: the prefill was made
                    charge(step.output, handoff)
                check_last(result, plans)
                yield TierDone(plan.index, step.output, plan.role)
                return
            decision, check = yield from self._deciding_step(task, step, plans[plan.index + 1])
            charge(step.output, handoff)
            handoff = check.handoff if check is not None else None
            if handoff is not None and not decision.defer:  # kept: its decision paid for it
                charge(step.output, handoff)
            step.decision = decision
            yield TierDone(plan.index, step.output, plan.role)
            if plan.role == "mid" and step.output.error is not None:
                result.warnings.append(decision.message)  # a skipped middle tier
            yield Decision(decision, tier=plan.index)
            if not decision.defer:
                return

    @staticmethod
    def _deciding_step(task: TierTask, step: TierStep, nxt: TierPlan):
        """A deciding tier's step into ``step``: its route check when it has a router (routed:
        the step ends unsolved; :mod:`corea.cascade.route`, :mod:`corea.cascade.delegate`, which
        also prefills ``nxt``, the next tier), its confidence-first turn when it has one (a
        deferral there ends the step unsolved), its solution; returns ``(decision, check)``
        (``check`` None without a route check)."""
        plan = task.plan
        router = plan.options.route
        # τ 0 keeps every usable answer (a visitor's slider, `corea:0` in the API): not routed
        check = router.check(task, nxt) if router is not None and plan.threshold else None
        if check is not None and check.routed:
            step.output = check.prefill
            return router.decision(check, plan.who, nxt.words), check
        decision = yield from Cascade._solving_step(task, step, nxt.words)
        watch = task.exit_watch
        if watch is not None and watch.fired:
            decision = exit_decision(watch, plan.who, nxt.words)
        notes = [check.note if check is not None else None,
                 watch.note if watch is not None else None]
        if check is not None:
            add_prefill(step.output, check)
        if any(notes):
            decision.signal_note = "; ".join(n for n in (decision.signal_note, *notes) if n)
        return decision, check

    @staticmethod
    def _solving_step(task: TierTask, step: TierStep, to: str | None):
        """A deciding tier's confidence-first turn and solution into ``step``; its decision."""
        plan = task.plan
        prior = None
        if plan.options.confidence_first:
            prior = step.prior = ModelOutput(model=plan.model)
            yield from state_first(task, prior)
            decision: DecisionInfo = decide_before_solving(plan, prior, to)
            if decision.defer:  # deferred before solving: the turn is the tier's whole output
                step.output = prior_as_output(prior)
                return decision
            yield task.delta("\n\n", True)
        yield from solve(task, step.output)
        if prior is not None:
            add_prior(step.output, prior)
        return decide_tier(plan, step.output, to, prior)

    # ---------------------------------------------------------- one tier alone (evaluation)
    def _task(self, k: int, question: str, choices, cancel) -> TierTask:
        return TierTask(self.plan()[k], self.settings, cancel or threading.Event(), question,
                        choices)

    def tier_output(self, k: int, question: str, choices: Sequence[str] | None = None,
                    cancel: threading.Event | None = None,
                    params: GenerationParams | None = None) -> ModelOutput:
        """Run only tier ``k``'s solve step (0 ≤ k < :attr:`n_tiers`) as it runs in :meth:`run`
        (same prompt, parsing and elicitation; no confidence-first turn, no decision, no log).
        For evaluation ("score once, sweep many"). ``question`` is used as given (no
        validation); ``params`` replaces the tier's generation settings for the solution (the
        forced suffix stays greedy). Faults are recorded in ``ModelOutput.error``.

        Raises:
            IndexError: no tier ``k``.
            Cancelled: ``cancel`` was set (generation stops at the next token).
        """
        if not 0 <= k < self.n_tiers:
            raise IndexError(f"tier {k}: the cascade has {self.n_tiers} tiers")
        task = self._task(k, question, choices, cancel)
        out = ModelOutput(model=task.plan.model)
        _drive(solve(task, out, params))
        return out

    def slm_output(self, question: str, choices: Sequence[str] | None = None,
                   cancel: threading.Event | None = None,
                   params: GenerationParams | None = None) -> ModelOutput:
        """The first tier alone (:meth:`tier_output` of tier 0)."""
        return self.tier_output(0, question, choices, cancel, params)

    def llm_output(self, question: str, choices: Sequence[str] | None = None,
                   cancel: threading.Event | None = None) -> ModelOutput:
        """The last tier alone (:meth:`tier_output` of tier ``n_tiers - 1``)."""
        return self.tier_output(self.n_tiers - 1, question, choices, cancel)

    def prior_output(self, question: str, choices: Sequence[str] | None = None) -> ModelOutput:
        """Only the first tier's confidence-first turn: it states its confidence before solving.
        For evaluation. Faults are recorded in ``ModelOutput.error``, never raised."""
        task = self._task(0, question, choices, None)
        out = ModelOutput(model=task.plan.model)
        _drive(state_first(task, out))
        return out

    def verify_output(self, question: str, choices: Sequence[str] | None,
                      out: ModelOutput) -> dict:
        """Self-verification of a first-tier output, P(True)
        (:func:`corea.cascade.deciding.verify` on the SLM). Never raises."""
        return verify(self.slm, question, choices, out)
