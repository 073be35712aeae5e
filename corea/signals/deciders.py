"""Deferral signals as plug-ins of one interface, for held-out comparison on evaluation rows.

Every signal turns evaluation rows (``items.jsonl`` rows, with ``slm_verify`` and
``slm_samples`` where the run recorded them) into one **confidence** per row in [0, 1] — higher
means "keep the SLM's answer" — or ``None`` where it cannot be computed. A learned signal is first
:meth:`Signal.fit` on **train** rows and then applied, frozen, to any other rows.

======================  =====================================================  ===============
name                    what                                                   when it decides
======================  =====================================================  ===============
``verbal``              the SLM's stated confidence (the COREA paper's)        after solving
``tokprob``             geometric-mean token probability of the solution       after solving
``answer_prob``         ... of the final answer's tokens                       after solving
``min_prob``            smallest token probability of the solution            after solving
``p_true``              self-verification P("Yes") (AutoMix's signal)          after solving
``agreement``           the SLM's CoT and program answers agree (``mot``)      after solving
``sc2`` / ``sc4``       agreement of 2 / 4 sampled solutions with the greedy   after solving
``calibrator``          logistic regression on verbal + token signals          after solving
``calibrator_tokens``   the same on the token signals only (no stated conf.)   after solving
``calibrator_helps``    the same, fit to "the LLM fixes an SLM error"          after solving
``calibrator_sc4``      the calibrator's features + ``sc4``'s agreement        after solving
``probe``               linear probe on the state at the end of the solution   after solving
``probe_tokens``        the same state + the calibrator's 7 features           after solving
``probe_helps``         the same, fit to "the LLM fixes an SLM error"          after solving
``prior_probe``         linear probe on the state after the question           before solving
``prior_probe_helps``   the same, fit to "the LLM fixes an SLM error"          before solving
``oracle``              defers exactly the SLM's errors (not a signal)         —
``oracle_gain``         defers only where the LLM fixes an SLM error           —
======================  =====================================================  ===============

``tokprob`` is :data:`corea.signals.tokens.TOKPROB`; its old name ``avgprob`` is still accepted
(:data:`NAMES`, :func:`corea.signals.tokens.signal_name`).

The cost of computing a signal (:attr:`Signal.extra_tokens`) is in SLM tokens per item on top of
the greedy solution: samples are charged what they generated; P(True) is charged its question
turn, :data:`VERIFY_TOKENS` prompt tokens (an estimate: its solution prefix is KV-cached); probes
and token probabilities are read in the generating decode and cost nothing more. A
``pre_generation`` signal saves the SLM's completion on the items it defers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .calibrator import (FEATURES, MIN_PER_CLASS, TOKEN_FEATURES, features,
                          fit_calibrator, has_token_signals)
from ..grading import same_answer
from .probe import fit_probe, probe_values, target_labels
from .tokens import AGREEMENT, OLD_TOKPROB_NAMES, TOKPROB, signal_name, token_probability
from .consistency import agreement

VERIFY_TOKENS = 30
"""Estimated new prompt tokens of the self-verification turn (its solution prefix is cached)."""


@dataclass(frozen=True)
class Signal:
    """One deferral signal.

    Attributes:
        name: registry key (see the module table).
        label: human-readable description for reports.
        when: ``after`` (answer-first), ``before`` (pre-generation) or ``oracle``.
        fit: ``f(train_rows, slm_name) -> fitted`` for learned signals, else None.
        score: ``f(rows, fitted) -> [confidence or None per row]``.
        extra_tokens: ``f(row) -> (prompt, completion)`` SLM tokens spent on the signal itself.
        covers: ``f(row) -> bool``: whether the row carries the signal's inputs (self-consistency
            needs its ``k`` samples, which a run may have drawn for its first items only); a
            report measures a signal on the rows it covers and says how many.
    """

    name: str
    label: str
    when: str
    score: Callable[[Sequence[dict], object], list]
    fit: Callable[[Sequence[dict], str], object] | None = None
    extra_tokens: Callable[[dict], tuple[int, int]] = lambda row: (0, 0)
    covers: Callable[[dict], bool] = lambda row: True

    @property
    def learned(self) -> bool:
        return self.fit is not None

    @property
    def needs_llm(self) -> bool:
        """Whether its label (or value) involves the LLM's grade ("the LLM fixes it"), so only
        rows where the LLM has run can fit or score it."""
        return self.name.endswith("_helps") or self.name == "oracle_gain"

    def values(self, rows: Sequence[dict], fitted=None) -> list[float | None]:
        """The confidence per row (``fitted``: what :attr:`fit` returned, for learned ones).

        Raises:
            ValueError: a learned signal without ``fitted``.
        """
        if self.learned and fitted is None:
            raise ValueError(f"{self.name} is learned: fit it on train rows first")
        return [None if v is None else float(min(1.0, max(0.0, v)))
                for v in self.score(rows, fitted)]


# ----------------------------------------------------------------------------- plain signals

def _slm(row: dict) -> dict:
    return row.get("slm") or {}


def _sig(key: str):
    return lambda rows, _f: [(_slm(r).get("signals") or {}).get(key) for r in rows]


def _verbal(rows, _f):
    return [_slm(r).get("confidence") for r in rows]


def _p_true(rows, _f):
    return [(r.get("slm_verify") or {}).get("p_true") for r in rows]


def _sc(k: int):
    def score(rows, _f):
        out = []
        for r in rows:
            samples = r.get("slm_samples") or []
            if len(samples) < k:
                out.append(None)
            else:  # no greedy answer: nothing to agree with, so no confidence in it
                out.append(agreement(_slm(r).get("answer"), samples, k, same_answer) or 0.0)
        return out
    return score


def _has_samples(k: int):
    return lambda row: len(row.get("slm_samples") or []) >= k


def _sc_tokens(k: int):
    def tokens(row):
        s = (row.get("slm_samples") or [])[:k]
        return (sum(int(x.get("prompt_tokens") or 0) for x in s),
                sum(int(x.get("completion_tokens") or 0) for x in s))
    return tokens


def _verify_tokens(row):
    return (VERIFY_TOKENS, 0) if (row.get("slm_verify") or {}).get("p_true") is not None \
        else (0, 0)


def _oracle(rows, _f):
    return [None if r.get("slm_correct") is None else (1.0 if r["slm_correct"] else 0.0)
            for r in rows]


def _oracle_gain(rows, _f):
    return [0.0 if (r.get("slm_correct") is False and r.get("llm_correct")) else 1.0
            for r in rows]


# ----------------------------------------------------------------------------- learned signals

def _fit_calibrator_on(names=FEATURES):
    """Fit of the calibrator (:func:`corea.signals.calibrator.fit_calibrator`) on the feature ``names``:
    all of them (``calibrator``) or :data:`corea.signals.calibrator.TOKEN_FEATURES`
    (``calibrator_tokens``: what decides by default for the embedded SLM with its calibration
    adapter, whose solutions and token signals are the plain SLM's; the adapter only writes the
    confidence line)."""
    def fit(rows, slm):
        ok = [r for r in rows if r.get("slm_correct") is not None and has_token_signals(_slm(r))]
        return fit_calibrator([_slm(r) for r in ok], [bool(r["slm_correct"]) for r in ok], slm,
                              sources={"train rows": len(ok)}, features=names)
    return fit


def _fit_calibrator_helps(rows, slm):
    """The calibrator's logistic regression fit to "keeping the SLM's answer loses nothing"
    (not: the SLM wrong and the LLM right, :func:`corea.signals.probe.target_labels` ``llm_helps``), so
    its probability is ``1 - P(the LLM fixes it)``, like ``probe_helps``'s confidence; only rows
    with both grades fit it (Calibrate-then-Delegate's label)."""
    labels = target_labels(rows, "llm_helps")
    ok = [(r, h) for r, h in zip(rows, labels) if h is not None and has_token_signals(_slm(r))]
    return fit_calibrator([_slm(r) for r, _ in ok], [not h for _, h in ok], slm,
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
    return has_token_signals(_slm(row))


def _calibrated(rows, cal):
    return _predict_where(rows, _with_tokens, lambda kept: cal.predict([_slm(r) for r in kept]))


def _with_agreement(k: int):
    """Features of ``calibrator_sc<k>``: the calibrator's 7 (:func:`corea.signals.calibrator.features`)
    and the agreement of the first ``k`` samples with the greedy answer (0 without one)."""
    agree = _sc(k)

    def matrix(rows: Sequence[dict]) -> np.ndarray:
        """Shape ``(len(rows), 8)``."""
        return np.array([features(_slm(r)) + [a] for r, a in zip(rows, agree(rows, None))],
                        dtype=float)
    return matrix


def _fit_calibrator_sc(k: int):
    def fit(rows, slm):
        """A standardised logistic regression (scikit-learn) on :func:`_with_agreement` of the
        rows with ``k`` samples and token signals, fit to the SLM's correctness.

        Raises:
            ValueError: fewer than the calibrator's ``MIN_PER_CLASS`` right or wrong rows."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        ok = [r for r in rows if r.get("slm_correct") is not None and _covered(k)(r)]
        y = np.array([bool(r["slm_correct"]) for r in ok])
        if min(int(y.sum()), int((~y).sum())) < MIN_PER_CLASS:
            raise ValueError(f"{int(y.sum())} right and {int((~y).sum())} wrong train rows with "
                             f"{k} samples; at least {MIN_PER_CLASS} of each are needed")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        return model.fit(_with_agreement(k)(ok), y)
    return fit


def _covered(k: int):
    """Rows ``calibrator_sc<k>`` can score: token signals and ``k`` samples."""
    has = _has_samples(k)
    return lambda row: _with_tokens(row) and has(row)


def _calibrated_sc(k: int):
    def score(rows, model):
        return _predict_where(rows, _covered(k),
                              lambda kept: model.predict_proba(_with_agreement(k)(kept))[:, 1])
    return score


def _has_agreement(row: dict) -> bool:
    """The row's SLM solved both ways and both ran (``solve: mot``)."""
    return _slm(row).get("agreement") is not None


def _agreement(rows, _fitted):
    """1.0 where the SLM's CoT and program answers agree, 0.0 where not, None without ``mot``."""
    return [None if not _has_agreement(r) else float(bool(_slm(r)["agreement"])) for r in rows]


def _probe(position: str, target: str, tokens: bool = False):
    def fit(rows, slm):
        return fit_probe(rows, slm, position=position, target=target, tokens=tokens)
    return fit


def _probe_score(rows, probe):
    return probe_values(probe, rows)


SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("verbal", "stated confidence (after solving)", "after", _verbal),
    Signal(TOKPROB, "token probability of the solution (AvgProb)", "after",
           lambda rows, _f: [token_probability(_slm(r)) for r in rows]),
    Signal("answer_prob", "token probability of the final answer", "after", _sig("answer_prob")),
    Signal("min_prob", "minimum token probability", "after", _sig("min_prob")),
    Signal("p_true", "self-verification P(True)", "after", _p_true,
           extra_tokens=_verify_tokens),
    Signal("sc2", "self-consistency, 2 samples", "after", _sc(2), extra_tokens=_sc_tokens(2),
           covers=_has_samples(2)),
    Signal("sc4", "self-consistency, 4 samples", "after", _sc(4), extra_tokens=_sc_tokens(4),
           covers=_has_samples(4)),
    Signal(AGREEMENT, "CoT/PoT agreement (solve: mot)", "after", _agreement,
           covers=_has_agreement),
    Signal("calibrator", "calibrator (logistic on stated + token signals)", "after",
           _calibrated, fit=_fit_calibrator_on()),
    Signal("calibrator_tokens", "calibrator on token signals only", "after", _calibrated,
           fit=_fit_calibrator_on(TOKEN_FEATURES)),
    Signal("calibrator_helps", "calibrator fit to 'LLM fixes it'", "after", _calibrated,
           fit=_fit_calibrator_helps),
    Signal("calibrator_sc4", "calibrator + self-consistency (4 samples)", "after",
           _calibrated_sc(4), fit=_fit_calibrator_sc(4), extra_tokens=_sc_tokens(4),
           covers=_has_samples(4)),
    Signal("probe", "probe on the end-of-solution state", "after", _probe_score,
           fit=_probe("end", "slm_correct")),
    Signal("probe_tokens", "probe on the end-of-solution state + stated and token signals",
           "after", _probe_score, fit=_probe("end", "slm_correct", tokens=True)),
    Signal("probe_helps", "probe on the end-of-solution state, fit to 'LLM fixes it'", "after",
           _probe_score, fit=_probe("end", "llm_helps")),
    Signal("prior_probe", "probe on the state after the question (pre-generation)", "before",
           _probe_score, fit=_probe("prompt", "slm_correct")),
    Signal("prior_probe_helps", "pre-generation probe, fit to 'LLM fixes it'", "before",
           _probe_score, fit=_probe("prompt", "llm_helps")),
    Signal("oracle", "oracle: defers exactly the SLM's errors", "oracle", _oracle),
    Signal("oracle_gain", "oracle: defers only where the LLM fixes an SLM error", "oracle",
           _oracle_gain),
)}


