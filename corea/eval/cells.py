"""Markdown table cells of the run summaries: a share as a percentage, a number, a USD amount;
``–`` for a missing value."""

from __future__ import annotations

__all__ = ["pct", "num", "usd"]


def pct(x, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage with ``digits`` decimals."""
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def num(x, fmt: str = ".4f") -> str:
    """A number in ``fmt``."""
    return "–" if x is None else format(x, fmt)


def usd(x) -> str:
    """An amount in USD, six decimals."""
    return "–" if x is None else f"${x:.6f}"
