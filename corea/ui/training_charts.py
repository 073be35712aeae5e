"""The Training tab's charts (Altair): a run's reward and calibration metrics against the step
and, for a confidence-training run, the reliability of its last logged batches. Part of
:mod:`corea.ui.training`, where these names are importable too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RELIABILITY_STEPS", "reliability_panel", "metrics_chart"]

_CAL_KEYS = {"calibration/accuracy": "accuracy", "calibration/mean_confidence": "mean confidence",
             "calibration/ece": "batch ECE", "calibration/brier": "batch Brier",
             "calibration/no_confidence": "no confidence (share)"}

RELIABILITY_STEPS = 10  # the reliability panel pools this many of the last log steps


def reliability_panel(confidences: list[float], correct: list[bool], steps: list[int],
                      n_bins: int = 10):
    """Altair reliability diagram of a confidence-training run's last logged batches: accuracy
    against mean confidence per equal-width bin (:func:`corea.metrics.reliability_bins`; point
    size = examples), the diagonal, and ECE in the subtitle. None without examples."""
    import altair as alt

    from ..metrics import ece, reliability_bins

    if not confidences:
        return None
    bins = [b for b in reliability_bins(confidences, correct, n_bins) if b["count"]]
    span = f"step {steps[0]}" if len(set(steps)) == 1 else f"steps {steps[0]}–{steps[-1]}"
    diag = alt.Chart(alt.Data(values=[{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}])).mark_line(
        strokeDash=[4, 4], color="#888").encode(
        x=alt.X("x:Q", title="stated confidence (expected)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("y:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])))
    pts = alt.Chart(alt.Data(values=bins)).mark_circle(color="#e45756").encode(
        x="mean_conf:Q", y="accuracy:Q",
        size=alt.Size("count:Q", legend=None, scale=alt.Scale(range=[30, 300])),
        tooltip=[alt.Tooltip("mean_conf:Q", format=".2f", title="mean confidence"),
                 alt.Tooltip("accuracy:Q", format=".2f"), alt.Tooltip("count:Q")])
    return alt.layer(diag, pts).properties(
        width=220, height=220,
        title=alt.TitleParams("Batch reliability", subtitle=(
            f"{span}, {len(confidences)} solutions, ECE {ece(confidences, correct, n_bins):.3f}")))


def metrics_chart(metrics: list[dict[str, Any]], confidences: tuple | None = None):
    """Altair chart: reward components (left), calibration metrics (middle) against the step,
    and, for a confidence-training run, the reliability of its last batches (right;
    ``confidences`` = :func:`corea.jobs.read_confidences`'s triple). None when nothing has been
    logged yet."""
    import altair as alt
    import pandas as pd

    rew, cal = [], []
    for m in metrics:
        step = m.get("step")
        if step is None:
            continue
        for k, v in m.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if k == "reward" or (k.startswith("rewards/") and k.endswith("/mean")):
                name = "total reward" if k == "reward" else k[len("rewards/"):-len("/mean")]
                rew.append({"step": step, "metric": name, "value": v})
            elif k in _CAL_KEYS:
                cal.append({"step": step, "metric": _CAL_KEYS[k], "value": v})
    if not rew and not cal:
        return None

    def panel(rows, title):
        return alt.Chart(pd.DataFrame(rows or [{"step": 0, "metric": "(none yet)",
                                                "value": 0.0}])).mark_line(point=True).encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("metric:N", legend=alt.Legend(orient="bottom", columns=2)),
            tooltip=["step", "metric", alt.Tooltip("value:Q", format=".3f")],
        ).properties(title=title, width=300, height=220)

    panels = [panel(rew, "Rewards"), panel(cal, "Calibration (per batch)")]
    rel = reliability_panel(*confidences) if confidences else None
    if rel is not None:
        panels.append(rel)
    return alt.hconcat(*panels).resolve_scale(color="independent")
