"""Seconds per item and RouteLLM-style routing baselines for the held-out report.

**Seconds** (:func:`item_seconds`): per row, the time model (:class:`corea.timing.TimeModel`)
applied to each model's token counts — not the rows' measured ``latency_s``, which in the
committed generations were measured with 16 sequences decoding at once on 2 vCPUs (see
``corea/assets/timing/README.md``). A kept item takes the SLM's call plus the signal's own SLM
tokens (no second overhead); a deferred item also the LLM's call; a pre-generation signal's
deferred item takes only the SLM's prompt (its overhead and prompt tokens) and the LLM's call —
the same accounting as the USD costs of :mod:`corea.eval.heldout`.

**Random routing** at the same deferral rate d (:func:`random_at`): each item deferred
independently with probability d, the signal replaced by a coin. Expected pass@1 =
(1 − d)·SLM pass@1 + d·LLM pass@1 (:meth:`corea.eval.scored.ScoredSet.random_routing`);
expected cost and seconds = (1 − d)·Σ kept + d·Σ deferred, per item as the signal's.

**APGR and call-performance threshold** (:func:`apgr`, :func:`call_performance_threshold`),
as defined by RouteLLM (Ong et al., 2024, "RouteLLM: Learning to Route LLMs with Preference
Data", arXiv 2406.18665, and ``routellm/evals/evaluate.py``): over the curve of pass@1 against the
share of calls to the strong model (here: the deferral rate, every τ of the signal's values),
PGR = (pass − weak) / (strong − weak), APGR = (AUC − AUC_weak) / (AUC_strong − AUC_weak) with
trapezoid areas over the rates covered; random routing's APGR is 0.5. CPT(x) is the smallest
deferral rate whose pass@1 reaches weak + x·(strong − weak), linearly interpolated (RouteLLM
reports CPT(50%) and CPT(80%)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..timing import TimeModel
from .scored import ScoredSet

__all__ = ["ItemSeconds", "item_seconds", "random_at", "CurvePoint", "curve", "apgr",
           "call_performance_threshold", "routing_summary"]


@dataclass(frozen=True)
class ItemSeconds:
    """Seconds per row (arrays of length N): a kept item, a deferred item, LLM-only."""

    kept: np.ndarray
    deferred: np.ndarray
    llm: np.ndarray


def _call_s(tm: TimeModel, out: dict | None) -> float:
    if not out:
        return 0.0
    return tm.seconds(out.get("model") or "", int(out.get("prompt_tokens") or 0),
                      int(out.get("completion_tokens") or 0))


def item_seconds(rows: Sequence[dict], tm: TimeModel, extra_tokens, before: bool,
                 llm_prefill: bool = False, llm_call=None) -> ItemSeconds:
    """Seconds per row (see the module docstring). ``extra_tokens``: ``f(row) -> (prompt,
    completion)`` SLM tokens of the signal itself; ``before``: a pre-generation signal;
    ``llm_prefill``: the signal reads the LLM's state after its prompt, one LLM call with no
    completion (the model's overhead and its prompt tokens) on a kept item (a deferred item's
    LLM answer starts from it); ``llm_call``: ``f(row) -> prompt tokens`` of one more LLM call
    with no completion on every item (the LLM's P(True): the time model's call for those
    tokens, kept or deferred)."""
    kept, deferred, llm = [], [], []
    for r in rows:
        slm = r.get("slm") or {}
        t = tm.models.get(slm.get("model") or "")
        a, b = extra_tokens(r)
        extra = 0.0 if t is None else a * t.prompt_s_per_token + b * t.completion_s_per_token
        k = _call_s(tm, slm) + extra
        big = _call_s(tm, r.get("llm"))
        prompt = 0.0 if t is None else t.seconds(int(slm.get("prompt_tokens") or 0), 0)
        big_out = r.get("llm") or {}
        pre = tm.seconds(big_out.get("model") or "", int(big_out.get("prompt_tokens") or 0), 0) \
            if llm_prefill and big_out else 0.0
        n_call = llm_call(r) if llm_call is not None and big_out else 0
        call = tm.seconds(big_out.get("model") or "", n_call, 0) if n_call else 0.0
        kept.append(k + pre + call)
        deferred.append((prompt + big) if before else (k + call + big))
        llm.append(big)
    return ItemSeconds(np.array(kept), np.array(deferred), np.array(llm))


def random_at(scored: ScoredSet, rate: float, kept: np.ndarray, deferred: np.ndarray,
              llm_cost: np.ndarray, secs: ItemSeconds | None) -> dict:
    """Expected pass@1, cost fraction and time fraction of LLM-only of random routing at
    deferral rate ``rate`` with these per-row USD costs (kept / deferred / LLM-only) and seconds.

    Raises:
        ValueError: ``rate`` not in [0, 1], or an empty set.
    """
    base = scored.random_routing(rate)
    cost = float((1 - rate) * kept.sum() + rate * deferred.sum())
    llm_total = float(llm_cost.sum())
    out = {"deferral_rate": float(rate), "pass_at_1": base["pass_at_1"],
           "cost_fraction_of_llm_only": cost / llm_total if llm_total > 0 else None}
    if secs is not None:
        s = float((1 - rate) * secs.kept.sum() + rate * secs.deferred.sum())
        t = float(secs.llm.sum())
        out["time_fraction_of_llm_only"] = s / t if t > 0 else None
    return out


@dataclass(frozen=True)
class CurvePoint:
    """One τ of a signal: share of items deferred (calls to the LLM) and the cascade's pass@1."""

    deferral_rate: float
    pass_at_1: float


