"""Held-out signal comparison: fit and τ on train only, applied unchanged to test (synthetic rows
with scripted hidden states, P(True) and samples)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from corea.signals import hidden
from corea.grading import same_answer
from corea.signals.registry import SIGNALS, available
from corea.eval.heldout import cross_fit_values, format_report, heldout_report, within

PRICE = (1.0, 2.0)


def rows(n, seed, dim=12):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ok = bool(rng.random() < 0.4)
        llm = bool(rng.random() < 0.8)
        end = rng.normal(size=dim).astype(np.float32)
        end[0] += 2.0 if ok else -2.0
        prompt = rng.normal(size=dim).astype(np.float32)
        prompt[1] += 1.0 if ok else -1.0
        ans = "7" if ok else "8"
        samples = [{"answer": ans if rng.random() < (0.9 if ok else 0.4) else "9",
                    "prompt_tokens": 50, "completion_tokens": 100} for _ in range(4)]
        out.append({
            "id": f"{seed}-{i}", "slm_correct": ok, "llm_correct": llm,
            "slm": {"answer": ans, "confidence": 0.9, "prompt_tokens": 60,
                    "completion_tokens": 200,
                    "signals": {"solution_prob": float(rng.uniform(0.6, 0.9)),
                                "answer_prob": 0.9, "min_prob": 0.1, "n_tokens": 200,
                                "hit_length": False},
                    "states": {"end": hidden.encode(end), "prompt": hidden.encode(prompt)},
                    "agreement": ok or i % 3 == 0},  # solve: mot
            "llm": {"answer": "7", "prompt_tokens": 60, "completion_tokens": 300},
            "slm_verify": {"p_true": float(rng.uniform(0.5, 1.0) if ok else rng.uniform(0, 0.6))},
            "slm_samples": samples})
    return out


def test_every_signal_is_available_on_complete_rows_and_scores_them():
    r = rows(30, 0)
    # no confidence-first turn, no LLM prompt states (corea llm-states), no states every k
    # tokens (corea checkpoints: early_exit)
    llm_side = [n for n, s in SIGNALS.items() if {"llm_states", "llm_verify"} & set(s.needs)]
    assert llm_side == ["llm_prior_probe", "llm_p_true", "delegation", "delegation_after",
                        "delegation_verify"]
    every = [n for n in SIGNALS if n != "early_exit"]
    assert available(r) == [n for n in every if n not in ("prior", *llm_side)]
    assert available([{k: v for k, v in x.items() if k != "slm_samples"} for x in r]) == [
        n for n in every if n not in ("sc2", "sc4", "calibrator_sc4", "prior", *llm_side)]
    first = [{**x, "slm_prior": {"confidence": 0.6, "prompt_tokens": 40, "completion_tokens": 4},
              "llm": {**(x.get("llm") or {}), "states": {"prompt": "AAA="}},
              "llm_verify": {"p_true": 0.7, "prompt_tokens": 80}} for x in r]
    assert available(first) == every and SIGNALS["prior"].values(first)[0] == 0.6
    assert SIGNALS["prior"].when == "before" and SIGNALS["prior"].extra_tokens(first[0]) == (40, 4)
    sc = SIGNALS["sc4"].values(r)
    assert all(v in (0.0, 0.25, 0.5, 0.75, 1.0) for v in sc)
    assert SIGNALS["p_true"].values(r)[0] == r[0]["slm_verify"]["p_true"]
    assert SIGNALS["sc2"].extra_tokens(r[0]) == (100, 200)
    with pytest.raises(ValueError, match="fit it"):
        SIGNALS["probe"].values(r)
    assert same_answer("0.5", "1/2") and not same_answer("2", "3") and not same_answer(None, "1")


def test_cross_fitted_values_never_come_from_a_model_that_saw_the_row():
    r = rows(80, 1)
    cf = cross_fit_values(SIGNALS["probe"], r, "toy")
    fitted = SIGNALS["probe"].fit(r, "toy")
    insample = SIGNALS["probe"].values(r, fitted)
    y = np.array([x["slm_correct"] for x in r])
    # in-sample predictions separate better than honest out-of-fold ones, which still rank
    from corea import metrics
    assert metrics.auroc(np.array(cf), y) > 0.8
    assert np.mean(np.abs(np.array(cf) - np.array(insample))) > 1e-4


def test_report_tunes_on_train_only_and_ranks_the_probes_above_the_stated_confidence():
    train, test = rows(160, 2), rows(80, 3)
    rep = heldout_report(train, {"toy-test": test}, "toy", PRICE,
                         signals=["verbal", "probe", "prior_probe", "p_true", "sc4", "oracle",
                                  "oracle_gain"])
    by = {s["name"]: s for s in rep["signals"]}
    t = {k: v["tests"]["toy-test"] for k, v in by.items()}
    assert t["verbal"]["auroc"] == pytest.approx(0.5)
    assert t["probe"]["auroc"] > 0.85 and t["oracle"]["auroc"] == 1.0
    assert t["probe"]["ece"] is not None and t["oracle"]["ece"] is None
    # every AUROC comes with its bootstrap interval, and the markdown shows it
    lo, hi = t["probe"]["auroc_ci95"]
    assert 0.5 < lo <= t["probe"]["auroc"] <= hi <= 1.0
    assert by["probe"]["train"]["auroc_ci95"] is not None
    free = t["probe"]["by_ratio"]["0"]
    assert free["cost_change"] < -0.2 and free["extra_tokens_per_item"] == 0
    assert t["sc4"]["by_ratio"]["0"]["extra_tokens_per_item"] == 600
    # pre-generation: a deferred item pays only the SLM's prompt, so at the 1/3 price a router
    # that defers pays less than an answer-first cascade with the same deferrals would
    pre = t["prior_probe"]["by_ratio"]["0.3333"]
    assert pre["deferral_rate"] > 0
    md = format_report(rep)
    assert "toy-test" in md and "probe on the end-of-solution state" in md
    assert f"{t['probe']['auroc']:.2f} [{lo:.2f}, {hi:.2f}]" in md
    # Learn-then-Test: the oracle never accepts a wrong SLM answer, so 160 train items certify it
    assert by["oracle"]["certified"]["threshold"] is not None
    assert t["oracle"]["certified"]["holds"] and t["oracle"]["certified"]["drop"] <= 0.02
    assert "**Learn-then-Test**" in md and "on the 160 train items with both grades" in md
    line = next(x for x in md.splitlines()
                if x.startswith("| oracle: defers exactly the SLM's errors |") and "/ yes" in x)
    assert "pt /" in line

    # changing every test row leaves every τ as it was: nothing is tuned on test
    flipped = copy.deepcopy(test)
    for x in flipped:
        x["slm_correct"] = not x["slm_correct"]
        x["slm"]["confidence"] = 0.1
    rep2 = heldout_report(train, {"toy-test": flipped}, "toy", PRICE,
                          signals=["verbal", "probe", "p_true"])
    for s in rep2["signals"]:
        assert s["train"]["thresholds"] == by[s["name"]]["train"]["thresholds"]
        assert s["tests"]["toy-test"]["by_ratio"]["0"]["threshold"] == \
            by[s["name"]]["tests"]["toy-test"]["by_ratio"]["0"]["threshold"]


def test_a_signal_that_cannot_be_fit_is_reported_not_raised():
    train = rows(40, 4)
    for x in train:
        x["slm_correct"] = True  # one class only
    rep = heldout_report(train, {"t": rows(10, 5)}, "toy", PRICE, signals=["verbal", "probe"])
    by = {s["name"]: s for s in rep["signals"]}
    assert "error" in by["probe"] and "error" not in by["verbal"]
    with pytest.raises(ValueError):
        heldout_report([], {}, "toy", PRICE)


def test_rows_whose_llm_has_not_run_count_for_fit_and_calibration_not_for_costs():
    """SLM-first rows (LLM pending): they fit the SLM-label probe and enter AUROC, while τ, costs
    and the "LLM fixes it" signals use only the rows with both grades."""
    train, test = rows(160, 6), rows(80, 7)

    def pend(rs, keep):
        out = copy.deepcopy(rs)
        for x in out[keep:]:
            x.update(llm=None, llm_correct=None, llm_grade="pending")
        return out

    rep = heldout_report(pend(train, 60), {"t": pend(test, 30)}, "toy", PRICE,
                         signals=["verbal", "probe", "probe_helps", "oracle_gain"])
    assert rep["train"]["n"] == 160 and rep["train"]["n_costed"] == 60
    assert rep["tests"]["t"] == {**rep["tests"]["t"], "n": 80, "n_costed": 30}
    by = {s["name"]: s for s in rep["signals"]}
    assert by["probe"]["train"]["n"] == 160 and by["probe"]["train"]["n_costed"] == 60
    assert by["probe"]["tests"]["t"]["n"] == 80 and by["probe"]["tests"]["t"]["n_costed"] == 30
    assert by["probe_helps"]["train"]["n"] == 60 and by["probe_helps"]["tests"]["t"]["n"] == 30
    # the cost of the 30 costed test items does not depend on what the pending ones hold
    other = pend(test, 30)
    for x in other[30:]:
        x["slm_correct"] = not x["slm_correct"]
    rep2 = heldout_report(pend(train, 60), {"t": other}, "toy", PRICE, signals=["probe"])
    assert rep2["signals"][0]["tests"]["t"]["by_ratio"] == by["probe"]["tests"]["t"]["by_ratio"]
    assert "the LLM has run on 30 of them" in format_report(rep)
    assert "nothing is certified below \"defer everything\" for any signal (with no harm " \
        "observed, it takes at least 114 items)" in format_report(rep)
    with pytest.raises(ValueError, match="both models"):
        heldout_report(pend(train, 0), {}, "toy", PRICE)


def test_cli_reads_runs_and_writes_markdown_and_json(tmp_path, capsys):
    import json

    from corea.cli import main

    for name, r in (("train", rows(60, 6)), ("test", rows(20, 7))):
        d = tmp_path / name
        d.mkdir()
        (d / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in r))
        (d / "run.json").write_text(json.dumps({"split": name, "models": {"slm": "toy"},
                                                "prices": {"llm": {"input_per_mtok": 1.0,
                                                                   "output_per_mtok": 2.0}}}))
    code = main(["heldout", "--train", str(tmp_path / "train"), "--test",
                 f"toy={tmp_path / 'test'}", "--signals", "verbal", "avgprob",
                 "--md", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")])
    assert code == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["slm"] == "toy" and rep["llm_price_per_mtok"] == [1.0, 2.0]
    assert [s["name"] for s in rep["signals"]] == ["verbal", "tokprob"]  # avgprob: its old name
    assert "**toy**" in (tmp_path / "r.md").read_text() and "**toy**" in capsys.readouterr().out
    assert "At a fixed τ" not in (tmp_path / "r.md").read_text()
    # --fixed-threshold: every signal also at the app's τ; out of [0, 1] is refused
    assert main(["heldout", "--train", str(tmp_path / "train"), "--test",
                 f"toy={tmp_path / 'test'}", "--signals", "verbal", "--fixed-threshold", "0.7",
                 "--md", str(tmp_path / "f.md"), "--json", str(tmp_path / "f.json")]) == 0
    fixed = json.loads((tmp_path / "f.json").read_text())
    assert fixed["fixed_threshold"] == 0.7
    assert fixed["signals"][0]["tests"]["toy"]["at_fixed"]["threshold"] == 0.7
    assert "**At a fixed τ = 0.70**" in (tmp_path / "f.md").read_text()
    assert main(["heldout", "--train", str(tmp_path / "train"), "--fixed-threshold", "7"]) == 2
    assert "in [0, 1]" in capsys.readouterr().err
    assert main(["heldout", "--train", str(tmp_path / "nope")]) == 2
    assert main(["heldout", "--train", str(tmp_path / "train"), "--test", "bad"]) == 2
    # fitting on a test split, or "testing" on the train run itself, is refused
    (tmp_path / "test" / "run.json").write_text(json.dumps({"split": "test", "dataset": "toy"}))
    assert main(["heldout", "--train", str(tmp_path / "test")]) == 2
    assert main(["heldout", "--train", str(tmp_path / "train"), "--test",
                 f"same={tmp_path / 'train'}"]) == 2
    assert "train data itself" in capsys.readouterr().err
    # a run folder that records no split is refused too (it may be a test split)
    (tmp_path / "test" / "run.json").write_text(json.dumps({"dataset": "toy"}))
    assert main(["heldout", "--train", str(tmp_path / "test")]) == 2
    assert "records no split" in capsys.readouterr().err
    (tmp_path / "test" / "run.json").unlink()
    assert main(["heldout", "--train", str(tmp_path / "test")]) == 2
    assert "split is unknown" in capsys.readouterr().err


def test_a_fixed_threshold_at_the_chosen_tau_gives_the_chosen_tau_numbers():
    """``fixed_threshold`` measures the test set at a given τ with the same arithmetic as the τ
    chosen on train: at that very τ (SLM free) both give the same cost, drop and deferral."""
    train, test = rows(80, 10), rows(40, 11)
    first = heldout_report(train, {"t": test}, "toy", PRICE, signals=["tokprob"])
    tau = first["signals"][0]["train"]["thresholds"]["0"]
    rep = heldout_report(train, {"t": test}, "toy", PRICE, signals=["tokprob"],
                         fixed_threshold=tau)
    t = rep["signals"][0]["tests"]["t"]
    chosen, fixed = t["by_ratio"]["0"], t["at_fixed"]
    for key in ("cost_change", "pass_drop", "deferral_rate", "pass_at_1"):
        assert fixed[key] == pytest.approx(chosen[key])
    everything = heldout_report(train, {"t": test}, "toy", PRICE, signals=["tokprob"],
                                fixed_threshold=1.0)["signals"][0]["tests"]["t"]["at_fixed"]
    assert everything["deferral_rate"] == 1.0 and everything["pass_drop"] == pytest.approx(0.0)


def test_the_token_only_calibrator_never_reads_the_stated_confidence():
    """``calibrator_tokens`` (what decides for the adapted SLM): fit on the token signals only, so
    its values do not move when every stated confidence changes, while ``calibrator``'s do."""
    train, test = rows(80, 6), rows(40, 7)
    rng = np.random.default_rng(0)
    for x in train + test:  # a stated confidence that carries some information
        x["slm"]["confidence"] = float(rng.uniform(0.5, 1.0) if x["slm_correct"] else
                                       rng.uniform(0.2, 0.8))
    tok, full = SIGNALS["calibrator_tokens"], SIGNALS["calibrator"]
    ft, ff = tok.fit(train, "toy"), full.fit(train, "toy")
    assert "verbal" not in ft.card.features and "verbal" in ff.card.features
    flipped = [dict(x, slm=dict(x["slm"], confidence=1.0 - x["slm"]["confidence"]))
               for x in test]
    assert np.allclose(tok.values(test, ft), tok.values(flipped, ft))
    assert not np.allclose(full.values(test, ff), full.values(flipped, ff))


