"""Prompts for the SLM and the LLM, and the forced-suffix strings.

The SLM prompt follows the COREA paper's output format: reason step by step, give the final answer
in ``\\boxed{...}``, then a last line ``Confidence: <number in [0, 1]>``. The prompt never shows a
literal placeholder such as ``<0-100>``: small models copy it verbatim.

The forced suffix (used when the SLM's free completion lacks the answer or the confidence) appends
:data:`ANSWER_SUFFIX` and/or :data:`CONFIDENCE_SUFFIX` to the SLM's own completion and lets the same
model continue for a few tokens, so the value is still the SLM's own verbalized confidence.
"""

from __future__ import annotations

from typing import Sequence

from .types import Message

SLM_SYSTEM = (
    "You are a careful problem solver. Think step by step, then give the final answer in "
    "\\boxed{}. After the answer, on a last line of its own, state how likely it is that your "
    "final answer is correct, as a probability between 0 and 1, written as "
    "\"Confidence: \" followed by that number."
)

LLM_SYSTEM = (
    "You are a careful problem solver. Think step by step, then give the final answer in \\boxed{}."
)

# The chat template engines fall back to when a model carries none (ChatML, the Qwen family's).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PRIOR_SYSTEM = (
    "You will be shown a question. Do not solve it. Estimate how likely it is that you would "
    "answer it correctly if you solved it step by step, as a probability between 0 and 1. "
    "Reply with only \"Confidence: \" followed by that number."
)
"""Confidence-first deferral: the SLM states its confidence before solving (short first turn)."""

PRIOR_PREFIX = "Confidence:"
"""Assistant prefix of the confidence-first turn: the model continues with the number."""

VERIFY_PROMPT = (
    "Is your final answer {answer} correct? Reply with only Yes or No."
)
"""Self-verification, P(True) (Kadavath et al., 2022; AutoMix, arXiv:2310.12963): a user turn after
the SLM's own solution; P(True) is P("Yes") / (P("Yes") + P("No")) of the next token."""

VERIFY_CANDIDATES = ("Yes", "No")

ASK_CONFIDENCE_PROMPT = (
    "Your final answer is {answer}. How likely is it that this answer is correct? Reply with only "
    "\"Confidence: \" followed by a probability between 0 and 1."
)
"""A separate short turn after the SLM's own solution when its stated confidence echoed the
answer's digits; the reply is continued after :data:`PRIOR_PREFIX` ("Confidence:")."""

SLM_RULES = ("2: a solution cut off at its budget gets no forced suffix; a confidence that echoes "
             "the answer is asked again in a turn naming the answer")
"""Version of how an SLM output is completed (:meth:`corea.cascade.Cascade.slm_output`); part of
an evaluation run's identity with the prompts."""

ANSWER_SUFFIX = "\n\nAnswer:"
CONFIDENCE_SUFFIX = "\nConfidence:"


def letters(n: int) -> str:
    """The first ``n`` option letters, ``A``, ``B``, ... (``n`` ≤ 26)."""
    if not 0 < n <= 26:
        raise ValueError(f"between 1 and 26 choices are supported, got {n}")
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n]


def format_question(question: str, choices: Sequence[str] | None = None) -> str:
    """The user turn: the question, and for multiple choice the lettered options.

    Multiple-choice questions ask for the option letter inside ``\\boxed{}``.
    """
    if not choices:
        return question.strip()
    opts = "\n".join(f"({letter}) {text}" for letter, text in zip(letters(len(choices)), choices))
    return (f"{question.strip()}\n\nOptions:\n{opts}\n\n"
            "Answer with the letter of the correct option inside \\boxed{}.")


def with_context(system: str, context: Sequence[Message], user: str) -> list[Message]:
    """``[system, *earlier turns, user]``: a conversation's earlier turns between COREA's system
    prompt and the current question.

    The conversation's own system messages are appended to COREA's system prompt (one system
    message, first: many chat templates accept no other); its user and assistant turns follow
    in order. Empty turns are dropped. Without context this is ``[system, user]``.
    """
    sys_extra = [m.content.strip() for m in context if m.role == "system" and m.content.strip()]
    turns = [m for m in context if m.role != "system" and m.content.strip()]
    head = system if not sys_extra else system + "\n\n" + "\n\n".join(sys_extra)
    return [Message("system", head), *turns, Message("user", user)]


def slm_messages(question: str, choices: Sequence[str] | None = None,
                 context: Sequence[Message] = ()) -> list[Message]:
    """Chat messages for the SLM (answer + verbalized confidence); ``context``: earlier turns of
    the conversation (:func:`with_context`)."""
    return with_context(SLM_SYSTEM, context, format_question(question, choices))


def prior_messages(question: str, choices: Sequence[str] | None = None,
                   context: Sequence[Message] = ()) -> list[Message]:
    """Chat messages for the confidence-first turn (answered after :data:`PRIOR_PREFIX`)."""
    return with_context(PRIOR_SYSTEM, context, format_question(question, choices))


def verify_messages(question: str, choices: Sequence[str] | None, solution: str,
                    answer: str, context: Sequence[Message] = ()) -> list[Message]:
    """The SLM's own chat plus a user turn asking whether ``answer`` is right (the prefix up to the
    solution is the SLM's KV-cached completion, so only the question turn is new input)."""
    return slm_messages(question, choices, context) + [
        Message("assistant", solution), Message("user", VERIFY_PROMPT.format(answer=answer))]


