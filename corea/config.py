"""Typed configuration: defaults < optional YAML file < environment variables.

Every field can be set from the environment with the ``COREA_`` prefix; nested fields use ``__``
(``COREA_SLM__BACKEND=openai``, ``COREA_LLM__MODEL=gpt-4o-mini``, ``COREA_THRESHOLD=0.8``).
A YAML file named by ``COREA_CONFIG`` (or passed to :func:`load_settings`) supplies the same keys.
Built on ``pydantic-settings``. The app's :class:`Settings` are here; the settings of one model
and of one tier (:class:`ModelSettings`, :class:`TierSettings`, ...) are in
:mod:`corea.model_config` and importable from here too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource,
                               SettingsConfigDict, YamlConfigSettingsSource)

from .adapters import CALIBRATED_SLM
from .costs import Price, priced_like
from .model_config import (EMBEDDED_LLM, EMBEDDED_SLM, BackendName,  # noqa: F401
                           EarlyExitSettings, LLMSettings, ModelSettings, ROUTE_THRESHOLD,
                           RouteSettings,
                           SLMSettings, Threshold, TierSettings)
from .signals.registry import AUTO, SETTINGS
from .types import check_solve


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
ConfidenceSource = Literal[(*SETTINGS, AUTO)]
"""``confidence_source``: a live signal of the registry (:data:`corea.signals.registry.SETTINGS`:
``verbal``, ``tokprob``, ``agreement``, ``calibrated``, ``probe``) or ``auto``."""
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
            ``calibrated`` (a fitted calibrator, :mod:`corea.signals.calibrator`), ``probe`` (a linear
            probe on the SLM's hidden state at the end of its solution, :mod:`corea.signals.probe`), or
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
        check_solve(mode)
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
        from .signals.probe import shipped_probe_dir

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
