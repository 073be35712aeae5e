"""The Threshold explorer's τ rules: the buttons that set the slider by the paper's rule, a target
deferral rate or Learn-then-Test (:class:`TauRules`, a part of
:class:`corea.ui.explorer.ExplorerHandlers`).
"""

from __future__ import annotations

import logging

import gradio as gr

from ..eval.scored import ScoredSet
from ..eval.thresholds import (certified_threshold, min_items_to_certify, paper_threshold,
                               target_deferral_threshold)
from .explorer_tables import slider_value

log = logging.getLogger("corea.ui.explorer")

__all__ = ["TauRules"]


class TauRules:
    """The τ-suggesting handlers of :class:`corea.ui.explorer.ExplorerHandlers` (which provides
    ``rows``, ``_session`` and ``_say``). Each returns ``(slider value, status line)`` and never
    raises."""

    def _suggest(self, source, current, name: str, fn, fallback: float | None = None,
                 request=None, signal: str = "verbal"):
        try:
            rows, problem = self.rows(source, self._session(request), signal)
            if problem:
                return current, self._say(problem, request)
            scored = ScoredSet.from_rows(rows)
            if len(scored) == 0:
                return current, f"{name}: no items with both labels in this source."
            tau, note = fn(scored)
            if tau is None:
                if fallback is not None:
                    return fallback, f"{name}: {note} Slider set to {fallback:.2f}."
                return current, f"{name}: {note}"
            v = slider_value(tau)
            cur = scored.at(v)
            return v, (f"{name}: τ = {tau:.4g} → slider {v:.2f} (pass@1 "
                       f"{cur['pass_at_1']:.1%}, deferral {cur['deferral_rate']:.1%}, on "
                       f"{len(scored)} item(s)). {note}").strip()
        except Exception as exc:  # noqa: BLE001
            log.exception("explorer suggestion failed")
            return current, self._say(f"⚠️ {name}: {exc}", request)

    def paper_tau(self, source, current, request: gr.Request | None = None,
                  signal: str = "verbal"):
        """Slider value τ = LLM pass@1 (COREA paper rule) and a status line."""
        return self._suggest(source, current, "Paper rule (τ = LLM pass@1)",
                             lambda ss: (paper_threshold(ss.llm_correct), ""), request=request,
                             signal=signal)

    def deferral_tau(self, source, current, rate: float = 0.3,
                     request: gr.Request | None = None, signal: str = "verbal"):
        """Slider value deferring ``rate`` of the items and a status line."""
        return self._suggest(source, current, f"{rate:.0%} deferral",
                             lambda ss: (target_deferral_threshold(ss.confidence_list(), rate),
                                         ""), request=request, signal=signal)

    def certified_tau(self, source, current, alpha: float = 0.02, delta: float = 0.1,
                      request: gr.Request | None = None, signal: str = "verbal"):
        """Slider value certified by Learn-then-Test (drop ≤ α with prob. ≥ 1 − δ) and a status
        line. The whole source is used as the calibration set; the one-sided "harm" loss is
        tested (its guarantee implies the accuracy-drop one, with far more power). When nothing
        is certified the slider goes to 1.0 (defer everything short of a stated certainty)."""
        def fn(ss: ScoredSet):
            res = certified_threshold(ss.confidence_list(), ss.slm_correct, ss.llm_correct,
                                      alpha=alpha, delta=delta, loss="harm")
            if res.threshold is None:
                return None, (f"no τ certified on {res.n} item(s) (p = {res.p_values[0]:.3g} "
                              f"> δ at τ = {res.taus[0]:.2f}): only LLM-only is safe (about "
                              f"{min_items_to_certify(alpha, delta)} items with "
                              "no observed harm are needed at this α and δ).")
            nxt = len(res.certified)
            more = (f" Stopped at τ = {res.taus[nxt]:.2f} (p = {res.p_values[nxt]:.3g})."
                    if nxt < len(res.taus) else "")
            return res.threshold, (f"Accuracy drop ≤ {alpha:g} with probability ≥ "
                                   f"{1 - delta:g} (Learn then Test, fixed sequence).{more}")
        return self._suggest(source, current, f"Certified τ (α={alpha:g}, δ={delta:g})", fn,
                             fallback=1.0, request=request, signal=signal)
