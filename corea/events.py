"""Typed events streamed by :meth:`corea.cascade.Cascade.run`, and the final result record.

(Over 400 lines: the result records and the events they stream in one place, with the
deprecated two-tier event names kept one release.)

Every tier k that runs streams the same three events, tagged with its index ``tier`` and its
``role`` (``slm`` the first tier, ``mid`` a middle one, ``llm`` the last)::

    TierStarted(0), TierDelta(0)*, TierDone(0), Decision(tier=0),
    [TierStarted(1), TierDelta(1)*, TierDone(1), Decision(tier=1),   # tier 0 deferred
     ...
     [TierStarted(N-1), TierDelta(N-1)*, TierDone(N-1)]]             # tier N-2 deferred
    Final

A deciding tier (every tier but the last) ends with its :class:`Decision`; a tier that keeps
its answer ends the run (no later tier runs); the last tier always answers and decides nothing.
A middle tier that fails (its backend is unreachable, times out...) is skipped: its ``Decision``
has reason ``slm_error`` and defers, and a warning says so.

**Deprecated names (kept one release):** ``SLMStarted`` / ``SLMDelta`` / ``SLMDone`` are the
tier events of role ``slm`` and ``LLMStarted`` / ``LLMDelta`` / ``LLMDone`` those of role ``llm``:
``isinstance(event, SLMDelta)`` is true for a :class:`TierDelta` of the first tier, and
``SLMDelta("text")`` builds ``TierDelta(0, "text", role="slm")``. New code should use the tier
events and their ``tier`` / ``role``.

Errors never raise out of :meth:`Cascade.run`; they become a ``Decision`` with reason
``slm_error`` / ``llm_error`` and a ``Final`` whose ``status`` says what happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from .types import Message

TierRole = Literal["slm", "mid", "llm"]
"""A tier's place in the cascade: the first (``slm``), a middle one (``mid``), the last
(``llm``)."""

ReasonCode = Literal["confident", "low_confidence", "no_confidence", "truncated", "no_answer",
                     "slm_error", "llm_error", "llm_truncated", "llm_no_answer", "routed",
                     "early_exit"]
ROUTED = "routed"
"""The decision reason, and the tier output's ``finish_reason``, of a question a tier sent
straight to the next one before writing (pre-generation routing, :mod:`corea.cascade.route`)."""
EARLY_EXIT = "early_exit"
"""The decision reason, and the tier output's ``finish_reason``, of a decode stopped while it
wrote because a probe on its state predicted failure (:mod:`corea.cascade.early_exit`)."""
ConfidenceMethod = Literal["free", "forced", "asked", "prior", "adapter"]
AnswerMethod = Literal["free", "forced", "program"]
Status = Literal["ok", "cancelled", "error"]


@dataclass
class ModelOutput:
    """What one model produced for one question.

    Attributes:
        model: model name (price-table key).
        text: the full completion shown to the user (for the SLM including any forced-suffix
            continuation).
        answer: parsed final answer, or ``None``.
        answer_method: ``free`` (parsed from the completion), ``forced`` (elicited by the
            ``Answer:`` suffix) or ``program`` (printed by the tier's program, ``pot`` / ``mot``),
            ``None`` if no answer.
        confidence: verbalized confidence in [0, 1] (SLM only), or ``None``.
        confidence_method: ``free`` / ``forced`` / ``asked`` (a separate short turn that names
            the answer, used when the stated confidence echoed the answer) / ``adapter`` (the
            line the SLM's confidence-scoped calibration adapter wrote after the base model's
            solution, :data:`corea.adapters.SCOPES`; like ``free``, nothing was forced) /
            ``None``.
        confidence_expected: the stated confidence read as a distribution: ``E[c] = sum_d p_d ·
            d / 10`` over the model's probabilities ``p_d`` of the ten digit tokens at the digit
            after ``"Confidence: 0."`` (:mod:`corea.signals.stated`), in [0, 1], from the same decode;
            ``None`` when the engine gave no alternatives there, the confidence was not written
            as ``0.d``, or the tier wrote it inside its free solution (alternatives are asked
            for on the adapter line, the forced suffix and the re-ask turn only).
        confidence_spread: the standard deviation of that distribution (same scale, at most
            0.45), ``None`` with ``confidence_expected``.
        confidence_digits: how many of the ten digits were among the engine's top alternatives
            there (10: exact; fewer: renormalised over those), ``None`` with
            ``confidence_expected``.
        confidence_echo: a stated confidence that was the answer's own digits
            (:func:`corea.parsing.confidence_echoes_answer`) and was therefore discarded; else
            ``None``.
        confidence_note: why the confidence is ``None`` (e.g. ``"missing"``, ``"not a number: high"``,
            ``"out of range: 150"``), else ``None``.
        prompt_tokens / completion_tokens: token counts over all calls for this output (tokens).
        latency_s: wall time from request to last token (seconds).
        ttft_s: time to first streamed token (seconds), ``None`` if nothing streamed.
        finish_reason: ``stop`` / ``length`` / ``cancelled`` / ``error``, or ``routed``: the tier
            only read the question and sent it on (:mod:`corea.cascade.route`).
        cost_usd: cost of this output's tokens (USD).
        error: error message if the model failed.
        signals: token-probability signals of the SLM's completion
            (:meth:`corea.signals.tokens.Signals.as_dict`: ``solution_prob``, ``answer_prob``,
            ``min_prob`` in [0, 1] or ``None`` without engine log-probs, ``n_tokens``,
            ``hit_length``); ``None`` for the LLM or when the SLM failed.
        states: the SLM's final-layer hidden states when the engine reads them
            (``hidden_states`` setting): ``{"prompt": ..., "end": ...}`` as
            :func:`corea.signals.hidden.encode` text (at the last prompt token, at the end of the free
            completion); ``None`` otherwise. Input of the probe signals.
        solve: how the tier solved when not by chain of thought: ``pot`` (a program) or ``mot``
            (both); ``None`` for ``cot`` (docs/program-of-thought.md).
        program: ``pot`` / ``mot``: the Python program extracted from the reply and run in the
            sandbox (:func:`corea.pot.extract_program`), ``None`` when the reply held none.
        program_output: what the program printed (at most the sandbox's output cap), ``None``
            when nothing ran.
        program_answer: the answer read from what it printed (:func:`corea.pot.answer_from_output`),
            ``None`` when the program failed. ``pot``: also :attr:`answer`
            (``answer_method`` ``program``).
        program_error: why the program gave no answer, ``"<kind>: <message>"`` with a kind of
            :data:`corea.sandbox.ERROR_KINDS`, ``no_program`` or ``unavailable``
            (:class:`corea.pot.PotOutcome`); ``None`` when it ran. A failed program is no answer:
            never kept (:func:`corea.policy.unusable`).
        cot_answer: ``mot`` only: the chain-of-thought answer of the same tier.
        agreement: ``mot`` only: whether the CoT and the program answers agree
            (:func:`corea.pot.answers_agree`, the grader's equivalence); ``None`` otherwise.
    """

    model: str
    text: str = ""
    answer: str | None = None
    answer_method: AnswerMethod | None = None
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
    confidence_expected: float | None = None
    confidence_spread: float | None = None
    confidence_digits: int | None = None
    solve: str | None = None
    program: str | None = None
    program_output: str | None = None
    program_answer: str | None = None
    program_error: str | None = None
    cot_answer: str | None = None
    agreement: bool | None = None


@dataclass
class DecisionInfo:
    """The keep-or-defer decision and the numbers behind it.

    ``defer`` is True iff the question goes (or went) to the LLM. ``message`` is the plain-words
    sentence shown in the UI. ``confidence`` is the number compared with τ, from ``signal``:
    ``verbal`` (the SLM's stated confidence, the paper's), ``tokprob`` (geometric-mean token
    probability of its solution) or ``calibrated`` (a fitted calibrator's P(correct),
    :mod:`corea.signals.calibrator`); ``verbal_confidence`` is the stated one, shown alongside.
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
    :attr:`CascadeResult.tiers` holds one per tier that ran; it is the run's record.

    Attributes:
        index: the tier's position in the cascade (0 = the first, the SLM; ``n_tiers - 1`` = the
            last, which always answers).
        role: ``slm`` (the first tier), ``mid`` (a middle tier) or ``llm`` (the last tier).
        model: the tier's model name (price-table key).
        output: what the model produced (tokens, latency in s, cost in USD, text, answer, stated
            confidence for a deciding tier). With a confidence-first turn its tokens, cost and
            text are included.
        threshold: this tier's τ in [0, 1]; ``None`` for the last tier (it always answers).
        decision: this tier's keep-or-defer decision (``None`` for the last tier, and for a tier
            stopped before deciding). A fault of the tier it deferred to is recorded here
            (``llm_error``, ``llm_truncated``, ``llm_no_answer``).
        answered: whether this tier's answer is the final one.
        prior: the tier's confidence-first turn (its confidence stated before solving), or
            ``None`` when the tier solved first (the default).
    """

    index: int
    role: TierRole
    model: str
    output: ModelOutput
    threshold: float | None = None
    decision: DecisionInfo | None = None
    answered: bool = False
    prior: ModelOutput | None = None

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
                "confidence_expected": o.confidence_expected if self.role != "llm" else None,
                "confidence_spread": o.confidence_spread if self.role != "llm" else None,
                "finish_reason": o.finish_reason, "prompt_tokens": o.prompt_tokens,
                "completion_tokens": o.completion_tokens, "cost_usd": o.cost_usd,
                "latency_s": o.latency_s, "ttft_s": o.ttft_s, "error": o.error,
                "decision": None if d is None else ("deferred" if d.defer else "kept"),
                "reason": d.reason if d else None, "signal": d.signal if d else None,
                "signal_value": d.confidence if d else None,
                "message": d.message if d else None,
                "solve": o.solve or "cot", "program": o.program,
                "program_output": o.program_output, "program_error": o.program_error,
                "agreement": o.agreement}


@dataclass(init=False)
class CascadeResult:
    """The complete record of one cascade run (what gets logged).

    :attr:`tiers` is the record: one :class:`TierStep` per tier that ran, in cascade order.
    ``slm``, ``llm``, ``decision``, ``threshold`` and ``slm_prior`` are read from it (two-tier
    names kept for callers of the two-tier design).

    Attributes:
        question: the question as asked (after validation).
        tiers: one :class:`TierStep` per tier that ran, in cascade order.
        final_answer: the answer shown as final (``None`` if nobody produced one).
        final_model: which model produced ``final_answer``.
        final_text: the completion the final answer came from.
        latency_s: total wall time (seconds).
        cost_usd: total cost (USD) over every tier that ran.
        status: ``ok``, ``cancelled`` (user stopped mid-stream) or ``error``.
        warnings: user-visible warnings (e.g. "LLM unavailable (timeout) — showing the small
            model's answer").
        interaction_id: database row id once logged, else ``None``.
        answered_tier: the index of the tier whose answer is final, ``None`` if none.
        context: earlier turns of a conversation given with the question
            (:class:`corea.types.Message`; every tier saw them before the question).

    Built by hand (tests, older callers) with ``threshold``, ``slm`` and optionally
    ``decision``, ``llm`` and ``slm_prior`` instead of ``tiers``, the two-tier record is made
    from them: tier 0 (``slm``) and, when given, tier 1 (``llm``).
    """

    question: str
    tiers: list[TierStep]
    final_answer: str | None
    final_model: str | None
    final_text: str
    latency_s: float
    cost_usd: float
    status: Status
    warnings: list[str]
    interaction_id: int | None
    answered_tier: int | None
    context: list[Message]

    def __init__(self, question: str, threshold: float | None = None,
                 slm: ModelOutput | None = None, decision: DecisionInfo | None = None,
                 llm: ModelOutput | None = None, final_answer: str | None = None,
                 final_model: str | None = None, final_text: str = "", latency_s: float = 0.0,
                 cost_usd: float = 0.0, status: Status = "ok", warnings: list[str] | None = None,
                 interaction_id: int | None = None, slm_prior: ModelOutput | None = None,
                 tiers: list[TierStep] | None = None, answered_tier: int | None = None,
                 context: list[Message] | None = None):
        self.question = question
        self.tiers = list(tiers) if tiers is not None else []
        if not self.tiers and slm is not None:
            self.tiers.append(TierStep(0, "slm", slm.model, slm, threshold, decision,
                                       prior=slm_prior))
            if llm is not None:
                self.tiers.append(TierStep(1, "llm", llm.model, llm))
        elif slm is not None or llm is not None or decision is not None:
            raise ValueError("CascadeResult: give either tiers or slm / llm / decision")
        self.final_answer, self.final_model, self.final_text = final_answer, final_model, \
            final_text
        self.latency_s, self.cost_usd, self.status = latency_s, cost_usd, status
        self.warnings = list(warnings or [])
        self.interaction_id, self.answered_tier = interaction_id, answered_tier
        self.context = list(context or [])

    # ---------------------------------------------------------- read from the record
    @property
    def slm(self) -> ModelOutput | None:
        """The first tier's output (``None`` only for an empty record)."""
        return self.tiers[0].output if self.tiers else None

    @property
    def llm(self) -> ModelOutput | None:
        """The last tier's output when it ran (role ``llm``), else ``None``: a middle tier's
        output is never here (it is in :attr:`tiers`)."""
        last = self.tiers[-1] if self.tiers else None
        return last.output if last is not None and last.role == "llm" else None

    @property
    def decision(self) -> DecisionInfo | None:
        """The first tier's keep-or-defer decision (each tier's is on its :class:`TierStep`).
        Settable (it sets the first tier's), for records built by hand."""
        return self.tiers[0].decision if self.tiers else None

    @decision.setter
    def decision(self, info: DecisionInfo | None) -> None:
        self.tiers[0].decision = info

    @property
    def threshold(self) -> float | None:
        """The first tier's τ in [0, 1]."""
        return self.tiers[0].threshold if self.tiers else None

    @property
    def slm_prior(self) -> ModelOutput | None:
        """The first tier's confidence-first turn (its tokens are also counted in ``slm``)."""
        return self.tiers[0].prior if self.tiers else None

    def tier_steps(self) -> list[TierStep]:
        """The tiers that ran (:attr:`tiers`; kept for older callers)."""
        return self.tiers

    def answering_index(self) -> int | None:
        """Which tier's answer is final: :attr:`answered_tier` as the cascade recorded it; for a
        record built by hand (no ``answered_tier`` but a ``final_model``) worked out from its
        two outputs: the last tier's when its text is the final one and it did not fall back."""
        if self.answered_tier is not None or self.final_model is None:
            return self.answered_tier
        llm, d = self.llm, self.decision
        fell_back = d is not None and d.reason in ("llm_truncated", "llm_no_answer")
        if llm is not None and llm.error is None and self.final_model == llm.model \
                and self.final_text == llm.text and not fell_back:
            return len(self.tiers) - 1
        return 0

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over every tier that ran (tokens)."""
        return sum(t.output.prompt_tokens for t in self.tiers)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over every tier that ran (tokens)."""
        return sum(t.output.completion_tokens for t in self.tiers)

    def to_dict(self) -> dict:
        """Every field as JSON-ready values, with the two-tier names (``threshold``, ``slm``,
        ``decision``, ``llm``, ``slm_prior``) read from the record; ``tiers`` as
        :meth:`TierStep.to_dict` summaries."""
        def plain(x):
            return None if x is None else asdict(x)

        return {"question": self.question, "threshold": self.threshold,
                "slm": plain(self.slm), "decision": plain(self.decision),
                "llm": plain(self.llm), "final_answer": self.final_answer,
                "final_model": self.final_model, "final_text": self.final_text,
                "latency_s": self.latency_s, "cost_usd": self.cost_usd, "status": self.status,
                "warnings": list(self.warnings), "interaction_id": self.interaction_id,
                "slm_prior": plain(self.slm_prior),
                "tiers": [t.to_dict() for t in self.tiers],
                "answered_tier": self.answered_tier,
                "context": [asdict(m) for m in self.context],
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}


# ------------------------------------------------------------------------------- the events

@dataclass
class TierStarted:
    """Tier ``tier`` starts (its model's name); ``role`` is its place (slm / mid / llm)."""

    tier: int
    model: str
    role: TierRole = "mid"


@dataclass
class TierDelta:
    """New text of tier ``tier`` (forced-suffix or confidence-first text with ``forced=True``)."""

    tier: int
    text: str
    forced: bool = False
    role: TierRole = "mid"


@dataclass
class TierDone:
    """Tier ``tier`` finished (its output; ``error`` set when it failed)."""

    tier: int
    output: ModelOutput
    role: TierRole = "mid"


@dataclass
class Decision:
    """A deciding tier's keep-or-defer decision; ``tier`` is its index (0: the SLM)."""

    info: DecisionInfo
    tier: int = 0


@dataclass
class Final:
    result: CascadeResult


Event = TierStarted | TierDelta | TierDone | Decision | Final


class _RoleAlias(type):
    """Metaclass of the deprecated two-tier event names: an alias is the tier event ``event`` of
    one ``role``. ``isinstance`` matches by role; calling it builds the tier event."""

    event: type
    role: str

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, cls.event) and obj.role == cls.role

    def __call__(cls, *args, **kwargs):
        return cls.make(*args, **kwargs)


class SLMStarted(metaclass=_RoleAlias):
    """Deprecated: :class:`TierStarted` of the first tier (role ``slm``)."""

    event, role = TierStarted, "slm"

    @staticmethod
    def make(model: str) -> TierStarted:
        return TierStarted(0, model, "slm")


class SLMDelta(metaclass=_RoleAlias):
    """Deprecated: :class:`TierDelta` of the first tier (role ``slm``)."""

    event, role = TierDelta, "slm"

    @staticmethod
    def make(text: str, forced: bool = False) -> TierDelta:
        return TierDelta(0, text, forced, "slm")


class SLMDone(metaclass=_RoleAlias):
    """Deprecated: :class:`TierDone` of the first tier (role ``slm``)."""

    event, role = TierDone, "slm"

    @staticmethod
    def make(output: ModelOutput) -> TierDone:
        return TierDone(0, output, "slm")


class LLMStarted(metaclass=_RoleAlias):
    """Deprecated: :class:`TierStarted` of the last tier (role ``llm``; ``tier`` 1 with two)."""

    event, role = TierStarted, "llm"

    @staticmethod
    def make(model: str, tier: int = 1) -> TierStarted:
        return TierStarted(tier, model, "llm")


class LLMDelta(metaclass=_RoleAlias):
    """Deprecated: :class:`TierDelta` of the last tier (role ``llm``)."""

    event, role = TierDelta, "llm"

    @staticmethod
    def make(text: str, tier: int = 1) -> TierDelta:
        return TierDelta(tier, text, False, "llm")


class LLMDone(metaclass=_RoleAlias):
    """Deprecated: :class:`TierDone` of the last tier (role ``llm``)."""

    event, role = TierDone, "llm"

    @staticmethod
    def make(output: ModelOutput, tier: int = 1) -> TierDone:
        return TierDone(tier, output, "llm")
