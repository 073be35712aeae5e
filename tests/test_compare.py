"""Signal comparison (corea.eval.compare), RouteLLM metrics, priors in evaluation runs, and the report
sections built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corea.eval import compare, scored


def _row(i, s_ok, l_ok, verbal, tokprob, prior=None, st=(100, 200), lt=(100, 300)):
    r = {"id": str(i), "slm_correct": s_ok, "llm_correct": l_ok,
         "slm": {"confidence": verbal, "prompt_tokens": st[0], "completion_tokens": st[1],
                 "cost_usd": 0.0, "signals": {"solution_prob": tokprob, "answer_prob": tokprob,
                                              "min_prob": tokprob / 2, "n_tokens": st[1],
                                              "hit_length": False}},
         "llm": {"prompt_tokens": lt[0], "completion_tokens": lt[1], "cost_usd": 0.0}}
    if prior is not None:
        r["slm_prior"] = {"confidence": prior, "prompt_tokens": 50, "completion_tokens": 2}
    return r


def test_apgr_and_cpt_on_a_hand_computed_curve():
    rows = [{"deferral_rate": 0.0, "pass_at_1": 0.2}, {"deferral_rate": 0.5, "pass_at_1": 0.5},
            {"deferral_rate": 1.0, "pass_at_1": 0.6}]
    # PGR: 0, 0.75, 1 -> trapezoids 0.5*(0+0.75)/2 + 0.5*(0.75+1)/2 = 0.625
    assert scored.apgr(rows, 0.2, 0.6) == pytest.approx(0.625)
    assert scored.cpt(rows, 0.2, 0.6, 0.5) == 0.5
    assert scored.cpt(rows, 0.2, 0.6, 0.8) == 1.0
    assert scored.apgr(rows, 0.6, 0.6) is None  # no gap
    # random routing is a straight line: APGR 0.5
    line = [{"deferral_rate": k / 10, "pass_at_1": 0.2 + 0.04 * k} for k in range(11)]
    assert scored.apgr(line, 0.2, 0.6) == pytest.approx(0.5)


def test_cost_at_ratio_reprices_from_tokens():
    rows = [_row(0, True, True, 0.9, 0.9)]
    sc, lc, pc = compare.costs_at_ratio(rows, (1.0, 2.0), 0.5)
    assert lc[0] == pytest.approx((100 * 1 + 300 * 2) / 1e6)
    assert sc[0] == pytest.approx((100 * 0.5 + 200 * 1.0) / 1e6)
    assert pc[0] == 0.0


def test_compare_ranks_signals_and_the_oracles():
    rows = []
    for i in range(40):
        s_ok = i % 4 == 0            # SLM right on 10 of 40
        l_ok = i % 2 == 0            # LLM right on 20 of 40 (including all SLM-right ones)
        tok = 0.9 if s_ok else 0.3   # token prob separates perfectly
        rows.append(_row(i, s_ok, l_ok, verbal=0.9, tokprob=tok,
                         prior=0.8 if s_ok else 0.2))
    cmp = compare.compare_signals(rows, (1.0, 3.0), ratios=(0.0, 1 / 3))
    by = {e["name"]: e for e in cmp["signals"]}
    assert by["verbal"]["auroc"] == 0.5 and by["tokprob"]["auroc"] == 1.0
    assert by["oracle"]["auroc"] == 1.0 and by["oracle"]["ece"] is None
    free = {k: by[k]["by_ratio"]["0"] for k in by}
    # a perfect signal keeps exactly the SLM-right items: pass@1 = LLM's, deferral 75%
    assert free["tokprob"]["pass_at_1"] == pytest.approx(0.5)
    assert free["tokprob"]["deferral_rate"] == pytest.approx(0.75)
    # the gain oracle defers only SLM-wrong & LLM-right (10 of 40): 25%
    assert free["oracle_gain"]["deferral_rate"] == pytest.approx(0.25)
    assert free["oracle_gain"]["saving"] > free["oracle"]["saving"]
    # verbal is constant: within 2 pt only by deferring everything: no saving with a free SLM
    assert free["verbal"]["saving"] == pytest.approx(0.0) and free["verbal"]["deferral_rate"] == 1
    # confidence-first skips the SLM's solve on deferred items: cheaper than answer-first
    third = {k: by[k]["by_ratio"]["0.3333"] for k in by}
    assert third["prior"]["saving"] > third["tokprob"]["saving"]
    assert cmp["bounds"]["0"]["slm_cost_share_of_llm_only"] == 0.0
    table = compare.format_table(cmp)
    assert "oracle: defers exactly the SLM's errors" in table and "1/3" in table


def test_compare_handles_no_rows_and_missing_signals():
    assert compare.compare_signals([], (1, 1))["signals"] == []
    rows = [_row(i, i % 2 == 0, True, None, 0.5) for i in range(6)]
    for r in rows:
        r["slm"]["signals"] = None
    names = [e["name"] for e in compare.compare_signals(rows, (1, 1))["signals"]]
    assert names == ["oracle", "oracle_gain"]


def test_priors_file_is_merged_into_results(tmp_path):
    from corea.eval.runs import PRIORS_FILE, load_results

    (tmp_path / "items.jsonl").write_text(json.dumps(_row(1, True, True, 0.9, 0.9)) + "\n")
    (tmp_path / PRIORS_FILE).write_text(json.dumps({"id": "1", "slm_prior": {
        "confidence": 0.4}}) + "\n" + json.dumps({"id": "zz", "slm_prior": {}}) + "\n")
    rows = load_results(tmp_path)
    assert len(rows) == 1 and rows[0]["slm_prior"]["confidence"] == 0.4


def test_score_priors_runs_the_confidence_first_turn_once_per_item(tmp_path):
    from corea.backends.fake import FakeBackend
    from corea.cascade import Cascade
    from corea.config import Settings
    from corea.datasets import Item
    from corea.eval.harness import score_priors
    from corea.eval.runs import PRIORS_FILE

    slm = FakeBackend(["x"], continuations=[" 0.7"], model_name="s")
    c = Cascade(slm, FakeBackend(["y"], model_name="l"), Settings())
    items = [Item(id=str(i), question=f"q{i}", answer="1", choices=None, dataset="t") for i in range(3)]
    assert score_priors(items, c, tmp_path, progress=False) == 3
    assert score_priors(items, c, tmp_path, progress=False) == 0  # resumable: nothing left
    lines = [json.loads(x) for x in (tmp_path / PRIORS_FILE).read_text().splitlines()]
    assert [x["slm_prior"]["confidence"] for x in lines] == [0.7, 0.7, 0.7]
    assert all(x["slm_prior"]["confidence_method"] == "prior" for x in lines)


def test_report_has_heldout_signal_and_routing_sections(tmp_path):
    from corea.eval.report import write_report

    rng = np.random.default_rng(0)
    with open(tmp_path / "items.jsonl", "w") as f:
        for i in range(80):
            s_ok = bool(rng.random() < 0.3)
            l_ok = s_ok or bool(rng.random() < 0.5)
            tok = float(np.clip(rng.normal(0.85 if s_ok else 0.6, 0.1), 0.01, 0.99))
            r = _row(i, s_ok, l_ok, float(rng.choice([0.8, 0.9])), tok)
            r["slm"]["cost_usd"], r["llm"]["cost_usd"] = 1e-5, 3e-5
            f.write(json.dumps(r) + "\n")
    (tmp_path / "run.json").write_text(json.dumps({"prices": {
        "slm": {"input_per_mtok": 0.02, "output_per_mtok": 0.06},
        "llm": {"input_per_mtok": 0.06, "output_per_mtok": 0.18}}}))
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "checked on the test half" in md and "Guarantee check, loss=harm" in md
    # the labels are the registry's (corea.signals.registry)
    assert "calibrator (logistic on stated + token signals)" in md and "cross-fitted" in md
    assert "| token probability of the solution (AvgProb) |" in md and "APGR" in md
