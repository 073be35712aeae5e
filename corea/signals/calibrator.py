"""A learned calibrator: maps an SLM completion's signals to P(SLM answer is correct).

(Just over 400 lines: the features, the fit and the calibrator files, versioned and shipped,
share one card format and the module-level ``SHIPPED`` root that callers patch.)

The SLM's verbalized confidence is often uninformative before RL training (the embedded 0.5B
mostly states 0.8–0.95, or 0.5 when it has to be elicited, right or wrong). A small, well-known model fit on labelled completions turns all the
signals one completion carries — verbalized confidence, token probabilities
(:mod:`corea.signals.tokens`), length, truncation — into a calibrated probability:

- ``logistic``: scikit-learn ``LogisticRegression`` on the features below (standardised), the
  classic Platt-style recalibration extended to several inputs;
- ``isotonic``: scikit-learn ``IsotonicRegression`` on one signal (default ``solution_prob``),
  monotone and non-parametric (Zadrozny & Elkan, 2002).

Features (:data:`FEATURES`): ``verbal`` (verbalized confidence, 0.5 when missing) and
``has_verbal``; log of ``solution_prob``, ``answer_prob``, ``min_prob`` (clipped at 1e-6;
``answer_prob`` falls back to ``solution_prob``); ``log1p(n_tokens)``; ``hit_length``. A
logistic calibrator may use a subset (``features=``, recorded on its card): :data:`TOKEN_FEATURES`
leaves out the stated confidence, e.g. for an SLM whose stated confidence has no labelled
out-of-sample values (a confidence-scoped adapter trained on every train row: its solution and
token signals are its base model's, so the base's rows carry them).

Labels come from evaluation runs (``slm_correct`` against the gold answer) and from rated
interactions in the app (:func:`corea.store.labels.label_interaction`: a 👍 or a correction).

Every fit reports **held-out** metrics from stratified k-fold cross-validation (ECE with 10 bins,
Brier score, AUROC), next to the verbalized confidence's on the same items, so a new calibrator can
be compared with the current one before switching. Artifacts are versioned per SLM under
``<cache>/calibrators/<slm>/v<k>.joblib`` with a JSON card beside each.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import metrics
from ..shipped import ASSETS, slug

FEATURES = ("verbal", "has_verbal", "log_solution_prob", "log_answer_prob", "log_min_prob",
            "log_n_tokens", "hit_length")
TOKEN_FEATURES = FEATURES[2:]
"""The features that do not read the stated confidence."""
MIN_LABELS = 30
MIN_PER_CLASS = 5
_EPS = 1e-6


class InsufficientLabels(ValueError):
    """Too few labelled completions (or too few of one class) to fit a calibrator."""


def _log(p) -> float:
    return math.log(max(float(p), _EPS)) if p is not None else math.log(_EPS)


def features(output: dict, names: Sequence[str] = FEATURES) -> list[float]:
    """Feature vector of one SLM output dict (``confidence`` and ``signals``, as in evaluation
    rows and :class:`corea.events.ModelOutput`): the values of ``names`` (a subset of
    :data:`FEATURES`, in that order)."""
    sig = output.get("signals") or {}
    verbal = output.get("confidence")
    sol = sig.get("solution_prob")
    ans = sig.get("answer_prob", None)
    if ans is None:
        ans = sol
    full = [float(verbal) if verbal is not None else 0.5, 1.0 if verbal is not None else 0.0,
            _log(sol), _log(ans), _log(sig.get("min_prob")),
            math.log1p(int(sig.get("n_tokens") or 0)), 1.0 if sig.get("hit_length") else 0.0]
    if tuple(names) == FEATURES:
        return full
    return [full[FEATURES.index(n)] for n in names]


def check_features(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple in :data:`FEATURES` order.

    Raises:
        ValueError: empty, repeated or unknown names."""
    names = tuple(names)
    unknown = [n for n in names if n not in FEATURES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"calibrator features must be distinct names from {FEATURES}, "
                         f"got {list(names)}")
    return tuple(n for n in FEATURES if n in names)


def has_token_signals(output: dict) -> bool:
    """Whether the output carries token-probability signals (an engine with log-probs)."""
    return (output.get("signals") or {}).get("solution_prob") is not None


