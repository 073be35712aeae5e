"""When a deciding tier has answered: the one stop rule of the SLM's free solution.

The SLM is asked for its reasoning, its final answer in ``\\boxed{}`` and a last line
``Confidence: c`` (:data:`corea.prompts.SLM_SYSTEM`). The 0.5B SLM often goes on after that — a
second confidence paragraph, a repeated answer, a made-up "probability" calculation — and every
such token is paid for and waited on while nothing the cascade reads changes. The rule here ends
its generation as soon as it has written what the cascade reads:

- **at the end of a line** (a ``"\\n"``), never inside one, so a number being written
  (``Confidence: 0.9`` → ``0.95``, ``Answer: 800`` → ``800 cups``) is complete;
- once the text up to that line has a **final answer** (:func:`corea.parsing.extract_answer`)
  and a **stated confidence** (:func:`corea.parsing.parse_confidence`).

The same rule holds with a calibration adapter (the base model still writes the confidence line
it was asked for, which the adapter then replaces): ``confidence=False`` — stopping at the answer
alone — is only measured (``bench/stop_rules.py``), not used: the 0.5B SLM boxes intermediate
results and takes "the answer is correct" for an answer, so on the committed GSM8K rows it
changed 7 of 602 train answers (one right answer lost) and 5 of 200 test answers.

A completion that never states both runs to its end as before (and gets the forced suffix of
:func:`corea.policy.needs_forcing`). The answer and confidence parsed from the stopped text are the
ones parsed from the whole completion except where the model later overwrote them (measured on
the committed GSM8K runs: ``bench/stop_rules.py``, ``bench/results/stop_rules.json``).

Backend-agnostic: :func:`stop_when_answered` wraps any chunk stream
(:class:`corea.backends.base.Chunk`) and closes it (which stops the engine) when the rule fires.
The cascade's deciding tiers (:mod:`corea.cascade.step`, so also the evaluation harness, which
runs the cascade) and the training rollouts (:mod:`train.rollout`, :func:`cut_tokens`) use it;
:mod:`train.confidence` trains the adapter on solutions cut by it.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from .backends.base import Chunk, StreamCount
from .parsing import extract_answer, parse_confidence

__all__ = ["STOP_RULES", "Stopper", "answered_at", "cut_text", "cut_tokens", "stop_when_answered"]

STOP_RULES = "1: a deciding tier's free solution ends at the first line end after its answer " \
             "and its stated confidence"
"""Version of the rule; part of a chain-of-thought evaluation run's identity
(:func:`corea.eval.harness.prompt_version`)."""


def has_answered(head: str, choices: Sequence[str] | None = None,
                 confidence: bool = True) -> bool:
    """Whether ``head`` (text up to a line end) holds a final answer and, if ``confidence``, a
    stated confidence, as the cascade parses them."""
    if extract_answer(head, tuple(choices) if choices else None) is None:
        return False
    return not confidence or parse_confidence(head).value is not None


class Stopper:
    """The rule applied incrementally to a growing text (each line is checked once).

    Args:
        choices: the question's options (multiple choice) or ``None``.
        confidence: the tier must also state its confidence before it stops.
    """

    def __init__(self, choices: Sequence[str] | None = None, confidence: bool = True):
        self.choices = tuple(choices) if choices else None
        self.confidence = confidence
        self._checked = 0  # lines that end before this offset were checked

    def check(self, text: str) -> int | None:
        """The offset where ``text`` should end (the ``"\\n"`` that closes the answering line,
        excluded), or ``None`` while the tier has not answered. ``text`` must only grow between
        calls."""
        while True:
            nl = text.find("\n", self._checked)
            if nl < 0:
                return None
            self._checked = nl + 1
            if has_answered(text[:nl], self.choices, self.confidence):
                return nl


def answered_at(text: str, choices: Sequence[str] | None = None,
                confidence: bool = True) -> int | None:
    """Where the rule ends ``text`` (see :meth:`Stopper.check`), or ``None``: it runs to its end."""
    return Stopper(choices, confidence).check(text)


def cut_text(text: str, choices: Sequence[str] | None = None, confidence: bool = True) -> str:
    """``text`` as the rule would have ended it (unchanged when it never fires)."""
    cut = answered_at(text, choices, confidence)
    return text if cut is None else text[:cut]


def stop_when_answered(chunks: Iterator[Chunk], choices: Sequence[str] | None = None,
                       confidence: bool = True) -> Iterator[Chunk]:
    """Pass ``chunks`` through until the rule fires, then close the stream (the engine stops)
    and end with a chunk of finish reason ``"stop"``.

    The chunk in which the answering line ends is cut just before its ``"\\n"`` (its
    ``(token, logprob)`` pairs are kept: those tokens were generated). The closing chunk's
    :class:`~corea.backends.base.Usage` is the prompt size the engine announced (``Chunk.
    prompt_tokens``) and the tokens generated: the log-probability pairs seen when the engine
    returns them, else one per text chunk (one token each on the local engines).

    Hidden states: the cut chunk keeps the ``states`` its engine attached to it
    (:attr:`~corea.backends.base.Chunk.states`), so a stopped completion's ``end`` state is the
    one at the stop — the position that predicted the token holding the answering line's
    ``"\n"``, i.e. the last token of the kept text when that line end is a token of its own —
    the same position as for a completion that ends by itself (the state that predicted
    end-of-generation), and not one of the tokens the engine decoded after it.
    """
    stopper = Stopper(choices, confidence)
    text = ""
    count = StreamCount()
    try:
        for ch in chunks:
            count.add(ch)
            cut = stopper.check(text + ch.text) if "\n" in ch.text else None
            if cut is None:
                text += ch.text
                yield ch
                continue
            keep = ch.text[:cut - len(text)]
            yield Chunk(text=keep, logprobs=ch.logprobs, states=ch.states)
            yield Chunk(usage=count.usage(), finish_reason="stop")
            return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def cut_tokens(ids: Sequence[int], decode: Callable[[Sequence[int]], str],
               choices: Sequence[str] | None = None, confidence: bool = True) -> int:
    """How many of a generated completion's token ids the rule keeps (``len(ids)`` when it never
    fires): the tokens up to and including the one that holds the line end where it fires
    (the engine generated it before the rule could see the line was complete).

    Args:
        ids: the completion's token ids, in order.
        decode: token ids → text (a tokenizer's ``decode``).
    """
    text = decode(list(ids))
    cut = answered_at(text, choices, confidence)
    if cut is None:
        return len(ids)
    lo, hi = 1, len(ids)  # the shortest prefix whose text reaches the cut
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(list(ids[:mid]))) > cut:
            hi = mid
        else:
            lo = mid + 1
    return lo
