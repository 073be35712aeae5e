"""The offline parts of the deciding signals: scoring and fitting them on evaluation rows.

Each function here is one part of an entry of :mod:`corea.signals.registry` (which lists every
signal with its label, when it decides, what it needs and its cost): a ``score(rows, fitted)``
that gives one confidence per row in [0, 1] (higher = keep the SLM's answer) or ``None``, a
``fit(train_rows, slm)`` for a learned signal, and the SLM tokens a signal costs per row.

The cost of computing a signal is in SLM tokens per item on top of the greedy solution: samples
are charged what they generated; P(True) is charged its question turn, :data:`VERIFY_TOKENS`
prompt tokens (an estimate: its solution prefix is KV-cached); the confidence stated before
solving is charged its own short turn; probes and token probabilities are read in the generating
decode and cost nothing more.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..grading import same_answer
from .base import has_samples, slm_of
from .calibrator import FEATURES, MIN_PER_CLASS, features, fit_calibrator, has_token_signals
from .consistency import agreement
from .probe import fit_probe, probe_values, target_labels

VERIFY_TOKENS = 30
"""Estimated new prompt tokens of the self-verification turn (its solution prefix is cached)."""


# ----------------------------------------------------------------------------- plain signals

def token_signal(key: str):
    """Score: the SLM output's token signal ``key`` (:class:`corea.signals.tokens.Signals`)."""
    return lambda rows, _f: [(slm_of(r).get("signals") or {}).get(key) for r in rows]


def verbal(rows, _f):
    """Score: the SLM's stated confidence (after solving)."""
    return [slm_of(r).get("confidence") for r in rows]


def p_true(rows, _f):
    """Score: self-verification P(\"Yes\") of the row's ``slm_verify`` turn."""
    return [(r.get("slm_verify") or {}).get("p_true") for r in rows]


def llm_p_true(rows, _f):
    """Score: the LLM's P(\"Yes\") that the SLM's answer is right (``llm_verify``, made by
    ``corea llm-verify``)."""
    return [(r.get("llm_verify") or {}).get("p_true") for r in rows]


def has_llm_verify(row) -> bool:
    """Whether the row carries the LLM's P(True) (what ``llm_p_true`` is measured on)."""
    return (row.get("llm_verify") or {}).get("p_true") is not None


def llm_verify_tokens(row) -> int:
    """LLM cost of ``llm_p_true``: its verify prompt's tokens where it ran (0 elsewhere)."""
    v = row.get("llm_verify") or {}
    return int(v.get("prompt_tokens") or 0) if v.get("p_true") is not None else 0


def self_consistency(k: int):
    """Score: the share of the first ``k`` samples agreeing with the greedy answer (None with
    fewer samples; 0 without a greedy answer)."""
    def score(rows, _f):
        out = []
        for r in rows:
            samples = r.get("slm_samples") or []
            if len(samples) < k:
                out.append(None)
            else:  # no greedy answer: nothing to agree with, so no confidence in it
                out.append(agreement(slm_of(r).get("answer"), samples, k, same_answer) or 0.0)
        return out
    return score


def sample_tokens(k: int):
    """Cost: the prompt and completion tokens of the first ``k`` samples."""
    def tokens(row):
        s = (row.get("slm_samples") or [])[:k]
        return (sum(int(x.get("prompt_tokens") or 0) for x in s),
                sum(int(x.get("completion_tokens") or 0) for x in s))
    return tokens


def verify_tokens(row):
    """Cost: :data:`VERIFY_TOKENS` prompt tokens where the verification turn ran."""
    return (VERIFY_TOKENS, 0) if (row.get("slm_verify") or {}).get("p_true") is not None \
        else (0, 0)


def oracle(rows, _f):
    """Score: 1 where the SLM is right, 0 where wrong (a bound, not a signal)."""
    return [None if r.get("slm_correct") is None else (1.0 if r["slm_correct"] else 0.0)
            for r in rows]


def prior(rows, _f):
    """Score: the confidence the SLM stated before solving (``slm_prior``, confidence-first)."""
    return [(r.get("slm_prior") or {}).get("confidence") for r in rows]


def prior_tokens(row):
    """Cost: the tokens of the confidence-first turn (``slm_prior``)."""
    pr = row.get("slm_prior") or {}
    return int(pr.get("prompt_tokens") or 0), int(pr.get("completion_tokens") or 0)


def oracle_gain(rows, _f):
    """Score: 0 only where the LLM fixes an SLM error (a bound, not a signal)."""
    return [0.0 if (r.get("slm_correct") is False and r.get("llm_correct")) else 1.0
            for r in rows]


# ----------------------------------------------------------------------------- learned signals

def fit_calibrator_on(names=FEATURES):
    """Fit of the calibrator (:func:`corea.signals.calibrator.fit_calibrator`) on the features
    ``names``: all of them (``calibrator``) or :data:`corea.signals.calibrator.TOKEN_FEATURES`
    (``calibrator_tokens``: what decides by default for the embedded SLM with its calibration
    adapter, whose solutions and token signals are the plain SLM's; the adapter only writes the
    confidence line)."""
    def fit(rows, slm):
        ok = [r for r in rows if r.get("slm_correct") is not None and has_token_signals(slm_of(r))]
        return fit_calibrator([slm_of(r) for r in ok], [bool(r["slm_correct"]) for r in ok], slm,
                              sources={"train rows": len(ok)}, features=names)
    return fit


