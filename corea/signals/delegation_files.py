"""A fitted delegation model as a folder: what the live cascade routes with before the SLM writes.

The model is :class:`corea.signals.delegation.Delegation`'s ``before`` part — the SLM's prompt
probe, the LLM's prompt probe and the ``before`` head (:mod:`corea.signals.delegation`) — plus
the route threshold τ_r chosen for it on train. The ``after`` head is not saved: it needs the
token calibrator's value, which exists only once the SLM has answered, and the live option
decides before. Plain files, no pickle::

    <folder>/card.json            DelegationCard: models, rows, C values, head, τ_r, command
    <folder>/slm_probe/probe.npz  + card.json   (corea.signals.probe.LinearProbe.save)
    <folder>/llm_probe/probe.npz  + card.json

The head's numbers live in the card (a handful of floats; JSON keeps them exactly). One ships
for the embedded SLM under ``corea/assets/probes/<slm>/delegation/`` (``corea delegation``
regenerates it from the committed train rows).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .delegation import HEAD_C, Delegation, Head, usable_rows
from .probe import SHIPPED, LinearProbe, target_labels

__all__ = ["DelegationCard", "SavedDelegation", "make_card", "save_delegation",
           "load_delegation", "shipped_delegation_dir"]

SLM_PROBE, LLM_PROBE, CARD = "slm_probe", "llm_probe", "card.json"


@dataclass
class DelegationCard:
    """What a saved delegation model is and where it came from.

    Attributes:
        slm: the SLM's name (whose prompt state the SLM probe reads).
        llm: the LLM's name (whose state after its own answer prompt the LLM probe reads).
        data: the train rows it was fit on (run folders, dataset and split).
        n_train: rows with both grades and both prompt states (the heads' rows).
        n_helps: of them, rows where the LLM was right and the SLM wrong (the target).
        c_slm / c_llm: the base probes' chosen inverse L2 strengths.
        head_c: the head's inverse L2 strength.
        before: the ``before`` head: ``{"mean", "scale", "coef"}`` (3 floats each, the columns
            of :func:`corea.signals.delegation.head_features`) and ``"intercept"``.
        route_threshold: τ_r in [0, 1] on ``1 - P(delegation)``: below it the question is routed.
        threshold_source: where τ_r was chosen (a report and its variant, or "given").
        fitted_at: ISO time (UTC).
        version: a label such as ``v1``.
        command: the command that regenerates the folder.
    """

    slm: str
    llm: str
    data: list[str]
    n_train: int
    n_helps: int
    c_slm: float
    c_llm: float
    head_c: float
    before: dict
    route_threshold: float
    threshold_source: str = ""
    fitted_at: str = ""
    version: str = ""
    command: str = ""


@dataclass(frozen=True)
class SavedDelegation:
    """A loaded folder: the model (``calibrator`` and ``after`` None) and its card."""

    model: Delegation
    card: DelegationCard


def make_card(model: Delegation, rows: Sequence[dict], slm: str, llm: str, threshold: float,
              data: Sequence[str] = (), threshold_source: str = "", version: str = "",
              command: str = "") -> DelegationCard:
    """The card of ``model`` fit on ``rows`` (counts from the rows it could use)."""
    used = usable_rows(rows)
    h = model.before
    return DelegationCard(
        slm=slm, llm=llm, data=list(data), n_train=len(used),
        n_helps=int(sum(bool(x) for x in target_labels(used, "llm_helps"))),
        c_slm=float(model.slm_probe.card.c), c_llm=float(model.llm_probe.card.c),
        head_c=HEAD_C, before={"mean": [float(x) for x in h.mean],
                               "scale": [float(x) for x in h.scale],
                               "coef": [float(x) for x in h.coef],
                               "intercept": float(h.intercept)},
        route_threshold=float(threshold), threshold_source=threshold_source,
        fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), version=version,
        command=command)


def save_delegation(model: Delegation, card: DelegationCard, folder: str | Path) -> Path:
    """Write the two probes and ``card.json`` into ``folder`` (created); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.slm_probe.save(folder / SLM_PROBE)
    model.llm_probe.save(folder / LLM_PROBE)
    (folder / CARD).write_text(json.dumps(asdict(card), indent=2) + "\n", encoding="utf-8")
    return folder


def load_delegation(folder: str | Path) -> SavedDelegation:
    """Read a folder written by :func:`save_delegation`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a card that does not parse, probes of the wrong position or tier, or a
            head whose sizes do not match.
    """
    folder = Path(folder)
    try:
        card = DelegationCard(**json.loads((folder / CARD).read_text(encoding="utf-8")))
    except TypeError as exc:
        raise ValueError(f"{folder / CARD}: not a delegation card ({exc})") from None
    sp, lp = LinearProbe.load(folder / SLM_PROBE), LinearProbe.load(folder / LLM_PROBE)
    if (sp.card.position, sp.card.tier) != ("prompt", "slm") or \
            (lp.card.position, lp.card.tier, lp.card.target) != ("prompt", "llm", "llm_correct"):
        raise ValueError(f"{folder}: the delegation model needs the SLM's and the LLM's "
                         f"prompt probes (corea delegation)")
    b = card.before
    head = Head(np.asarray(b["mean"], dtype=float), np.asarray(b["scale"], dtype=float),
                np.asarray(b["coef"], dtype=float), float(b["intercept"]))
    if not head.mean.shape == head.scale.shape == head.coef.shape == (3,):
        raise ValueError(f"{folder / CARD}: the before head needs 3 means, scales and "
                         f"coefficients")
    return SavedDelegation(Delegation(sp, lp, None, head, None), card)


def shipped_delegation_dir(slm: str) -> Path | None:
    """The delegation model shipped for ``slm`` (``corea/assets/probes/<slm>/delegation/``), or
    None when none ships."""
    from ..shipped import slug

    d = SHIPPED / slug(slm) / "delegation"
    return d if (d / CARD).is_file() else None