def test_calibrator_fit_to_llm_fixes_it_ranks_the_fixable_items_lowest():
    """``calibrator_helps``: the 7-feature logistic regression fit to "the LLM fixes it" on the
    rows with both grades; its confidence is 1 - P(helps), so the fixable items come lowest, and a
    row whose LLM is pending is neither fit on nor scored."""
    from corea.metrics import auroc

    def helps_rows(n, seed):
        r = rows(n, seed)
        rng = np.random.default_rng(seed + 100)
        for x in r:
            helps = (not x["slm_correct"]) and x["llm_correct"]
            x["slm"]["signals"]["solution_prob"] = float(
                rng.uniform(0.2, 0.5) if helps else rng.uniform(0.45, 0.95))
        return r

    train, test = helps_rows(120, 8), helps_rows(60, 9)
    for x in train[100:]:
        x.update(llm=None, llm_correct=None, llm_grade="pending")
    sig = SIGNALS["calibrator_helps"]
    assert sig.learned and sig.needs_llm
    fitted = sig.fit(train, "toy")
    assert fitted.card.n == 100
    conf = sig.values(test, fitted)
    helps = [(not x["slm_correct"]) and x["llm_correct"] for x in test]
    assert auroc(conf, [not h for h in helps]) > 0.9
    assert np.mean([c for c, h in zip(conf, helps) if h]) < np.mean(
        [c for c, h in zip(conf, helps) if not h])


