"""Typed events streamed by :meth:`corea.cascade.Cascade.run`, and the final result record.

The order of one cascade run over the default two tiers (SLM → LLM) is::

    SLMStarted, SLMDelta*, SLMDone, Decision,
    [LLMStarted, LLMDelta*, LLMDone]   # only when deferred
    Final

Over N tiers (``settings.tiers``) the first tier streams the SLM events and the last tier the
LLM events, as above; each middle tier k (1 ≤ k ≤ N-2) that runs sits between them with its own
events, all carrying ``tier`` = k::

    SLMStarted, SLMDelta*, SLMDone, Decision(tier=0),
    [TierStarted(1), TierDelta(1)*, TierDone(1), Decision(tier=1),   # tier 0 deferred
     ...
     [LLMStarted(tier=N-1), LLMDelta*, LLMDone]]                     # tier N-2 deferred
    Final

A tier that keeps its answer ends the run (no later tier runs); a middle tier that fails (its
backend is unreachable, times out...) is skipped: its ``Decision`` has reason ``slm_error`` and
defers, and a warning says so. With two tiers nothing of this appears: the events are exactly
the two-tier ones.

Errors never raise out of :meth:`Cascade.run`; they become a ``Decision`` with reason
``slm_error`` / ``llm_error`` and a ``Final`` whose ``status`` says what happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from .types import Message

TierRole = Literal["slm", "mid", "llm"]
"""A tier's place in the cascade: the first (``slm``), a middle one (``mid``), the last
(``llm``)."""

ReasonCode = Literal["confident", "low_confidence", "no_confidence", "truncated", "no_answer",
                     "slm_error", "llm_error", "llm_truncated", "llm_no_answer"]
ConfidenceMethod = Literal["free", "forced", "asked", "prior", "adapter"]
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
            the answer, used when the stated confidence echoed the answer) / ``adapter`` (the
            line the SLM's confidence-scoped calibration adapter wrote after the base model's
            solution, :data:`corea.adapters.SCOPES`; like ``free``, nothing was forced) /
            ``None``.
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
class TierStep:
    """One tier that ran in a cascade run: its model's output and its own keep/defer decision.

    Attributes:
        index: the tier's position in the cascade (0 = the first, the SLM; ``n_tiers - 1`` = the
            last, which always answers).
        role: ``slm`` (the first tier), ``mid`` (a middle tier) or ``llm`` (the last tier).
        model: the tier's model name (price-table key).
        threshold: this tier's τ in [0, 1]; ``None`` for the last tier (it always answers).
        output: what the model produced (tokens, latency in s, cost in USD, text, answer, stated
            confidence for a deciding tier). The same object as ``CascadeResult.slm`` for the
            first tier and ``CascadeResult.llm`` for the last tier that ran after it.
        decision: this tier's keep-or-defer decision (``None`` for the last tier, and for a tier
            stopped before deciding). A fault of the tier it deferred to is recorded here
            (``llm_error``, ``llm_truncated``, ``llm_no_answer``).
        answered: whether this tier's answer is the final one.
    """

    index: int
    role: TierRole
    model: str
    output: ModelOutput
    threshold: float | None = None
    decision: DecisionInfo | None = None
    answered: bool = False

    @property
    def cost_usd(self) -> float:
        """This tier's cost (USD)."""
        return self.output.cost_usd

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no hidden states, no token log-probabilities): what the
        log stores per tier and the API reports."""
        o, d = self.output, self.decision
        return {"index": self.index, "role": self.role, "model": self.model,
                "threshold": self.threshold, "answered": self.answered, "answer": o.answer,
                "answer_method": o.answer_method,
                "stated_confidence": o.confidence if self.role != "llm" else None,
                "confidence_method": o.confidence_method if self.role != "llm" else None,
                "finish_reason": o.finish_reason, "prompt_tokens": o.prompt_tokens,
                "completion_tokens": o.completion_tokens, "cost_usd": o.cost_usd,
                "latency_s": o.latency_s, "ttft_s": o.ttft_s, "error": o.error,
                "decision": None if d is None else ("deferred" if d.defer else "kept"),
                "reason": d.reason if d else None, "signal": d.signal if d else None,
                "signal_value": d.confidence if d else None,
                "message": d.message if d else None}


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
        tiers: one :class:`TierStep` per tier that ran, in cascade order (empty for a result
            built by hand: :meth:`tier_steps` then derives them from ``slm`` / ``llm``). Over
            N tiers ``slm`` is the first tier's output, ``llm`` the output of the last tier
            that ran after it (``None`` when only the first ran), ``decision`` the first tier's
            decision and ``threshold`` its τ; each step carries its own.
        answered_tier: the index of the tier whose answer is final, ``None`` if none.
        context: earlier turns of a conversation given with the question
            (:class:`corea.types.Message`; both tiers saw them before the question).
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
    tiers: list[TierStep] = field(default_factory=list)
    answered_tier: int | None = None
    context: list[Message] = field(default_factory=list)

    def tier_steps(self) -> list[TierStep]:
        """The tiers that ran: :attr:`tiers`, or for a result without them (built by hand, or by
        an older caller) the two-tier view of ``slm`` and ``llm``."""
        if self.tiers:
            return self.tiers
        steps = [TierStep(0, "slm", self.slm.model, self.slm, self.threshold, self.decision)]
        if self.llm is not None:
            steps.append(TierStep(1, "llm", self.llm.model, self.llm))
        return steps

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over every tier that ran (tokens)."""
        return sum(t.output.prompt_tokens for t in self.tier_steps())

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over every tier that ran (tokens)."""
        return sum(t.output.completion_tokens for t in self.tier_steps())

    def to_dict(self) -> dict:
        """Every field as JSON-ready values; ``tiers`` as :meth:`TierStep.to_dict` summaries
        (their outputs are ``slm`` / ``llm`` here, or summarised)."""
        d = asdict(self)
        d["tiers"] = [t.to_dict() for t in self.tiers]
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
    """A deciding tier's keep-or-defer decision; ``tier`` is its index (0: the SLM)."""

    info: DecisionInfo
    tier: int = 0


@dataclass
class TierStarted:
    """A middle tier (index ``tier``, 1 ≤ tier ≤ N-2) starts; only over three tiers or more."""

    tier: int
    model: str


@dataclass
class TierDelta:
    """New text of middle tier ``tier`` (forced-suffix text with ``forced=True``)."""

    tier: int
    text: str
    forced: bool = False


@dataclass
class TierDone:
    """Middle tier ``tier`` finished (its output; ``error`` set when it failed and is skipped)."""

    tier: int
    output: ModelOutput


@dataclass
class LLMStarted:
    """The last tier starts; ``tier`` is its index (1 with two tiers)."""

    model: str
    tier: int = 1


@dataclass
class LLMDelta:
    text: str


@dataclass
class LLMDone:
    output: ModelOutput


@dataclass
class Final:
    result: CascadeResult


Event = (SLMStarted | SLMDelta | SLMDone | Decision | TierStarted | TierDelta | TierDone
         | LLMStarted | LLMDelta | LLMDone | Final)
