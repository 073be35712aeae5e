"""The ``pot`` and ``mot`` solve modes: a tier computes with a program run in the sandbox.

``pot`` (:func:`solve_pot`): the tier's model writes one Python program
(:func:`corea.prompts.pot_messages`), streamed as the tier's text; COREA extracts it and runs it
in the sandbox (:func:`corea.pot.run_completion`, :mod:`corea.sandbox`); what it printed is the
answer (``answer_method`` ``program``). A program that does not run — syntax error, exception,
timeout, memory, output too large, refused, no output, no program in the reply, no sandbox —
gives **no answer** (``answer`` None), so :func:`corea.policy.unusable` never keeps it; the
reason is in ``ModelOutput.program_error``. A deciding tier states its confidence on a
``Confidence:`` line after the code block; a missing one is elicited by the forced suffix and
an echo of the answer is asked again, as for ``cot``
(:func:`corea.cascade.step.complete_deciding` with ``program=True``: the answer itself is never
forced, and a calibration adapter is not used — trained after chain-of-thought solutions, it
continues a program with an output block, not a confidence line). **The solution is the program**: token signals are computed over the reply's tokens up
to the end of the program (``answer_prob`` is None: a computed answer is not among the tokens),
hidden states are the engine's at the end of the reply.

``mot`` (:func:`solve_mot`): the tier solves both ways, chain of thought first, then the program
(the two texts streamed one after the other, separated by :data:`MOT_SEPARATOR`). ``agreement``
says whether their answers agree (:func:`corea.pot.answers_agree`, the grader's equivalence; a
failed program agrees with nothing; ``None`` when an engine fault stopped either). **The tier's
answer is the program's when the program gave one** (so when both agree it is the PoT answer),
else the chain-of-thought answer; its stated confidence, token signals and hidden states are
those of the solution whose answer it takes. ``agreement`` is also ``signals["agreement"]`` (1.0 /
0.0) on a deciding tier: the ``agreement`` deciding signal
(:func:`corea.cascade.deciding.deciding_number`) and a calibrator feature.
"""

from __future__ import annotations

import time

from ..signals import hidden
from ..events import ModelOutput
from ..pot import PotOutcome, answers_agree, run_completion
from ..prompts import pot_messages
from ..signals.tokens import compute_signals
from ..types import GenerationParams
from .step import TierTask, complete_deciding, solve_cot
from .stream import Cancelled, close_output, drain, record_fault

MOT_SEPARATOR = "\n\n---\n\n"
"""Forced text between a ``mot`` tier's chain of thought and its program."""


def record_program(out: ModelOutput, outcome: PotOutcome) -> None:
    """Write a program's run into ``out``: the program, what it printed, its answer (also the
    tier's answer, ``answer_method`` ``program``, when it gave one) or why not
    (``program_error`` ``"<kind>: <message>"``)."""
    out.program = outcome.program
    out.program_output = outcome.result.output if outcome.result is not None else None
    out.program_answer = outcome.answer
    if outcome.ok:
        out.answer, out.answer_method = outcome.answer, "program"
    else:
        out.program_error = f"{outcome.error}: {outcome.message}"


def program_end(text: str, program: str | None) -> int:
    """Character offset in the reply ``text`` where its program ends (after a closing fence
    when there is one); ``len(text)`` when the program is not found in it."""
    if not program:
        return len(text)
    i = text.rfind(program)
    if i < 0:
        return len(text)
    end = i + len(program)
    fence = text.find("```", end)
    if fence >= 0 and not text[end:fence].strip():
        end = fence + 3
    return end


def tokens_until(tokens: list, end: int) -> list:
    """The leading ``(token, logprob)`` pairs whose text lies before character ``end`` (a token
    that straddles it is kept)."""
    out, pos = [], 0
    for tok in tokens:
        if pos >= end:
            break
        out.append(tok)
        pos += len(tok[0])
    return out


