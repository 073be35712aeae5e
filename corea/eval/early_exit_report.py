"""The early-exit report: checkpoint probes and policies chosen on train, measured on test.

:func:`early_exit_report` takes train and test rows that carry their checkpoint states
(``slm_checkpoints``, :func:`corea.eval.checkpoints.attach_checkpoints`):

1. the checkpoint probe's form and strength are chosen on train
   (:func:`corea.signals.checkpoint_probe.choose_form`, item-grouped out-of-fold AUROC); its cross-fitted values on train choose τ_e, a probe fit on
   all train rows scores the test rows;
2. the router (``prior_probe``) and the answer-first signal (``calibrator_tokens``) are cross-fit
   on **every** gradable train row (:func:`corea.eval.route_first.signal_values`), then restricted
   to the train rows with checkpoints, where every policy is chosen;
3. per unit (seconds with a free SLM, USD with the SLM at 1/3 of the LLM's prices:
   :data:`corea.eval.route_first.VARIANTS`), four policies are chosen on the same train rows
   (:func:`corea.eval.early_exit.choose_exit`): answer-first, route-first, early exit then
   answer-first, and route then early exit then answer-first; each is applied unchanged to the
   test rows, with the oracles beside them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..signals.checkpoint_probe import (CheckpointProbe, Pairs, auroc_by_position, choose_form,
                                        fit_checkpoint_probe, trajectory)
from ..timing import TimeModel
from .early_exit import ExitItems, choose_exit, exit_items, exit_outcome, with_oracles
from .heldout_signal import gradable
from .route_first import VARIANTS, pct, route_items, signal_values

__all__ = ["POLICIES", "early_exit_report", "early_exit_lines"]

POLICIES = {"answer_first": (False, False), "route_first": (True, False),
            "early_exit": (False, True), "route_then_early_exit": (True, True)}
"""Policy name -> (router on, early exit on); answer-first always decides what is left."""

LABELS = {"answer_first": "answer-first (default signal)",
          "route_first": "route, then answer-first",
          "early_exit": "early exit, then answer-first",
          "route_then_early_exit": "route, then early exit, then answer-first",
          "oracle": "oracle: defer the SLM's errors (after it answers)",
          "oracle_gain": "oracle: defer where the LLM fixes it (after it answers)",
          "route_oracle": "oracle: route the SLM's errors (before it writes)",
          "route_oracle_gain": "oracle: route where the LLM fixes it (before it writes)"}


def _oof_trajectories(rows: Sequence[dict], pairs, values) -> list[list[tuple[int, float]]]:
    """Per row, its cross-fitted ``(t, value)`` pairs in position order."""
    out: list[list[tuple[int, float]]] = [[] for _ in rows]
    for i, t, v in zip(pairs.item, pairs.t, values):
        out[int(i)].append((int(t), float(v)))
    return [sorted(x) for x in out]


def _with_checkpoints(rows: Sequence[dict]) -> list[int]:
    return [i for i, r in enumerate(rows) if r.get("slm_checkpoints")]


def early_exit_report(train_rows: Sequence[dict], tests: dict[str, Sequence[dict]], slm: str,
                      llm_price: tuple[float, float], tm: TimeModel | None,
                      max_drop: float = 0.02, k: int | None = None
                      ) -> tuple[dict, CheckpointProbe]:
    """The report (see the module docstring) and the checkpoint probe fit on all train rows
    with checkpoints. The report is a dict: ``probe`` (the form chosen, its card's
    out-of-fold AUROC per position, each test set's AUROC per position), ``variants`` (one per
    unit: ``unit``, ``ratio``, ``train`` and ``tests`` — ``{policy: {"policy", **outcome}}``
    — and ``wins_on_train``: early exit's best policy cheaper there than route-first's).

    Raises:
        ValueError: no gradable train rows with checkpoints, or a probe that cannot be fit.
    """
    all_train = gradable(train_rows)
    tests = {n: gradable(v) for n, v in tests.items()}
    keep = _with_checkpoints(all_train)
    if not keep:
        raise ValueError("no gradable train rows with checkpoint states (corea checkpoints)")
    train = [all_train[i] for i in keep]
    tests = {n: [v[i] for i in _with_checkpoints(v)] for n, v in tests.items()}
    k = k or int(train[0]["slm_checkpoints"].get("k") or 32)
    choice = choose_form(train, slm, k)
    form, c = choice["best"]["form"], choice["best"]["c"]
    tr_traj = _oof_trajectories(train, *choice["oof"])
    probe = fit_checkpoint_probe(train, slm, k, form, c, choice)
    choice = {n: v for n, v in choice.items() if n != "oof"}
    te_traj = {n: [trajectory(probe, r) for r in v] for n, v in tests.items()}
    vals = signal_values(all_train, tests, slm)
    sub = lambda x: [x[i] for i in keep]  # noqa: E731 - the train rows with checkpoints
    rep = {"k": k, "n_train": len(train), "n_train_all": len(all_train),
           "tests_n": {n: len(v) for n, v in tests.items()},
           "probe": {"form": form, "c": c, "choice": choice, "cv": probe.card.cv,
                     "tests": {n: _test_auroc(v, te_traj[n]) for n, v in tests.items()}},
           "max_drop": max_drop, "variants": []}
    models = {(r.get(key) or {}).get("model") or "" for rows in (train, *tests.values())
              for r in rows for key in ("slm", "llm")}
    timed = tm is not None and not tm.missing(sorted(models))
    for unit, ratio in VARIANTS:
        if unit == "seconds" and not timed:
            continue
        t_model = tm if timed else None

        def items(rows, route_v, answer_v, traj) -> ExitItems:
            base = route_items(rows, route_v, answer_v, llm_price, ratio, t_model)
            return exit_items(base, rows, traj, llm_price[1] * ratio, llm_price[0] * ratio,
                              t_model)

        tr = items(train, sub(vals["route"][0]), sub(vals["answer"][0]), tr_traj)
        chosen = {name: choose_exit(tr, max_drop, unit, route=r, exit_=e)
                  for name, (r, e) in POLICIES.items()}
        key = "time_fraction_of_llm_only" if unit == "seconds" else "cost_fraction_of_llm_only"
        var = {"unit": unit, "ratio": ratio,
               "train": {n: {"policy": vars(p), **o} for n, (p, o) in chosen.items()},
               "wins_on_train": min(chosen["early_exit"][1][key],
                                    chosen["route_then_early_exit"][1][key])
               < chosen["route_first"][1][key] - 1e-12, "tests": {}}
        var["train"].update(with_oracles(tr))
        for name, rows in tests.items():
            te = items(rows, vals["route"][1][name], vals["answer"][1][name], te_traj[name])
            res = {n: exit_outcome(te, p) for n, (p, _o) in chosen.items()}
            res.update(with_oracles(te))
            var["tests"][name] = res
        rep["variants"].append(var)
    return rep, probe


def _test_auroc(rows: Sequence[dict], trajs: Sequence[Sequence[tuple[int, float]]]) -> dict:
    """AUROC per position of a fitted probe's values on held-out rows (for the record)."""
    item, ts, vs, ys = [], [], [], []
    for i, (r, traj) in enumerate(zip(rows, trajs)):
        for t, v in traj:
            item.append(i)
            ts.append(t)
            vs.append(v)
            ys.append(bool(r.get("slm_correct")))
    p = Pairs(np.array(item, dtype=int), np.array(ts, dtype=int), np.zeros((len(ts), 0)),
              np.array(ys, dtype=bool))
    return auroc_by_position(p, np.array(vs, dtype=float))


