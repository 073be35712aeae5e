"""Checkpoint probes: P(the SLM's answer will be right) from its state while it is still writing.

An early-exit tier (:mod:`corea.cascade.early_exit`) reads its final-layer hidden state every
``k`` tokens of its decode; a checkpoint probe turns the state at completion position ``t``
(tokens written so far, :mod:`corea.backends.llamacpp_states`) into P(correct). Offline the states
come from a run's ``checkpoints.jsonl`` (:mod:`corea.eval.checkpoints`), attached to each row as
``slm_checkpoints``; an item's **checkpoints** are the positions ``t`` it wrote past
(``t < solution_tokens``: a decode that has stopped is judged answer-first, not here).

Two forms, both logistic regressions on standardised inputs
(:class:`corea.signals.probe.LinearProbe` pieces) fit to the item's ``slm_correct``:

- ``per_checkpoint``: one probe per position ``k, 2k, ...`` fit on the items still writing there
  (positions with fewer than :data:`MIN_PER_CLASS` items of a class use the last probe fit);
- ``pooled``: one probe on every (item, checkpoint) pair, with the position as two more inputs
  (``t / 512`` and its square).

:func:`choose_form` compares them on train by item-grouped out-of-fold AUROC per checkpoint
(mean over checkpoints, each weighted by its items) and keeps the better; the card says why.

Artifacts: a folder with ``card.json`` (:class:`CheckpointCard`) and one ``probe.npz`` per piece
(``t0032/``, ... or ``pooled/``), each in :meth:`LinearProbe.save`'s format.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import metrics
from .probe import MIN_PER_CLASS, LinearProbe, ProbeCard

__all__ = ["FORMS", "POSITION_SCALE", "CheckpointCard", "CheckpointProbe", "Pairs",
           "checkpoint_pairs", "fit_checkpoint_probe", "oof_checkpoint_values", "choose_form", "trajectory",
           "min_confidence"]

FORMS = ("per_checkpoint", "pooled")
POSITION_SCALE = 512.0  # tokens: the position inputs of the pooled form are t / 512, (t / 512)²
DEFAULT_C = 0.01
DEFAULT_FORM = "pooled"  # placeholder until chosen on train


@dataclass
class CheckpointCard:
    """What a checkpoint probe is and how it ranks on train.

    Attributes:
        slm: the SLM's name.
        k: tokens between two reads.
        form: one of :data:`FORMS`.
        c: the inverse regularisation strength of every piece.
        positions: the positions with a probe of their own (``per_checkpoint``) or seen in
            training (``pooled``).
        n_items: train items fit on; ``n_pairs``: (item, checkpoint) pairs.
        cv: item-grouped out-of-fold AUROC per position (``{"32": 0.71, ...}``), ``mean``
            (weighted by items) and ``folds``; ``choice``: both forms' means and why this one.
        data, fitted_at, version, notes: provenance.
    """

    slm: str
    k: int
    form: str
    c: float
    positions: list[int]
    n_items: int
    n_pairs: int
    cv: dict = field(default_factory=dict)
    choice: dict = field(default_factory=dict)
    data: list[str] = field(default_factory=list)
    fitted_at: str = ""
    version: str = ""
    notes: str = ""


class CheckpointProbe:
    """A fitted checkpoint probe: :meth:`confidence` of a state at position ``t``."""

    def __init__(self, card: CheckpointCard, pieces: dict[str, LinearProbe]):
        if card.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {card.form!r}")
        self.card = card
        self.pieces = pieces

    def _piece(self, t: int) -> LinearProbe:
        if self.card.form == "pooled":
            return self.pieces["pooled"]
        own = [p for p in self.card.positions if p <= t]
        return self.pieces[_key(own[-1] if own else self.card.positions[0])]

    def confidence(self, state: np.ndarray, t: int) -> float:
        """P(correct) in [0, 1] from one state (shape ``(n_embd,)``) at position ``t`` (tokens).

        Raises:
            ValueError: a state of another size than the probe's.
        """
        x = np.asarray(state, dtype=np.float64).ravel()
        if self.card.form == "pooled":
            x = np.concatenate([x, _position_inputs(np.array([t]))[0]])
        return float(self._piece(t).confidence(x)[0])

    def save(self, folder: str | Path) -> Path:
        """Write ``card.json`` and each piece's folder into ``folder``; returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, piece in self.pieces.items():
            piece.save(folder / name)
        (folder / "card.json").write_text(json.dumps(asdict(self.card), indent=2) + "\n",
                                          encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "CheckpointProbe":
        """Read a probe written by :meth:`save`.

        Raises:
            FileNotFoundError: a file is missing; ValueError: a malformed card.
        """
        folder = Path(folder)
        card = CheckpointCard(**json.loads((folder / "card.json").read_text(encoding="utf-8")))
        names = ["pooled"] if card.form == "pooled" else [_key(t) for t in card.positions]
        return cls(card, {n: LinearProbe.load(folder / n) for n in names})


def _key(t: int) -> str:
    return f"t{int(t):04d}"


def _position_inputs(t: np.ndarray) -> np.ndarray:
    u = np.asarray(t, dtype=np.float64) / POSITION_SCALE
    return np.stack([u, u * u], axis=1)


# ----------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Pairs:
    """Every (item, checkpoint) pair of some rows: ``item`` (row index), ``t`` (position),
    ``X`` (states, ``(n_pairs, n_embd)``) and ``y`` (the item's ``slm_correct``)."""

    item: np.ndarray
    t: np.ndarray
    X: np.ndarray
    y: np.ndarray


def checkpoint_pairs(rows: Sequence[dict], labelled: bool = True) -> Pairs:
    """The pairs of ``rows`` (their ``slm_checkpoints``,
    :func:`corea.eval.checkpoints.attach_checkpoints`) at the positions each item wrote past (``t < solution_tokens``). ``labelled``: only rows
    with a decided ``slm_correct`` (the others get ``y`` False when not ``labelled``)."""
    item, ts, xs, ys = [], [], [], []
    for i, r in enumerate(rows):
        cp = r.get("slm_checkpoints")
        if not cp or (labelled and r.get("slm_correct") is None):
            continue
        n = cp.get("solution_tokens") or 0
        for j, t in enumerate(cp["positions"]):
            if t < n:
                item.append(i)
                ts.append(t)
                xs.append(cp["states"][j])
                ys.append(bool(r.get("slm_correct")))
    X = np.stack(xs).astype(np.float64) if xs else np.zeros((0, 0))
    return Pairs(np.array(item, dtype=int), np.array(ts, dtype=int), X,
                 np.array(ys, dtype=bool))


# ----------------------------------------------------------------------------- fitting

def _fit_piece(X: np.ndarray, y: np.ndarray, c: float, slm: str, what: str) -> LinearProbe:
    from sklearn.linear_model import LogisticRegression

    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-8] = 1.0
    m = LogisticRegression(C=c, max_iter=2000).fit((X - mean) / scale, y)
    card = ProbeCard(slm=slm, position="end", target="slm_correct", dim=int(X.shape[1]),
                     c=float(c), n_train=int(y.size), n_positive=int(y.sum()), notes=what)
    return LinearProbe(mean, scale, m.coef_[0], float(m.intercept_[0]), card)


