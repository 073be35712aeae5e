"""One tier's step: its solution streamed into a :class:`~corea.events.ModelOutput`, with what a
deciding tier adds to it — the forced suffix, the echo re-ask and the calibration adapter's
confidence line — and the optional confidence-first turn.

Shapes: every step is a generator that yields :class:`~corea.events.TierDelta` events (the
tier's index and role; ``forced=True`` for text COREA elicited) and fills the output it is
given: text, answer and ``answer_method``, confidence in [0, 1] and ``confidence_method``,
tokens (tokens), latency (seconds), cost (USD), token-probability ``signals`` and hidden
``states``. Engine faults are recorded in ``output.error`` and never raised; only
:class:`~corea.cascade.stream.Cancelled` leaves a step.

**How a tier solves** is one function per mode in :data:`corea.cascade.solvers.SOLVERS`,
chosen by ``TierOptions.solve``. ``cot`` (:func:`solve_cot`, the paper's, here): the model
reasons step by step and ends with ``\\boxed{answer}``; a deciding tier also ends with
``Confidence: c`` (:func:`corea.prompts.slm_messages`) and is stopped once it has written them
(:mod:`corea.stopping`), the last tier only answers
(:func:`corea.prompts.llm_messages`). ``pot`` and ``mot`` (a program run in the sandbox, and
both) are :mod:`corea.cascade.program`'s; they use the confidence helpers here with
``program=True`` (no forced ``Answer:``: a program's answer is what it printed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence

from .. import policy
from ..config import Settings
from ..events import ModelOutput, TierDelta
from ..parsing import (confidence_echoes_answer, extract_answer, parse_confidence,
                       parse_confidence_value, strip_confidence)
from ..prompts import (ANSWER_SUFFIX, CONFIDENCE_SUFFIX, PRIOR_PREFIX, ask_confidence_messages,
                       llm_messages, prior_messages, slm_messages)
from ..signals import hidden
from ..signals.tokens import compute_signals
from ..signals.stated import TOP_LOGPROBS, DigitReading, read_digits
from ..stopping import stop_when_answered
from ..types import GenerationParams, Message
from .early_exit import ExitWatch, exit_early
from .plan import TierPlan
from .stream import Cancelled, add_usage, close_output, drain, record_fault, record_free


@dataclass
class TierTask:
    """One tier's step on one question: the plan row and what the question brings.

    ``context``: earlier turns, put into the tier's chat before the question. ``exit_watch``:
    what the tier's early exit saw in its decode (:class:`corea.cascade.early_exit.ExitWatch`),
    set by :func:`solve_cot` when the tier has one."""

    plan: TierPlan
    settings: Settings
    cancel: threading.Event
    question: str
    choices: Sequence[str] | None = None
    context: Sequence[Message] = ()
    exit_watch: ExitWatch | None = None

    def delta(self, text: str, forced: bool = False) -> TierDelta:
        """The event of new text of this tier."""
        return TierDelta(self.plan.index, text, forced, self.plan.role)

    def forced_params(self, stop: bool = True, top: bool = False) -> GenerationParams:
        """Greedy settings of a short elicitation (``settings.forced_max_new_tokens`` tokens,
        stopping at a newline); ``top``: with :data:`corea.signals.stated.TOP_LOGPROBS` alternatives per
        token (a confidence line, read as a distribution)."""
        return GenerationParams(max_new_tokens=self.settings.forced_max_new_tokens,
                                temperature=0.0, stop=("\n",) if stop else (),
                                top_logprobs=TOP_LOGPROBS if top else 0)


def set_reading(out: ModelOutput, reading: DigitReading | None) -> None:
    """Record the stated confidence's digit distribution (:mod:`corea.signals.stated`) in ``out``:
    ``confidence_expected``, ``confidence_spread`` (rounded to 4 places) and
    ``confidence_digits``; all ``None`` without a reading."""
    out.confidence_expected = None if reading is None else round(reading.expected, 4)
    out.confidence_spread = None if reading is None else round(reading.spread, 4)
    out.confidence_digits = None if reading is None else reading.n_digits


def solve_cot(task: TierTask, out: ModelOutput, params: GenerationParams):
    """``cot``: the tier reasons in text. The last tier's answer is parsed; a deciding tier's
    solution is completed by :func:`complete_deciding` (its confidence, forced elicitation, echo
    re-ask) and gets its token-probability signals and hidden states. Faults are recorded in
    ``out.error``."""
    t_start = time.perf_counter()
    last = task.plan.last
    msgs = (llm_messages if last else slm_messages)(task.question, task.choices, task.context)
    tokens: list = []
    answer_tokens: list = []
    states: dict = {}
    ee = task.plan.options.early_exit
    # τ 0 keeps every usable answer (as for routing): never stopped early
    watch = task.exit_watch = ExitWatch(ee) if ee is not None and not last \
        and task.plan.threshold else None
    try:
        stream = task.plan.backend.stream_chat(msgs, params)
        if watch is not None:  # stopped while it writes when its state predicts failure
            stream = exit_early(stream, watch)
        if not last:  # a deciding tier stops once it has answered (corea.stopping)
            stream = stop_when_answered(stream, task.choices)
        text, usage, finish = yield from drain(
            stream, out, t_start, task.cancel, task.delta,
            None if last else tokens, None if last else states)
        record_free(out, text, usage, finish, task.choices)
        if not last:
            out.states = hidden.encode_all(states)
            if watch is None or not watch.fired:
                yield from complete_deciding(task, out, msgs, text, finish, t_start,
                                             answer_tokens)
            else:  # stopped early: a number boxed so far is no final answer, nothing to elicit
                out.answer = out.answer_method = None
            out.signals = compute_signals(
                tokens, out.answer, finish,
                answer_tokens if out.answer_method == "forced" else None).as_dict()
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 — any engine fault is recorded, never crashes a run
        record_fault(out, exc)
    finally:
        close_output(out, t_start, task.settings.prices)


def complete_deciding(task: TierTask, out: ModelOutput, msgs, text: str, finish: str | None,
                      t_start: float, answer_tokens: list, program: bool = False):
    """A deciding tier's confidence after its free solution ``text``: the stated one (unless
    ``settings.confidence_mode`` is ``forced``) or the calibration adapter's line, and what
    :func:`corea.policy.needs_forcing` says is missing elicited by the forced suffix (nothing
    after a solution cut off at its budget); a confidence that echoes the answer is discarded
    and asked again in a separate turn.

    ``program``: the solution is a program (``pot``): ``text`` is the reply after the program
    (where its ``Confidence:`` line is), an answer is never forced (a failed program stays no
    answer), the re-ask turn uses the program-of-thought prompt, and a calibration adapter is
    not used (it was trained after chain-of-thought solutions; after a program it writes an
    output block, not a confidence line): the stated line or the forced suffix decides."""
    mode = task.settings.confidence_mode
    conf = parse_confidence(text)
    scoped = task.plan.adapter and not program
    truncated = finish == "length"
    if not scoped and conf.value is not None and mode != "forced":
        out.confidence, out.confidence_method = conf.value, "free"
    elif not scoped:
        out.confidence_note = conf.note
    suffixes = policy.needs_forcing(program or out.answer is not None, conf.value is not None,
                                    finish, mode, scoped)
    if scoped:  # the adapter states the confidence (or says why not)
        yield from adapter_confidence(task, out, msgs, finish, t_start, answer_tokens, suffixes)
    elif suffixes:
        yield from force(task, out, msgs, t_start, suffixes, answer_tokens)
        if program and out.confidence is None and out.answer is not None and mode != "free":
            # after a program the forced line is often prose ("Confidence: The program ..."):
            # ask in a separate short turn that names the answer, as for an echo
            yield from ask_confidence(task, out, t_start, program)
            return
    elif truncated and mode != "free" and (out.answer is None or out.confidence is None):
        out.confidence_note = (out.confidence_note or "missing") + \
            "; not elicited: the solution was cut off at its token budget"
    if confidence_echoes_answer(out.answer, out.confidence):
        out.confidence_echo, out.confidence, out.confidence_method = out.confidence, None, None
        set_reading(out, None)
        out.confidence_note = f"echo of the answer ({out.confidence_echo:g})"
        if mode != "free" and not truncated and not scoped:
            yield from ask_confidence(task, out, t_start, program)


#: the forced suffix of each thing :func:`corea.policy.needs_forcing` names
SUFFIXES = {policy.ANSWER: ANSWER_SUFFIX, policy.CONFIDENCE: CONFIDENCE_SUFFIX}


def force(task: TierTask, out: ModelOutput, msgs, t_start: float, suffixes: Sequence[str],
          answer_tokens: list | None = None):
    """Forced-suffix elicitation of ``suffixes`` (:data:`corea.policy.ANSWER` /
    :data:`~corea.policy.CONFIDENCE`, in order): the tier's own completion is continued after
    ``"\n\nAnswer:"`` / ``"\nConfidence:"``, greedily, a few tokens each. The ``Answer:``
    continuation's ``(token, logprob)`` pairs go to ``answer_tokens``."""
    backend = task.plan.backend
    if not backend.supports_continuation:
        if out.confidence is None:
            out.confidence_note = (out.confidence_note or "missing") + \
                "; the SLM backend cannot continue a prefix, so no forced suffix"
        return
    prefix = out.text
    for suffix in (SUFFIXES[what] for what in suffixes):
        out.text += suffix
        yield task.delta(suffix, True)
        prefix += suffix
        known = out.prompt_tokens + out.completion_tokens
        is_answer = suffix == ANSWER_SUFFIX
        conf_tokens: list = []
        top: list = []
        cont, usage, _ = yield from drain(
            backend.continue_chat(msgs, prefix, task.forced_params(top=not is_answer)), out,
            t_start, task.cancel, lambda t: task.delta(t, True),
            answer_tokens if is_answer else conf_tokens, None, None if is_answer else top)
        prefix += cont
        add_usage(out, usage, known)  # with a KV cache only the suffix is new input
        if suffix == ANSWER_SUFFIX:
            ans = extract_answer("Answer:" + cont, task.choices)
            if ans is not None:
                out.answer, out.answer_method = ans, "forced"
        else:
            parsed = parse_confidence_value(cont)
            if parsed.value is not None:
                out.confidence, out.confidence_method = parsed.value, "forced"
                out.confidence_note = None
                set_reading(out, read_digits(conf_tokens, top, suffix))
            else:
                out.confidence_note = f"forced suffix: {parsed.note}"


