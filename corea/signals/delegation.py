"""Delegation value: P(the LLM is right and the SLM wrong), from both models' reading of the question.

Deferring pays only where the LLM fixes an SLM error; most SLM errors on GSM8K are questions the
LLM gets wrong too, so a signal of the SLM's failure alone defers ~90% of questions. This model
adds the **LLM's own** reading of the question: a prompt-position probe on the LLM's final-layer
state after its answer prompt (one LLM prefill, no generation; :mod:`corea.eval.llm_states`,
:func:`corea.signals.probe.fit_probe` with ``tier="llm"``, target ``llm_correct``).

Two heads, each a standardised L2 logistic regression (scikit-learn) on a few numbers:

* ``before`` (decides before the SLM writes): the logits of the SLM's prompt probe
  P(SLM right) (``prior_probe``) and of the LLM's prompt probe P(LLM right), and the log-odds
  the two give if independent, ``log P(LLM right) + log(1 - P(SLM right))``;
* ``after`` (decides after the SLM answered): the same and the logit of the token calibrator's
  P(SLM right) (``calibrator_tokens``, :data:`corea.signals.calibrator.TOKEN_FEATURES`).

* ``verify`` (decides after the SLM answered, one more LLM prefill): the ``after`` columns and the
  logit of the LLM's P(True) on the SLM's answer (``llm_p_true``, ``corea llm-verify``), fit on
  the usable train rows that have it (the reports measure it on the items that have it).

The target is ``llm_helps`` (:func:`corea.signals.probe.target_labels`). The heads are fit on
**out-of-fold** values of the base signals (each train row's probe and calibrator values from
models fit on the other folds, the base probes' ``C`` fixed to the one chosen on all rows), so
they learn how much to trust the base signals as they behave on unseen rows; the base signals
are then refit on all rows. As a deciding signal the confidence is ``1 - P(delegation)``
(higher: keep, or let the SLM answer), like ``probe_helps``.

Cost of the signal (charged by the reports, :attr:`corea.signals.base.Signal.llm_prefill`): the
LLM's prefill of its prompt, on the questions the LLM does not answer; on a deferred question it
is the start of the LLM's answer (llama.cpp's prefix cache) and costs nothing more.

Saved as a folder (the ``before`` part and τ_r, :mod:`corea.signals.delegation_files`,
``corea delegation``), it routes in the running cascade: :mod:`corea.cascade.delegate`
(:func:`value_before` on the two live states).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .calibrator import TOKEN_FEATURES, fit_calibrator, has_token_signals
from .probe import LinearProbe, fit_probe, probe_values, target_labels

__all__ = ["Head", "Delegation", "fit_delegation", "base_values", "head_features",
           "delegation_values", "score_before", "score_after", "score_verify", "fit_cached",
           "usable_rows", "value_before", "llm_p_true_of"]

_EPS = 1e-6
HEAD_C = 1.0
"""Inverse L2 strength of the heads (3–4 standardised inputs: barely regularised)."""
BASE_CS = (0.001, 0.003, 0.01, 0.03)
"""Candidate ``C`` of the base prompt probes (both chose the smallest values of the probes'
default grid on GSM8K train: a prompt state needs strong regularisation), searched by 3-fold
log-loss; each fold of the heads' out-of-fold values then refits with the chosen one."""


