"""The COREA cascade: the SLM answers with a verbalized confidence; below τ the LLM answers instead.

(About 850 lines: one class whose steps — the SLM's solution, its forced suffix, the echo turn,
self-verification, the deciding signal, the middle tiers, the LLM, faults and the final answer —
share one streamed state per question; :mod:`corea.policy` holds the rules they apply.)

One entry point, :meth:`Cascade.run`, streams typed events (:mod:`corea.events`). The app, the CLI
and the evaluation harness all go through it.

Flow for one question (COREA paper, §3):

1. The SLM reasons step by step and ends with ``\\boxed{answer}`` and ``Confidence: c``
   (:mod:`corea.prompts`). Its text streams as :class:`~corea.events.SLMDelta` events.
2. Answer and confidence are parsed from what it wrote ("free"). In ``auto`` mode, whatever is
   missing is elicited with the forced suffix: the SLM's own completion plus ``"\\n\\nAnswer:"``
   and/or ``"\\nConfidence:"`` is continued by the same model for a few tokens ("forced").
   An SLM with a confidence-scoped calibration adapter (``backend.confidence_adapter``,
   :data:`corea.adapters.SCOPES`) instead drops any confidence line the base model wrote and lets
   the adapted model write its own after the solution (``confidence_method == "adapter"``).
3. :func:`corea.policy.decide` keeps the answer iff ``c ≥ τ``; otherwise (or with no confidence)
   the LLM answers, streamed as :class:`~corea.events.LLMDelta` events. ``c`` is the verbalized
   confidence, or — per ``settings.confidence_source`` — the token-probability signal or a fitted
   calibrator's P(correct) (:meth:`Cascade.deciding_confidence`). With
   ``settings.deferral_order == "confidence_first"`` the SLM first states its confidence in a short
   turn and a deferral happens before it solves (the LLM then answers alone).
4. A :class:`~corea.events.Final` event carries the complete :class:`~corea.events.CascadeResult`.

Faults never raise out of :meth:`Cascade.run`: an SLM failure defers to the LLM (``slm_error``);
an LLM failure falls back to the SLM's answer with a warning (``llm_error``).

**N tiers** (``settings.tiers``, or ``middle`` backends): tier 0 is the SLM above; each middle
tier behaves like the SLM (same prompt, parsing, forced suffix and echo turn; its deciding signal
is its stated confidence or its token probability, never the probe or the calibrator, which are
fitted for the first tier) and is compared with its own τ by the same
:func:`corea.policy.decide`; below it the question goes to the next tier; the last tier always
answers like the LLM. A middle tier that fails is skipped with a warning. The events are
documented in :mod:`corea.events`; every tier that ran is a :class:`~corea.events.TierStep` in
``result.tiers``. With two tiers everything is as described above.

**Context**: ``run(..., context=[Message...])`` puts a conversation's earlier turns into every
tier's chat messages before the question (:func:`corea.prompts.with_context`).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Iterator, Sequence

from . import hidden, policy
from .backends.base import Backend, BackendError
from .types import GenerationParams, Message
from .config import Settings
from .costs import cost_usd
from .events import (CascadeResult, Decision, DecisionInfo, Event, Final, LLMDelta, LLMDone,
                     LLMStarted, ModelOutput, SLMDelta, SLMDone, SLMStarted, TierDelta, TierDone,
                     TierStarted, TierStep)
from .parsing import (confidence_echoes_answer, extract_answer, parse_confidence,
                      parse_confidence_value, strip_confidence)
from .signals import compute_signals
from .prompts import (ANSWER_SUFFIX, CONFIDENCE_SUFFIX, PRIOR_PREFIX, VERIFY_CANDIDATES,
                      ask_confidence_messages, llm_messages, prior_messages, slm_messages,
                      verify_messages)
from .validation import InvalidQuestion, validate_question

_ROLES = ("system", "user", "assistant")


class Cancelled(Exception):
    """Raised inside a run when its cancel event is set."""


def auto_ranking(calibrator, probe) -> list[str]:
    """``confidence_source=auto``'s preference among the learned signals, best first.

    Candidates: the end-of-solution ``probe`` (a :class:`corea.probe.LinearProbe`) and the
    ``calibrated`` confidence (a :class:`corea.calibrator.Calibrator`), each only if its card's
    held-out AUROC beats the stated confidence's on the same items (or the card has no
    out-of-sample stated confidence to compare with, as for a confidence adapter trained on
    every train item); ordered by that held-out AUROC, the probe first on a tie. Empty: the
    stated confidence decides. :meth:`Cascade.deciding_confidence` takes the first one an output
    has the inputs for; the Ask tab names the first.
    """
    options = []
    if probe is not None and probe.card.position == "end" and probe.card.beats_verbal():
        options.append((probe.card.cv.get("auroc") or 0.0, 1, "probe"))
    if calibrator is not None and calibrator.card.beats_verbal():
        options.append((calibrator.card.held_out.get("auroc") or 0.0, 0, "calibrated"))
    return [name for *_, name in sorted(options, reverse=True)]


class Cascade:
    """SLM → LLM cascade over two backends, or over N tiers with ``middle`` backends.

    Args:
        slm: the small model's backend (the first tier).
        llm: the large model's backend (the last tier, which always answers).
        settings: thresholds, generation budgets, confidence mode and prices. With
            ``settings.tiers`` its middle tiers give the middle backends' τ, generation settings
            and deciding signal.
        middle: the backends of the tiers between the SLM and the LLM, in cascade order (none:
            the two-tier cascade).
    """

    def __init__(self, slm: Backend, llm: Backend, settings: Settings, calibrator=None,
                 probe=None, middle: Sequence[Backend] = ()):
        self.slm = slm
        self.llm = llm
        self.middle = list(middle)
        self.settings = settings
        self.calibrator = calibrator  # a corea.calibrator.Calibrator for this SLM, or None
        self.probe = probe  # a corea.probe.LinearProbe on the SLM's end-of-solution state, or None

    # ------------------------------------------------------------------ tiers
    @property
    def backends(self) -> list[Backend]:
        """Every tier's backend in cascade order: ``[slm, *middle, llm]``."""
        return [self.slm, *self.middle, self.llm]

    @property
    def n_tiers(self) -> int:
        """How many tiers the cascade has (2 without middle tiers)."""
        return 2 + len(self.middle)

    def thresholds(self, threshold: float | Sequence[float] | None = None) -> list[float]:
        """τ of every tier but the last (length ``n_tiers - 1``) for one run.

        Args:
            threshold: ``None``: the configured ones (:meth:`Settings.tier_thresholds`; every
                tier ``settings.threshold`` when ``settings.tiers`` does not describe this
                cascade); one number: τ of the first tier, the others configured; a sequence:
                one τ per tier but the last.

        Raises:
            ValueError: a τ outside [0, 1] or a sequence of the wrong length.
        """
        n = self.n_tiers - 1
        base = self.settings.tier_thresholds()
        if len(base) != n:
            base = [self.settings.threshold] * n
        if threshold is None:
            taus = list(base)
        elif not isinstance(threshold, (list, tuple)):
            taus = [float(threshold), *base[1:]]
        else:
            taus = [float(t) for t in threshold]
            if len(taus) != n:
                raise ValueError(f"threshold: {len(taus)} values for a cascade of "
                                 f"{self.n_tiers} tiers (give one τ per tier but the last: {n})")
        for tau in taus:
            if not 0.0 <= tau <= 1.0:  # also rejects NaN
                raise ValueError(f"threshold must be in [0, 1], got {tau}")
        return taus

    def _tier_settings(self, k: int):
        """Model settings of tier ``k`` (generation budget and sampling)."""
        models = self.settings.tier_models()
        if len(models) == self.n_tiers:
            return models[k]
        return self.settings.llm if k == self.n_tiers - 1 else self.settings.slm

    def _words(self, k: int) -> str | None:
        """Tier ``k`` in words for decision messages (``"tier 2 (name)"``, 1-based); ``None``
        with two tiers, whose messages say "the small model" / "the large model"."""
        if self.n_tiers == 2:
            return None
        return f"tier {k + 1} ({self.backends[k].model_name})"

    def _set_decision(self, result: CascadeResult, step: TierStep, info: DecisionInfo) -> None:
        """Record ``info`` as ``step``'s decision (and as the run's when it is the first tier's)."""
        step.decision = info
        if step.index == 0:
            result.decision = info

    def _check_context(self, context: Sequence[Message] | None, question: str) -> list[Message]:
        """Earlier turns as :class:`Message` objects; their text and the question's count toward
        ``settings.max_question_chars``.

        Raises:
            InvalidQuestion: a turn that is not system / user / assistant text, or too long.
        """
        out = []
        for i, m in enumerate(context or ()):
            if isinstance(m, dict):
                m = Message(m.get("role"), m.get("content"))
            if m.role not in _ROLES or not isinstance(m.content, str):
                raise InvalidQuestion(f"context[{i}]: a turn must be system, user or assistant "
                                      "text")
            out.append(m)
        total = len(question) + sum(len(m.content) for m in out)
        limit = self.settings.max_question_chars
        if out and total > limit:
            raise InvalidQuestion(f"The question is too long: {total:,} characters with its "
                                  f"earlier turns (the limit is {limit:,}).")
        return out

    def deciding_confidence(self, out: ModelOutput) -> tuple[float | None, str, str | None]:
        """The number compared with τ for one SLM output, per ``settings.confidence_source``.

        ``auto`` picks, among the probe (its output needs hidden states) and the calibrator (needs
        token log-probabilities), the one with the higher held-out AUROC of those whose held-out
        AUROC beats the stated confidence's on the same data (their cards); else the stated one.

        Returns:
            ``(confidence, signal, note)``: ``signal`` is ``verbal``, ``tokprob``,
            ``calibrated`` or ``probe``; ``note`` says why a requested signal fell back to
            ``verbal``.
        """
        from .calibrator import has_token_signals

        want = self.settings.confidence_source
        out_d = {"confidence": out.confidence, "signals": out.signals}
        cal, probe = self.calibrator, self.probe
        probe_ok = probe is not None and probe.card.position == "end" and \
            bool((out.states or {}).get("end")) and \
            (not probe.card.tokens or has_token_signals(out_d))

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
            for name in auto_ranking(cal, probe):  # the best one this output has inputs for
                if name == "probe" and probe_ok:
                    return probed()
                if name == "calibrated" and has_token_signals(out_d):
                    return calibrated()
            return out.confidence, "verbal", None
        if want == "verbal":
            return out.confidence, "verbal", None
        if want == "probe":
            if probe_ok:
                return probed()
            why = ("no probe is available for this SLM" if probe is None else
                   "the SLM engine returned no token log-probabilities"
                   if (out.states or {}).get("end") else
                   "the SLM engine returned no hidden states")
            return out.confidence, "verbal", f"probe requested but {why}; verbal used"
        if not has_token_signals(out_d):
            return out.confidence, "verbal", (f"{want} requested but the SLM engine returned no "
                                              "token log-probabilities; verbal used")
        if want == "tokprob":
            return out.signals["solution_prob"], "tokprob", None
        if cal is None:
            return out.confidence, "verbal", ("calibrated requested but no calibrator is fitted "
                                              "for this SLM (corea calibrate); verbal used")
        return calibrated()

    # ------------------------------------------------------------------ public
    def run(self, question: str, threshold: float | Sequence[float] | None = None,
            choices: Sequence[str] | None = None, cancel: threading.Event | None = None,
            on_result: Callable[[CascadeResult], None] | None = None,
            context: Sequence[Message] | None = None) -> Iterator[Event]:
        """Answer one question, streaming events.

        Args:
            question: the user's question (validated with :func:`corea.validation.validate_question`).
            threshold: τ in [0, 1]; defaults to ``settings.threshold``. Over N tiers a single τ
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
        ctx = self._check_context(context, question)
        taus = self.thresholds(threshold)
        return self._run(question, taus, choices, cancel or threading.Event(), on_result, ctx)

    def prior_output(self, question: str, choices: Sequence[str] | None = None) -> ModelOutput:
        """Run only the confidence-first turn: the SLM states its confidence before solving.

        For evaluation. Faults are recorded in ``ModelOutput.error``, never raised."""
        result = CascadeResult(question=question, threshold=0.0,
                               slm=ModelOutput(model=self.slm.model_name))
        for _ in self._prior(question, choices, threading.Event(), result):
            pass
        return result.slm_prior

    def slm_output(self, question: str, choices: Sequence[str] | None = None,
                   cancel: threading.Event | None = None,
                   params: GenerationParams | None = None) -> ModelOutput:
        """Run only the SLM step (same prompt, parsing and forced suffix as :meth:`run`).

        For evaluation ("score once, sweep many"): no decision, no logging. Faults are recorded in
        ``ModelOutput.error``, never raised. ``question`` is used as given (no validation).
        ``params`` replaces the SLM's generation settings for the solution (e.g. sampled
        solutions for self-consistency); the forced suffix stays greedy.

        Raises:
            Cancelled: ``cancel`` was set (generation stops at the next token).
        """
        result = CascadeResult(question=question, threshold=0.0,
                               slm=ModelOutput(model=self.slm.model_name))
        for _ in self._run_slm(question, choices, cancel or threading.Event(), result, params):
            pass
        return result.slm

    def verify_output(self, question: str, choices: Sequence[str] | None,
                      out: ModelOutput) -> dict:
        """Self-verification of an SLM output, P(True): the SLM is asked whether its own final
        answer is right, after its own solution (:func:`corea.prompts.verify_messages`).

        Returns:
            ``{"p_true": P("Yes") / (P("Yes") + P("No")) in [0, 1] or None, "logprobs":
            {"Yes": lp, "No": lp} (natural log), "error": str | None}``. ``p_true`` is None when
            the output has no answer or the backend cannot score next tokens. Never raises.
        """
        if not out.answer or out.error:
            return {"p_true": None, "logprobs": None, "error": "no answer"}
        score = getattr(self.slm, "next_token_logprobs", None)
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

    def tier_output(self, k: int, question: str, choices: Sequence[str] | None = None,
                    cancel: threading.Event | None = None) -> ModelOutput:
        """Run only tier ``k`` (0 ≤ k < :attr:`n_tiers`), as it runs in :meth:`run`: the SLM
        step for the first tier, the same solve-and-state-confidence step on a middle tier's
        backend, the LLM step for the last. For evaluation over N tiers (score each tier once,
        sweep τ vectors: :mod:`corea.eval.tiers`). Faults are recorded in
        ``ModelOutput.error``.

        Raises:
            IndexError: no tier ``k``.
            Cancelled: ``cancel`` was set.
        """
        if not 0 <= k < self.n_tiers:
            raise IndexError(f"tier {k}: the cascade has {self.n_tiers} tiers")
        if k == 0:
            return self.slm_output(question, choices, cancel)
        if k == self.n_tiers - 1:
            return self.llm_output(question, choices, cancel)
        backend = self.middle[k - 1]
        out = ModelOutput(model=backend.model_name)
        for _ in self._solve(backend, out, question, choices, cancel or threading.Event(),
                             self._tier_settings(k).generation_params(), self._mid_delta(k)):
            pass
        return out

    @staticmethod
    def _mid_delta(k: int):
        """The event factory of middle tier ``k``'s text: ``f(text, forced=False)``."""
        return lambda text, forced=False: TierDelta(k, text, forced)

    def llm_output(self, question: str, choices: Sequence[str] | None = None,
                   cancel: threading.Event | None = None) -> ModelOutput:
        """Run only the LLM step (same prompt and parsing as a deferral in :meth:`run`).

        Raises:
            Cancelled: ``cancel`` was set.
        """
        result = CascadeResult(question=question, threshold=0.0,
                               slm=ModelOutput(model=self.slm.model_name))
        for _ in self._run_llm(question, choices, cancel or threading.Event(), result):
            pass
        return result.llm

    # ----------------------------------------------------------------- helpers
    def _run(self, question: str, taus: list[float], choices: Sequence[str] | None,
             cancel: threading.Event, on_result, context: list[Message]) -> Iterator[Event]:
        t0 = time.perf_counter()
        tau = taus[0]
        result = CascadeResult(question=question, threshold=tau,
                               slm=ModelOutput(model=self.slm.model_name), context=context)
        first = TierStep(0, "slm", self.slm.model_name, result.slm, tau)
        result.tiers.append(first)
        reported = False

        def report(cancelled: bool) -> None:
            nonlocal reported
            if reported:
                return
            reported = True
            self._finish(result, t0, cancelled=cancelled)
            if on_result is not None:
                on_result(result)

        try:
            yield SLMStarted(self.slm.model_name)
            if self.settings.deferral_order == "confidence_first":
                decision = yield from self._confidence_first(question, choices, cancel, result,
                                                             tau, context)
                if decision is not None:  # deferred before solving
                    first.output = result.slm
                    self._set_decision(result, first, decision)
                    yield SLMDone(result.slm)
                    yield Decision(decision)
                    yield from self._later_tiers(question, choices, cancel, result, taus,
                                                 context, check_last=False)
                    report(cancelled=False)
                    yield Final(result)
                    return
            yield from self._run_slm(question, choices, cancel, result, context=context)
            if result.slm_prior is not None:
                self._add_prior_cost(result)
            yield SLMDone(result.slm)
            slm = result.slm
            to = self._words(1)
            if result.slm_prior is not None and slm.error is None:
                p = result.slm_prior
                decision = policy.decide(p.confidence, tau, "prior", slm.confidence, to=to)
                decision.message += " (stated before solving)"
            elif slm.error is not None:
                decision = policy.slm_failed(tau, slm.error.split(":", 1)[0], to=to)
            elif (why := policy.unusable(slm.answer, slm.finish_reason)) is not None:
                decision = policy.not_an_answer(tau, why, slm.confidence, "verbal",
                                                slm.confidence, to=to)
            else:
                conf, signal, note = self.deciding_confidence(slm)
                decision = policy.decide(conf, tau, signal, slm.confidence, to=to)
                decision.signal_note = note
            self._set_decision(result, first, decision)
            yield Decision(decision)
            if decision.defer:
                yield from self._later_tiers(question, choices, cancel, result, taus, context)
            report(cancelled=False)
            yield Final(result)
        except Cancelled:
            report(cancelled=True)
            yield Final(result)
        except GeneratorExit:  # the consumer closed the stream (e.g. the user pressed Stop)
            report(cancelled=True)
            raise

    def _later_tiers(self, question, choices, cancel, result: CascadeResult, taus: list[float],
                     context: list[Message], check_last: bool = True):
        """Tiers 1 … N-1 after the first deferred: each middle tier answers and decides with its
        own τ (:func:`corea.policy.decide`), a failed one is skipped with a warning; the last
        tier answers (checked for a cut-off or answerless answer when ``check_last``)."""
        last = self.n_tiers - 1
        for k in range(1, last):
            backend = self.middle[k - 1]
            out = ModelOutput(model=backend.model_name)
            step = TierStep(k, "mid", backend.model_name, out, taus[k])
            result.tiers.append(step)
            result.llm = out
            yield TierStarted(k, backend.model_name)
            yield from self._solve(backend, out, question, choices, cancel,
                                   self._tier_settings(k).generation_params(),
                                   self._mid_delta(k), context)
            yield TierDone(k, out)
            decision = self._decide_middle(k, out, taus[k])
            self._set_decision(result, step, decision)
            if out.error is not None:
                result.warnings.append(decision.message)
            yield Decision(decision, tier=k)
            if not decision.defer:
                return
        yield LLMStarted(self.llm.model_name, tier=last)
        yield from self._run_llm(question, choices, cancel, result, context)
        if check_last:
            self._check_llm(result)
        yield LLMDone(result.llm)

    def _decide_middle(self, k: int, out: ModelOutput, tau: float) -> DecisionInfo:
        """Middle tier ``k``'s decision: skipped when it failed, deferred when its output is no
        answer, else its deciding signal (``verbal`` or ``tokprob``, per its tier settings)
        against τ — the same :mod:`corea.policy` rules as the first tier's."""
        who, to = self._words(k), self._words(k + 1)
        if out.error is not None:
            return policy.slm_failed(tau, out.error.split(":", 1)[0], who=who, to=to)
        if (why := policy.unusable(out.answer, out.finish_reason)) is not None:
            return policy.not_an_answer(tau, why, out.confidence, "verbal", out.confidence,
                                        who=who, to=to)
        sources = self.settings.tier_sources()
        want = sources[k - 1] if len(sources) == self.n_tiers - 2 else "verbal"
        note = None
        conf, signal = out.confidence, "verbal"
        if want == "tokprob":
            prob = (out.signals or {}).get("solution_prob")
            if prob is not None:
                conf, signal = prob, "tokprob"
            else:
                note = ("tokprob requested but the engine returned no token log-probabilities; "
                        "verbal used")
        decision = policy.decide(conf, tau, signal, out.confidence, who=who, to=to)
        decision.signal_note = note
        return decision

    @staticmethod
    def _stream(chunks, out: ModelOutput, t_start: float, cancel: threading.Event, make_event,
                tokens: list | None = None, states: dict | None = None):
        """Drain one backend stream into ``out``; yields events; returns (text, usage, finish).

        The chunks' ``(token, logprob)`` pairs are appended to ``tokens`` when given, and their
        hidden states (:attr:`corea.backends.base.Chunk.states`) merged into ``states``."""
        parts: list[str] = []
        usage = None
        finish = None
        n_chunks = 0
        announced = 0  # prompt tokens the engine announced before generating
        try:
            for ch in chunks:
                if cancel.is_set():
                    raise Cancelled()
                if tokens is not None and ch.logprobs:
                    tokens.extend(ch.logprobs)
                if states is not None and ch.states:
                    states.update(ch.states)
                if ch.prompt_tokens:
                    announced = ch.prompt_tokens
                if ch.text:
                    if out.ttft_s is None:
                        out.ttft_s = time.perf_counter() - t_start
                    parts.append(ch.text)
                    n_chunks += 1
                    out.text += ch.text
                    yield make_event(ch.text)
                if ch.usage is not None:
                    usage = ch.usage
                if ch.finish_reason is not None:
                    finish = ch.finish_reason
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            if usage is None:
                # stopped before the engine reported usage (cancel, fault): charge the prompt
                # the engine announced and count the streamed chunks (one token each on the
                # local engines) so the turn's cost is not lost
                out.prompt_tokens += announced
                out.completion_tokens += n_chunks
        return "".join(parts), usage, finish

    @staticmethod
    def _record(out: ModelOutput, text: str, usage, finish: str | None, choices) -> None:
        """Store a finished free completion's finish reason, token counts and parsed answer."""
        out.finish_reason = finish
        if usage is not None:
            out.prompt_tokens, out.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        answer = extract_answer(text, choices)
        if answer is not None:
            out.answer, out.answer_method = answer, "free"

    def _run_slm(self, question, choices, cancel, result: CascadeResult,
                 params: GenerationParams | None = None, context: Sequence[Message] = ()):
        yield from self._solve(self.slm, result.slm, question, choices, cancel,
                               params or self.settings.slm.generation_params(), SLMDelta,
                               context)

    def _solve(self, backend: Backend, out: ModelOutput, question, choices, cancel,
               params: GenerationParams, delta, context: Sequence[Message] = ()):
        """One deciding tier's step into ``out``: its solution with a stated confidence
        (:func:`corea.prompts.slm_messages`), parsed, completed by the forced suffix and the echo
        turn where needed, and its token-probability signals. ``delta(text, forced=False)``
        makes the streamed events. Faults are recorded in ``out.error``."""
        s = self.settings
        msgs: list[Message] = slm_messages(question, choices, context)
        t_start = time.perf_counter()
        tokens: list = []
        answer_tokens: list = []
        states: dict = {}
        try:
            text, usage, finish = yield from self._stream(
                backend.stream_chat(msgs, params), out, t_start, cancel, delta, tokens,
                states)
            out.states = hidden.encode_all(states)
            self._record(out, text, usage, finish, choices)
            conf = parse_confidence(text)
            scoped = bool(getattr(backend, "confidence_adapter", False))
            if scoped:
                yield from self._adapter_confidence(msgs, choices, cancel, out, t_start, finish,
                                                    answer_tokens, backend, delta)
            elif conf.value is not None and s.confidence_mode != "forced":
                out.confidence, out.confidence_method = conf.value, "free"
            else:
                out.confidence_note = conf.note
            need_answer = out.answer is None
            need_conf = out.confidence is None
            truncated = finish == "length"
            if scoped:
                pass  # the adapter stated the confidence (or said why not)
            elif truncated and s.confidence_mode != "free" and (need_answer or need_conf):
                # a cut-off solution is no answer (policy.unusable): eliciting an "answer" and a
                # confidence after it only produced fragments and made-up certainty
                out.confidence_note = (out.confidence_note or "missing") + \
                    "; not elicited: the solution was cut off at its token budget"
            elif s.confidence_mode != "free" and (need_answer or need_conf):
                yield from self._force(msgs, choices, cancel, out, t_start, need_answer,
                                       answer_tokens, backend, delta)
            if confidence_echoes_answer(out.answer, out.confidence):
                out.confidence_echo, out.confidence, out.confidence_method = \
                    out.confidence, None, None
                out.confidence_note = f"echo of the answer ({out.confidence_echo:g})"
                if s.confidence_mode != "free" and not truncated and not scoped:
                    yield from self._ask_confidence(question, choices, cancel, out, t_start,
                                                    backend, delta, context)
            out.signals = compute_signals(
                tokens, out.answer, finish,
                answer_tokens if out.answer_method == "forced" else None).as_dict()
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 — any engine fault defers, never crashes the run
            self._record_fault(out, exc)
        finally:
            self._close_output(out, t_start)

    def _adapter_confidence(self, msgs, choices, cancel, out: ModelOutput, t_start: float,
                            finish: str | None, answer_tokens: list, backend: Backend, delta):
        """The confidence of an SLM with a confidence-scoped adapter
        (:data:`corea.adapters.SCOPES`): its solution (the base model's, with a missing answer
        elicited by the forced ``"\n\nAnswer:"`` suffix as usual) without any confidence line
        the base wrote (:func:`corea.parsing.strip_confidence`), continued by the adapted model,
        which writes its own ``Confidence:`` line (``confidence_method`` ``"adapter"``: no text
        is forced). A solution cut off at its budget gets none (as without the adapter)."""
        if finish == "length":
            out.confidence, out.confidence_method = None, None
            out.confidence_note = "not stated: the solution was cut off at its token budget"
            return
        if out.answer is None:
            yield from self._force(msgs, choices, cancel, out, t_start, True, answer_tokens,
                                   backend, delta, confidence=False)
        prefix = strip_confidence(out.text, keep_answer=True)
        params = GenerationParams(max_new_tokens=max(16, self.settings.forced_max_new_tokens),
                                  temperature=0.0)
        known = out.prompt_tokens + out.completion_tokens
        cont, usage, _ = yield from self._stream(
            backend.state_confidence(msgs, prefix, params), ModelOutput(model=out.model),
            t_start, cancel, lambda t: delta(t, False))
        if usage is not None:  # the solution's tokens were cached: only the new ones are paid
            out.prompt_tokens += max(0, usage.prompt_tokens - known)
            out.completion_tokens += usage.completion_tokens
        out.text = prefix + cont
        parsed = parse_confidence(cont)
        if parsed.value is not None:
            out.confidence, out.confidence_method = parsed.value, "adapter"
            out.confidence_note = None
        else:
            out.confidence, out.confidence_method = None, None
            out.confidence_note = f"calibration adapter: {parsed.note}"

    def _ask_confidence(self, question, choices, cancel, out: ModelOutput, t_start: float,
                        backend: Backend | None = None, delta=SLMDelta,
                        context: Sequence[Message] = ()):
        """The stated confidence echoed the answer: ask for it again in a separate short turn
        that names the answer (:data:`corea.prompts.ASK_CONFIDENCE_PROMPT`), continued after
        ``"Confidence:"``. A reply that echoes again is discarded too. ``backend`` (default the
        SLM's) and ``delta`` are the tier's."""
        backend = backend or self.slm
        if not backend.supports_continuation:
            return
        msgs = ask_confidence_messages(question, choices, out.text, out.answer, context)
        params = GenerationParams(max_new_tokens=self.settings.forced_max_new_tokens,
                                  temperature=0.0, stop=("\n",))
        text, usage, _ = yield from self._stream(
            backend.continue_chat(msgs, PRIOR_PREFIX, params), ModelOutput(model=out.model),
            t_start, cancel, lambda t: delta(t, True))
        if usage is not None:
            out.prompt_tokens += usage.prompt_tokens
            out.completion_tokens += usage.completion_tokens
        parsed = parse_confidence_value(text)
        if parsed.value is None:
            out.confidence_note += f"; asked again: {parsed.note}"
        elif confidence_echoes_answer(out.answer, parsed.value):
            out.confidence_note += f"; asked again: echo again ({parsed.value:g})"
        else:
            out.confidence, out.confidence_method = parsed.value, "asked"

    def _force(self, msgs, choices, cancel, out: ModelOutput, t_start: float, need_answer: bool,
               answer_tokens: list | None = None, backend: Backend | None = None,
               delta=SLMDelta, confidence: bool = True):
        """Forced-suffix elicitation: continue the SLM's own completion after a suffix.

        The ``Answer:`` continuation's ``(token, logprob)`` pairs go to ``answer_tokens``;
        ``confidence=False`` elicits only the answer.
        ``backend`` (default the SLM's) and ``delta`` are the tier's."""
        backend = backend or self.slm
        if not backend.supports_continuation:
            if out.confidence is None:
                out.confidence_note = (out.confidence_note or "missing") + \
                    "; the SLM backend cannot continue a prefix, so no forced suffix"
            return
        s = self.settings
        params = GenerationParams(max_new_tokens=s.forced_max_new_tokens, temperature=0.0,
                                  stop=("\n",))
        prefix = out.text
        steps = ([ANSWER_SUFFIX] if need_answer else []) + ([CONFIDENCE_SUFFIX] if confidence
                                                             else [])
        for suffix in steps:
            if suffix == CONFIDENCE_SUFFIX and out.confidence is not None:
                break
            out.text += suffix
            yield delta(suffix, True)
            prefix += suffix
            known = out.prompt_tokens + out.completion_tokens
            cont, usage, _ = yield from self._stream(
                backend.continue_chat(msgs, prefix, params), out, t_start, cancel,
                lambda t: delta(t, True),
                answer_tokens if suffix == ANSWER_SUFFIX else None)
            prefix += cont
            if usage is not None:
                # with a KV-cached engine only the suffix is new input; the prefix was already paid
                out.prompt_tokens += max(0, usage.prompt_tokens - known)
                out.completion_tokens += usage.completion_tokens
            if suffix == ANSWER_SUFFIX:
                ans = extract_answer("Answer:" + cont, choices)
                if ans is not None:
                    out.answer, out.answer_method = ans, "forced"
            else:
                parsed = parse_confidence_value(cont)
                if parsed.value is not None:
                    out.confidence, out.confidence_method = parsed.value, "forced"
                    out.confidence_note = None
                else:
                    out.confidence_note = f"forced suffix: {parsed.note}"

    def _run_llm(self, question, choices, cancel, result: CascadeResult,
                 context: Sequence[Message] = ()):
        s = self.settings
        out = ModelOutput(model=self.llm.model_name)
        prev = result.tiers[-1] if result.tiers else None  # the tier that deferred here
        result.llm = out
        if result.tiers:
            result.tiers.append(TierStep(self.n_tiers - 1, "llm", out.model, out))
        t_start = time.perf_counter()
        try:
            text, usage, finish = yield from self._stream(
                self.llm.stream_chat(llm_messages(question, choices, context),
                                     s.llm.generation_params()),
                out, t_start, cancel, LLMDelta)
            self._record(out, text, usage, finish, choices)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 — any engine fault falls back to the SLM's answer
            kind = self._record_fault(out, exc)
            if prev is not None and prev.decision is not None:
                shown_step = self._fallback_step(result)
                who = None if shown_step is None else self._words(shown_step.index)
                info = policy.llm_failed(prev.decision, kind, who=who,
                                         to=self._words(self.n_tiers - 1))
                self._set_decision(result, prev, info)
                result.warnings.append(info.message)
        finally:
            self._close_output(out, t_start)

    @staticmethod
    def _fallback_step(result: CascadeResult) -> TierStep | None:
        """The latest tier before the last one that ran whose output is a usable answer (no
        error, not cut off, parsed): what is shown when the last tier fails."""
        for step in reversed(result.tiers[:-1]):
            o = step.output
            if o.error is None and policy.unusable(o.answer, o.finish_reason) is None:
                return step
        return None

    def _prior(self, question, choices, cancel, result: CascadeResult,
               context: Sequence[Message] = ()):
        """The confidence-first turn into ``result.slm_prior`` (streamed as forced SLM text)."""
        s = self.settings
        out = ModelOutput(model=self.slm.model_name)
        result.slm_prior = out
        msgs = prior_messages(question, choices, context)
        params = GenerationParams(max_new_tokens=s.forced_max_new_tokens, temperature=0.0,
                                  stop=("\n",))
        t_start = time.perf_counter()
        try:
            if self.slm.supports_continuation:
                out.text = PRIOR_PREFIX
                yield SLMDelta(PRIOR_PREFIX, forced=True)
                stream = self.slm.continue_chat(msgs, PRIOR_PREFIX, params)
            else:
                stream = self.slm.stream_chat(msgs, params)
            text, usage, finish = yield from self._stream(
                stream, out, t_start, cancel, lambda t: SLMDelta(t, forced=True))
            out.finish_reason = finish
            if usage is not None:
                out.prompt_tokens, out.completion_tokens = usage.prompt_tokens, \
                    usage.completion_tokens
            parsed = parse_confidence_value(text) if self.slm.supports_continuation \
                else parse_confidence(text)
            if parsed.value is not None:
                out.confidence, out.confidence_method = parsed.value, "prior"
            else:
                out.confidence_note = parsed.note
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 — a failed prior turn defers, like a failed SLM
            self._record_fault(out, exc)
        finally:
            self._close_output(out, t_start)

    @staticmethod
    def _record_fault(out: ModelOutput, exc: Exception) -> str:
        """Mark ``out`` as failed by ``exc``; returns the error kind (``BackendError.kind``)."""
        kind = exc.kind if isinstance(exc, BackendError) else "internal"
        out.error = f"{kind}: {exc}"
        out.finish_reason = "error"
        return kind

    def _close_output(self, out: ModelOutput, t_start: float) -> None:
        """Set ``out``'s latency (s since ``t_start``) and its cost (USD) from its tokens."""
        out.latency_s = time.perf_counter() - t_start
        out.cost_usd = cost_usd(out.model, out.prompt_tokens, out.completion_tokens,
                                self.settings.prices)

    def _confidence_first(self, question, choices, cancel, result: CascadeResult, tau: float,
                          context: Sequence[Message] = ()):
        """Run the prior turn; returns the deferral decision, or None to let the SLM solve."""
        yield from self._prior(question, choices, cancel, result, context)
        p = result.slm_prior
        to = self._words(1)
        if p.error is not None:
            decision = policy.slm_failed(tau, p.error.split(":", 1)[0], to=to)
        else:
            decision = policy.decide(p.confidence, tau, "prior", to=to)
            decision.message += " (stated before solving)"
            if not decision.defer:
                yield SLMDelta("\n\n", forced=True)
                return None
        # deferred before solving: the prior turn is the SLM's whole output
        result.slm = ModelOutput(model=p.model, text=p.text, confidence=p.confidence,
                                 confidence_method=p.confidence_method,
                                 confidence_note=p.confidence_note,
                                 prompt_tokens=p.prompt_tokens,
                                 completion_tokens=p.completion_tokens, latency_s=p.latency_s,
                                 ttft_s=p.ttft_s, finish_reason=p.finish_reason,
                                 cost_usd=p.cost_usd, error=p.error)
        return decision

    @staticmethod
    def _add_prior_cost(result: CascadeResult) -> None:
        p, out = result.slm_prior, result.slm
        out.prompt_tokens += p.prompt_tokens
        out.completion_tokens += p.completion_tokens
        out.cost_usd += p.cost_usd
        out.latency_s += p.latency_s
        out.text = p.text + "\n\n" + out.text

    def _check_llm(self, result: CascadeResult) -> None:
        """An LLM answer cut off at its budget or without a parsable answer is not final: the
        decision of the tier that deferred to it says so, and the latest earlier usable answer
        (the SLM's, with two tiers) is shown when there is one."""
        llm = result.llm
        if llm is None or llm.error is not None or result.decision is None \
                or len(result.tiers) < 2:
            return
        why = policy.unusable(llm.answer, llm.finish_reason)
        if why is None:
            return
        prev = result.tiers[-2]
        shown_step = self._fallback_step(result)
        who = self._words(shown_step.index if shown_step is not None else prev.index)
        info = policy.llm_unusable(prev.decision, f"llm_{why}", shown_step is not None,
                                   who=who, to=self._words(self.n_tiers - 1))
        self._set_decision(result, prev, info)
        result.warnings.append(info.message)

    @staticmethod
    def _finish(result: CascadeResult, t0: float, cancelled: bool = False) -> None:
        """Totals, the final answer and the status of a finished (or stopped) run.

        The final answer is the last tier that ran, when it is usable: the last tier's answer
        unless it failed, was stopped or was replaced for being cut off / answerless; a deciding
        tier's answer when it was kept (or the run stopped before it decided). Otherwise the
        latest earlier tier with a usable answer; a cut-off or answerless output is never shown
        as a final answer of a deferral."""
        steps = result.tier_steps()
        result.latency_s = time.perf_counter() - t0
        result.cost_usd = sum(st.output.cost_usd for st in steps)
        fallback_reasons = ("llm_truncated", "llm_no_answer")
        src: TierStep | None = None
        for i in range(len(steps) - 1, -1, -1):
            st, o = steps[i], steps[i].output
            usable = o.error is None and policy.unusable(o.answer, o.finish_reason) is None
            if i < len(steps) - 1:
                ok = usable
            elif st.role == "llm":
                prev = steps[i - 1].decision if i > 0 else None
                fell_back = prev is not None and prev.reason in fallback_reasons
                ok = o.error is None and not cancelled and not fell_back
            else:
                deferred = st.decision is not None and st.decision.defer
                ok = o.error is None and (usable or not deferred)
            if ok:
                src = st
                break
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