def ask_confidence(task: TierTask, out: ModelOutput, t_start: float, program: bool = False):
    """The stated confidence echoed the answer: ask for it again in a separate short turn that
    names the answer (:data:`corea.prompts.ASK_CONFIDENCE_PROMPT`), continued after
    ``"Confidence:"``; ``program``: after the program-of-thought chat. A reply that echoes again
    is discarded too."""
    backend = task.plan.backend
    if not backend.supports_continuation:
        return
    msgs = ask_confidence_messages(task.question, task.choices, out.text, out.answer, task.context,
                                   program=program)
    tokens: list = []
    top: list = []
    text, usage, _ = yield from drain(
        backend.continue_chat(msgs, PRIOR_PREFIX, task.forced_params(top=True)),
        ModelOutput(model=out.model), t_start, task.cancel, lambda t: task.delta(t, True),
        tokens, None, top)
    if usage is not None:
        out.prompt_tokens += usage.prompt_tokens
        out.completion_tokens += usage.completion_tokens
    parsed = parse_confidence_value(text)
    if parsed.value is None:
        out.confidence_note = (out.confidence_note or "missing") + f"; asked again: {parsed.note}"
    elif confidence_echoes_answer(out.answer, parsed.value):
        out.confidence_note = (out.confidence_note or "missing") + \
            f"; asked again: echo again ({parsed.value:g})"
    else:
        out.confidence, out.confidence_method = parsed.value, "asked"
        set_reading(out, read_digits(tokens, top, PRIOR_PREFIX))


