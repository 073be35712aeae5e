"""Time accounting: compute seconds of a call from its token counts, per model.

The time twin of :mod:`corea.costs`. A model's time is linear in its tokens::

    seconds = overhead_s + prompt_tokens · prompt_s_per_token
              + completion_tokens · completion_s_per_token

(prompt processing and decoding run at different rates; the overhead is what a call costs before
its first prompt token). The coefficients are fit by non-negative least squares over measured calls
(:func:`fit_token_time`): rows of ``(prompt_tokens, completion_tokens, latency_s)`` from a bench
run (``bench/time_model.py``) or from evaluation rows (:func:`calls_from_rows`). A
:class:`TimeModel` records the machine it was measured on (:func:`corea.eval.runs.machine_info`)
and how, because seconds only mean something on that machine.

A model missing from a :class:`TimeModel` takes 0 s, like a model missing from a price table, and
:meth:`TimeModel.missing` names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field

__all__ = ["TokenTime", "TimeModel", "TimedCall", "fit_token_time", "fit_time_model",
           "calls_from_rows", "load_time_model", "SHIPPED_TIME_MODEL", "shipped_time_model"]

SHIPPED_TIME_MODEL = Path(__file__).resolve().parent / "assets" / "timing" / "time_model.json"
"""The time model shipped with the package (fit from the committed GSM8K generations; its card
``README.md`` beside it says how and on which machine)."""


class TokenTime(BaseModel):
    """One model's time per call: fixed seconds, seconds per prompt token, per completion token."""

    overhead_s: float = Field(0.0, ge=0.0)
    prompt_s_per_token: float = Field(0.0, ge=0.0)
    completion_s_per_token: float = Field(0.0, ge=0.0)
    n_calls: int = Field(0, ge=0, description="measured calls it was fit on")

    def seconds(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Seconds of one call with these token counts.

        Raises:
            ValueError: a negative token count.
        """
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must be non-negative")
        return (self.overhead_s + prompt_tokens * self.prompt_s_per_token
                + completion_tokens * self.completion_s_per_token)


class TimeModel(BaseModel):
    """Per-model :class:`TokenTime`, keyed by model name (:attr:`corea.config.ModelSettings.name`),
    with the machine and the method it was measured with."""

    models: dict[str, TokenTime] = Field(default_factory=dict)
    machine: dict = Field(default_factory=dict)
    source: str = ""

    def seconds(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Seconds of one call of ``model`` (0 for a model without a fit).

        Raises:
            ValueError: a negative token count.
        """
        t = self.models.get(model)
        if t is None:
            if prompt_tokens < 0 or completion_tokens < 0:
                raise ValueError("token counts must be non-negative")
            return 0.0
        return t.seconds(prompt_tokens, completion_tokens)

    def missing(self, models: Iterable[str]) -> list[str]:
        """The models of ``models`` without a fit (they take 0 s)."""
        return [m for m in models if m not in self.models]

    def like(self, name: str, base: str) -> "TimeModel":
        """A copy in which ``name`` takes ``base``'s time, unless ``name`` has its own fit (or
        ``base`` has none): a fine-tuned checkpoint (LoRA adapter) runs at its base model's speed,
        as :func:`corea.costs.priced_like` prices it."""
        if name in self.models or base not in self.models:
            return self
        return self.model_copy(update={"models": {**self.models, name: self.models[base]}})

    def save(self, path: str | os.PathLike) -> None:
        """Write as indented JSON."""
        Path(path).write_text(json.dumps(self.model_dump(), indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class TimedCall:
    """One measured call: its model, token counts and wall seconds (request to last token)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


def fit_token_time(calls: Sequence[TimedCall]) -> TokenTime:
    """Non-negative least squares of ``latency_s`` on ``[1, prompt_tokens, completion_tokens]``
    (:func:`scipy.optimize.nnls`).

    Raises:
        ValueError: fewer than 3 calls, or calls whose token counts do not vary enough to tell
            the three coefficients apart (rank < 3).
    """
    if len(calls) < 3:
        raise ValueError(f"need at least 3 measured calls to fit, got {len(calls)}")
    from scipy.optimize import nnls

    x = np.array([[1.0, c.prompt_tokens, c.completion_tokens] for c in calls], dtype=float)
    y = np.array([c.latency_s for c in calls], dtype=float)
    if np.linalg.matrix_rank(x) < 3:
        raise ValueError("the calls' prompt and completion lengths must vary to fit a time model")
    coef, _ = nnls(x, y)
    return TokenTime(overhead_s=float(coef[0]), prompt_s_per_token=float(coef[1]),
                     completion_s_per_token=float(coef[2]), n_calls=len(calls))


def fit_time_model(calls: Sequence[TimedCall], machine: dict | None = None,
                   source: str = "") -> TimeModel:
    """One :func:`fit_token_time` per model named in ``calls``.

    Raises:
        ValueError: a model with too few or too uniform calls (as :func:`fit_token_time`).
    """
    by: dict[str, list[TimedCall]] = {}
    for c in calls:
        by.setdefault(c.model, []).append(c)
    models = {}
    for name, cs in by.items():
        try:
            models[name] = fit_token_time(cs)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    return TimeModel(models=models, machine=dict(machine or {}), source=source)


def calls_from_rows(rows: Iterable[dict], roles: Sequence[str] = ("slm", "llm")) -> list[TimedCall]:
    """The measured calls of evaluation rows (:func:`corea.eval.runs.load_results`): each role's
    ``{model, prompt_tokens, completion_tokens, latency_s}`` where all are present, the call did
    not fail, and its latency is positive."""
    out = []
    for r in rows:
        for role in roles:
            o = r.get(role) or {}
            if o.get("error") or not o.get("model") or not (o.get("latency_s") or 0) > 0:
                continue
            if o.get("prompt_tokens") is None or o.get("completion_tokens") is None:
                continue
            out.append(TimedCall(o["model"], int(o["prompt_tokens"]),
                                 int(o["completion_tokens"]), float(o["latency_s"])))
    return out


def load_time_model(path: str | os.PathLike) -> TimeModel:
    """Read a :class:`TimeModel` JSON.

    Raises:
        OSError: the file cannot be read.
        pydantic.ValidationError: it is not a time model (e.g. negative coefficients).
    """
    return TimeModel.model_validate_json(Path(path).read_text(encoding="utf-8"))


def shipped_time_model() -> TimeModel | None:
    """The shipped :data:`SHIPPED_TIME_MODEL`, or None when it is absent or unreadable."""
    try:
        return load_time_model(SHIPPED_TIME_MODEL)
    except (OSError, ValueError):
        return None
