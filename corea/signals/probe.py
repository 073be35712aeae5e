"""Linear probes on the SLM's hidden states: a deferral signal read from one vector.

A probe is logistic regression on the SLM's final-layer hidden state (:mod:`corea.signals.hidden`), the
"Probe" baseline of the COREA paper (arXiv:2603.03752, §5); linear probes on a model's own states
are known to rank its errors far better than what it says about itself (e.g. arXiv:2605.09502).
Two positions, both read in the decode that generates (no second pass):

- ``end``: the state at the end of the SLM's solution — an **answer-first** signal;
- ``prompt``: the state after the question, before the SLM writes a token — a **pre-generation**
  router: a question it defers costs the SLM only its prompt (arXiv:2605.06350).

Three targets ("defer only where it helps"):

- ``slm_correct``: the probe predicts P(the SLM's answer is correct); the confidence is that.
- ``llm_helps``: it predicts P(the SLM is wrong and the LLM right), the only items whose deferral
  buys accuracy; the confidence is ``1 - P(helps)``, so deferring below τ sends exactly the items
  most likely to be fixed.
- ``llm_correct``: P(the LLM's answer is correct), read from the **LLM's** state after its own
  prompt (``tier="llm"``: ``llm.states.prompt``, :mod:`corea.eval.llm_states`); the confidence is
  ``1 - P``, and the card's cross-validated metrics are P against the LLM's correctness.

With ``tokens=True`` the input is the state followed by the calibrator's 7 features of the same
output (:func:`corea.signals.calibrator.features`: the stated confidence and the token-probability
signals), so one regularised logistic regression weighs what the model's state, its words and its
token probabilities say (``probe_tokens``; an answer-first signal that needs an engine with
log-probabilities).

Fitting (:func:`fit_probe`): features standardised, L2-regularised ``LogisticRegression``
(scikit-learn, lbfgs) with the strength ``C`` chosen by stratified k-fold log-loss on the training
rows; the card carries the cross-validated AUROC / ECE / Brier score of the chosen probe (out-of-fold
predictions) next to the stated confidence's on the same rows. Fit on **train** splits only.

Artifacts are plain files, no pickle: ``probe.npz`` (``mean``, ``scale``, ``coef`` of shape
``(d,)``, ``intercept``) and ``card.json`` (:class:`ProbeCard`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import metrics
from ..shipped import ASSETS, slug
from . import hidden

SHIPPED = ASSETS / "probes"
"""Probes that ship with the package, one folder per SLM name (:func:`corea.shipped.slug`)."""

POSITIONS = ("end", "prompt")
TARGETS = ("slm_correct", "llm_helps", "llm_correct")
TIERS = ("slm", "llm")
DEFAULT_CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MIN_PER_CLASS = 5


@dataclass
class ProbeCard:
    """What a probe is, what it was fit on, and how well it ranks out of fold.

    Attributes:
        slm: the SLM's name (a probe belongs to one model, prompt and engine).
        position: ``end`` or ``prompt`` (see the module docstring).
        target: one of :data:`TARGETS`.
        dim: input size: the hidden-state size (896 for Qwen2.5-0.5B), plus 7 with ``tokens``.
        c: the chosen inverse regularisation strength.
        n_train / n_positive: rows fit on / rows whose target is true.
        data: where the rows came from (run folders, dataset and split).
        cv: out-of-fold metrics of the probe's confidence against SLM correctness
            (``auroc``, ``ece``, ``brier``, ``folds``).
        cv_verbal: the stated confidence's metrics on the same rows (those that have one).
        test: metrics on held-out test runs, for the record only (``{name: {n, auroc, ece,
            brier, verbal: {...}}}``, :func:`test_metrics`); nothing is chosen with them.
        tokens: the input also holds the calibrator's features of the output (see the module
            docstring).
        fitted_at: ISO time (UTC).
        version: a label such as ``v1``.
        notes: free text (e.g. how to regenerate it).
        tier: whose state it reads: ``slm`` (the row's ``slm``) or ``llm`` (``llm``; the
            ``slm`` field then names the LLM).
    """

    slm: str
    position: str
    target: str
    dim: int
    c: float
    n_train: int
    n_positive: int
    data: list[str] = field(default_factory=list)
    cv: dict = field(default_factory=dict)
    cv_verbal: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    tokens: bool = False
    fitted_at: str = ""
    version: str = ""
    notes: str = ""
    tier: str = "slm"

    def beats_verbal(self) -> bool:
        """Out-of-fold AUROC above the stated confidence's on the same rows (or it has none)."""
        mine, verbal = self.cv.get("auroc"), (self.cv_verbal or {}).get("auroc")
        return mine is not None and (verbal is None or mine > verbal)

    @property
    def signal(self) -> str:
        """The signal name this probe provides (``probe``, ``prior_probe``, ``probe_helps``,
        ``llm_prior_probe``...)."""
        if self.tier == "llm":
            return "llm_prior_probe" if self.position == "prompt" else "llm_probe"
        base = ("probe" if self.position == "end" else "prior_probe") + \
            ("_tokens" if self.tokens else "")
        return base if self.target == "slm_correct" else f"{base}_helps"