@dataclass(frozen=True)
class Head:
    """``P = sigmoid(((F - mean) / scale) · coef + intercept)`` on :func:`head_features`' columns."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def probability(self, F: np.ndarray) -> np.ndarray:
        """P(delegation) per row of ``F`` (shape ``(n, k)``)."""
        z = ((np.atleast_2d(F) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    @classmethod
    def fit(cls, F: np.ndarray, y: np.ndarray) -> "Head":
        """A standardised logistic regression of ``y`` (bool, shape ``(n,)``) on ``F``."""
        from sklearn.linear_model import LogisticRegression

        mean, scale = F.mean(axis=0), F.std(axis=0)
        scale[scale < 1e-8] = 1.0
        m = LogisticRegression(C=HEAD_C, max_iter=2000).fit((F - mean) / scale, y)
        return cls(mean, scale, m.coef_[0].astype(float), float(m.intercept_[0]))


@dataclass(frozen=True)
class Delegation:
    """A fitted delegation model: the base signals (fit on all train rows) and the heads
    (``after`` None when no row had token signals, ``verify`` None unless every usable row had
    the LLM's P(True) too)."""

    slm_probe: LinearProbe
    llm_probe: LinearProbe
    calibrator: object | None
    before: Head
    after: Head | None
    verify: Head | None = None


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def head_features(p_slm: np.ndarray, p_llm: np.ndarray, p_cal: np.ndarray | None = None
                  ) -> np.ndarray:
    """Columns of a head (see the module docstring) from P(SLM right) by the prompt probe,
    P(LLM right) by the LLM's prompt probe and (``after``) the calibrator's P(SLM right);
    shape ``(n, 3)`` or ``(n, 4)``."""
    ps, pl = np.clip(p_slm, _EPS, 1 - _EPS), np.clip(p_llm, _EPS, 1 - _EPS)
    cols = [_logit(ps), _logit(pl), np.log(pl) + np.log1p(-ps)]
    if p_cal is not None:
        cols.append(_logit(np.asarray(p_cal, dtype=float)))
    return np.column_stack(cols)


def _arr(vals, complement: bool = False) -> np.ndarray:
    out = np.array([np.nan if v is None else float(v) for v in vals], dtype=float)
    return 1.0 - out if complement else out


def base_values(rows: Sequence[dict], slm_probe: LinearProbe, llm_probe: LinearProbe,
                calibrator=None) -> dict[str, np.ndarray]:
    """``{"slm", "llm", "cal"}``: P(SLM right) by the prompt probe, P(LLM right) by the LLM's
    prompt probe, the calibrator's P(SLM right) per row (NaN where a row lacks the input; ``cal``
    all NaN without a calibrator)."""
    cal = np.full(len(rows), np.nan)
    if calibrator is not None:
        idx = [i for i, r in enumerate(rows) if has_token_signals(r.get("slm") or {})]
        if idx:
            cal[idx] = calibrator.predict([rows[i]["slm"] for i in idx])
    return {"slm": _arr(probe_values(slm_probe, rows)),
            # the LLM probe's confidence is 1 - P(LLM right) (probe.py, target llm_correct)
            "llm": _arr(probe_values(llm_probe, rows), complement=True), "cal": cal}


def _fit_bases(rows: Sequence[dict], slm: str, cs=None):
    """The base probes and calibrator on ``rows``: ``C`` searched (:data:`BASE_CS`), or fixed
    to ``cs`` = (SLM probe's, LLM probe's) with the fewest folds for the card."""
    def kw(i):
        return {"cs": BASE_CS, "folds": 3} if cs is None else {"cs": (cs[i],), "folds": 2}
    sp = fit_probe(rows, slm, position="prompt", target="slm_correct", **kw(0))
    lp = fit_probe(rows, slm, position="prompt", target="llm_correct", tier="llm", **kw(1))
    ok = [r for r in rows if has_token_signals(r.get("slm") or {})]
    try:
        cal = fit_calibrator([r["slm"] for r in ok], [bool(r["slm_correct"]) for r in ok], slm,
                             features=TOKEN_FEATURES)
    except ValueError:  # too few rows with token signals: no after head
        cal = None
    return sp, lp, cal


def usable_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows with both grades and both prompt states (what :func:`fit_delegation` fits on)."""
    return [r for r, h in zip(rows, target_labels(rows, "llm_helps")) if h is not None
            and ((r.get("slm") or {}).get("states") or {}).get("prompt")
            and ((r.get("llm") or {}).get("states") or {}).get("prompt")]


def fit_delegation(rows: Sequence[dict], slm: str, folds: int = 5, seed: int = 0) -> Delegation:
    """Fit the base signals and both heads on ``rows`` (a **train** split's; see the module
    docstring).

    Raises:
        ValueError: too few usable rows (both grades, both prompt states) or of one class.
    """
    from sklearn.model_selection import StratifiedKFold

    rows = usable_rows(rows)
    y = np.array(target_labels(rows, "llm_helps"), dtype=bool)
    if min(int(y.sum()), int((~y).sum())) < folds:
        raise ValueError(f"delegation: {int(y.sum())} rows where the LLM fixes the SLM and "
                         f"{int((~y).sum())} others with both prompt states; too few to fit")
    sp, lp, cal = _fit_bases(rows, slm)
    oof = {k: np.full(len(rows), np.nan) for k in ("slm", "llm", "cal")}
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y):
        fold = _fit_bases([rows[i] for i in tr], slm, (sp.card.c, lp.card.c))
        got = base_values([rows[i] for i in te], *fold)
        for k in oof:
            oof[k][te] = got[k]
    before = Head.fit(head_features(oof["slm"], oof["llm"]), y)
    has_cal = ~np.isnan(oof["cal"])
    after = Head.fit(head_features(oof["slm"][has_cal], oof["llm"][has_cal], oof["cal"][has_cal]),
                     y[has_cal]) if cal is not None and has_cal.sum() >= 2 * folds else None
    pt = llm_p_true_of(rows)
    m = has_cal & ~np.isnan(pt)
    verify = None
    if after is not None and min(int(y[m].sum()), int((~y[m]).sum())) >= folds:
        # P(True) is read, not fit: it needs no folds
        verify = Head.fit(np.column_stack([head_features(oof["slm"][m], oof["llm"][m],
                                                         oof["cal"][m]), _logit(pt[m])]), y[m])
    return Delegation(sp, lp, cal, before, after, verify)


def llm_p_true_of(rows: Sequence[dict]) -> np.ndarray:
    """The LLM's P(True) on the SLM's answer per row (``llm_verify.p_true``; NaN where absent),
    shape ``(n,)``."""
    return _arr([(r.get("llm_verify") or {}).get("p_true") for r in rows])


def delegation_values(rows: Sequence[dict], model: Delegation, after: bool = False,
                      verify: bool = False) -> list[float | None]:
    """P(the LLM is right and the SLM wrong) per row (None where an input is missing: a prompt
    state, or with ``after`` the token signals or the after head, or with ``verify`` the LLM's
    P(True) or the verify head)."""
    after = after or verify
    b = base_values(rows, model.slm_probe, model.llm_probe, model.calibrator if after else None)
    head = model.verify if verify else model.after if after else model.before
    cols = [b["slm"], b["llm"], *([b["cal"]] if after else [])]
    pt = llm_p_true_of(rows)
    ok = np.all([~np.isnan(c) for c in cols + ([pt] if verify else [])], axis=0) \
        if head is not None else np.zeros(len(rows), dtype=bool)
    out: list[float | None] = [None] * len(rows)
    if ok.any():
        F = head_features(*(c[ok] for c in cols))
        if verify:
            F = np.column_stack([F, _logit(pt[ok])])
        for i, p in zip(np.flatnonzero(ok), head.probability(F)):
            out[int(i)] = float(p)
    return out


def value_before(model: Delegation, slm_state, llm_state) -> float:
    """``1 - P(delegation)`` of one question from the SLM's state after its prompt and the LLM's
    after its own (1-d arrays, shapes ``(slm dim,)`` and ``(llm dim,)``): the live route check's
    number (:mod:`corea.cascade.delegate`), the same as :func:`score_before` on a row.

    Raises:
        ValueError: a state of the wrong size for its probe.
    """
    p_slm = model.slm_probe.confidence(slm_state)  # P(SLM right)
    p_llm = 1.0 - model.llm_probe.confidence(llm_state)  # its confidence is 1 - P(LLM right)
    return float(1.0 - model.before.probability(head_features(p_slm, p_llm))[0])


def score_before(rows: Sequence[dict], model: Delegation) -> list[float | None]:
    """Score of the ``delegation`` signal: ``1 - P(delegation)`` before the SLM writes."""
    return [None if p is None else 1.0 - p for p in delegation_values(rows, model)]


def score_after(rows: Sequence[dict], model: Delegation) -> list[float | None]:
    """Score of ``delegation_after``: ``1 - P(delegation)`` with the SLM's calibrator value."""
    return [None if p is None else 1.0 - p for p in delegation_values(rows, model, after=True)]


def score_verify(rows: Sequence[dict], model: Delegation) -> list[float | None]:
    """Score of ``delegation_verify``: ``1 - P(delegation)`` with the calibrator's value and the
    LLM's P(True) on the SLM's answer."""
    return [None if p is None else 1.0 - p for p in delegation_values(rows, model, verify=True)]


_CACHE: dict[tuple, Delegation] = {}


def fit_cached(rows: Sequence[dict], slm: str) -> Delegation:
    """:func:`fit_delegation`, remembered for the same rows (by id) and SLM: both signals
    (``delegation``, ``delegation_after``) share one fit per fold (at most 16 kept)."""
    key = (slm, tuple((str(r.get("id")), r.get("slm_correct"), r.get("llm_correct"),
                       hash(((r.get("llm") or {}).get("states") or {}).get("prompt")),
                       (r.get("llm_verify") or {}).get("p_true"))
                      for r in rows))
    if key not in _CACHE:
        if len(_CACHE) >= 16:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = fit_delegation(rows, slm)
    return _CACHE[key]