def _enough(y: np.ndarray) -> bool:
    return min(int(y.sum()), int((~y).sum())) >= MIN_PER_CLASS


def _fit_pairs(p: Pairs, form: str, k: int, c: float, slm: str) -> CheckpointProbe:
    """Fit one form on pairs (see the module docstring)."""
    if p.y.size == 0 or not _enough(p.y):
        raise ValueError("a checkpoint probe needs at least "
                         f"{MIN_PER_CLASS} right and {MIN_PER_CLASS} wrong items")
    positions = sorted({int(t) for t in p.t})
    if form == "pooled":
        X = np.hstack([p.X, _position_inputs(p.t)])
        piece = _fit_piece(X, p.y, c, slm, "pooled: state + t/512 + (t/512)^2")
        pieces, own = {"pooled": piece}, positions
    else:
        pieces, own = {}, []
        for t in positions:
            at = p.t == t
            if _enough(p.y[at]):
                pieces[_key(t)] = _fit_piece(p.X[at], p.y[at], c, slm, f"position {t}")
                own.append(t)
        if not own:
            raise ValueError("no checkpoint has enough right and wrong items")
    card = CheckpointCard(slm=slm, k=k, form=form, c=float(c), positions=own,
                          n_items=int(np.unique(p.item).size), n_pairs=int(p.y.size))
    return CheckpointProbe(card, pieces)


def _values(probe: CheckpointProbe, p: Pairs) -> np.ndarray:
    return np.array([probe.confidence(x, int(t)) for x, t in zip(p.X, p.t)])