def curve(scored: ScoredSet) -> list[CurvePoint]:
    """Pass@1 against deferral rate over every τ of ``scored`` (sorted by rate; one point per
    rate, the best pass@1 there), with the endpoints "SLM only" (0, SLM pass@1) and "LLM only"
    (1, LLM pass@1) where the sweep does not reach them."""
    best: dict[float, float] = {}
    for t in scored.thresholds():
        d = float(scored.defer(t).mean())
        best[d] = max(best.get(d, -1.0), float(scored.correct_at(t).mean()))
    best.setdefault(0.0, scored.slm_pass)
    best.setdefault(1.0, scored.llm_pass)
    return [CurvePoint(d, best[d]) for d in sorted(best)]


def apgr(points: Sequence[CurvePoint], weak: float, strong: float) -> float | None:
    """RouteLLM's average performance gap recovered of a pass@1 / deferral-rate curve (see the
    module docstring); None when ``strong == weak`` or the curve spans no rates."""
    x = np.array([p.deferral_rate for p in points])
    y = np.array([p.pass_at_1 for p in points])
    span = float(x.max() - x.min()) if x.size else 0.0
    if strong == weak or span <= 0:
        return None
    auc = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
    return (auc - weak * span) / ((strong - weak) * span)


def call_performance_threshold(points: Sequence[CurvePoint], weak: float, strong: float,
                               fraction: float) -> float | None:
    """The smallest deferral rate at which the curve's pass@1 reaches
    ``weak + fraction·(strong − weak)``, linearly interpolated between points; None when it never
    does."""
    target = weak + fraction * (strong - weak)
    prev = None
    for p in points:
        if p.pass_at_1 >= target - 1e-12:
            if prev is None or p.pass_at_1 == prev.pass_at_1:
                return p.deferral_rate
            w = (target - prev.pass_at_1) / (p.pass_at_1 - prev.pass_at_1)
            return prev.deferral_rate + max(0.0, w) * (p.deferral_rate - prev.deferral_rate)
        prev = p
    return None


def routing_summary(scored: ScoredSet) -> dict:
    """``{"apgr", "cpt50", "cpt80"}`` of a signal's curve on ``scored`` against its SLM and LLM
    pass@1 (random routing: APGR 0.5, CPT(x) = x)."""
    pts = curve(scored)
    weak, strong = scored.slm_pass, scored.llm_pass
    return {"apgr": apgr(pts, weak, strong),
            "cpt50": call_performance_threshold(pts, weak, strong, 0.5),
            "cpt80": call_performance_threshold(pts, weak, strong, 0.8)}


def _pct(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "—"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f}%"


def time_model_lines(rep: dict) -> list[str]:
    """Markdown: where the report's seconds come from (its ``time_model``), or nothing."""
    tm = rep.get("time_model")
    if not tm:
        return []
    per = "; ".join(f"{name}: {t['overhead_s']:.2f} s + {t['completion_s_per_token'] * 1e3:.1f} ms "
                    f"per completion token + {t['prompt_s_per_token'] * 1e3:.1f} ms per prompt "
                    "token" for name, t in tm["models"].items())
    cpu = tm.get("machine") or {}
    where = ", ".join(str(cpu[k]) for k in ("processor", "cpus", "cpu_count") if cpu.get(k))
    return [f"Seconds: a time model applied to each row's token counts (not the rows' measured "
            f"latencies, taken with 16 sequences decoding at once), {per} ({tm.get('source', '')}"
            + (f"; machine: {where} CPUs" if where else "") + ").", ""]


