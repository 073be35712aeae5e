"""Handlers of the app's calibrator panel: refit the SLM's calibrator from ratings (and runs),
compare it with the verbal confidence and the current calibrator on held-out data, then switch.

Free of widgets so tests can call them; every handler returns messages instead of raising.
Fitting and switching are owner actions (:mod:`corea.auth`): checked inside the handlers, and their
endpoints are not in the public API.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..auth import Roles
from ..signals.calibrator import CalibratorStore, InsufficientLabels
from ..eval.calibrate import refit
from ..eval.runs import list_runs

log = logging.getLogger(__name__)

__all__ = ["CalibrationHandlers", "build_panel"]


class CalibrationHandlers:
    """Args:
        service: the app's :class:`corea.service.CoreaService`.
        runs_root: folder of evaluation runs offered as extra label sources.
        roles: who is an owner (default from the environment).
    """

    def __init__(self, service, runs_root: str | Path = "runs", roles: Roles | None = None):
        self.service = service
        self.roles = roles or Roles.from_env()
        self.runs_root = Path(runs_root)
        self._pending: dict[str, object] = {}
        self._lock = threading.Lock()

    def run_choices(self) -> list[tuple[str, str]]:
        """``(folder name, folder name)`` of each evaluation run (no server path to the page)."""
        return [(Path(p).name, Path(p).name) for p in list_runs(self.runs_root)]

    def current(self) -> str:
        """One line: the calibrator in use (if any) and its held-out numbers."""
        cal = self.service.calibrator
        s = self.service.settings
        if cal is None:
            return (f"No calibrator for **{s.slm.name}** yet: the cascade decides with the "
                    "verbal confidence.")
        h = cal.card.held_out
        use = "in use" if s.confidence_source in ("calibrated", "auto") and \
            (s.confidence_source == "calibrated" or cal.card.beats_verbal()) else "not in use"
        shipped = "shipped, " if cal.origin == "shipped" else ""
        return (f"Calibrator **v{cal.card.version}** ({shipped}{cal.card.kind}, {cal.card.n} "
                "labels) for "
                f"{s.slm.name}: held-out AUROC {h.get('auroc') or 0:.3f}, ECE "
                f"{h.get('ece') or 0:.3f} — {use} (confidence source "
                f"`{s.confidence_source}`).")

    def fit(self, runs: list[str] | None, use_ratings: bool, kind: str,
            request: gr.Request | None = None):
        """Fit a candidate (owners only); returns ``(markdown, token)`` — the token identifies
        the candidate for :meth:`switch` (empty when nothing was fitted)."""
        refused = self.roles.refuse(request)
        if refused:
            return refused, ""
        listed = {name for _, name in self.run_choices()}
        if any(Path(r).name not in listed for r in runs or []):
            return "Choose evaluation runs from the list.", ""
        runs = [str(self.runs_root / Path(r).name) for r in runs or []]
        store = self.service.store if use_ratings else None
        if use_ratings and store is None:
            return f"⚠️ Ratings are unavailable: {self.service.logging_error}", ""
        if not runs and not use_ratings:
            return "Choose rated interactions and/or evaluation runs as label sources.", ""
        try:
            cal, labels, table = refit(self.service.settings, runs or [], store,
                                       kind=kind or "logistic")
        except InsufficientLabels as exc:
            return f"⚠️ {exc}", ""
        except Exception as exc:  # noqa: BLE001
            log.exception("calibrator fit failed")
            return f"⚠️ Could not fit a calibrator: {exc}", ""
        token = uuid.uuid4().hex
        with self._lock:
            self._pending = {token: cal}  # only the latest candidate is kept
        verdict = ("beats" if cal.card.beats_verbal() else "does **not** beat")
        skipped = ", ".join(f"{v} {k}" for k, v in labels.skipped.items()) or "none"
        sources = ", ".join(f"{v} from {Path(k).name if k != 'ratings' else 'ratings'}"
                            for k, v in labels.sources.items())
        return (f"Fitted on {cal.card.n} labels ({cal.card.n_positive} correct): {sources}; "
                f"skipped: {skipped}.\n\n{table}\n\nThe new calibrator "
                f"{verdict} the verbal confidence on held-out AUROC. Press **Switch to it** to "
                "use it.", token)

    def switch(self, token: str, request: gr.Request | None = None):
        """Save the candidate as the next version and make the cascade use it (owners only).

        Returns ``(current-calibrator line, panel message, cleared token)``."""
        refused = self.roles.refuse(request)
        if refused:
            return self.current(), refused, ""
        with self._lock:
            cal = self._pending.pop(token, None) if token else None
        if cal is None:
            return self.current(), "Fit a calibrator first.", ""
        try:
            CalibratorStore(self.service.settings.calibrators_path).save(cal)
            in_use = self.service.reload_calibrator()
        except Exception as exc:  # noqa: BLE001
            log.exception("calibrator save failed")
            return self.current(), f"⚠️ Could not save the calibrator: {exc}", ""
        msg = f"Saved as v{cal.card.version}."
        if in_use is not None and in_use.origin == "shipped":
            # the shipped calibrator stays: a refit replaces it only when it ranks better
            msg += (" The calibrator shipped for this SLM stays in use: its held-out AUROC "
                    f"{in_use.card.held_out.get('auroc') or 0:.3f} is at least this one's "
                    f"{cal.card.held_out.get('auroc') or 0:.3f}.")
        return self.current(), msg, ""


def build_panel(cb: CalibrationHandlers, demo: gr.Blocks, ask: SimpleNamespace):
    """The calibrator panel (call inside the explorer tab); after a switch the Ask tab's models
    line (``ask.model_md``, refreshed by ``ask.model_info``) says which signal decides. Returns
    the panel (the app shows it to owners only)."""
    with gr.Accordion("Calibrator: learn P(SLM correct) from ratings and runs (owner)",
                      open=False) as panel:
        cb_current = gr.Markdown(cb.current(), elem_id="corea-calibrator-current")
        with gr.Row():
            cb_ratings = gr.Checkbox(True, label="Use rated interactions")
            cb_runs = gr.Dropdown(cb.run_choices(), multiselect=True,
                                  label="…and evaluation runs", scale=3)
            cb_kind = gr.Radio(["logistic", "isotonic"], value="logistic", label="Model")
        with gr.Row():
            cb_fit = gr.Button("Fit (held-out comparison)", elem_id="corea-calibrator-fit")
            cb_switch = gr.Button("Switch to it", variant="primary",
                                  elem_id="corea-calibrator-switch")
        cb_out = gr.Markdown(elem_id="corea-calibrator-out")
        cb_token = gr.State("")
    demo.load(cb.current, None, [cb_current], api_visibility="private")
    cb_fit.click(cb.fit, [cb_runs, cb_ratings, cb_kind], [cb_out, cb_token],
                 api_visibility="private")
    cb_switch.click(cb.switch, [cb_token], [cb_current, cb_out, cb_token],
                    api_visibility="private").then(ask.model_info, None, [ask.model_md],
                                                   api_visibility="private")
    return panel