def adapter_confidence(task: TierTask, out: ModelOutput, msgs, finish: str | None,
                       t_start: float, answer_tokens: list, suffixes: Sequence[str] = ()):
    """The confidence of a tier with a confidence-scoped adapter (:data:`corea.adapters.SCOPES`):
    its solution (the base model's, with a missing answer elicited by the forced
    ``"\\n\\nAnswer:"`` suffix as usual) without any confidence line the base wrote
    (:func:`corea.parsing.strip_confidence`), continued by the adapted model, which writes its
    own ``Confidence:`` line (``confidence_method`` ``"adapter"``: no text is forced). A solution
    cut off at its budget gets none (as without the adapter). ``suffixes``: what
    :func:`corea.policy.needs_forcing` elicits first (at most the answer)."""
    if finish == "length":
        out.confidence, out.confidence_method = None, None
        out.confidence_note = "not stated: the solution was cut off at its token budget"
        return
    if suffixes:
        yield from force(task, out, msgs, t_start, suffixes, answer_tokens)
    prefix = strip_confidence(out.text, keep_answer=True)
    params = GenerationParams(max_new_tokens=max(16, task.settings.forced_max_new_tokens),
                              temperature=0.0, top_logprobs=TOP_LOGPROBS)
    known = out.prompt_tokens + out.completion_tokens
    tokens: list = []
    top: list = []
    cont, usage, _ = yield from drain(
        task.plan.backend.state_confidence(msgs, prefix, params), ModelOutput(model=out.model),
        t_start, task.cancel, lambda t: task.delta(t, False), tokens, None, top)
    add_usage(out, usage, known)  # the solution's tokens were cached: only new ones are paid
    out.text = prefix + cont
    parsed = parse_confidence(cont)
    if parsed.value is not None:
        out.confidence, out.confidence_method = parsed.value, "adapter"
        out.confidence_note = None
        set_reading(out, read_digits(tokens, top))
    else:
        out.confidence, out.confidence_method = None, None
        set_reading(out, None)
        out.confidence_note = f"calibration adapter: {parsed.note}"


