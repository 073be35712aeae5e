"""The one registry of solve modes: how a tier solves, chosen by ``TierOptions.solve``.

- ``cot`` — :func:`corea.cascade.step.solve_cot`: step-by-step text ending in ``\\boxed{}``;
- ``pot`` — :func:`corea.cascade.program.solve_pot`: a Python program run in the sandbox;
- ``mot`` — :func:`corea.cascade.program.solve_mot`: both, with their agreement recorded.

A new mode is a function with :func:`~corea.cascade.step.solve_cot`'s signature
``(task, out, params)`` that fills the same :class:`~corea.events.ModelOutput` fields, added to
:data:`SOLVERS` (and to :data:`corea.types.SOLVE_MODES`, which configuration validates against);
deciding, the final answer and the records need no change.
"""

from __future__ import annotations

from typing import Callable

from ..events import ModelOutput
from ..types import GenerationParams
from .plan import TierPlan
from .program import solve_mot, solve_pot
from .step import TierTask, solve_cot

#: solve mode (``TierOptions.solve``) → the function that runs it.
SOLVERS: dict[str, Callable] = {"cot": solve_cot, "pot": solve_pot, "mot": solve_mot}


def solve(task: TierTask, out: ModelOutput, params: GenerationParams | None = None):
    """Run the tier's solve mode (:data:`SOLVERS`) into ``out``; ``params`` replaces the plan's
    generation settings for the solution (e.g. sampled solutions for self-consistency)."""
    yield from SOLVERS[task.plan.options.solve](task, out, params or task.plan.params)


def check_solve_mode(plan: TierPlan) -> None:
    """Raises ValueError when ``plan``'s solve mode is not in :data:`SOLVERS`."""
    if plan.options.solve not in SOLVERS:
        raise ValueError(f"tier {plan.index}: unknown solve mode {plan.options.solve!r} "
                         f"(known: {', '.join(SOLVERS)})")