def fit_calibrator_helps(rows, slm):
    """The calibrator's logistic regression fit to "keeping the SLM's answer loses nothing"
    (not: the SLM wrong and the LLM right, :func:`corea.signals.probe.target_labels`
    ``llm_helps``), so its probability is ``1 - P(the LLM fixes it)``, like ``probe_helps``'s
    confidence; only rows with both grades fit it (Calibrate-then-Delegate's label)."""
    labels = target_labels(rows, "llm_helps")
    ok = [(r, h) for r, h in zip(rows, labels) if h is not None and has_token_signals(slm_of(r))]
    return fit_calibrator([slm_of(r) for r, _ in ok], [not h for _, h in ok], slm,
                          sources={"train rows with both grades": len(ok)})


def _predict_where(rows: Sequence[dict], keep, predict) -> list:
    """``predict(kept rows)`` (one probability each) on the rows where ``keep(row)``; None
    elsewhere. Length ``len(rows)``."""
    idx = [i for i, r in enumerate(rows) if keep(r)]
    out: list = [None] * len(rows)
    if idx:
        for i, p in zip(idx, predict([rows[i] for i in idx])):
            out[i] = float(p)
    return out


def _with_tokens(row: dict) -> bool:
    return has_token_signals(slm_of(row))


def calibrated(rows, cal):
    """Score: a fitted calibrator's P(correct) on the rows with token signals."""
    return _predict_where(rows, _with_tokens, lambda kept: cal.predict([slm_of(r) for r in kept]))


def _with_agreement(k: int):
    """Features of ``calibrator_sc<k>``: the calibrator's 7
    (:func:`corea.signals.calibrator.features`)
    and the agreement of the first ``k`` samples with the greedy answer (0 without one)."""
    agree = self_consistency(k)

    def matrix(rows: Sequence[dict]) -> np.ndarray:
        """Shape ``(len(rows), 8)``."""
        return np.array([features(slm_of(r)) + [a] for r, a in zip(rows, agree(rows, None))],
                        dtype=float)
    return matrix


def fit_calibrator_sc(k: int):
    def fit(rows, slm):
        """A standardised logistic regression (scikit-learn) on :func:`_with_agreement` of the
        rows with ``k`` samples and token signals, fit to the SLM's correctness.

        Raises:
            ValueError: fewer than the calibrator's ``MIN_PER_CLASS`` right or wrong rows."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        ok = [r for r in rows if r.get("slm_correct") is not None and covered(k)(r)]
        y = np.array([bool(r["slm_correct"]) for r in ok])
        if min(int(y.sum()), int((~y).sum())) < MIN_PER_CLASS:
            raise ValueError(f"{int(y.sum())} right and {int((~y).sum())} wrong train rows with "
                             f"{k} samples; at least {MIN_PER_CLASS} of each are needed")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        return model.fit(_with_agreement(k)(ok), y)
    return fit


def covered(k: int):
    """Rows ``calibrator_sc<k>`` can score: token signals and ``k`` samples."""
    has = has_samples(k)
    return lambda row: _with_tokens(row) and has(row)


def calibrated_sc(k: int):
    """Score: :func:`fit_calibrator_sc`'s P(correct) on the rows it covers."""
    def score(rows, model):
        return _predict_where(rows, covered(k),
                              lambda kept: model.predict_proba(_with_agreement(k)(kept))[:, 1])
    return score


def has_agreement(row: dict) -> bool:
    """The row's SLM solved both ways and both ran (``solve: mot``)."""
    return slm_of(row).get("agreement") is not None


def agreement_values(rows, _fitted):
    """1.0 where the SLM's CoT and program answers agree, 0.0 where not, None without ``mot``."""
    return [None if not has_agreement(r) else float(bool(slm_of(r)["agreement"])) for r in rows]


def fit_probe_on(position: str, target: str, tokens: bool = False, tier: str = "slm",
                 cs: tuple[float, ...] | None = None):
    """Fit: a linear probe (:func:`corea.signals.probe.fit_probe`) on ``tier``'s state at
    ``position`` (``end``/``prompt``) to ``target`` (``slm_correct``/``llm_helps``/
    ``llm_correct``); ``cs``: its candidate ``C`` (default: the probe's grid)."""
    def fit(rows, slm):
        return fit_probe(rows, slm, position=position, target=target, tokens=tokens, tier=tier,
                         **({} if cs is None else {"cs": cs}))
    return fit


def probe_score(rows, probe):
    """Score: a fitted probe's P(correct) (:func:`corea.signals.probe.probe_values`)."""
    return probe_values(probe, rows)


def fit_early_exit(rows, slm):
    """Fit: a checkpoint probe (:func:`corea.signals.checkpoint_probe.fit_checkpoint_probe`,
    the form and strength chosen on GSM8K train) on the rows' states every k tokens."""
    from .checkpoint_probe import DEFAULT_C, DEFAULT_FORM, fit_checkpoint_probe

    with_cp = [r for r in rows if r.get("slm_checkpoints")]
    k = int((with_cp[0]["slm_checkpoints"].get("k") if with_cp else None) or 32)
    return fit_checkpoint_probe(with_cp, slm, k, DEFAULT_FORM, DEFAULT_C, cross_validate=False)


def early_exit_score(rows, probe):
    """Score: the checkpoint probe's lowest P(correct) over the positions each solution wrote
    past (:func:`corea.signals.checkpoint_probe.min_confidence`): below τ_e exactly the
    decodes an early exit at τ_e stops."""
    from .checkpoint_probe import min_confidence

    return min_confidence(rows, probe)