def routing_lines(rep: dict, test: str, ratio: str = "0") -> list[str]:
    """Markdown table for one test set: per signal at its train τ (SLM price ``ratio``), seconds
    against LLM-only and random routing at the same deferral rate, and RouteLLM's APGR / CPT."""
    head = ["signal", "time vs LLM-only", "s/item", "deferred", "pass@1 vs random routing",
            "random routing: time vs LLM-only", "APGR", "CPT(50%)", "CPT(80%)"]
    lines = [f"*{test}: seconds and random routing* (τ chosen on train with the SLM free; random "
             "routing defers the same share of items by a coin, expected values; APGR and CPT "
             "over every τ on this set, RouteLLM's definitions: random routing has APGR 0.50 and "
             "CPT(x) = x):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rep["signals"]:
        t = s.get("tests", {}).get(test)
        b = (t or {}).get("by_ratio", {}).get(ratio)
        if "error" in s or b is None:
            continue
        rnd, rt = b.get("random") or {}, t.get("routing") or {}
        frac = b.get("time_fraction_of_llm_only")
        spi = b.get("seconds_per_item")
        lines.append("| " + " | ".join([
            s["label"], _pct(frac - 1.0 if frac is not None else None),
            "—" if spi is None else f"{spi:.1f}", _pct(b["deferral_rate"], False),
            f"{b['pass_vs_random'] * 100:+.1f} pt",
            _pct(rnd["time_fraction_of_llm_only"] - 1.0
                 if rnd.get("time_fraction_of_llm_only") is not None else None),
            "—" if rt.get("apgr") is None else f"{rt['apgr']:.2f}",
            _rate(rt.get("cpt50")), _rate(rt.get("cpt80"))]) + " |")
    return lines + [""]


# ----------------------------------------------------------------------------- break-even

def break_even_deferral(slm: float, llm: float) -> float | None:
    """The deferral rate at which a cascade costs as much as the LLM alone, with a free decision:
    a kept item pays ``slm``, a deferred one ``slm + llm``, LLM-only ``llm`` per item, so
    ``(slm + d·llm) = llm`` at ``d* = 1 − slm / llm`` (any unit: USD, seconds). Clipped to
    [0, 1]: 0 when the SLM alone costs at least as much as the LLM (the cascade never pays);
    None when the LLM costs nothing.

    >>> break_even_deferral(1.0, 4.0)
    0.75
    """
    if llm <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - slm / llm))


@dataclass(frozen=True)
class BreakEven:
    """Mean per-item SLM and LLM costs of a run (USD; seconds from a time model, None without
    one) and the break-even deferral rate in each unit (:func:`break_even_deferral`)."""

    n: int
    slm_usd: float
    llm_usd: float
    slm_s: float | None
    llm_s: float | None

    @property
    def money(self) -> float | None:
        return break_even_deferral(self.slm_usd, self.llm_usd)

    @property
    def seconds(self) -> float | None:
        if self.slm_s is None or self.llm_s is None:
            return None
        return break_even_deferral(self.slm_s, self.llm_s)


def pair_break_even(items: Sequence[dict], tm: TimeModel | None) -> BreakEven | None:
    """:class:`BreakEven` over the run items (:func:`corea.eval.runs.load_results` rows) where
    both models ran; USD from each output's recorded ``cost_usd`` (the run's prices), seconds
    from ``tm`` on its token counts. None when no item has both."""
    both = [r for r in items if r.get("slm") and r.get("llm")]
    if not both:
        return None
    usd = [(float(r["slm"].get("cost_usd") or 0.0), float(r["llm"].get("cost_usd") or 0.0))
           for r in both]
    secs = None
    if tm is not None and not tm.missing({r["slm"].get("model") or "" for r in both}
                                         | {r["llm"].get("model") or "" for r in both}):
        secs = [(_call_s(tm, r["slm"]), _call_s(tm, r["llm"])) for r in both]
    n = len(both)
    return BreakEven(n, sum(a for a, _ in usd) / n, sum(b for _, b in usd) / n,
                     None if secs is None else sum(a for a, _ in secs) / n,
                     None if secs is None else sum(b for _, b in secs) / n)


def break_even_text(be: BreakEven | None) -> str:
    """One Markdown line for the explorer: the break-even deferral rate in money and seconds
    ("" without data)."""
    if be is None:
        return ""

    def one(d: float | None, slm: float | None, llm: float | None, unit: str) -> str:
        if d is None or slm is None or llm is None:
            return f"{unit}: —"
        per = (f"${slm:.6f} vs ${llm:.6f}" if unit == "money" else f"{slm:.1f} s vs {llm:.1f} s")
        if d <= 0:
            return f"{unit}: never (the SLM alone costs as much as the LLM: {per} per item)"
        return f"{unit}: **{d:.0%}** (SLM {per} LLM per item)"

    return ("**Break-even deferral rate** (defer more than this and the cascade costs more than "
            "the large model alone; decision free): "
            + " · ".join([one(be.money, be.slm_usd, be.llm_usd, "money"),
                          one(be.seconds, be.slm_s, be.llm_s, "time")])
            + f" — over the {be.n} items where both models ran.")
