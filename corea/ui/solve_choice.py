"""The Ask tab's "Solve by" choice: how every tier solves one question (``cot`` / ``pot`` / ``mot``,
docs/program-of-thought.md), with the measured trade-off in one line.

The value goes to :meth:`corea.service.CoreaService.ask` as ``solve=``, as the API's
``corea.solve`` does; the one rule it is checked by is :func:`corea.types.check_solve`. The
numbers of the note are read from the committed held-out comparison of the modes
(``data/generations/heldout-modes-gsm8k.json``, written by ``corea heldout --mode``): the large
model alone on GSM8K test, pass@1 and seconds per question on the project's 2-vCPU machine.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..types import SOLVE_MODES, check_solve
from .run_sources import COMMITTED_RUNS

log = logging.getLogger("corea.app")

__all__ = ["SOLVE_LABELS", "AS_CONFIGURED", "MEASURED", "REFUSED", "ModeMeasure",
           "solve_choices", "default_solve", "requested_solve", "measured", "solve_note"]

SOLVE_LABELS = {"cot": "Reasoning in words", "pot": "A Python program",
                "mot": "Both, and compare"}
"""The choice's words for each mode of :data:`corea.types.SOLVE_MODES`."""

_SHORT = {"cot": "words", "pot": "a program", "mot": "both"}

AS_CONFIGURED = "configured"
"""The choice's value for "as each tier is configured", offered only when the tiers' modes
differ (a value of none of the modes: the service then keeps each tier's own)."""

MEASURED = COMMITTED_RUNS / "heldout-modes-gsm8k.json"
"""The held-out comparison of the modes the note quotes."""

REFUSED = ("⚠️ That is not a way to solve offered here. Choose one of: "
           + ", ".join(f"**{SOLVE_LABELS[m]}**" for m in SOLVE_MODES)
           + ". Your question is still in the box.")
"""The chat's message for a "Solve by" value that is not one of the choices (the value itself is
not repeated: it may be a stranger's markup)."""


@dataclass(frozen=True)
class ModeMeasure:
    """One mode's measured accuracy and time: the large model alone on held-out items.

    Attributes:
        mode: ``cot`` / ``pot`` / ``mot``.
        pass_at_1: fraction right, in [0, 1].
        seconds: seconds per question (the time model of the 2-vCPU machine on the rows' tokens).
        n_items: how many test items it was measured on.
    """

    mode: str
    pass_at_1: float
    seconds: float
    n_items: int


def solve_choices(solves: list[str]) -> list[tuple[str, str]]:
    """The radio's ``(label, value)`` choices for tiers configured with ``solves`` (in cascade
    order): the three modes, after an "As configured" choice when the tiers' modes differ."""
    out = [(SOLVE_LABELS[m], m) for m in SOLVE_MODES]
    if len(set(solves)) > 1:
        words = ", ".join(_SHORT.get(m, m) for m in solves)
        out.insert(0, (f"As configured ({words})", AS_CONFIGURED))
    return out


def default_solve(solves: list[str]) -> str:
    """The choice the tab opens with: the tiers' one configured mode (today ``cot``), or
    :data:`AS_CONFIGURED` when they differ."""
    return solves[0] if len(set(solves)) == 1 else AS_CONFIGURED


def requested_solve(value: object) -> str | None:
    """The ``solve=`` for :meth:`corea.service.CoreaService.ask` from the choice's value: ``None``
    (each tier as configured) for ``None``, ``""`` or :data:`AS_CONFIGURED`, else the mode.

    Raises:
        ValueError: any other value (:func:`corea.types.check_solve`), e.g. one sent by a script
            to the public endpoint.
    """
    if value is None or value in ("", AS_CONFIGURED):
        return None
    return check_solve(value, "Solve by")


def measured(path: Path = MEASURED) -> list[ModeMeasure]:
    """Every mode's large-model-alone test numbers from a ``corea heldout --mode`` JSON report
    (in :data:`corea.types.SOLVE_MODES` order); ``[]`` when the report is missing or unreadable
    (the note then quotes no numbers)."""
    try:
        report = json.loads(Path(path).read_text())
        n = int(report["items"]["test"])
        tests = {m: v["llm_only"]["test"] for m, v in report["modes"].items()}
        return [ModeMeasure(m, float(tests[m]["pass_at_1"]),
                            float(tests[m]["seconds_per_question"]), n)
                for m in SOLVE_MODES if m in tests]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("no measured solve modes in %s", path)
        return []


def solve_note(measures: list[ModeMeasure]) -> str:
    """The one-line explanation under the choice: which mode was the fastest and which the most
    often right, then each mode's numbers. ``measures``: :func:`measured`.

    >>> print(solve_note([ModeMeasure("cot", 0.6, 28.3, 200),
    ...                   ModeMeasure("pot", 0.565, 10.4, 200)]))  # doctest: +NORMALIZE_WHITESPACE
    A program was the fastest, words the most often right (the large model alone on 200 GSM8K
    test questions, 2-vCPU machine): words 60.0% right, 28.3 s a question · a program 56.5%, 10.4 s.
    """
    if not measures:
        return "How every model solves this question: in words, with a Python program, or both."
    fast = min(measures, key=lambda m: m.seconds)
    best = max(measures, key=lambda m: m.pass_at_1)
    first, *rest = measures
    each = " · ".join([f"{_SHORT[first.mode]} {first.pass_at_1:.1%} right, "
                       f"{first.seconds:.1f} s a question"]
                      + [f"{_SHORT[m.mode]} {m.pass_at_1:.1%}, {m.seconds:.1f} s" for m in rest])
    return (f"{_SHORT[fast.mode].capitalize()} was the fastest, {_SHORT[best.mode]} the most "
            f"often right (the large model alone on {first.n_items} GSM8K test questions, "
            f"2-vCPU machine): {each}.")