def test_calibrator_with_self_consistency_is_fit_on_train_rows_with_samples_only():
    """``calibrator_sc4``: the calibrator's features plus sc4's agreement, fit on the train rows
    that have 4 samples. In these rows only the samples say whether the SLM is right, so it ranks
    like sc4 and far above the calibrator; a row without samples gets no value; it is charged
    the samples' tokens; too few train rows with samples is a clear error."""
    from corea.metrics import auroc

    train, test = rows(120, 12), rows(60, 13)
    for x in train[80:]:
        del x["slm_samples"]
    sig = SIGNALS["calibrator_sc4"]
    assert sig.learned and not sig.needs_llm and not sig.covers(train[100])
    fitted = sig.fit(train, "toy")
    assert fitted.n_features_in_ == 8
    y = [x["slm_correct"] for x in test]
    conf = sig.values(test, fitted)
    cal = SIGNALS["calibrator"].values(test, SIGNALS["calibrator"].fit(train, "toy"))
    assert auroc(conf, y) > 0.75 > auroc(cal, y) + 0.15
    del test[0]["slm_samples"]
    assert sig.values(test[:1], fitted) == [None]
    assert sig.extra_tokens(test[1]) == SIGNALS["sc4"].extra_tokens(test[1])
    with pytest.raises(ValueError, match="at least 5 of each"):
        sig.fit(train[:6], "toy")
    rep = heldout_report(train, {"t": test}, "toy", PRICE, signals=["calibrator_sc4"])
    (entry,) = rep["signals"]
    assert entry["train"]["n"] == 80 and entry["tests"]["t"]["n"] == 59
    assert "same_items" not in entry  # no default signal in the report to compare with

    # with the default signal in the report, the partial one is compared with it on the same
    # 59 items, paired: sc4 carries the answer here, so the difference is clearly positive
    rep = heldout_report(train, {"t": test}, "toy", PRICE,
                         signals=["calibrator", "calibrator_tokens", "calibrator_sc4", "sc4"])
    by = {x["name"]: x for x in rep["signals"]}
    assert "same_items" not in by["calibrator"]  # free and on every item: nothing to buy
    assert "same_items" not in by["calibrator_tokens"]  # the default itself
    p = by["calibrator_sc4"]["same_items"]["t"]
    assert p["n"] == 59 and p["baseline"] == "calibrator_tokens"
    assert p["difference"] == pytest.approx(
        by["calibrator_sc4"]["tests"]["t"]["auroc"] - p["baseline_auroc"])
    assert 0 < p["ci95"][0] < p["difference"] < p["ci95"][1]
    assert f"- {by['sc4']['label']} against {by['calibrator_tokens']['label']}, on the 59 items " \
           "it covers:" in format_report(rep)

    # samples on every test item: the paid signal is still compared with the free default
    test = rows(60, 13)
    rep = heldout_report(train, {"t": test}, "toy", PRICE,
                         signals=["calibrator_tokens", "calibrator_sc4"])
    by = {x["name"]: x for x in rep["signals"]}
    assert by["calibrator_sc4"]["tests"]["t"]["n"] == len(test)
    assert by["calibrator_sc4"]["same_items"]["t"]["n"] == len(test)


