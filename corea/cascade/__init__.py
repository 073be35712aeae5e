"""The COREA cascade, with the tier as the unit: the SLM answers with a verbalized confidence;
below its τ the next tier answers instead; the last tier always answers.

Modules, one job each:

- :mod:`~corea.cascade.plan` — the plan of tiers (backend, role, τ, generation settings,
  :class:`TierOptions` per tier) and the τ resolution.
- :mod:`~corea.cascade.step` — one tier's step: its chain-of-thought solution streamed, forced
  suffix, echo re-ask, calibration adapter line, confidence-first turn.
- :mod:`~corea.cascade.program` — the ``pot`` and ``mot`` solve modes: a program run in the
  sandbox, and both ways with their agreement.
- :mod:`~corea.cascade.solvers` — :data:`SOLVERS`, the one registry of solve modes.
- :mod:`~corea.cascade.stream` — draining a backend stream; tokens, latency, cost and faults.
- :mod:`~corea.cascade.deciding` — the deciding number (stated, token probability,
  calibrator, probe; :func:`auto_ranking`) and a tier's keep-or-defer decision.
- :mod:`~corea.cascade.route` / :mod:`~corea.cascade.delegate` — pre-generation routing: a
  probe on the tier's state after the question, or the delegation value read from both its
  and the next tier's prefills; :mod:`~corea.cascade.early_exit` — a probe while it writes.
- :mod:`~corea.cascade.final` — the last tier's answer checked; the final answer and totals.
- :mod:`~corea.cascade.loop` — :class:`Cascade`: the one loop over the tiers and the
  single-tier entry points for evaluation.

The rules the tiers apply (keep iff confidence ≥ τ, never keep an answer that is not one, the
messages) are :mod:`corea.policy`'s.
"""

from .deciding import auto_ranking, deciding_number
from .loop import Cascade
from .plan import TierOptions, TierPlan
from .solvers import SOLVERS
from .stream import Cancelled

__all__ = ["Cascade", "Cancelled", "SOLVERS", "TierOptions", "TierPlan", "auto_ranking",
           "deciding_number"]
