"""Route, then answer first, held out: the accounting of a routed question in USD and seconds,
thresholds chosen on train only, and the oracles."""

from __future__ import annotations

import pytest

from corea.eval.route_first import (Policy, choose, oracle_rows, outcome, route_first_report,
                                    route_items)
from corea.timing import TimeModel, TokenTime

TM = TimeModel(models={"s": TokenTime(overhead_s=1.0, completion_s_per_token=0.1),
                       "l": TokenTime(overhead_s=2.0, completion_s_per_token=0.2)})
PRICE = (1.0, 2.0)  # the LLM's USD per 1M prompt / completion tokens


def row(i, slm_ok, llm_ok, verbal=0.5, route=0.5):
    return {"id": str(i), "slm_correct": slm_ok, "llm_correct": llm_ok,
            "slm": {"model": "s", "answer": "1", "finish_reason": "stop", "confidence": verbal,
                    "signals": {"min_prob": route},
                    "prompt_tokens": 100, "completion_tokens": 50},
            "llm": {"model": "l", "answer": "1", "finish_reason": "stop",
                    "prompt_tokens": 100, "completion_tokens": 50}}


def test_a_routed_question_pays_the_prefill_and_a_kept_one_pays_it_twice():
    rows = [row(0, True, True), row(1, False, True)]
    items = route_items(rows, [0.9, 0.1], [0.9, 0.9], PRICE, ratio=0.5, tm=TM)
    o = outcome(items, Policy(0.5, 0.5))
    assert (o["routed_rate"], o["deferred_rate"], o["pass_at_1"]) == (0.5, 0.0, 1.0)
    # seconds: SLM call 1 + 50·0.1 = 6, its prefill 1; LLM call 2 + 50·0.2 = 12
    # item 0 kept after the route check (6 + 1), item 1 routed (1 + 12); LLM-only 12 + 12
    assert o["time_fraction_of_llm_only"] == pytest.approx((7 + 13) / 24)
    # USD at half the LLM's prices: SLM call 100·0.5 + 50·1 = 100, prefill 50; LLM 100 + 100
    assert o["cost_fraction_of_llm_only"] == pytest.approx((150 + 250) / 400)
    alone = outcome(items, Policy(None, 0.5))  # answer-first alone: no route check to pay
    assert alone["time_fraction_of_llm_only"] == pytest.approx((6 + 6) / 24)
    assert alone["pass_at_1"] == 0.5


def test_a_routed_question_is_graded_by_the_llm_alone():
    rows = [row(0, True, False)]
    items = route_items(rows, [0.1], [0.9], PRICE, tm=TM)
    assert outcome(items, Policy(0.5, None))["pass_at_1"] == 0.0
    assert outcome(items, Policy(None, None))["pass_at_1"] == 1.0


def test_choose_finds_the_router_that_sends_the_slm_errors_on():
    rows = [row(i, i % 2 == 0, True, verbal=0.5, route=0.9 if i % 2 == 0 else 0.1)
            for i in range(20)]
    items = route_items(rows, [r["slm"]["signals"]["min_prob"] for r in rows],
                        [0.5] * 20, PRICE, tm=TM)
    policy, o = choose(items, max_drop=0.0, unit="seconds")
    assert policy.route_tau is not None and o["routed_rate"] == 0.5 and o["pass_at_1"] == 1.0
    af_policy, af = choose(items, max_drop=0.0, unit="seconds", route=False)
    assert af_policy.route_tau is None and af["time_fraction_of_llm_only"] > \
        o["time_fraction_of_llm_only"]
    with pytest.raises(ValueError, match="time model"):
        choose(route_items(rows[:2], [0.5, 0.5], [0.5, 0.5], PRICE), unit="seconds")


def test_the_report_chooses_on_train_only_and_says_whether_routing_wins_there():
    train = [row(i, i % 2 == 0, True, verbal=0.5 + 0.01 * i,
                 route=0.9 if i % 2 == 0 else 0.1) for i in range(20)]
    test = [row(100 + i, i % 3 == 0, True, route=0.2 + 0.05 * i) for i in range(12)]
    kw = dict(slm="s", llm_price=PRICE, tm=TM, max_drop=0.0, answer_signal="verbal",
              route_signal="min_prob")
    rep = route_first_report(train, {"t": test}, **kw)
    assert rep["wins_on_train"] is True
    assert set(rep["tests"]["t"]) >= {"answer_first", "route_then_answer_first", "route_only",
                                      "oracle", "oracle_gain", "route_oracle",
                                      "route_oracle_gain"}
    changed = [{**r, "slm_correct": not r["slm_correct"]} for r in test]
    again = route_first_report(train, {"t": changed}, **kw)
    assert again["train"] == rep["train"]  # a test row never moves a threshold