NAMES: tuple[str, ...] = (*SIGNALS, *OLD_TOKPROB_NAMES[:1])
"""Every name a command accepts for a signal: the registry's, and ``avgprob`` (the old name of
``tokprob``)."""


def available(rows: Sequence[dict], names: Sequence[str] | None = None) -> list[str]:
    """The signals (of ``names``, default all; old names read as their current ones,
    :func:`corea.signals.tokens.signal_name`) that rows carry the inputs for."""
    names = list(names or SIGNALS)
    has_states = any((_slm(r).get("states") or {}) for r in rows)
    has_verify = any(r.get("slm_verify") for r in rows)
    has_tok = any(has_token_signals(_slm(r)) for r in rows)
    need = {"probe": has_states, "probe_helps": has_states,
            "probe_tokens": has_states and has_tok, "prior_probe": has_states,
            "prior_probe_helps": has_states, "p_true": has_verify,
            "sc2": any(map(_has_samples(2), rows)), "sc4": any(map(_has_samples(4), rows)),
            "calibrator_sc4": any(map(_covered(4), rows)),
            "calibrator": has_tok, "calibrator_tokens": has_tok, "calibrator_helps": has_tok,
            TOKPROB: has_tok, "answer_prob": has_tok, "min_prob": has_tok,
            AGREEMENT: any(map(_has_agreement, rows))}
    return [n for n in map(signal_name, names) if need.get(n, True)]


def extra_cost(signal: Signal, rows: Sequence[dict], price_in: float, price_out: float
               ) -> np.ndarray:
    """USD per row of computing ``signal`` (SLM prices per 1M tokens)."""
    return np.array([(a * price_in + b * price_out) / 1e6
                     for a, b in (signal.extra_tokens(r) for r in rows)], dtype=float)