@dataclass
class CalibratorCard:
    """What a calibrator is, what it was fit on and how well it does on held-out data.

    Attributes:
        slm: the SLM's name (a calibrator belongs to one model and prompt).
        kind: ``logistic`` or ``isotonic``.
        signal: the input signal of an isotonic calibrator (None for logistic).
        n, n_positive: labelled completions used, and how many were correct.
        sources: where the labels came from (run folders, ``ratings``), with counts.
        cv_folds: folds of the cross-validation behind the held-out metrics.
        held_out: ECE (10 bins), Brier score, AUROC of the calibrator's cross-validated
            predictions.
        verbal_held_out: the same metrics of the verbalized confidence on the items that have one.
        version: artifact version (1, 2, ...); created_at: UTC ISO time.
    """

    slm: str
    kind: str
    signal: str | None
    n: int
    n_positive: int
    sources: dict
    cv_folds: int
    held_out: dict
    verbal_held_out: dict
    version: int = 0
    created_at: str = ""
    features: list = field(default_factory=lambda: list(FEATURES))

    def beats_verbal(self) -> bool:
        """Held-out AUROC above the verbalized confidence's (or verbal has none)."""
        mine, verbal = self.held_out.get("auroc"), self.verbal_held_out.get("auroc")
        return mine is not None and (verbal is None or mine > verbal)


class Calibrator:
    """A fitted calibrator: :meth:`predict` gives P(correct) in [0, 1] for SLM outputs."""

    def __init__(self, model, card: CalibratorCard, origin: str = "fitted"):
        self.model = model
        self.card = card
        self.origin = origin  # "fitted" (a store here) or "shipped" (corea/assets)

    def predict(self, outputs: Sequence[dict]) -> np.ndarray:
        """P(correct) for each SLM output dict; shape ``(len(outputs),)``, values in [0, 1]."""
        return _predict(self.model, self.card.kind, self.card.signal, outputs,
                        self.card.features)

    def predict_one(self, output: dict) -> float:
        return float(self.predict([output])[0])


def _signal_values(outputs: Sequence[dict], signal: str) -> np.ndarray:
    vals = []
    for o in outputs:
        v = o.get("confidence") if signal == "verbal" else (o.get("signals") or {}).get(signal)
        vals.append(float(v) if v is not None else 0.0)
    return np.asarray(vals, dtype=float)


def _make(kind: str):
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if kind == "isotonic":
        from sklearn.isotonic import IsotonicRegression
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    raise ValueError(f"unknown calibrator kind {kind!r} (logistic or isotonic)")


def _fit(model, kind, signal, outputs, y, names: Sequence[str] = FEATURES):
    if kind == "logistic":
        model.fit(np.asarray([features(o, names) for o in outputs]), y)
    else:
        model.fit(_signal_values(outputs, signal), y)
    return model


def _predict(model, kind, signal, outputs, names: Sequence[str] = FEATURES) -> np.ndarray:
    if not outputs:
        return np.zeros(0)
    if kind == "logistic":
        p = model.predict_proba(np.asarray([features(o, names) for o in outputs]))[:, 1]
    else:
        p = model.predict(_signal_values(outputs, signal))
    return np.clip(np.asarray(p, dtype=float), 0.0, 1.0)


def _scores(conf, y) -> dict:
    conf = np.asarray(conf, dtype=float)
    y = np.asarray(y, dtype=bool)
    if conf.size == 0:
        return {"n": 0, "ece": None, "brier": None, "auroc": None}
    return {"n": int(conf.size), "ece": metrics.ece(conf, y, 10),
            "brier": metrics.brier_score(conf, y), "auroc": metrics.auroc(conf, y)}