def solve_pot(task: TierTask, out: ModelOutput, params: GenerationParams):
    """``pot``: the tier writes a program, the sandbox runs it, its printed value is the answer
    (module docstring). Faults are recorded in ``out.error``."""
    t_start = time.perf_counter()
    out.solve = out.solve or "pot"
    last = task.plan.last
    msgs = pot_messages(task.question, task.choices, task.context)  # POT_SYSTEM for every tier
    tokens: list = []
    states: dict = {}
    try:
        text, usage, finish = yield from drain(
            task.plan.backend.stream_chat(msgs, params), out, t_start, task.cancel, task.delta,
            None if last else tokens, None if last else states)
        out.finish_reason = finish
        if usage is not None:
            out.prompt_tokens, out.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        outcome = run_completion(text)
        record_program(out, outcome)
        if not last:
            end = program_end(text, outcome.program)
            out.states = hidden.encode_all(states)
            yield from complete_deciding(task, out, msgs, text[end:], finish, t_start, [],
                                         program=True)
            out.signals = compute_signals(tokens_until(tokens, end), None, finish).as_dict()
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 — any engine fault is recorded, never crashes a run
        record_fault(out, exc)
    finally:
        close_output(out, t_start, task.settings.prices)


_CHOSEN = ("answer", "answer_method", "confidence", "confidence_method", "confidence_note",
           "confidence_echo", "finish_reason", "signals", "states", "error")
"""Fields a ``mot`` output takes from the solution whose answer it takes."""
_PROGRAM = ("program", "program_output", "program_answer", "program_error")


def mot_takes_program(cot: ModelOutput, pot: ModelOutput) -> bool:
    """Whether a ``mot`` tier's output takes its answer and the fields of :data:`_CHOSEN` from
    the program's solution: when the program ran and gave an answer, or when the chain of
    thought failed (engine fault) and the program ran without one; else from the chain of
    thought's. One rule for the live tier (:func:`merge_mot`) and offline ``mot`` rows
    (:mod:`corea.eval.mot_rows`)."""
    if pot.error is not None:
        return False
    return pot.answer is not None or cot.error is not None


def merge_mot(out: ModelOutput, cot: ModelOutput, pot: ModelOutput, last: bool) -> None:
    """``out`` = the ``mot`` output of a tier that solved both ways (module docstring): the
    two texts, summed tokens, latency (s) and cost (USD), the program's fields, ``cot_answer``,
    ``agreement``, and the rest from the program's solution when it gave an answer, else from
    the chain of thought's."""
    out.solve = "mot"
    out.text = cot.text + (MOT_SEPARATOR + pot.text if pot.text or pot.error else "")
    out.prompt_tokens = cot.prompt_tokens + pot.prompt_tokens
    out.completion_tokens = cot.completion_tokens + pot.completion_tokens
    out.latency_s = cot.latency_s + pot.latency_s
    out.cost_usd = cot.cost_usd + pot.cost_usd
    out.ttft_s = cot.ttft_s
    chosen = pot if mot_takes_program(cot, pot) else cot
    for name in _CHOSEN:
        setattr(out, name, getattr(chosen, name))
    for name in _PROGRAM:
        setattr(out, name, getattr(pot, name))
    out.cot_answer = cot.answer
    ran = cot.error is None and pot.error is None
    out.agreement = answers_agree(cot.answer, pot.answer) if ran else None
    if not last:
        out.signals = {**(out.signals or {}),
                       "agreement": None if out.agreement is None else float(out.agreement)}


def solve_mot(task: TierTask, out: ModelOutput, params: GenerationParams):
    """``mot``: chain of thought, then a program, on the same tier; :func:`merge_mot` makes the
    tier's output (also when the run is cancelled half way)."""
    cot, pot = ModelOutput(model=out.model), ModelOutput(model=out.model, solve="mot")
    try:
        yield from solve_cot(task, cot, params)
        yield task.delta(MOT_SEPARATOR, True)
        yield from solve_pot(task, pot, params)
    finally:
        merge_mot(out, cot, pot, task.plan.last)
