"""Cost accounting: USD from token counts and a per-model price table.

Prices are USD per one million tokens, separately for input (prompt) and output (completion)
tokens, keyed by model name (:attr:`corea.config.ModelSettings.name`). A model missing from the
table costs 0 and is reported by :func:`missing_prices`.
"""

from __future__ import annotations

from typing import Mapping

from pydantic import BaseModel, Field


class Price(BaseModel):
    """Price of one model in USD per one million tokens."""

    input_per_mtok: float = Field(0.0, ge=0.0)
    output_per_mtok: float = Field(0.0, ge=0.0)


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int,
             prices: Mapping[str, Price]) -> float:
    """Cost of one call in USD: ``(prompt · p_in + completion · p_out) / 1e6``.

    Raises:
        ValueError: a negative token count.
    """
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts must be non-negative")
    price = prices.get(model)
    if price is None:
        return 0.0
    return (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6


def priced_like(prices: Mapping[str, Price], name: str, base: str) -> dict[str, Price]:
    """A copy of ``prices`` in which ``name`` costs what ``base`` costs, unless ``name`` already
    has a price (or ``base`` has none). Used for fine-tuned checkpoints: a LoRA or full fine-tune
    of the SLM runs at its base model's per-token price."""
    out = dict(prices)
    if name not in out and base in out:
        out[name] = out[base]
    return out


def missing_prices(models: list[str], prices: Mapping[str, Price]) -> list[str]:
    """The models of ``models`` that have no entry in ``prices`` (they are costed at 0)."""
    return [m for m in models if m not in prices]