def cross_val_predictions(outputs: Sequence[dict], labels: Sequence[bool], kind: str = "logistic",
                          signal: str = "solution_prob", folds: int = 5,
                          seed: int = 0, names: Sequence[str] = FEATURES) -> np.ndarray:
    """Held-out P(correct) for every output: each fold's predictions come from a model fit on the
    other folds (``sklearn.model_selection.StratifiedKFold``). Shape ``(len(outputs),)``."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, dtype=int)
    pred = np.zeros(len(outputs))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in skf.split(np.zeros(len(y)), y):
        m = _fit(_make(kind), kind, signal, [outputs[i] for i in tr], y[tr], names)
        pred[te] = _predict(m, kind, signal, [outputs[i] for i in te], names)
    return pred


def fit_calibrator(outputs: Sequence[dict], labels: Sequence[bool], slm: str,
                   kind: str = "logistic", signal: str = "solution_prob", folds: int = 5,
                   sources: dict | None = None, seed: int = 0,
                   features: Sequence[str] = FEATURES) -> Calibrator:
    """Fit a calibrator on labelled SLM outputs, with cross-validated held-out metrics.

    Args:
        outputs: SLM output dicts (``confidence``, ``signals``), one per labelled completion.
        labels: whether each SLM answer was correct.
        slm: the SLM's name (recorded on the card).
        kind: ``logistic`` (all features) or ``isotonic`` (one ``signal``).
        signal: the isotonic input: ``solution_prob``, ``answer_prob``, ``min_prob`` or
            ``verbal``.
        folds: cross-validation folds (reduced to the minority-class count when smaller).
        sources: label provenance to record, e.g. ``{"runs/gsm8k-train-300": 300}``.
        features: the logistic calibrator's inputs, a subset of :data:`FEATURES`.

    Returns:
        the :class:`Calibrator` refit on all labels.

    Raises:
        InsufficientLabels: fewer than :data:`MIN_LABELS` labels or fewer than
            :data:`MIN_PER_CLASS` correct or wrong ones.
        ValueError: ``outputs`` and ``labels`` differ in length; unknown ``kind``/``signal``/
            feature.
    """
    names = check_features(features)
    outputs, y = list(outputs), np.asarray([bool(v) for v in labels], dtype=bool)
    if len(outputs) != y.size:
        raise ValueError("outputs and labels must have the same length")
    if kind == "isotonic" and signal not in ("solution_prob", "answer_prob", "min_prob", "verbal"):
        raise ValueError(f"unknown signal {signal!r}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if y.size < MIN_LABELS or min(n_pos, n_neg) < MIN_PER_CLASS:
        raise InsufficientLabels(
            f"need at least {MIN_LABELS} labelled answers with at least {MIN_PER_CLASS} correct "
            f"and {MIN_PER_CLASS} wrong ones; have {y.size} ({n_pos} correct, {n_neg} wrong). "
            "Rate more answers in the app (👍 / 👎 or a correction) or evaluate on a labelled "
            "train split (corea evaluate --dataset gsm8k --split train ...).")
    folds = max(2, min(folds, n_pos, n_neg))
    held = cross_val_predictions(outputs, y, kind, signal, folds, seed, names)
    verbal_idx = [i for i, o in enumerate(outputs) if o.get("confidence") is not None]
    card = CalibratorCard(
        slm=slm, kind=kind, signal=signal if kind == "isotonic" else None, n=int(y.size),
        n_positive=n_pos, sources=dict(sources or {}), cv_folds=folds,
        held_out=_scores(held, y),
        verbal_held_out=_scores([outputs[i]["confidence"] for i in verbal_idx], y[verbal_idx]),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        features=list(names))
    model = _fit(_make(kind), kind, signal, outputs, y.astype(int), names)
    return Calibrator(model, card)


# ----------------------------------------------------------------------------- artifacts

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "slm"


class CalibratorStore:
    """Versioned calibrators per SLM under ``root/<slm>/v<k>.joblib`` (+ ``v<k>.json`` card).

    Only files this store wrote are loaded (joblib files are pickles: never load one from an
    untrusted source).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _dir(self, slm: str) -> Path:
        return self.root / _slug(slm)

    def versions(self, slm: str) -> list[int]:
        d = self._dir(slm)
        if not d.is_dir():
            return []
        return sorted(int(p.stem[1:]) for p in d.glob("v*.json") if p.stem[1:].isdigit())

    def save(self, cal: Calibrator) -> Path:
        """Write the calibrator as the next version; returns the artifact path."""
        import joblib

        d = self._dir(cal.card.slm)
        d.mkdir(parents=True, exist_ok=True)
        cal.card.version = (self.versions(cal.card.slm) or [0])[-1] + 1
        path = d / f"v{cal.card.version}.joblib"
        joblib.dump(cal.model, path)
        (d / f"v{cal.card.version}.json").write_text(json.dumps(asdict(cal.card), indent=2),
                                                     encoding="utf-8")
        return path

    def card(self, slm: str, version: int | None = None) -> CalibratorCard | None:
        vs = self.versions(slm)
        if not vs:
            return None
        v = vs[-1] if version is None else version
        path = self._dir(slm) / f"v{v}.json"
        if not path.is_file():
            return None
        return CalibratorCard(**json.loads(path.read_text(encoding="utf-8")))

    def load(self, slm: str, version: int | None = None) -> Calibrator | None:
        """The latest (or the given) version for ``slm``; None if there is none."""
        import joblib

        card = self.card(slm, version)
        if card is None:
            return None
        return Calibrator(joblib.load(self._dir(slm) / f"v{card.version}.joblib"), card)


