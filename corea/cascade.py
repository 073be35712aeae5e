"""The COREA cascade: the SLM answers with a verbalized confidence; below τ the LLM answers instead.

(About 600 lines: one class whose steps — the SLM's solution, its forced suffix, the echo turn,
self-verification, the deciding signal, the LLM, faults and the final answer — share one streamed
state per question; :mod:`corea.policy` holds the rules they apply.)

One entry point, :meth:`Cascade.run`, streams typed events (:mod:`corea.events`). The app, the CLI
and the evaluation harness all go through it.

Flow for one question (COREA paper, §3):

1. The SLM reasons step by step and ends with ``\\boxed{answer}`` and ``Confidence: c``
   (:mod:`corea.prompts`). Its text streams as :class:`~corea.events.SLMDelta` events.
2. Answer and confidence are parsed from what it wrote ("free"). In ``auto`` mode, whatever is
   missing is elicited with the forced suffix: the SLM's own completion plus ``"\\n\\nAnswer:"``
   and/or ``"\\nConfidence:"`` is continued by the same model for a few tokens ("forced").
3. :func:`corea.policy.decide` keeps the answer iff ``c ≥ τ``; otherwise (or with no confidence)
   the LLM answers, streamed as :class:`~corea.events.LLMDelta` events. ``c`` is the verbalized
   confidence, or — per ``settings.confidence_source`` — the token-probability signal or a fitted
   calibrator's P(correct) (:meth:`Cascade.deciding_confidence`). With
   ``settings.deferral_order == "confidence_first"`` the SLM first states its confidence in a short
   turn and a deferral happens before it solves (the LLM then answers alone).
4. A :class:`~corea.events.Final` event carries the complete :class:`~corea.events.CascadeResult`.

Faults never raise out of :meth:`Cascade.run`: an SLM failure defers to the LLM (``slm_error``);
an LLM failure falls back to the SLM's answer with a warning (``llm_error``).
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
from .events import (CascadeResult, Decision, Event, Final, LLMDelta, LLMDone, LLMStarted,
                     ModelOutput, SLMDelta, SLMDone, SLMStarted)
from .parsing import (confidence_echoes_answer, extract_answer, parse_confidence,
                      parse_confidence_value)
from .signals import compute_signals
from .prompts import (ANSWER_SUFFIX, CONFIDENCE_SUFFIX, PRIOR_PREFIX, VERIFY_CANDIDATES,
                      ask_confidence_messages, llm_messages, prior_messages, slm_messages,
                      verify_messages)
from .validation import validate_question


class Cancelled(Exception):
    """Raised inside a run when its cancel event is set."""


class Cascade:
    """SLM → LLM cascade over two backends.

    Args:
        slm: the small model's backend.
        llm: the large model's backend.
        settings: thresholds, generation budgets, confidence mode and prices.
    """

    def __init__(self, slm: Backend, llm: Backend, settings: Settings, calibrator=None,
                 probe=None):
        self.slm = slm
        self.llm = llm
        self.settings = settings
        self.calibrator = calibrator  # a corea.calibrator.Calibrator for this SLM, or None
        self.probe = probe  # a corea.probe.LinearProbe on the SLM's end-of-solution state, or None

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
            bool((out.states or {}).get("end"))

        def calibrated() -> tuple[float | None, str, str | None]:
            try:
                return cal.predict_one(out_d), "calibrated", None
            except Exception as exc:  # noqa: BLE001 — a broken calibrator must not stop answers
                return out.confidence, "verbal", f"the calibrator failed ({exc}); verbal used"

        def probed() -> tuple[float | None, str, str | None]:
            try:
                return probe.confidence_of(out.states), "probe", None
            except Exception as exc:  # noqa: BLE001 — a broken probe must not stop answers
                return out.confidence, "verbal", f"the probe failed ({exc}); verbal used"

        if want == "auto":
            options = []
            if probe_ok and probe.card.beats_verbal():
                options.append((probe.card.cv.get("auroc") or 0.0, 1, probed))
            if cal is not None and cal.card.beats_verbal() and has_token_signals(out_d):
                options.append((cal.card.held_out.get("auroc") or 0.0, 0, calibrated))
            if options:
                return max(options, key=lambda o: (o[0], o[1]))[2]()
            return out.confidence, "verbal", None
        if want == "verbal":
            return out.confidence, "verbal", None
        if want == "probe":
            if probe_ok:
                return probed()
            why = ("no probe is available for this SLM" if probe is None else
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
    def run(self, question: str, threshold: float | None = None,
            choices: Sequence[str] | None = None, cancel: threading.Event | None = None,
            on_result: Callable[[CascadeResult], None] | None = None) -> Iterator[Event]:
        """Answer one question, streaming events.

        Args:
            question: the user's question (validated with :func:`corea.validation.validate_question`).
            threshold: τ in [0, 1]; defaults to ``settings.threshold``.
            choices: option texts for a multiple-choice question (answers are then letters).
            cancel: set it from another thread to stop generation; the run ends with status
                ``cancelled``.
            on_result: called exactly once with the final :class:`CascadeResult` — also when the
                run is cancelled or the consumer closes the iterator early (status ``cancelled``).
                Used to log every interaction.

        Yields:
            :data:`corea.events.Event` objects in the order documented in :mod:`corea.events`.

        Raises:
            corea.validation.InvalidQuestion: bad question (raised before any event).
            ValueError: threshold outside [0, 1].
        """
        question = validate_question(question, self.settings.max_question_chars)
        tau = self.settings.threshold if threshold is None else float(threshold)
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {tau}")
        return self._run(question, tau, choices, cancel or threading.Event(), on_result)

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
    def _run(self, question: str, tau: float, choices: Sequence[str] | None,
             cancel: threading.Event, on_result) -> Iterator[Event]:
        t0 = time.perf_counter()
        result = CascadeResult(question=question, threshold=tau,
                               slm=ModelOutput(model=self.slm.model_name))
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
                                                             tau)
                if decision is not None:  # deferred before solving
                    result.decision = decision
                    yield SLMDone(result.slm)
                    yield Decision(decision)
                    yield LLMStarted(self.llm.model_name)
                    yield from self._run_llm(question, choices, cancel, result)
                    yield LLMDone(result.llm)
                    report(cancelled=False)
                    yield Final(result)
                    return
            yield from self._run_slm(question, choices, cancel, result)
            if result.slm_prior is not None:
                self._add_prior_cost(result)
            yield SLMDone(result.slm)
            slm = result.slm
            if result.slm_prior is not None and slm.error is None:
                p = result.slm_prior
                decision = policy.decide(p.confidence, tau, "prior", slm.confidence)
                decision.message += " (stated before solving)"
            elif slm.error is not None:
                decision = policy.slm_failed(tau, slm.error.split(":", 1)[0])
            elif (why := policy.unusable(slm.answer, slm.finish_reason)) is not None:
                decision = policy.not_an_answer(tau, why, slm.confidence, "verbal",
                                                slm.confidence)
            else:
                conf, signal, note = self.deciding_confidence(slm)
                decision = policy.decide(conf, tau, signal, slm.confidence)
                decision.signal_note = note
            result.decision = decision
            yield Decision(decision)
            if decision.defer:
                yield LLMStarted(self.llm.model_name)
                yield from self._run_llm(question, choices, cancel, result)
                self._check_llm(result)
                yield LLMDone(result.llm)
            report(cancelled=False)
            yield Final(result)
        except Cancelled:
            report(cancelled=True)
            yield Final(result)
        except GeneratorExit:  # the consumer closed the stream (e.g. the user pressed Stop)
            report(cancelled=True)
            raise

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
                 params: GenerationParams | None = None):
        s = self.settings
        out = result.slm
        msgs: list[Message] = slm_messages(question, choices)
        params = params or s.slm.generation_params()
        t_start = time.perf_counter()
        tokens: list = []
        answer_tokens: list = []
        states: dict = {}
        try:
            text, usage, finish = yield from self._stream(
                self.slm.stream_chat(msgs, params), out, t_start, cancel, SLMDelta, tokens,
                states)
            out.states = hidden.encode_all(states)
            self._record(out, text, usage, finish, choices)
            conf = parse_confidence(text)
            if conf.value is not None and s.confidence_mode != "forced":
                out.confidence, out.confidence_method = conf.value, "free"
            else:
                out.confidence_note = conf.note
            need_answer = out.answer is None
            need_conf = out.confidence is None
            truncated = finish == "length"
            if truncated and s.confidence_mode != "free" and (need_answer or need_conf):
                # a cut-off solution is no answer (policy.unusable): eliciting an "answer" and a
                # confidence after it only produced fragments and made-up certainty
                out.confidence_note = (out.confidence_note or "missing") + \
                    "; not elicited: the solution was cut off at its token budget"
            elif s.confidence_mode != "free" and (need_answer or need_conf):
                yield from self._force(msgs, choices, cancel, out, t_start, need_answer,
                                       answer_tokens)
            if confidence_echoes_answer(out.answer, out.confidence):
                out.confidence_echo, out.confidence, out.confidence_method = \
                    out.confidence, None, None
                out.confidence_note = f"echo of the answer ({out.confidence_echo:g})"
                if s.confidence_mode != "free" and not truncated:
                    yield from self._ask_confidence(question, choices, cancel, out, t_start)
            out.signals = compute_signals(
                tokens, out.answer, finish,
                answer_tokens if out.answer_method == "forced" else None).as_dict()
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 — any engine fault defers, never crashes the run
            self._record_fault(out, exc)
        finally:
            self._close_output(out, t_start)

    def _ask_confidence(self, question, choices, cancel, out: ModelOutput, t_start: float):
        """The stated confidence echoed the answer: ask for it again in a separate short turn
        that names the answer (:data:`corea.prompts.ASK_CONFIDENCE_PROMPT`), continued after
        ``"Confidence:"``. A reply that echoes again is discarded too."""
        if not self.slm.supports_continuation:
            return
        msgs = ask_confidence_messages(question, choices, out.text, out.answer)
        params = GenerationParams(max_new_tokens=self.settings.forced_max_new_tokens,
                                  temperature=0.0, stop=("\n",))
        text, usage, _ = yield from self._stream(
            self.slm.continue_chat(msgs, PRIOR_PREFIX, params), ModelOutput(model=out.model),
            t_start, cancel, lambda t: SLMDelta(t, forced=True))
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
               answer_tokens: list | None = None):
        """Forced-suffix elicitation: continue the SLM's own completion after a suffix.

        The ``Answer:`` continuation's ``(token, logprob)`` pairs go to ``answer_tokens``."""
        if not self.slm.supports_continuation:
            if out.confidence is None:
                out.confidence_note = (out.confidence_note or "missing") + \
                    "; the SLM backend cannot continue a prefix, so no forced suffix"
            return
        s = self.settings
        params = GenerationParams(max_new_tokens=s.forced_max_new_tokens, temperature=0.0,
                                  stop=("\n",))
        prefix = out.text
        steps = ([ANSWER_SUFFIX] if need_answer else []) + [CONFIDENCE_SUFFIX]
        for suffix in steps:
            if suffix == CONFIDENCE_SUFFIX and out.confidence is not None:
                break
            out.text += suffix
            yield SLMDelta(suffix, forced=True)
            prefix += suffix
            known = out.prompt_tokens + out.completion_tokens
            cont, usage, _ = yield from self._stream(
                self.slm.continue_chat(msgs, prefix, params), out, t_start, cancel,
                lambda t: SLMDelta(t, forced=True),
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

    def _run_llm(self, question, choices, cancel, result: CascadeResult):
        s = self.settings
        out = ModelOutput(model=self.llm.model_name)
        result.llm = out
        t_start = time.perf_counter()
        try:
            text, usage, finish = yield from self._stream(
                self.llm.stream_chat(llm_messages(question, choices), s.llm.generation_params()),
                out, t_start, cancel, LLMDelta)
            self._record(out, text, usage, finish, choices)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 — any engine fault falls back to the SLM's answer
            kind = self._record_fault(out, exc)
            if result.decision is not None:
                result.decision = policy.llm_failed(result.decision, kind)
                result.warnings.append(result.decision.message)
        finally:
            self._close_output(out, t_start)

    def _prior(self, question, choices, cancel, result: CascadeResult):
        """The confidence-first turn into ``result.slm_prior`` (streamed as forced SLM text)."""
        s = self.settings
        out = ModelOutput(model=self.slm.model_name)
        result.slm_prior = out
        msgs = prior_messages(question, choices)
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

    def _confidence_first(self, question, choices, cancel, result: CascadeResult, tau: float):
        """Run the prior turn; returns the deferral decision, or None to let the SLM solve."""
        yield from self._prior(question, choices, cancel, result)
        p = result.slm_prior
        if p.error is not None:
            decision = policy.slm_failed(tau, p.error.split(":", 1)[0])
        else:
            decision = policy.decide(p.confidence, tau, "prior")
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

    @staticmethod
    def _check_llm(result: CascadeResult) -> None:
        """An LLM answer cut off at its budget or without a parsable answer is not final: the
        decision says so and the SLM's answer is shown when it has a usable one."""
        llm = result.llm
        if llm is None or llm.error is not None or result.decision is None:
            return
        why = policy.unusable(llm.answer, llm.finish_reason)
        if why is None:
            return
        slm_ok = result.slm.error is None and \
            policy.unusable(result.slm.answer, result.slm.finish_reason) is None
        result.decision = policy.llm_unusable(result.decision, f"llm_{why}", slm_ok)
        result.warnings.append(result.decision.message)

    @staticmethod
    def _finish(result: CascadeResult, t0: float, cancelled: bool = False) -> None:
        result.latency_s = time.perf_counter() - t0
        result.cost_usd = result.slm.cost_usd + (result.llm.cost_usd if result.llm else 0.0)
        llm_fell_back = result.decision is not None and \
            result.decision.reason in ("llm_truncated", "llm_no_answer")
        llm_ok = result.llm is not None and result.llm.error is None and not cancelled \
            and not llm_fell_back
        slm = result.slm
        slm_usable = slm.error is None and policy.unusable(slm.answer, slm.finish_reason) is None
        deferred = result.decision is not None and result.decision.defer
        if llm_ok:
            src = result.llm
        elif slm.error is None and (slm_usable or not deferred):
            src = slm  # kept, or the LLM failed / was unusable and the SLM has an answer
        else:
            src = None  # never show a cut-off or answerless SLM output as the final answer
        if src is not None:
            result.final_answer, result.final_model, result.final_text = src.answer, src.model, src.text
        if cancelled:
            result.status = "cancelled"
        elif result.slm.error is not None and (result.llm is None or result.llm.error is not None):
            result.status = "error"


