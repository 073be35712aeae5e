"""Held-out choice of the solve mode: every (mode, signal, τ) chosen on train, measured on test.

``corea heldout --mode cot TRAIN TEST --mode pot TRAIN TEST --mode mot TRAIN TEST``: one train run
and one test run per solve mode (``cot``, ``pot``, ``mot``; each run has both tiers solving in that
mode). Method:

1. **Same items.** Each split is cut to the item ids present, with both grades, in every mode's
   run of that split, so the modes are compared on the same questions.
2. **Per mode and signal, fit and τ on train** as in :func:`corea.eval.heldout_signal.
   evaluate_signal` (learned signals fit on the train rows; τ from cross-fitted values), once per
   cost unit: **USD** (the SLM at 1/3 of the LLM's per-token prices, the LLM's price from the train
   run) and **seconds** (the time model on each row's token counts, the SLM's time counted). The
   rule is the report's own (:func:`corea.eval.scored.best_saving_within`): the cheapest τ whose
   train pass@1 is within ``max_drop`` of the *reference*, the best LLM-only pass@1 among the
   modes on train (one bar for every mode, so a mode cannot win by being cheap and worse). A
   (mode, signal) with no such τ is not *eligible* (it is still measured, deferring everything).
3. **The chosen configuration** per unit: the eligible (mode, signal, τ) with the lowest train
   cost per question (ties: higher train pass@1). Oracle signals and signals that read the LLM's
   answer are measured but never chosen; nor is a signal that does not cover every item.
4. **Today's default**: ``cot``, the default signal (:data:`corea.eval.heldout_signal.BASELINE`),
   τ chosen on train by the same rule against cot's own LLM-only (what ``corea heldout`` does).
5. **Test**: every (mode, signal) at its train τ, and the chosen configuration next to the default,
   in pass@1, USD per question and seconds per question. Nothing looks at a test row before this.

Not modelled: the sandbox's execution time of a program (seconds are the time model on tokens),
and mixed modes (an SLM in one mode, the LLM in another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..metrics import bootstrap_ci
from ..signals.base import Signal
from ..signals.registry import SIGNALS, available
from ..timing import TimeModel
from .heldout_signal import (BASELINE, at_costs, cross_fit_values, flat_rows, gradable,
                             signal_rows, signal_seconds, usd_costs)
from .scored import ScoredSet, best_saving_within

MODES = ("cot", "pot", "mot")
"""The solve modes a tier can run in (issue 29): chain of thought, program, both."""
UNITS = ("usd", "seconds")
SLM_PRICE_RATIO = 1 / 3
"""The SLM's per-token prices as a fraction of the LLM's in the USD unit (about the embedded
pair's parameter ratio, as in :mod:`corea.eval.route_first`)."""
DEFAULT_MODE = "cot"


@dataclass(frozen=True)
class Priced:
    """One (mode, signal) on one split: its scored rows and per-row costs in both units."""

    scored: ScoredSet
    usd: tuple[np.ndarray, np.ndarray, np.ndarray]  # kept, deferred, LLM-only, USD per row
    seconds: tuple[np.ndarray, np.ndarray, np.ndarray]  # the same in seconds per row

    def unit(self, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.usd if unit == "usd" else self.seconds


def common_items(runs: dict[str, Sequence[dict]]) -> dict[str, list[dict]]:
    """Each mode's rows cut to the ids present, with both grades, in every mode's rows (in the
    first mode's order).

    Raises:
        ValueError: no such item.
    """
    ids = None
    for rows in runs.values():
        got = {r["id"] for r in gradable(rows)}
        ids = got if ids is None else ids & got
    if not ids:
        raise ValueError(f"no item has both grades in every mode's run ({', '.join(runs)})")
    first = [r["id"] for r in gradable(next(iter(runs.values()))) if r["id"] in ids]
    out = {}
    for mode, rows in runs.items():
        by_id = {r["id"]: r for r in gradable(rows)}
        out[mode] = [by_id[i] for i in first]
    return out


def _priced(signal: Signal, rows: Sequence[dict], conf: Sequence, llm_price, tm: TimeModel
            ) -> Priced:
    scored = ScoredSet.from_rows([{**f, "confidence": c}
                                  for f, c in zip(flat_rows(rows, signal), conf)])
    secs = signal_seconds(signal, rows, tm)
    return Priced(scored, usd_costs(signal, rows, llm_price, SLM_PRICE_RATIO),
                  (secs.kept, secs.deferred, secs.llm))


def _at(p: Priced, tau: float, per_item: bool = False) -> dict:
    """Pass@1, deferral rate, USD and seconds per question at ``tau``; with ``per_item`` also
    the per-item arrays under :data:`_PER_ITEM` (for the paired comparison; never written)."""
    kept, deferred, _ = p.usd
    sk, sd, _ = p.seconds
    n = len(kept)
    d = p.scored.defer(tau)
    correct, secs = p.scored.correct_at(tau), np.where(d, sd, sk)
    out = {"threshold": float(tau), "pass_at_1": float(correct.mean()),
           "deferral_rate": float(d.mean()),
           "usd_per_question": float(np.where(d, deferred, kept).sum()) / n,
           "seconds_per_question": float(secs.sum()) / n}
    if per_item:
        out[_PER_ITEM] = (correct.astype(float), secs)
    return out


_PER_ITEM = "_per_item"


def versus_default(chosen: dict, default: dict) -> dict:
    """The chosen configuration minus today's default on the same test items (paired): pass@1
    (0-1 scale) and seconds per question, each with its 95% percentile bootstrap interval over
    items (:func:`corea.metrics.bootstrap_ci`, 1,000 resamples), USD per question, and whether
    the chosen one beats the default on both pass@1 and seconds (``beats``)."""
    (ca, sa), (cb, sb) = chosen[_PER_ITEM], default[_PER_ITEM]
    n = len(ca)
    dp, ds = ca - cb, sa - sb
    pass_diff, sec_diff = float(dp.mean()), float(ds.mean())
    return {"pass_at_1_difference": pass_diff,
            "pass_at_1_ci95": list(bootstrap_ci(lambda i: dp[i].mean(), n)),
            "seconds_per_question_difference": sec_diff,
            "seconds_ci95": list(bootstrap_ci(lambda i: ds[i].mean(), n)),
            "usd_per_question_difference": chosen["usd_per_question"]
            - default["usd_per_question"],
            "beats": pass_diff > 0 and sec_diff < 0}


def _choose(p: Priced, unit: str, reference: float, max_drop: float) -> float | None:
    """The cheapest τ (in ``unit``) within ``max_drop`` of ``reference`` pass@1 on ``p``'s rows;
    None when none is."""
    kept, deferred, llm = p.unit(unit)
    s = p.scored.with_costs(kept, llm)
    best = best_saving_within([at_costs(s, kept, deferred, t) for t in s.thresholds()],
                              reference, max_drop)
    return None if best is None else float(best["threshold"])


def _llm_only(rows: Sequence[dict], llm_price, tm: TimeModel) -> dict:
    """LLM-only on these rows: pass@1, USD and seconds per question."""
    p = _priced(SIGNALS[BASELINE], rows, [None] * len(rows), llm_price, tm)
    n = len(rows)
    return {"pass_at_1": p.scored.llm_pass, "usd_per_question": float(p.usd[2].sum()) / n,
            "seconds_per_question": float(p.seconds[2].sum()) / n}


def candidate(signal: Signal) -> bool:
    """Whether a signal may be chosen: not an oracle and not one that reads the LLM's answer."""
    return signal.when != "oracle" and not signal.needs_llm


def measure(signal: Signal, train: Sequence[dict], test: Sequence[dict], slm: str, llm_price,
            tm: TimeModel, reference: float, max_drop: float, own_reference: float | None = None
            ) -> dict:
    """One (mode, signal): fit on ``train``, τ per unit on cross-fitted train values against
    ``reference`` (or ``own_reference`` for today's default), applied to ``test``.

    Returns:
        ``{"name", "label", "candidate", "usd": {...}, "seconds": {...}}``, each unit
        ``{"threshold", "eligible", "train": _at(...), "test": _at(...)}``.

    Raises:
        ValueError: the signal does not cover every item, or cannot be fit.
    """
    for split, rows in (("train", train), ("test", test)):
        got = len(signal_rows(signal, rows))
        if got < len(rows):
            raise ValueError(f"covers {got} of the {len(rows)} {split} items")
    fitted = signal.fit(list(train), slm) if signal.learned else None
    tr = _priced(signal, train, cross_fit_values(signal, train, slm), llm_price, tm)
    te = _priced(signal, test, signal.values(test, fitted), llm_price, tm)
    out = {"name": signal.name, "label": signal.label, "candidate": candidate(signal)}
    for unit in UNITS:
        tau = _choose(tr, unit, reference if own_reference is None else own_reference, max_drop)
        eligible = tau is not None
        if tau is None:  # defer everything
            tau = float(tr.scored.thresholds()[-1])
        out[unit] = {"threshold": tau, "eligible": eligible, "train": _at(tr, tau),
                     "test": _at(te, tau, per_item=True)}
    return out


def modes_report(train: dict[str, Sequence[dict]], test: dict[str, Sequence[dict]], slm: str,
                 llm_price: tuple[float, float], tm: TimeModel,
                 signals: Sequence[str] | None = None, max_drop: float = 0.02) -> dict:
    """Every mode × signal chosen on train and measured on test (see the module docstring).

    Args:
        train, test: ``{mode: evaluation rows}`` of the train split and the test split (the same
            modes in both).
        slm: the SLM's name (recorded on fitted artifacts).
        llm_price: the LLM's ``(input, output)`` USD per 1M tokens.
        tm: seconds per call (:class:`corea.timing.TimeModel`).
        signals: names from :data:`corea.signals.registry.SIGNALS` (default: every one the
            mode's train rows carry the inputs for).
        max_drop: tolerated train pass@1 drop versus the reference (0-1 scale).

    Returns:
        ``{"modes": {mode: {"llm_only": {"train", "test"}, "signals": [...]}}, "reference",
        "chosen": {unit: {...} | None}, "default": {...} | None, "items", ...}``.

    Raises:
        ValueError: the modes differ between splits, an unknown mode, or no common item.
    """
    if set(train) != set(test):
        raise ValueError(f"train modes {sorted(train)} differ from test modes {sorted(test)}")
    if unknown := set(train) - set(MODES):
        raise ValueError(f"unknown solve mode(s) {sorted(unknown)}; known: {', '.join(MODES)}")
    train, test = common_items(train), common_items(test)
    llm_only = {m: {"train": _llm_only(train[m], llm_price, tm),
                    "test": _llm_only(test[m], llm_price, tm)} for m in train}
    ref_mode = max(train, key=lambda m: llm_only[m]["train"]["pass_at_1"])
    reference = llm_only[ref_mode]["train"]["pass_at_1"]
    out = {"slm": slm, "llm_price_per_mtok": list(llm_price), "slm_price_ratio": SLM_PRICE_RATIO,
           "max_drop": max_drop, "time_model": {**tm.model_dump(), "applied_to": "token counts"},
           "items": {"train": len(train[ref_mode]), "test": len(test[ref_mode])},
           "reference": {"mode": ref_mode, "train_pass_at_1": reference},
           "modes": {}, "chosen": {}, "default": None}
    for mode in train:
        measured = []
        for name in available(train[mode], signals):
            try:
                measured.append(measure(SIGNALS[name], train[mode], test[mode], slm, llm_price,
                                        tm, reference, max_drop))
            except ValueError as exc:  # too few labels of a class, partial coverage
                measured.append({"name": name, "label": SIGNALS[name].label, "error": str(exc)})
        out["modes"][mode] = {"llm_only": llm_only[mode], "signals": measured}
    for unit in UNITS:
        ok = [(m, s) for m, e in out["modes"].items() for s in e["signals"]
              if "error" not in s and s["candidate"] and s[unit]["eligible"]]
        best = min(ok, key=lambda ms: (ms[1][unit]["train"][_key(unit)],
                                       -ms[1][unit]["train"]["pass_at_1"]), default=None)
        out["chosen"][unit] = None if best is None else {
            "mode": best[0], "signal": best[1]["name"], "label": best[1]["label"], **best[1][unit]}
    if DEFAULT_MODE in train:
        try:
            out["default"] = {"mode": DEFAULT_MODE, **measure(
                SIGNALS[BASELINE], train[DEFAULT_MODE], test[DEFAULT_MODE], slm, llm_price, tm,
                reference, max_drop, own_reference=llm_only[DEFAULT_MODE]["train"]["pass_at_1"])}
        except ValueError as exc:
            out["default"] = {"mode": DEFAULT_MODE, "name": BASELINE, "error": str(exc)}
    out["versus_default"] = {
        unit: versus_default(out["chosen"][unit]["test"], out["default"][unit]["test"])
        for unit in UNITS if out["chosen"][unit] and out["default"]
        and "error" not in out["default"]}
    for entry in [s for e in out["modes"].values() for s in e["signals"]] + [out["default"]]:
        for unit in UNITS:
            if entry and unit in entry:
                entry[unit]["test"].pop(_PER_ITEM, None)
    return out


def _key(unit: str) -> str:
    """The per-question cost key of a unit."""
    return "usd_per_question" if unit == "usd" else "seconds_per_question"


# ----------------------------------------------------------------------------- markdown

_UNIT_WORD = {"usd": "USD (SLM at 1/3 of the LLM's prices)", "seconds": "seconds (time model)"}


def _cell(at: dict) -> str:
    """"62.0% / $0.000041 / 3.1 s / 40% deferred"."""
    return (f"{at['pass_at_1'] * 100:.1f}% / ${at['usd_per_question']:.6f} / "
            f"{at['seconds_per_question']:.1f} s / {at['deferral_rate'] * 100:.0f}%")


def _config(c: dict | None) -> str:
    if c is None:
        return "none"
    if "error" in c:
        return f"{c['mode']} · {c['name']}: not fit ({c['error'][:60]})"
    return f"{c['mode']} · {c['label']} · τ {c['threshold']:.3f}"


def format_modes_report(rep: dict, test_name: str = "test") -> str:
    """Markdown: LLM-only per mode, one table per unit (every mode × signal), then the chosen
    configuration against today's default on test."""
    ref = rep["reference"]
    lines = [f"Solve modes compared on the same items: {rep['items']['train']} train, "
             f"{rep['items']['test']} {test_name}. τ and the mode are chosen on train: the "
             f"cheapest τ within {rep['max_drop'] * 100:.0f} points of the best LLM-only train "
             f"pass@1 ({ref['mode']}, {ref['train_pass_at_1'] * 100:.1f}%), then applied "
             "unchanged. Cells: pass@1 / USD per question / seconds per question / deferred.", "",
             "| mode | LLM-only train | LLM-only test |", "|---|---|---|"]
    for mode, e in rep["modes"].items():
        tr, te = e["llm_only"]["train"], e["llm_only"]["test"]
        lines.append(f"| {mode} | {tr['pass_at_1'] * 100:.1f}% / ${tr['usd_per_question']:.6f} / "
                     f"{tr['seconds_per_question']:.1f} s | {te['pass_at_1'] * 100:.1f}% / "
                     f"${te['usd_per_question']:.6f} / {te['seconds_per_question']:.1f} s |")
    for unit in UNITS:
        lines += ["", f"**τ chosen in {_UNIT_WORD[unit]}**", "",
                  "| mode | signal | τ (train) | within tolerance on train | train | "
                  f"{test_name} |", "|---|---|---|---|---|---|"]
        for mode, e in rep["modes"].items():
            for s in e["signals"]:
                if "error" in s:
                    lines.append(f"| {mode} | {s['label']} | not measured: {s['error'][:160]} "
                                 "| | | |")
                    continue
                u = s[unit]
                ok = "yes" if u["eligible"] else "no (defers all)"
                if not s["candidate"]:
                    ok += "; never chosen (oracle or reads the LLM)"
                lines.append(f"| {mode} | {s['label']} | {u['threshold']:.3f} | {ok} | "
                             f"{_cell(u['train'])} | {_cell(u['test'])} |")
    lines += ["", f"**Chosen on train against today's default, on {test_name}**", "",
              "| unit | configuration | train | " + test_name + " |", "|---|---|---|---|"]
    default = rep.get("default")
    for unit in UNITS:
        c = rep["chosen"][unit]
        lines.append(f"| {unit}: chosen | {_config(c)} | "
                     + ("— | — |" if c is None else
                        f"{_cell(c['train'])} | {_cell(c['test'])} |"))
        if default is not None:
            d = None if "error" in default else {**default, **default[unit]}
            lines.append(f"| {unit}: today's default | {_config(d or default)} | "
                         + ("— | — |" if d is None else
                            f"{_cell(d['train'])} | {_cell(d['test'])} |"))
    for unit, v in (rep.get("versus_default") or {}).items():
        lo, hi = v["pass_at_1_ci95"]
        slo, shi = v["seconds_ci95"]
        lines.append(f"- {unit}: chosen minus default on {test_name}, same items (paired, 95% "
                     f"bootstrap): pass@1 {v['pass_at_1_difference'] * 100:+.1f} pt "
                     f"[{lo * 100:+.1f}, {hi * 100:+.1f}], seconds per question "
                     f"{v['seconds_per_question_difference']:+.1f} [{slo:+.1f}, {shi:+.1f}]; "
                     f"beats it on both: {'yes' if v['beats'] else 'no'}")
    return "\n".join(lines)