# ----------------------------------------------------------------------------- shipped (plain)

SHIPPED = ASSETS / "calibrators"
"""Calibrators that ship with the package, one folder per SLM (:func:`corea.shipped.slug`), as plain
JSON (no pickle): ``calibrator.json``."""

PLAIN_FILE = "calibrator.json"


class PlainLogistic:
    """A fitted standardise-then-logistic model as plain numbers, with sklearn's
    ``predict_proba`` interface: ``P(correct) = sigmoid(((x - mean) / scale) · coef + b)`` for
    feature rows ``x`` of the card's features (shape ``(n, 7)`` for all of :data:`FEATURES`)."""

    def __init__(self, mean, scale, coef, intercept: float):
        self.mean = np.asarray(mean, dtype=float)
        self.scale = np.asarray(scale, dtype=float)
        self.coef = np.asarray(coef, dtype=float)
        self.intercept = float(intercept)

    def predict_proba(self, X) -> np.ndarray:
        """``(n, 2)``: P(wrong), P(correct) per row."""
        z = ((np.asarray(X, dtype=float) - self.mean) / self.scale) @ self.coef + self.intercept
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        return np.stack([1.0 - p, p], axis=1)

    @classmethod
    def of(cls, pipeline) -> "PlainLogistic":
        """The numbers of a fitted ``make_pipeline(StandardScaler(), LogisticRegression())``."""
        scaler, lr = pipeline[0], pipeline[-1]
        return cls(scaler.mean_, scaler.scale_, lr.coef_[0], float(lr.intercept_[0]))


def save_plain(cal: Calibrator, folder: str | Path) -> Path:
    """Write a logistic calibrator as ``<folder>/calibrator.json`` (its card and numbers, no
    pickle), the format of shipped calibrators; returns the file.

    Raises:
        ValueError: not a logistic calibrator.
    """
    if cal.card.kind != "logistic":
        raise ValueError("only a logistic calibrator is written as plain numbers")
    m = cal.model if isinstance(cal.model, PlainLogistic) else PlainLogistic.of(cal.model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PLAIN_FILE
    path.write_text(json.dumps({"card": asdict(cal.card), "model": {
        "mean": m.mean.tolist(), "scale": m.scale.tolist(), "coef": m.coef.tolist(),
        "intercept": m.intercept}}, indent=2) + "\n", encoding="utf-8")
    return path


def load_plain(folder: str | Path) -> Calibrator:
    """Read a calibrator written by :func:`save_plain`.

    Raises:
        FileNotFoundError: no ``calibrator.json`` in ``folder``.
        ValueError: its numbers do not match its features (:data:`FEATURES` or the card's).
    """
    d = json.loads((Path(folder) / PLAIN_FILE).read_text(encoding="utf-8"))
    m = d["model"]
    model = PlainLogistic(m["mean"], m["scale"], m["coef"], m["intercept"])
    card = CalibratorCard(**d["card"])
    card.features = list(check_features(card.features))
    n = len(card.features)
    if not model.mean.shape == model.scale.shape == model.coef.shape == (n,):
        raise ValueError(f"{folder}: a calibrator needs {n} numbers, one per feature")
    return Calibrator(model, card,
                      origin="shipped" if Path(folder).resolve().is_relative_to(SHIPPED)
                      else "fitted")


def shipped_calibrator_dir(slm: str) -> Path | None:
    """The shipped calibrator folder for the SLM named ``slm``, or None when none ships."""
    d = SHIPPED / slug(slm)
    return d if (d / PLAIN_FILE).is_file() else None


def better(a: Calibrator | None, b: Calibrator | None) -> Calibrator | None:
    """Of two calibrators, the one with the higher held-out AUROC (``a`` on a tie); a user's own
    refit replaces the shipped one only when it beats it."""
    if a is None or b is None:
        return a or b
    auc = lambda c: c.card.held_out.get("auroc") or 0.0  # noqa: E731
    return b if auc(b) > auc(a) else a
