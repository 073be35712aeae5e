"""Typed events streamed by :meth:`corea.cascade.Cascade.run`, and the final result record.

The order of one cascade run is::

    SLMStarted, SLMDelta*, SLMDone, Decision,
    [LLMStarted, LLMDelta*, LLMDone]   # only when deferred
    Final

Errors never raise out of :meth:`Cascade.run`; they become a ``Decision`` with reason
``slm_error`` / ``llm_error`` and a ``Final`` whose ``status`` says what happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

ReasonCode = Literal["confident", "low_confidence", "no_confidence", "truncated", "no_answer",
                     "slm_error", "llm_error", "llm_truncated", "llm_no_answer"]
ConfidenceMethod = Literal["free", "forced", "asked", "prior"]
Status = Literal["ok", "cancelled", "error"]


@dataclass
class ModelOutput:
    """What one model produced for one question.

    Attributes:
        model: model name (price-table key).
        text: the full completion shown to the user (for the SLM including any forced-suffix
            continuation).
        answer: parsed final answer, or ``None``.
        answer_method: ``free`` (parsed from the completion) or ``forced`` (elicited by the
            ``Answer:`` suffix), ``None`` if no answer.
        confidence: verbalized confidence in [0, 1] (SLM only), or ``None``.
        confidence_method: ``free`` / ``forced`` / ``asked`` (a separate short turn that names
            the answer, used when the stated confidence echoed the answer) / ``None``.
        confidence_echo: a stated confidence that was the answer's own digits
            (:func:`corea.parsing.confidence_echoes_answer`) and was therefore discarded; else
            ``None``.
        confidence_note: why the confidence is ``None`` (e.g. ``"missing"``, ``"not a number: high"``,
            ``"out of range: 150"``), else ``None``.
        prompt_tokens / completion_tokens: token counts over all calls for this output (tokens).
        latency_s: wall time from request to last token (seconds).
        ttft_s: time to first streamed token (seconds), ``None`` if nothing streamed.
        finish_reason: ``stop`` / ``length`` / ``cancelled`` / ``error``.
        cost_usd: cost of this output's tokens (USD).
        error: error message if the model failed.
        signals: token-probability signals of the SLM's completion
            (:meth:`corea.signals.Signals.as_dict`: ``solution_prob``, ``answer_prob``,
            ``min_prob`` in [0, 1] or ``None`` without engine log-probs, ``n_tokens``,
            ``hit_length``); ``None`` for the LLM or when the SLM failed.
        states: the SLM's final-layer hidden states when the engine reads them
            (``hidden_states`` setting): ``{"prompt": ..., "end": ...}`` as
            :func:`corea.hidden.encode` text (at the last prompt token, at the end of the free
            completion); ``None`` otherwise. Input of the probe signals.
    """

    model: str
    text: str = ""
    answer: str | None = None
    answer_method: ConfidenceMethod | None = None
    confidence: float | None = None
    confidence_method: ConfidenceMethod | None = None
    confidence_note: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    finish_reason: str | None = None
    cost_usd: float = 0.0
    error: str | None = None
    signals: dict | None = None
    states: dict | None = None
    confidence_echo: float | None = None


@dataclass
class DecisionInfo:
    """The keep-or-defer decision and the numbers behind it.

    ``defer`` is True iff the question goes (or went) to the LLM. ``message`` is the plain-words
    sentence shown in the UI. ``confidence`` is the number compared with τ, from ``signal``:
    ``verbal`` (the SLM's stated confidence, the paper's), ``tokprob`` (geometric-mean token
    probability of its solution) or ``calibrated`` (a fitted calibrator's P(correct),
    :mod:`corea.calibrator`); ``verbal_confidence`` is the stated one, shown alongside.
    ``signal_note`` says why a requested signal was not used (e.g. no calibrator yet).
    """

    defer: bool
    reason: ReasonCode
    confidence: float | None
    threshold: float
    message: str
    signal: str = "verbal"
    verbal_confidence: float | None = None
    signal_note: str | None = None


@dataclass
class CascadeResult:
    """The complete record of one cascade run (what gets logged).

    Attributes:
        question: the question as asked (after validation).
        threshold: τ used for this run.
        slm: the SLM's output.
        llm: the LLM's output, ``None`` if not deferred.
        decision: the keep/defer decision.
        final_answer: the answer shown as final (``None`` if nobody produced one).
        final_model: which model produced ``final_answer``: the SLM's or the LLM's name.
        final_text: the completion the final answer came from.
        latency_s: total wall time (seconds).
        cost_usd: total cost (USD): SLM tokens plus LLM tokens when deferred.
        status: ``ok``, ``cancelled`` (user stopped mid-stream) or ``error``.
        warnings: user-visible warnings (e.g. "LLM unavailable (timeout) — showing the small
            model's answer").
        interaction_id: database row id once logged, else ``None``.
        slm_prior: confidence-first mode only: the SLM's short turn stating its confidence
            before solving (its tokens are also counted in ``slm``).
    """

    question: str
    threshold: float
    slm: ModelOutput
    decision: DecisionInfo | None = None
    llm: ModelOutput | None = None
    final_answer: str | None = None
    final_model: str | None = None
    final_text: str = ""
    latency_s: float = 0.0
    cost_usd: float = 0.0
    status: Status = "ok"
    warnings: list[str] = field(default_factory=list)
    interaction_id: int | None = None
    slm_prior: ModelOutput | None = None

    @property
    def prompt_tokens(self) -> int:
        return self.slm.prompt_tokens + (self.llm.prompt_tokens if self.llm else 0)

    @property
    def completion_tokens(self) -> int:
        return self.slm.completion_tokens + (self.llm.completion_tokens if self.llm else 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prompt_tokens"] = self.prompt_tokens
        d["completion_tokens"] = self.completion_tokens
        return d


@dataclass
class SLMStarted:
    model: str


@dataclass
class SLMDelta:
    """New SLM text (including forced-suffix text, with ``forced=True``)."""

    text: str
    forced: bool = False


@dataclass
class SLMDone:
    output: ModelOutput


@dataclass
class Decision:
    info: DecisionInfo


@dataclass
class LLMStarted:
    model: str


@dataclass
class LLMDelta:
    text: str


@dataclass
class LLMDone:
    output: ModelOutput


@dataclass
class Final:
    result: CascadeResult


Event = SLMStarted | SLMDelta | SLMDone | Decision | LLMStarted | LLMDelta | LLMDone | Final