def _tau(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def early_exit_lines(rep: dict) -> list[str]:
    """Markdown of :func:`early_exit_report`."""
    pr = rep["probe"]
    cv = {t: a for t, a in pr["cv"].items() if t not in ("mean", "folds")}
    lines = [f"**Checkpoint probe** (the SLM's state every {rep['k']} tokens of its decode; "
             f"{rep['n_train']} train items with checkpoint states of {rep['n_train_all']} "
             f"gradable): form `{pr['form']}`, C = {pr['c']:g}, chosen on train because "
             f"{pr['choice']['why']}.", "",
             "| position (tokens written) | " + " | ".join(cv) + " | mean |",
             "|---|" + "---|" * (len(cv) + 1),
             "| train AUROC (out of fold) | " + " | ".join(f"{a:.2f}" for a in cv.values())
             + f" | {pr['cv']['mean']:.2f} |"]
    for name, a in pr["tests"].items():
        mean = "—" if a.get("mean") is None else f"{a['mean']:.2f}"
        lines.append(f"| {name} AUROC (probe fit on train) | "
                     + " | ".join(f"{a[t]:.2f}" if t in a else "—" for t in cv) + f" | {mean} |")
    head = ["policy", "τ_r", "τ_e", "τ", "pass@1", "routed", "stopped early",
            "solved then deferred", "SLM tokens saved / item", "price vs LLM-only",
            "time vs LLM-only"]
    for var in rep["variants"]:
        unit = "seconds" if var["unit"] == "seconds" else "price"
        lines += ["", f"**Route, early exit, answer first** (every threshold chosen on train as "
                      f"the cheapest in {unit} within {rep['max_drop'] * 100:.0f} points of "
                      f"LLM-only, SLM at {var['ratio']:.3g}× the LLM's prices). Early exit "
                  + ("**wins** on train." if var["wins_on_train"]
                     else "does **not** win on train (against route-first).")]
        for where, res in [("train", var["train"]), *var["tests"].items()]:
            lines += ["", f"*{where}*", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for name, o in res.items():
                lines.append("| " + " | ".join([
                    LABELS.get(name, name), _tau(o.get("route_threshold")),
                    _tau(o.get("exit_threshold")), _tau(o.get("threshold")),
                    pct(o["pass_at_1"]), pct(o["routed_rate"]), pct(o.get("exited_rate")),
                    pct(o["deferred_rate"]),
                    "—" if o.get("slm_tokens_saved_per_item") is None
                    else f"{o['slm_tokens_saved_per_item']:.0f}",
                    pct(o["cost_fraction_of_llm_only"]),
                    pct(o["time_fraction_of_llm_only"])]) + " |")
    return lines