def state_first(task: TierTask, out: ModelOutput):
    """The confidence-first turn into ``out``: the tier states its confidence before solving
    (:func:`corea.prompts.prior_messages`, continued after ``"Confidence:"`` when the backend
    can continue a prefix), streamed as forced text; ``confidence_method`` ``"prior"``. A fault
    is recorded in ``out.error``."""
    backend = task.plan.backend
    msgs = prior_messages(task.question, task.choices, task.context)
    t_start = time.perf_counter()
    try:
        if backend.supports_continuation:
            out.text = PRIOR_PREFIX
            yield task.delta(PRIOR_PREFIX, True)
            stream = backend.continue_chat(msgs, PRIOR_PREFIX, task.forced_params())
        else:
            stream = backend.stream_chat(msgs, task.forced_params())
        text, usage, finish = yield from drain(stream, out, t_start, task.cancel,
                                               lambda t: task.delta(t, True))
        out.finish_reason = finish
        if usage is not None:
            out.prompt_tokens, out.completion_tokens = usage.prompt_tokens, \
                usage.completion_tokens
        parsed = parse_confidence_value(text) if backend.supports_continuation \
            else parse_confidence(text)
        if parsed.value is not None:
            out.confidence, out.confidence_method = parsed.value, "prior"
        else:
            out.confidence_note = parsed.note
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 — a failed prior turn defers, like a failed tier
        record_fault(out, exc)
    finally:
        close_output(out, t_start, task.settings.prices)


def prior_as_output(prior: ModelOutput) -> ModelOutput:
    """A tier's whole output when its confidence-first turn deferred before it solved."""
    p = prior
    return ModelOutput(model=p.model, text=p.text, confidence=p.confidence,
                       confidence_method=p.confidence_method, confidence_note=p.confidence_note,
                       prompt_tokens=p.prompt_tokens, completion_tokens=p.completion_tokens,
                       latency_s=p.latency_s, ttft_s=p.ttft_s, finish_reason=p.finish_reason,
                       cost_usd=p.cost_usd, error=p.error)


def add_prior(out: ModelOutput, prior: ModelOutput) -> None:
    """Count a kept confidence-first turn in the tier's output: its tokens, cost (USD), latency
    (seconds) and text (before the solution's)."""
    out.prompt_tokens += prior.prompt_tokens
    out.completion_tokens += prior.completion_tokens
    out.cost_usd += prior.cost_usd
    out.latency_s += prior.latency_s
    out.text = prior.text + "\n\n" + out.text