def ask_confidence_messages(question: str, choices: Sequence[str] | None, solution: str,
                            answer: str, context: Sequence[Message] = (),
                            program: bool = False) -> list[Message]:
    """The SLM's own chat plus a user turn that names ``answer`` and asks how likely it is right
    (continued after ``"Confidence:"``); ``program``: the chat is the program-of-thought one
    (:func:`pot_messages` with a confidence)."""
    chat = pot_messages(question, choices, context, confidence=True) if program \
        else slm_messages(question, choices, context)
    return chat + [
        Message("assistant", solution),
        Message("user", ASK_CONFIDENCE_PROMPT.format(answer=answer))]


def llm_messages(question: str, choices: Sequence[str] | None = None,
                 context: Sequence[Message] = ()) -> list[Message]:
    """Chat messages for the LLM (plain solve prompt, same answer format); ``context`` as for
    :func:`slm_messages`."""
    return with_context(LLM_SYSTEM, context, format_question(question, choices))


# ------------------------------------------------------------------- the LLM judges the SLM

LLM_VERIFY_VERSION = "llm-verify-1"
"""Version of the prompts below (recorded on every ``llm_verify.jsonl`` line)."""

LLM_VERIFY_ANSWER = (
    "\n\nA student's final answer to this problem is {answer}. Is it correct? Reply with only "
    "Yes or No."
)
"""The LLM's P(True) on the SLM's answer, ``context: answer``: appended to the question in the
LLM's own user turn, so the prompt begins with the LLM's answer prompt up to the question's end
(llama.cpp's prefix cache can reuse that part when the question is then sent to the LLM)."""

LLM_VERIFY_SOLUTION = (
    "\n\nA student wrote this solution:\n\n{solution}\n\nIs the student's final answer "
    "{answer} correct? Reply with only Yes or No."
)
"""The same with the SLM's whole solution (``context: solution``: its reasoning or program)."""

LLM_VERIFY_CONTEXTS = ("answer", "solution")


def llm_verify_messages(question: str, choices: Sequence[str] | None, answer: str,
                        solution: str | None = None) -> list[Message]:
    """The LLM's system prompt and one user turn: the question (:func:`format_question`, as in
    :func:`llm_messages`) followed by :data:`LLM_VERIFY_ANSWER`, or with ``solution`` by
    :data:`LLM_VERIFY_SOLUTION`. P(True) is P("Yes") / (P("Yes") + P("No")) of the reply's first
    token (Kadavath et al., 2022, "Language Models (Mostly) Know What They Know": a model judging
    a proposed answer)."""
    tail = LLM_VERIFY_ANSWER.format(answer=answer) if solution is None else \
        LLM_VERIFY_SOLUTION.format(solution=solution.strip(), answer=answer)
    return [Message("system", LLM_SYSTEM), Message("user", format_question(question, choices) + tail)]


# ------------------------------------------------------------------------- program of thought

POT_VERSION = "pot-2"
"""Version of the program-of-thought prompts below and of how a reply becomes an answer
(:data:`corea.pot.POT_RULES`); recorded in a run's identity with the prompt text."""

POT_SYSTEM = (
    "You are a careful problem solver who computes with Python. Write a short Python program "
    "that solves the problem. Store the final result in a variable named answer and print it. "
    "Use only plain Python and the math, fractions, decimal, statistics, itertools and datetime "
    "modules; do not read input or files. Reply with the program in one ```python code block."
)
"""Program-of-thought system prompt (the LLM's, and the SLM's without a confidence)."""

POT_SLM_SYSTEM = POT_SYSTEM + (
    " After the code block, on a last line of its own, state how likely it is that the result "
    "your program prints is correct, as a probability between 0 and 1, written as "
    "\"Confidence: \" followed by that number."
)
"""Program-of-thought system prompt that also asks for a stated confidence after the code. Not
used by the cascade since ``pot-2``: on 18 of the first 24 GSM8K train items the 0.5B SLM then
printed its confidence from inside the program (2 right, 13 without an answer, 333 tokens on
average) where :data:`POT_SYSTEM` alone gave 7 right, 3 without, 130 tokens; a deciding tier's
confidence is elicited after the program instead (docs/program-of-thought.md)."""


def pot_question(question: str, choices: Sequence[str] | None = None) -> str:
    """The program-of-thought user turn: the question, and for multiple choice the lettered
    options with the instruction to print the letter (not to box it)."""
    if not choices:
        return question.strip()
    opts = "\n".join(f"({letter}) {text}" for letter, text in zip(letters(len(choices)), choices))
    return (f"{question.strip()}\n\nOptions:\n{opts}\n\n"
            "The program should print the letter of the correct option.")


def pot_messages(question: str, choices: Sequence[str] | None = None,
                 context: Sequence[Message] = (), confidence: bool = False) -> list[Message]:
    """Chat messages asking for a program (:data:`POT_SYSTEM`, or :data:`POT_SLM_SYSTEM` when
    ``confidence``); ``context`` as for :func:`slm_messages`."""
    system = POT_SLM_SYSTEM if confidence else POT_SYSTEM
    return with_context(system, context, pot_question(question, choices))
