"""Choosing the solve mode held out (``corea heldout --mode``): every (mode, signal, τ) chosen on
train in USD and in seconds, measured on test next to today's default (synthetic run rows)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from corea.eval.heldout_modes import common_items, format_modes_report, modes_report
from corea.timing import TimeModel, TokenTime

PRICE = (1.0, 2.0)
TM = TimeModel(models={"small": TokenTime(prompt_s_per_token=0.001, completion_s_per_token=0.01),
                       "big": TokenTime(prompt_s_per_token=0.003, completion_s_per_token=0.03)})


def rows(n, seed, tokens=300, llm_rate=0.8):
    """Rows of one mode: the stated confidence separates the SLM's right and wrong answers
    perfectly; ``tokens`` completion tokens per answer; the same SLM grades for a seed."""
    rng = np.random.default_rng(seed)
    llm_rng = np.random.default_rng(seed + 1000)
    out = []
    for i in range(n):
        ok = bool(rng.random() < 0.4)
        out.append({
            "id": f"q{i}", "slm_correct": ok,
            "llm_correct": ok or bool(llm_rng.random() < llm_rate),
            "slm": {"model": "small", "answer": "7" if ok else "8",
                    "confidence": 0.9 if ok else 0.2, "prompt_tokens": 60,
                    "completion_tokens": tokens,
                    "signals": {"solution_prob": float(rng.uniform(0.6, 0.9)),
                                "answer_prob": float(rng.uniform(0.5, 0.9)), "min_prob": 0.1,
                                "n_tokens": tokens, "hit_length": False}},
            "llm": {"model": "big", "answer": "7", "prompt_tokens": 60,
                    "completion_tokens": tokens}})
    return out


def report(train, test, **kw):
    return modes_report(train, test, "toy", PRICE, TM, signals=["verbal", "calibrator_tokens"],
                        **kw)


def test_a_mode_as_good_at_a_quarter_of_the_tokens_is_chosen_in_both_units():
    train = {"cot": rows(80, 1), "pot": rows(80, 1, tokens=75)}
    test = {"cot": rows(40, 2), "pot": rows(40, 2, tokens=75)}
    rep = report(train, test)
    for unit in ("usd", "seconds"):
        chosen = rep["chosen"][unit]
        assert chosen["mode"] == "pot" and chosen["signal"] == "verbal"
        assert chosen["eligible"]
        # the same τ on test: the perfect signal keeps exactly the SLM's right answers
        assert chosen["test"]["deferral_rate"] == pytest.approx(
            1 - np.mean([r["slm_correct"] for r in test["pot"]]))
    d = rep["default"]
    assert d["mode"] == "cot" and d["name"] == "calibrator_tokens"
    assert rep["chosen"]["seconds"]["test"]["seconds_per_question"] < \
        d["seconds"]["test"]["seconds_per_question"]
    v = rep["versus_default"]["seconds"]
    assert v["seconds_per_question_difference"] < 0 and v["seconds_ci95"][1] < 0
    assert v["pass_at_1_difference"] == pytest.approx(
        rep["chosen"]["seconds"]["test"]["pass_at_1"] - d["seconds"]["test"]["pass_at_1"])
    assert v["beats"] == (v["pass_at_1_difference"] > 0)
    assert set(rep["modes"]) == {"cot", "pot"}
    assert {s["name"] for s in rep["modes"]["pot"]["signals"]} == {"verbal", "calibrator_tokens"}
    md = format_modes_report(rep, "toy-test")
    assert "today's default" in md and "pot · " in md and "τ chosen in seconds" in md


def test_a_cheap_mode_whose_llm_is_worse_is_never_chosen():
    # pot's LLM is right far less often: no pot τ comes within 2 points of cot's LLM-only
    train = {"cot": rows(80, 1), "pot": rows(80, 1, tokens=75, llm_rate=0.0)}
    test = {"cot": rows(40, 2), "pot": rows(40, 2, tokens=75, llm_rate=0.0)}
    rep = report(train, test)
    assert rep["reference"]["mode"] == "cot"
    assert not any(s[u]["eligible"] for s in rep["modes"]["pot"]["signals"]
                   for u in ("usd", "seconds"))
    assert {rep["chosen"][u]["mode"] for u in ("usd", "seconds")} == {"cot"}


def test_choices_are_made_on_train_only():
    train = {"cot": rows(80, 1), "pot": rows(80, 1, tokens=75)}
    test = {"cot": rows(40, 2), "pot": rows(40, 2, tokens=75)}
    first = report(train, test)
    flipped = copy.deepcopy(test)
    for rs in flipped.values():
        for r in rs:
            r["slm"]["confidence"] = 1 - r["slm"]["confidence"]
            r["llm"]["completion_tokens"] = 5
    again = report(train, flipped)
    for unit in ("usd", "seconds"):
        assert again["chosen"][unit]["threshold"] == first["chosen"][unit]["threshold"]
        assert again["chosen"][unit]["mode"] == first["chosen"][unit]["mode"]
        assert again["chosen"][unit]["train"] == first["chosen"][unit]["train"]
        assert again["chosen"][unit]["test"] != first["chosen"][unit]["test"]


def test_each_split_is_cut_to_the_items_every_mode_has_with_both_grades():
    cot, pot = rows(10, 1), rows(12, 1, tokens=75)
    pot[3]["llm_correct"] = None  # the LLM has not run on it yet
    got = common_items({"cot": cot, "pot": pot})
    assert [r["id"] for r in got["cot"]] == [r["id"] for r in got["pot"]]
    assert {r["id"] for r in got["pot"]} == {f"q{i}" for i in range(10)} - {"q3"}
    with pytest.raises(ValueError, match="no item"):
        common_items({"cot": cot, "pot": [{**r, "id": "x" + r["id"]} for r in pot]})
    with pytest.raises(ValueError, match="differ"):
        report({"cot": cot}, {"pot": pot})
    with pytest.raises(ValueError, match="unknown solve mode"):
        report({"tot": cot}, {"tot": cot})


def _write(d, rs, split):
    d.mkdir()
    (d / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rs))
    (d / "run.json").write_text(json.dumps({"dataset": "toy", "split": split,
                                            "models": {"slm": "toy"},
                                            "prices": {"llm": {"input_per_mtok": 1.0,
                                                               "output_per_mtok": 2.0}}}))


def test_cli_takes_one_train_and_one_test_run_per_mode(tmp_path, capsys):
    from corea.cli import main

    for mode, tokens in (("cot", 300), ("pot", 75)):
        _write(tmp_path / f"train-{mode}", rows(80, 1, tokens=tokens), "train")
        _write(tmp_path / f"test-{mode}", rows(40, 2, tokens=tokens), "test")
    tm = tmp_path / "tm.json"
    tm.write_text(TM.model_dump_json())
    args = ["heldout", "--mode", "cot", str(tmp_path / "train-cot"), str(tmp_path / "test-cot"),
            "--mode", "pot", str(tmp_path / "train-pot"), str(tmp_path / "test-pot"),
            "--signals", "verbal", "calibrator_tokens", "--time-model", str(tm)]
    assert main(args + ["--md", str(tmp_path / "m.md"), "--json", str(tmp_path / "m.json")]) == 0
    assert "_per_item" not in (tmp_path / "m.json").read_text()
    rep = json.loads((tmp_path / "m.json").read_text())
    assert rep["chosen"]["seconds"]["mode"] == "pot" and rep["test_name"] == "toy-test"
    assert rep["runs"]["pot"]["test"] == str(tmp_path / "test-pot")
    assert "**Chosen on train against today's default, on toy-test**" in \
        (tmp_path / "m.md").read_text()
    capsys.readouterr()
    # a train run whose split is not train, a test run that is train data, a mode twice, an
    # unknown mode, --mode with --train: refused with a message
    swapped = list(args)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert main(swapped) == 2
    assert "split" in capsys.readouterr().err
    same = list(args)
    same[4] = same[3]
    assert main(same) == 2
    assert main(args + ["--mode", "pot", swapped[3], swapped[4]]) == 2
    assert main(["heldout", "--mode", "tot", swapped[3], swapped[4]]) == 2
    assert main(args + ["--train", str(tmp_path / "train-cot")]) == 2
    assert "leave out --train" in capsys.readouterr().err
    assert main(["heldout"]) == 2
    assert "give --train" in capsys.readouterr().err