def test_the_routing_oracles_route_exactly_the_errors_before_the_slm_writes():
    rows = [row(0, True, True), row(1, False, True), row(2, False, False)]
    items = route_items(rows, [None] * 3, [0.5] * 3, PRICE, tm=TM)
    o = oracle_rows(items)
    assert o["route_oracle"]["routed_rate"] == pytest.approx(2 / 3)
    assert o["route_oracle_gain"]["routed_rate"] == pytest.approx(1 / 3)
    assert o["oracle"]["deferred_rate"] == pytest.approx(2 / 3)
    assert o["route_oracle"]["time_fraction_of_llm_only"] < \
        o["oracle"]["time_fraction_of_llm_only"]


def runs(tmp_path, with_models=True):
    """A train and a test run folder whose SLM's prompt state says whether it will be right."""
    import json

    import numpy as np

    from corea.signals import hidden

    rng = np.random.default_rng(0)
    for name, n in (("train", 80), ("test", 30)):
        items = []
        for i in range(n):
            ok = bool(rng.random() < 0.4)
            prompt = rng.normal(size=8).astype(np.float32)
            prompt[0] += 1.5 if ok else -1.5
            r = row(f"{name}{i}", ok, bool(rng.random() < 0.8))
            r["slm"]["signals"] = {"solution_prob": float(rng.uniform(0.5, 0.9)),
                                   "answer_prob": 0.9, "min_prob": 0.1, "n_tokens": 50,
                                   "hit_length": False}
            r["slm"]["states"] = {"prompt": hidden.encode(prompt)}
            if not with_models:
                del r["slm"]["model"], r["llm"]["model"]
            items.append(r)
        d = tmp_path / name
        d.mkdir()
        (d / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
        (d / "run.json").write_text(json.dumps({"split": name, "models": {"slm": "s"},
                                                "prices": {"llm": {"input_per_mtok": 1.0,
                                                                   "output_per_mtok": 2.0}}}))
    TM.save(tmp_path / "tm.json")


def test_corea_heldout_route_first_writes_both_units(tmp_path):
    import json

    from corea.cli import main

    runs(tmp_path)
    args = ["heldout", "--train", str(tmp_path / "train"), "--test", f"t={tmp_path / 'test'}",
            "--signals", "calibrator_tokens", "--time-model", str(tmp_path / "tm.json")]
    assert main([*args, "--route-first", "--json", str(tmp_path / "r.json"),
                 "--md", str(tmp_path / "r.md")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    units = [(v["unit"], v["ratio"]) for v in rep["route_first"]]
    assert units == [("seconds", 0.0), ("usd", pytest.approx(1 / 3))]
    t = rep["route_first"][0]["tests"]["t"]["route_then_answer_first"]
    assert t["time_fraction_of_llm_only"] is not None and t["cost_fraction_of_llm_only"] is not None
    md = (tmp_path / "r.md").read_text()
    assert "**Route, then answer first**" in md and "| route, then answer-first |" in md
    assert main([*args, "--json", str(tmp_path / "n.json")]) == 0
    assert "route_first" not in json.loads((tmp_path / "n.json").read_text())


def test_without_a_time_model_for_the_rows_models_only_usd_is_chosen(tmp_path):
    import json

    from corea.cli import main

    runs(tmp_path, with_models=False)
    assert main(["heldout", "--train", str(tmp_path / "train"), "--test",
                 f"t={tmp_path / 'test'}", "--signals", "calibrator_tokens", "--time-model",
                 str(tmp_path / "tm.json"), "--route-first", "--json",
                 str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [v["unit"] for v in rep["route_first"]] == ["usd"]
    assert rep["route_first"][0]["tests"]["t"]["answer_first"]["time_fraction_of_llm_only"] \
        is None