class LinearProbe:
    """A fitted probe: ``confidence(x) = sigmoid(((x - mean) / scale) · coef + intercept)``,
    complemented for the ``llm_helps`` target (see the module docstring)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float,
                 card: ProbeCard):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.card = card

    def probability(self, X: np.ndarray) -> np.ndarray:
        """P(target) for states ``X`` of shape ``(n, dim)`` (or one state ``(dim,)``).

        Raises:
            ValueError: a state of another size than the probe's.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.coef.size:
            raise ValueError(f"hidden state of size {X.shape[1]}, the probe expects "
                             f"{self.coef.size} ({self.card.slm})")
        z = ((X - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def confidence(self, X: np.ndarray) -> np.ndarray:
        """The deferral confidence in [0, 1] per state (higher = keep the SLM's answer)."""
        p = self.probability(X)
        return p if self.card.target == "slm_correct" else 1.0 - p  # llm_*: complemented

    def confidence_of(self, states: dict | None, output: dict | None = None) -> float | None:
        """The confidence of one output from its encoded states (:attr:`ModelOutput.states`)
        and, for a ``tokens`` probe, its ``{"confidence", "signals"}`` (``output``); None when
        the state at the probe's position or (``tokens``) the token signals are missing."""
        text = (states or {}).get(self.card.position)
        if not text:
            return None
        x = hidden.decode(text)
        if self.card.tokens:
            from .calibrator import features, has_token_signals

            if output is None or not has_token_signals(output):
                return None
            x = np.concatenate([x.astype(np.float64), features(output)])
        return float(self.confidence(x)[0])

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write ``probe.npz`` and ``card.json`` into ``folder`` (created); returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "probe.npz", mean=self.mean.astype(np.float32),
                            scale=self.scale.astype(np.float32),
                            coef=self.coef.astype(np.float32),
                            intercept=np.array([self.intercept]))
        (folder / "card.json").write_text(json.dumps(asdict(self.card), indent=2) + "\n",
                                          encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "LinearProbe":
        """Read a probe written by :meth:`save`.

        Raises:
            FileNotFoundError: ``probe.npz`` or ``card.json`` missing.
            ValueError: inconsistent shapes.
        """
        folder = Path(folder)
        card = ProbeCard(**json.loads((folder / "card.json").read_text(encoding="utf-8")))
        with np.load(folder / "probe.npz") as z:
            mean, scale, coef, b = z["mean"], z["scale"], z["coef"], float(z["intercept"][0])
        if not (mean.shape == scale.shape == coef.shape == (card.dim,)):
            raise ValueError(f"{folder}: probe arrays do not match its card (dim {card.dim})")
        return cls(mean, scale, coef, b, card)


def shipped_probe_dir(slm: str) -> Path | None:
    """The shipped probe folder for the SLM named ``slm``, or None when none ships."""
    d = SHIPPED / slug(slm)
    return d if (d / "probe.npz").is_file() and (d / "card.json").is_file() else None


# ----------------------------------------------------------------------------- data

def target_labels(rows: Sequence[dict], target: str) -> list[bool | None]:
    """The probe target per evaluation row (None where a needed grade is undecided).

    Raises:
        ValueError: unknown target.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    out = []
    for r in rows:
        s, l_ = r.get("slm_correct"), r.get("llm_correct")
        if target == "slm_correct":
            out.append(None if s is None else bool(s))
        elif target == "llm_correct":
            out.append(None if l_ is None else bool(l_))
        else:
            out.append(None if s is None or l_ is None else (not s) and bool(l_))
    return out


def state_matrix(rows: Sequence[dict], position: str, tier: str = "slm"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(X, has)``: the decoded states at ``position`` of each row's ``tier`` output (``slm`` or
    ``llm``), shape ``(n_with_state, dim)``, and a bool mask of shape ``(n,)`` saying which rows
    have one.

    Raises:
        ValueError: unknown position or tier, or states of different sizes.
    """
    if position not in POSITIONS or tier not in TIERS:
        raise ValueError(f"position must be one of {POSITIONS} and tier one of {TIERS}, "
                         f"got {position!r}, {tier!r}")
    vecs, has = [], []
    for r in rows:
        text = ((r.get(tier) or {}).get("states") or {}).get(position)
        has.append(bool(text))
        if text:
            vecs.append(hidden.decode(text))
    if len({v.size for v in vecs}) > 1:
        raise ValueError("hidden states of different sizes (rows from different SLMs?)")
    X = np.stack(vecs) if vecs else np.zeros((0, 0))
    return X, np.array(has, dtype=bool)


def feature_matrix(rows: Sequence[dict], position: str, tokens: bool = False,
                   tier: str = "slm") -> tuple[np.ndarray, np.ndarray]:
    """``(X, has)`` as :func:`state_matrix`, with the calibrator's features
    (:func:`corea.signals.calibrator.features`, 7 columns) appended when ``tokens``; a row without
    token signals then has no input (``has`` False)."""
    X, has = state_matrix(rows, position, tier)
    if not tokens:
        return X, has
    from .calibrator import features, has_token_signals

    tok = np.array([has_token_signals(r.get("slm") or {}) for r in rows], dtype=bool)
    keep = tok[has]  # rows with a state: do they have token signals too?
    extra = np.array([features(r.get("slm") or {}) for r, h in zip(rows, has) if h],
                     dtype=np.float64).reshape(-1, 7)
    X = np.hstack([X.astype(np.float64), extra])[keep] if X.size else np.zeros((0, 0))
    return X, has & tok


# ----------------------------------------------------------------------------- fitting

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _scores(conf: np.ndarray, y: np.ndarray) -> dict:
    return {"auroc": metrics.auroc(conf, y), "ece": metrics.ece(conf, y, 10),
            "brier": metrics.brier_score(conf, y), "n": int(y.size)}


def _model(c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000)


def _folds(y: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(folds, int(y.sum()), int((~y).sum())))
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)


def _oof(Xs: np.ndarray, y: np.ndarray, c: float, cv) -> np.ndarray:
    """Out-of-fold P(target) (each row predicted by a probe that never saw it)."""
    p = np.empty(y.size)
    for tr, te in cv.split(Xs, y):
        m = _model(c).fit(Xs[tr], y[tr])
        p[te] = m.predict_proba(Xs[te])[:, 1]
    return p


def fit_probe(rows: Sequence[dict], slm: str, position: str = "end",
              target: str = "slm_correct", cs: Sequence[float] = DEFAULT_CS, folds: int = 5,
              seed: int = 0, data: Sequence[str] = (), version: str = "",
              notes: str = "", tokens: bool = False, tier: str = "slm") -> LinearProbe:
    """Fit a probe on evaluation rows that carry hidden states and a decided target.

    Args:
        rows: evaluation item rows (``slm.states``, ``slm_correct``, ``llm_correct``) of a
            **train** split.
        slm: the SLM's name, recorded on the card.
        position, target: see the module docstring.
        cs: candidate ``C`` values; the one with the lowest out-of-fold log-loss is kept.
        folds: stratified folds (fewer when a class is smaller).
        seed: fold shuffling seed.
        data, version, notes: recorded on the card.
        tokens: append the calibrator's features of each output to its state (see the module
            docstring); rows without token signals are then left out.
        tier: whose state is read (``slm``, or ``llm`` with the ``llm_correct`` target).

    Returns:
        the probe refit on all rows with the chosen ``C``; its card holds out-of-fold metrics.

    Raises:
        ValueError: fewer than :data:`MIN_PER_CLASS` rows of a class, no states, bad arguments.
    """
    labels = target_labels(rows, target)
    X_all, has = feature_matrix(rows, position, tokens, tier)
    keep = [i for i, (h, y) in enumerate(zip(has, labels)) if h and y is not None]
    if not keep:
        raise ValueError(f"no rows with a '{position}' hidden state and a decided {target}")
    pos_of = np.cumsum(has) - 1  # row index -> index into X_all
    X = X_all[pos_of[keep]].astype(np.float64)
    y = np.array([labels[i] for i in keep], dtype=bool)
    if min(int(y.sum()), int((~y).sum())) < MIN_PER_CLASS:
        raise ValueError(f"{target}: {int(y.sum())} positive and {int((~y).sum())} negative rows; "
                         f"a probe needs at least {MIN_PER_CLASS} of each")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-8] = 1.0
    Xs = (X - mean) / scale
    cv = _folds(y, folds, seed)
    eps = 1e-12
    losses = {}
    oof = {}
    for c in cs:
        p = _oof(Xs, y, c, cv)
        oof[c] = p
        losses[c] = float(-np.mean(y * np.log(p + eps) + (~y) * np.log(1 - p + eps)))
    best = min(cs, key=lambda c: (losses[c], c))
    m = _model(best).fit(Xs, y)
    truth = "llm_correct" if target == "llm_correct" else "slm_correct"
    slm_ok = np.array([bool(rows[i].get(truth)) for i in keep])
    conf = oof[best] if target in ("slm_correct", "llm_correct") else 1.0 - oof[best]
    verbal = [(rows[i].get("slm") or {}).get("confidence") for i in keep]
    vi = [j for j, v in enumerate(verbal) if v is not None and tier == "slm"]
    card = ProbeCard(
        slm=slm, position=position, target=target, dim=int(X.shape[1]), c=float(best),
        n_train=int(y.size), n_positive=int(y.sum()), data=list(data),
        cv={**_scores(conf, slm_ok), "folds": cv.get_n_splits(),
            "log_loss": {str(c): round(v, 5) for c, v in losses.items()}},
        cv_verbal=_scores(np.array([verbal[j] for j in vi], dtype=float), slm_ok[vi])
        if len(vi) >= 2 else {},
        fitted_at=_now(), version=version, notes=notes, tokens=tokens, tier=tier)
    return LinearProbe(mean, scale, m.coef_[0], float(m.intercept_[0]), card)


