"""Checkpoint probes and the early-exit policy on synthetic rows: fitting both forms, choosing
between them on train, the side file of states, and what an early exit costs and saves."""

from __future__ import annotations

import numpy as np
import pytest

from corea.eval.checkpoints import (CHECKPOINTS_FILE, attach_checkpoints, checkpoint_line,
                                   checkpoint_positions, load_checkpoints, score_checkpoints)
from corea.eval.early_exit import ExitPolicy, choose_exit, exit_items, exit_outcome
from corea.eval.route_first import Policy, outcome, route_items
from corea.eval.runs import pack_run
from corea.signals.checkpoint_probe import (CheckpointProbe, choose_form, fit_checkpoint_probe,
                                            min_confidence, trajectory)
from corea.signals.registry import SIGNALS

DIM = 6


def synthetic_rows(n: int = 120, seed: int = 0, k: int = 32) -> list[dict]:
    """Rows whose states carry the item's correctness in x[0] (more clearly as t grows)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ok = bool(i % 3 == 0)
        length = int(rng.integers(40, 200))
        pos = checkpoint_positions(length, k)
        states = np.stack([np.r_[(1.0 if ok else -1.0) * (0.5 + t / 200) + rng.normal(0, 1),
                                 rng.normal(0, 1, DIM - 1)] for t in pos])
        rows.append({"id": f"q{i}", "slm_correct": ok, "llm_correct": True,
                     "slm": {"model": "slm", "text": "x", "prompt_tokens": 50,
                             "completion_tokens": length, "confidence": 0.5,
                             "signals": {"n_tokens": length}, "finish_reason": "stop",
                             "answer": "1"},
                     "llm": {"model": "llm", "prompt_tokens": 50, "completion_tokens": 100,
                             "answer": "1", "finish_reason": "stop"},
                     "slm_checkpoints": {"k": k, "prompt_tokens": 50, "solution_tokens": length,
                                         "positions": pos, "states": states}})
    return rows


def test_both_forms_rank_a_planted_signal_and_round_trip(tmp_path):
    rows = synthetic_rows()
    for form in ("pooled", "per_checkpoint"):
        p = fit_checkpoint_probe(rows, "slm", 32, form, c=0.1)
        assert p.card.cv["mean"] > 0.75 and p.card.form == form
        assert p.card.positions[0] == 32
        again = CheckpointProbe.load(p.save(tmp_path / form))
        x, t = rows[0]["slm_checkpoints"]["states"][0], 32
        assert again.confidence(x, t) == pytest.approx(p.confidence(x, t))
    choice = choose_form(rows, "slm", 32, cs=(0.1,))
    assert choice["best"]["form"] in ("pooled", "per_checkpoint") and "highest" in choice["why"]


def test_trajectory_reads_only_positions_the_solution_wrote_past():
    rows = synthetic_rows(30)
    p = fit_checkpoint_probe(rows, "slm", 32, "pooled", cross_validate=False)
    r = rows[1]
    n = r["slm_checkpoints"]["solution_tokens"]
    assert [t for t, _ in trajectory(p, r)] == [t for t in range(32, n, 32)]
    mins = min_confidence(rows + [{"id": "none"}], p)
    assert mins[-1] is None and mins[1] == pytest.approx(min(v for _, v in trajectory(p, r)))
    sig = SIGNALS["early_exit"]
    assert sig.carried_by(r) and not sig.carried_by({"slm": {}})
    assert len(sig.values(rows, sig.fit(rows, "slm"))) == len(rows)


class StubBackend:
    """``completion_states`` of a model whose state at position t is [t, 0, ...]."""

    def __init__(self):
        self.calls = 0

    def completion_states(self, messages, completion, positions):
        from corea.backends.llamacpp_states import CompletionStates

        self.calls += 1
        n = len(completion.split())
        keep = tuple(t for t in positions if t <= n)
        return CompletionStates(7, n, keep, np.array([[t] + [0.0] * (DIM - 1) for t in keep]))


def test_the_side_file_is_written_resumed_packed_and_read_back(tmp_path):
    words = " ".join(["w"] * 70)
    rows = [{"id": "a", "question": "q?", "slm": {"text": words, "signals": {"n_tokens": 65}}},
            {"id": "b", "question": "q?", "slm": {"text": ""}}]
    line = checkpoint_line(rows[0], StubBackend(), 32)
    assert line["positions"] == [32, 64, 65] and line["solution_tokens"] == 65
    assert checkpoint_line(rows[1], StubBackend(), 32)["positions"] == []
    be = StubBackend()
    assert score_checkpoints(rows, be, tmp_path, 32, progress=False) == 2
    assert score_checkpoints(rows, be, tmp_path, 32, progress=False) == 0 and be.calls == 1
    pack_run(tmp_path)
    (tmp_path / CHECKPOINTS_FILE).unlink()
    got = load_checkpoints(tmp_path)
    assert got["a"]["positions"] == [32, 64, 65]
    assert got["a"]["states"][:, 0].tolist() == [32.0, 64.0, 65.0]
    assert attach_checkpoints(rows, tmp_path)[0]["slm_checkpoints"]["k"] == 32
    with pytest.raises(ValueError):
        checkpoint_positions(10, 0)


def items_of(rows, trajs, ratio=1.0):
    base = route_items(rows, [0.9] * len(rows), [0.9] * len(rows), (10.0, 20.0), ratio)
    return exit_items(base, rows, trajs, 20.0 * ratio, 10.0 * ratio, None)


def test_an_exit_charges_the_tokens_written_and_defers_to_the_llm():
    rows = synthetic_rows(4)
    for r, ok in zip(rows, (True, False, True, False)):
        r["slm_correct"] = ok
    trajs = [[(32, 0.9)], [(32, 0.1), (64, 0.05)], [], [(32, 0.8), (64, 0.2)]]
    it = items_of(rows, trajs, ratio=0.1)  # the SLM at 1/10 of the LLM's prices
    none = exit_outcome(it, ExitPolicy(None, None, 0.5))
    assert none == {**outcome(it.base, Policy(None, 0.5)), "exit_threshold": None,
                    "exited_rate": 0.0, "slm_tokens_saved": 0, "slm_tokens_saved_per_item": 0.0}
    o = exit_outcome(it, ExitPolicy(None, 0.3, 0.5))
    assert o["exited_rate"] == 0.5 and o["pass_at_1"] == 1.0  # both exits go to a right LLM
    n1, n3 = (r["slm"]["signals"]["n_tokens"] for r in (rows[1], rows[3]))
    assert o["slm_tokens_saved"] == (n1 - 33) + (n3 - 65)
    llm = 50 * 10.0 + 100 * 20.0
    slm = lambda c: (50 * 10.0 + c * 20.0) * 0.1  # noqa: E731
    spent = slm(rows[0]["slm"]["completion_tokens"]) + slm(33) + llm + \
        slm(rows[2]["slm"]["completion_tokens"]) + slm(65) + llm
    assert o["cost_fraction_of_llm_only"] == pytest.approx(spent / (4 * llm))
    # without a router, stopping the two failing decodes at their first checkpoint is the
    # cheapest way to lose nothing (τ_e in (0.8, 0.9]: item 3 stops at 32, item 0 writes on)
    pol, best = choose_exit(it, 0.0, "usd", route=False)
    assert best["pass_at_1"] == 1.0 and 0.8 < pol.exit_tau <= 0.9
    assert best["exited_rate"] == 0.5 and best["deferred_rate"] == 0.0


def test_the_report_chooses_on_train_and_measures_every_policy_on_test():
    from corea.eval.early_exit_report import POLICIES, early_exit_lines, early_exit_report
    from corea.signals.hidden import encode

    rng = np.random.default_rng(1)

    def full(rows):
        for r in rows:  # what the router and the answer-first signal read
            ok = r["slm_correct"]
            r["slm"]["signals"].update(solution_prob=float(rng.uniform(0.5, 1.0)),
                                       answer_prob=0.9, min_prob=0.3, hit_length=False)
            r["slm"]["states"] = {"prompt": encode(np.r_[(1.0 if ok else -1.0)
                                                          + rng.normal(0, 1, 1),
                                                          rng.normal(0, 1, 7)])}
            r["llm_correct"] = bool(rng.random() < 0.7)
        return rows
    train, test = full(synthetic_rows(90, 2)), full(synthetic_rows(45, 3))
    test[0].pop("slm_checkpoints")  # a test row without states takes no part
    rep, probe = early_exit_report(train, {"t": test}, "slm", (10.0, 20.0), None)
    assert rep["n_train"] == 90 and rep["tests_n"] == {"t": 44}
    assert probe.card.form == rep["probe"]["form"] and probe.card.cv["mean"] > 0.6
    assert [v["unit"] for v in rep["variants"]] == ["usd"]  # no time model: no seconds
    var = rep["variants"][0]
    for name in POLICIES:
        tr, te = var["train"][name], var["tests"]["t"][name]
        assert tr["pass_drop"] <= 0.02 + 1e-9 and set(tr) >= {"exit_threshold", "policy"}
        assert tr["policy"]["exit_tau"] == te["exit_threshold"]  # applied unchanged
    assert var["train"]["answer_first"]["exited_rate"] == 0.0
    md = "\n".join(early_exit_lines(rep))
    assert "early exit, then answer-first" in md and "*t*" in md
