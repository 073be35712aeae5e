"""Delegation where the LLM helps: the LLM's prompt states as a run's side file, the LLM-side
probe, the delegation-value model, its cost and the held-out policy (scripted data, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corea.backends.fake import FakeBackend
from corea.eval.delegation_route import delegation_report, oracle_share, random_pregen
from corea.eval.heldout_signal import usd_costs
from corea.eval.llm_states import score_llm_states
from corea.eval.route_first import Policy, outcome, route_items
from corea.eval.routing import item_seconds
from corea.eval.runs import LLM_STATES_FILE, append_json_line, load_results
from corea.metrics import auroc
from corea.signals import hidden
from corea.signals.delegation import delegation_values, fit_delegation, score_before
from corea.signals.probe import fit_probe
from corea.signals.registry import SIGNALS
from corea.timing import TimeModel, TokenTime

TM = TimeModel(models={"s": TokenTime(overhead_s=1.0, completion_s_per_token=0.1),
                       "l": TokenTime(overhead_s=2.0, completion_s_per_token=0.2)})
PRICE = (1.0, 2.0)  # the LLM's USD per 1M prompt / completion tokens


def _state(rng, good: bool, dim: int) -> str:
    v = rng.normal(size=dim)
    v[0] += 2.5 if good else -2.5
    return hidden.encode(v)


def row(i, slm_ok, llm_ok, rng=None, dim=8):
    """An evaluation row; with ``rng`` both models' prompt states carry their correctness in
    dimension 0 (and the SLM's token signals its own)."""
    r = {"id": f"q{i}", "question": f"question {i}", "choices": None, "gold": "1",
         "slm_correct": slm_ok, "llm_correct": llm_ok,
         "slm": {"model": "s", "answer": "1", "finish_reason": "stop", "confidence": 0.5,
                 "signals": {"solution_prob": 0.9 if slm_ok else 0.6, "answer_prob": 0.9,
                             "min_prob": 0.5, "n_tokens": 50, "hit_length": False},
                 "prompt_tokens": 100, "completion_tokens": 50},
         "llm": {"model": "l", "answer": "1", "finish_reason": "stop",
                 "prompt_tokens": 40, "completion_tokens": 50}}
    if rng is not None:
        r["slm"]["states"] = {"prompt": _state(rng, slm_ok, dim)}
        r["llm"]["states"] = {"prompt": _state(rng, llm_ok, dim + 4)}
    return r


def rows_of(n, seed=0):
    rng = np.random.default_rng(seed)
    return [row(i, bool(rng.random() < 0.3), bool(rng.random() < 0.6), rng) for i in range(n)]


# ------------------------------------------------------------------ the side file

def _run_dir(tmp_path, rows):
    for r in rows:
        append_json_line(tmp_path / "items.jsonl", {k: v for k, v in r.items()})
    return tmp_path


def test_llm_states_are_read_once_per_item_with_an_llm_grade_and_land_on_the_llm_record(tmp_path):
    rows = [row(0, True, True), row(1, False, True), row(2, False, None)]
    rows[2]["llm"] = None  # pending: the LLM has not run
    d = _run_dir(tmp_path, rows)
    backend = FakeBackend(model_name="l", prompt_states=lambda msgs: np.arange(6, dtype=float))
    rep = score_llm_states(d, backend, progress=False)
    assert (rep.scored, rep.total, rep.failed) == (2, 2, 0)
    # the fake counts words as tokens, not 40: every line is a mismatch with the row's prompt
    assert rep.mismatched == 2
    asked = [c[1] for c in backend.calls if c[0] == "prompt_state"]
    assert "question 0" in asked[0][-1].content and asked[0][0].role == "system"
    again = score_llm_states(d, backend, progress=False)
    assert again.scored == 0 and again.total == 2  # resumable: nothing read twice
    loaded = {r["id"]: r for r in load_results(d)}
    state = loaded["q0"]["llm"]["states"]["prompt"]
    assert np.allclose(hidden.decode(state), np.arange(6))
    assert loaded["q0"]["tiers"][-1]["output"]["states"]["prompt"] == state
    assert loaded["q2"]["llm"] is None


def test_a_failed_read_is_a_line_with_its_error_and_the_other_model_is_refused(tmp_path):
    from corea.backends.base import BackendError

    d = _run_dir(tmp_path, [row(0, True, True)])
    bad = FakeBackend(model_name="l", error=BackendError("internal", "no state"))
    rep = score_llm_states(d, bad, progress=False)
    assert rep.failed == 1
    line = json.loads((d / LLM_STATES_FILE).read_text().splitlines()[0])
    assert line["states"] is None and line["error"].startswith("internal")
    with pytest.raises(ValueError, match="not other"):
        score_llm_states(d, FakeBackend(model_name="other", prompt_states=lambda m: [1.0]),
                         progress=False)


# ------------------------------------------------------------------ probe and model

def test_the_llm_probe_reads_the_llm_state_and_predicts_the_llm_being_right():
    rows = rows_of(120)
    probe = fit_probe(rows, "l", position="prompt", target="llm_correct", tier="llm")
    assert probe.card.signal == "llm_prior_probe" and probe.card.dim == 12
    assert probe.card.cv["auroc"] > 0.85  # P(LLM right) against the LLM's grades
    conf = SIGNALS["llm_prior_probe"].values(rows, probe)
    y = np.array([r["llm_correct"] for r in rows])
    assert auroc(1 - np.array(conf), y) > 0.85  # the confidence is 1 - P(LLM right)


def test_the_delegation_value_ranks_where_the_llm_fixes_the_slm():
    train, test = rows_of(200, seed=1), rows_of(100, seed=2)
    model = fit_delegation(train, "s")
    helps = np.array([(not r["slm_correct"]) and r["llm_correct"] for r in test])
    before = np.array(delegation_values(test, model))
    after = np.array(delegation_values(test, model, after=True))
    assert auroc(before, helps) > 0.8 and auroc(after, helps) > 0.8
    assert np.allclose(score_before(test, model), 1 - before)
    missing = dict(test[0], llm={**test[0]["llm"], "states": None})
    assert delegation_values([missing], model) == [None]


def test_the_llm_p_true_adds_a_verify_head_that_uses_it():
    """Where the LLM's P(True) says whether the SLM is right (here a noisy copy of the grade) and
    the prompt probes and token signals carry little, the verify head ranks "the LLM fixes it" better than the
    after head; rows without P(True) get no verify value, and without any the head is absent."""
    def weak(n, seed):
        rng = np.random.default_rng(seed)
        out = [row(i, bool(rng.random() < 0.3), bool(rng.random() < 0.6), rng, dim=8)
               for i in range(n)]
        for r in out:  # drown the states' signal: the prompt probes carry little
            for side in ("slm", "llm"):
                v = hidden.decode(r[side]["states"]["prompt"])
                v[0] = rng.normal()
                r[side]["states"]["prompt"] = hidden.encode(v)
            r["slm"]["signals"]["solution_prob"] = float(rng.uniform(0.5, 0.95))  # no token signal
            p = (0.8 if r["slm_correct"] else 0.2) + rng.normal(0, 0.1)
            r["llm_verify"] = {"p_true": float(np.clip(p, 0.01, 0.99)), "prompt_tokens": 90}
        return out
    train, test = weak(240, 3), weak(120, 4)
    model = fit_delegation(train, "s")
    assert model.verify is not None
    helps = np.array([(not r["slm_correct"]) and r["llm_correct"] for r in test])
    after = np.array(delegation_values(test, model, after=True))
    verify = np.array(delegation_values(test, model, verify=True))
    assert auroc(verify, helps) > auroc(after, helps) + 0.05
    sig = SIGNALS["delegation_verify"]
    assert np.allclose(sig.values(test, sig.fit(train, "s")), 1 - verify)
    bare = dict(test[0], llm_verify=None)
    assert delegation_values([bare], model, verify=True) == [None]
    assert fit_delegation([dict(r, llm_verify=None) for r in train], "s").verify is None


# ------------------------------------------------------------------ cost

def test_the_llm_prefill_is_charged_where_the_llm_does_not_answer():
    rows = [row(0, True, True), row(1, False, True)]
    sig = SIGNALS["delegation_after"]
    kept, deferred, llm = usd_costs(sig, rows, PRICE, ratio=0.0)
    assert kept[0] == pytest.approx(40 * 1.0 / 1e6)  # free SLM, the LLM's 40-token prefill
    assert deferred[0] == pytest.approx(llm[0])  # deferred: the prefill starts its answer
    secs = item_seconds(rows, TM, sig.extra_tokens, before=False, llm_prefill=True)
    # SLM call 1 + 50·0.1 = 6; the LLM's prefill: its call without completion, 2 s
    assert secs.kept[0] == pytest.approx(8.0) and secs.deferred[0] == pytest.approx(6 + 12)
    items = route_items(rows, [0.9, 0.1], [0.9, 0.9], PRICE, tm=TM, llm_prefill=True)
    o = outcome(items, Policy(0.5, 0.5))
    # item 0 kept: SLM 6 + its prefill 1 + the LLM's prefill 2; item 1 routed: 1 + 12
    assert o["time_fraction_of_llm_only"] == pytest.approx((9 + 13) / 24)


def test_random_routing_and_the_oracle_share():
    rows = [row(0, True, True), row(1, False, True)]
    items = route_items(rows, [0.5, 0.5], [0.5, 0.5], PRICE, tm=TM)
    r = random_pregen(items, 0.5)
    assert r["pass_at_1"] == pytest.approx(0.75)
    # half of (6 + 6) kept + half of (1 + 12) · 2 routed, over LLM-only 24
    assert r["time_fraction_of_llm_only"] == pytest.approx((6 + 13) / 24)
    key = "time_fraction_of_llm_only"
    assert oracle_share({key: 0.9}, {key: 0.8}, key) == pytest.approx(0.5)
    assert oracle_share({key: 0.9}, {key: 1.0}, key) is None


# ------------------------------------------------------------------ held-out policy

def test_the_policy_is_chosen_on_train_only_and_reported_against_the_baselines():
    train, test = rows_of(200, seed=3), rows_of(60, seed=4)
    kw = dict(slm="s", llm_price=PRICE, tm=TM, max_drop=0.02)
    rep = delegation_report(train, {"t": test}, **kw)
    res = rep["tests"]["t"]
    assert {"delegation", "delegation_route_only", "random", "answer_first",
            "route_then_answer_first", "oracle_gain", "route_oracle_gain"} <= set(res)
    assert res["random"]["llm_rate"] == pytest.approx(res["delegation"]["llm_rate"])
    assert set(res["delegation"]["oracle_share"]) == {"oracle_gain", "route_oracle_gain"}
    chosen = rep["train"]["delegation"]
    assert chosen["pass_at_1"] >= rep["train"]["answer_first"]["pass_at_1"] - 0.02 - 1e-9 or \
        chosen["pass_drop"] <= 0.02 + 1e-9
    changed = [{**r, "slm_correct": not r["slm_correct"]} for r in test]
    again = delegation_report(train, {"t": changed}, **kw)
    assert again["train"]["delegation"]["policy"] == chosen["policy"]  # test rows move nothing