def _item_folds(rows: Sequence[dict], folds: int, seed: int) -> np.ndarray:
    """Fold number per row, stratified by ``slm_correct`` (the same split for every position)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.array([bool(r.get("slm_correct")) for r in rows])
    k = max(2, min(folds, int(y.sum()), int((~y).sum())))
    fold = np.zeros(len(rows), dtype=int)
    for f, (_tr, te) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed)
                                  .split(np.zeros(len(y)), y)):
        fold[te] = f
    return fold


def oof_checkpoint_values(rows: Sequence[dict], slm: str, form: str, k: int,
                          c: float = DEFAULT_C, folds: int = 5, seed: int = 0
                          ) -> tuple[Pairs, np.ndarray]:
    """Cross-fitted values: every (item, checkpoint) pair of ``rows`` scored by a probe fit on
    the items of the other folds (item-grouped, so no item is scored by a probe that saw it).

    Returns:
        ``(pairs, values)`` with one value per pair.

    Raises:
        ValueError: a fold without enough labels.
    """
    p = checkpoint_pairs(rows)
    fold = _item_folds(rows, folds, seed)[p.item] if p.y.size else np.zeros(0, dtype=int)
    out = np.full(p.y.size, np.nan)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        sub = Pairs(p.item[tr], p.t[tr], p.X[tr], p.y[tr])
        probe = _fit_pairs(sub, form, k, c, slm)
        out[te] = _values(probe, Pairs(p.item[te], p.t[te], p.X[te], p.y[te]))
    return p, out


def auroc_by_position(p: Pairs, values: np.ndarray) -> dict:
    """``{"<t>": AUROC of the values at t against correctness, ..., "mean": item-weighted}``
    over the positions with both classes."""
    out, num, den = {}, 0.0, 0
    for t in sorted({int(t) for t in p.t}):
        at = p.t == t
        if 0 < int(p.y[at].sum()) < int(at.sum()):
            a = metrics.auroc(values[at], p.y[at])
            out[str(t)] = round(float(a), 4)
            num, den = num + a * int(at.sum()), den + int(at.sum())
    out["mean"] = round(num / den, 4) if den else None
    return out


def choose_form(rows: Sequence[dict], slm: str, k: int, cs: Sequence[float] = (0.01, 0.03, 0.1),
                folds: int = 5, seed: int = 0) -> dict:
    """Both forms at each ``c``, cross-fitted on train rows: ``{"best": {"form", "c"},
    "results": {"<form>@<c>": auroc_by_position}, "why": words, "oof": (pairs, values)}``
    (``oof``: the best's cross-fitted values, :func:`oof_checkpoint_values`); the best has the
    highest item-weighted mean AUROC over the checkpoints."""
    results, oof = {}, {}
    for form in FORMS:
        for c in cs:
            name = f"{form}@{c:g}"
            oof[name] = oof_checkpoint_values(rows, slm, form, k, c, folds, seed)
            results[name] = auroc_by_position(*oof[name])
    best = max(results, key=lambda n: (results[n]["mean"] or 0.0))
    form, c = best.split("@")
    means = {n: r["mean"] for n, r in results.items()}
    return {"best": {"form": form, "c": float(c)}, "results": results, "oof": oof[best],
            "why": f"{best} has the highest item-weighted mean out-of-fold AUROC over the "
                   f"checkpoints on train ({means[best]}; all: {means})"}


def fit_checkpoint_probe(rows: Sequence[dict], slm: str, k: int, form: str = "pooled",
                         c: float = DEFAULT_C, choice: dict | None = None,
                         data: Sequence[str] = (), version: str = "", notes: str = "",
                         folds: int = 5, seed: int = 0,
                         cross_validate: bool = True) -> CheckpointProbe:
    """Fit on all train ``rows`` (with ``slm_checkpoints`` and ``slm_correct``); the card holds
    the item-grouped out-of-fold AUROC per position (``cross_validate``; ``folds`` more fits)
    and ``choice`` (:func:`choose_form`).

    Raises:
        ValueError: too few labels, an unknown form.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    probe = _fit_pairs(checkpoint_pairs(rows), form, k, c, slm)
    choice = dict(choice or {})
    if choice.get("oof") is not None:  # the chosen form's cross-fitted values, already made
        probe.card.cv = {**auroc_by_position(*choice.pop("oof")), "folds": folds}
    elif cross_validate:
        p, v = oof_checkpoint_values(rows, slm, form, k, c, folds, seed)
        probe.card.cv = {**auroc_by_position(p, v), "folds": folds}
    probe.card.choice = choice
    probe.card.data, probe.card.version, probe.card.notes = list(data), version, notes
    probe.card.fitted_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return probe


# ----------------------------------------------------------------------------- reading rows

def trajectory(probe: CheckpointProbe, row: dict) -> list[tuple[int, float]]:
    """``[(t, P(correct)), ...]`` at the row's checkpoints (positions it wrote past), in order;
    ``[]`` without checkpoint states."""
    cp = row.get("slm_checkpoints")
    if not cp:
        return []
    n = cp.get("solution_tokens") or 0
    return [(t, probe.confidence(cp["states"][j], t))
            for j, t in enumerate(cp["positions"]) if t < n]


def min_confidence(rows: Sequence[dict], probe: CheckpointProbe) -> list[float | None]:
    """Per row, the lowest P(correct) over its checkpoints (an early exit at τ_e stops the
    decode exactly when this is below τ_e); 1.0 for a solution shorter than ``k`` (never
    checked), None without checkpoint states."""
    out: list[float | None] = []
    for r in rows:
        if not r.get("slm_checkpoints"):
            out.append(None)
            continue
        vals = [v for _t, v in trajectory(probe, r)]
        out.append(min(vals) if vals else 1.0)
    return out
