"""When the SLM's own stated confidence decides: the one selection rule, read from cards.

The paper's idea is a small model that says how sure it is. Its stated confidence decides by
default (``confidence_source: auto``) when, **on train cross-fit**, it ranks the SLM's answers
at least as well as the token calibrator: the out-of-fold stated confidence's AUROC is at least
the out-of-fold AUROC of the token calibrator on the same train rows. Those numbers are in the
adapter's cross-fit card (:data:`CROSSFIT_FILE`, written by ``python -m train.crossfit``:
``{"crossfit": {"stated": {"auroc": ...}, "token_calibrator": {"auroc": ...}, ...}}``). Without
such a card — an adapter trained on every train row has no out-of-sample stated confidence —
the rule does not pick the stated confidence, and the learned signals are ranked as before
(:func:`corea.cascade.deciding.auto_ranking`). Test numbers never enter the rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["CROSSFIT_FILE", "STATED_DECIDES", "crossfit_numbers", "stated_decides",
           "stated_decides_for"]

CROSSFIT_FILE = "crossfit.json"
"""The cross-fit card next to an adapter (``train.crossfit``)."""

STATED_DECIDES = "decided by the model's own stated confidence"
"""The words the Ask tab and the decision card use when the rule picks the stated confidence."""


def crossfit_numbers(adapter_dir: str | os.PathLike[str] | None) -> dict | None:
    """The ``crossfit`` metrics of the card in ``adapter_dir``; None when there is no readable
    card (or no folder)."""
    if adapter_dir is None:
        return None
    try:
        card = json.loads((Path(adapter_dir) / CROSSFIT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    numbers = card.get("crossfit") if isinstance(card, dict) else None
    return numbers if isinstance(numbers, dict) else None


def stated_decides(numbers: dict | None) -> bool:
    """The rule: the out-of-fold stated confidence's AUROC is at least the token calibrator's
    (both on the same train rows, both present)."""
    if not numbers:
        return False
    stated = (numbers.get("stated") or {}).get("auroc")
    token = (numbers.get("token_calibrator") or {}).get("auroc")
    return stated is not None and token is not None and float(stated) >= float(token)


def stated_decides_for(model: str) -> bool:
    """The rule for an SLM model id: the shipped adapter's card for
    :data:`corea.adapters.CALIBRATED_SLM`, an adapter folder's own card for a path; False for
    any other model (no card)."""
    from .adapters import resolve_adapter

    try:
        folder = resolve_adapter(model)
    except FileNotFoundError:
        return False
    return stated_decides(crossfit_numbers(folder))