def probe_values(probe: LinearProbe, rows: Sequence[dict]) -> list[float | None]:
    """The probe's confidence per row (None where the row has no state at its position)."""
    X, has = feature_matrix(rows, probe.card.position, probe.card.tokens, probe.card.tier)
    conf = probe.confidence(X) if X.size else np.zeros(0)
    out: list[float | None] = []
    j = 0
    for h in has:
        if h:
            out.append(float(conf[j]))
            j += 1
        else:
            out.append(None)
    return out


def test_metrics(probe: LinearProbe, rows: Sequence[dict]) -> dict:
    """The probe's AUROC / ECE / Brier score against SLM correctness on held-out ``rows`` (those
    with a state at its position and a decided grade), next to the stated confidence's on the
    same rows: ``{"n", "auroc", "ece", "brier", "verbal": {...}}``. For the card's record
    (:attr:`ProbeCard.test`); never used to fit or choose anything."""
    vals = probe_values(probe, rows)
    idx = [i for i, (v, r) in enumerate(zip(vals, rows))
           if v is not None and r.get("slm_correct") is not None]
    y = np.array([bool(rows[i]["slm_correct"]) for i in idx])
    out: dict = {"n": len(idx)}
    if len(idx) >= 2:
        out.update(_scores(np.array([vals[i] for i in idx], dtype=float), y))
        verbal = [(rows[i].get("slm") or {}).get("confidence") for i in idx]
        vi = [j for j, v in enumerate(verbal) if v is not None]
        if len(vi) >= 2:
            out["verbal"] = _scores(np.array([verbal[j] for j in vi], dtype=float), y[vi])
    return out