def test_self_consistency_drawn_on_some_test_items_only_is_measured_there_without_a_tau():
    """Samples on the first 20 of 50 test items and on no train item: sc4 is reported on those
    20 (AUROC, ECE, Brier, "on 20 items"), with no τ and no cost (nothing on train to choose τ
    on), while the other signals keep all 50; a row without a greedy answer agrees with nothing."""
    train, test = rows(80, 10), rows(50, 11)
    for x in train:
        del x["slm_samples"]
    for x in test[20:]:
        del x["slm_samples"]
    test[0]["slm"]["answer"] = None
    assert SIGNALS["sc4"].values(test[:1]) == [0.0]
    assert not SIGNALS["sc4"].covers(test[20]) and SIGNALS["sc4"].covers(test[0])
    rep = heldout_report(train, {"t": test}, "toy", PRICE, signals=["verbal", "sc4", "probe"])
    by = {s["name"]: s for s in rep["signals"]}
    sc = by["sc4"]
    assert "error" not in sc and sc["train"]["n"] == 0 and sc["train"]["thresholds"] is None
    assert sc["tests"]["t"]["n"] == 20 and sc["tests"]["t"]["n_with_value"] == 20
    assert sc["tests"]["t"]["auroc"] is not None and sc["tests"]["t"]["by_ratio"] == {}
    assert by["verbal"]["tests"]["t"]["n"] == 50 and by["verbal"]["tests"]["t"]["by_ratio"]
    md = format_report(rep)
    line = next(x for x in md.splitlines() if x.startswith("| self-consistency, 4 samples")
                and "(on 20 items)" in x)
    assert "— | — | —" in line and line.endswith("| 600 |")  # 4 × (50 + 100) tokens, charged
    assert sc["tests"]["t"]["extra_tokens_per_item"] == 600
    if any(x["certified"]["threshold"] is not None for x in rep["signals"]):
        assert "| self-consistency, 4 samples | — (no train item has its inputs) |" in md


def test_a_test_drop_of_exactly_alpha_holds():
    assert within(0.76 - 0.74, 0.02) and within(0.0, 0.02) and not within(0.03, 0.02)


def test_a_cut_off_slm_answer_is_never_kept_and_a_cut_off_llm_answer_falls_back():
    """The held-out report grades the cascade's final answer (corea.policy): the "LLM fixes it"
    oracle keeps every item where the LLM does not fix an SLM error — but an SLM answer cut off at
    its budget is deferred whatever the signal says (before: kept, which made the oracle cheaper
    than any cascade can be), and a deferred item whose LLM answer is cut off keeps the SLM's."""
    train, test = rows(60, 11), rows(40, 12)
    for r in test[:10]:  # SLM cut off (wrong), the LLM wrong too: the oracle_gain would keep it
        r.update(slm_correct=False, llm_correct=False)
        r["slm"].update(finish_reason="length")
    for r in test[10:14]:  # LLM cut off, SLM right: the SLM's answer is final when deferred
        r.update(slm_correct=True, llm_correct=False)
        r["llm"].update(finish_reason="length")
    rep = heldout_report(train, {"t": test}, "toy", PRICE, signals=["oracle_gain", "oracle"],
                         ratios=(0.0,))
    by = {s["name"]: s["tests"]["t"]["by_ratio"]["0"] for s in rep["signals"]}
    # the oracle_gain defers exactly the LLM-fixes-it items plus the 10 cut-off SLM answers
    fixes = sum(1 for r in test if not r["slm_correct"] and r["llm_correct"])
    assert by["oracle_gain"]["deferral_rate"] == pytest.approx((fixes + 10) / 40)
    # the oracle defers every SLM error (the 4 items whose LLM was cut off were kept: right)
    cascade = sum(1 for r in test if r["slm_correct"] or r["llm_correct"]) / 40
    assert by["oracle"]["pass_at_1"] == pytest.approx(cascade)
    # verbal (0.9 everywhere) at τ 0.5 keeps all but the cut-off ones
    rep = heldout_report(train, {"t": test}, "toy", PRICE, signals=["verbal"], ratios=(0.0,),
                         fixed_threshold=0.5)
    fixed = rep["signals"][0]["tests"]["t"]["at_fixed"]
    assert fixed["deferral_rate"] == pytest.approx(10 / 40)
    # at τ 1 everything is deferred: the 4 cut-off LLM answers fall back to the SLM's (right)
    rep = heldout_report(train, {"t": test}, "toy", PRICE, signals=["verbal"], ratios=(0.0,),
                         fixed_threshold=1.0)
    fixed = rep["signals"][0]["tests"]["t"]["at_fixed"]
    want = (4 + sum(1 for r in test[14:] if r["llm_correct"])) / 40
    assert fixed["deferral_rate"] == 1.0 and fixed["pass_at_1"] == pytest.approx(want)
