"""Cross-fitted calibration adapters (train.crossfit) on the tiny random model, the out-of-fold
readings of train.expected_confidence, and the rule that lets the stated confidence decide."""

from __future__ import annotations

import json

import pytest

from train.crossfit import fold_of
from train.expected_confidence import VERSIONS, choose, readings


def test_folds_cover_every_question_once_in_near_equal_sizes():
    ids = [f"q{i}" for i in range(10)]
    fold = fold_of(ids, 3, seed=1)
    assert set(fold) == set(ids) and sorted(set(fold.values())) == [0, 1, 2]
    sizes = sorted(list(fold.values()).count(f) for f in range(3))
    assert sizes == [3, 3, 4]
    assert fold_of(list(reversed(ids)), 3, seed=1) == fold  # order of the input does not matter
    with pytest.raises(ValueError):
        fold_of(["a", "b"], 3)


def test_readings_and_the_choice_on_train():
    stated, expected, spread = readings([0.0, 0.6, 0.4] + [0.0] * 7)
    assert stated == 0.1 and expected == pytest.approx(0.14)
    assert spread == pytest.approx((0.6 * 0.04 ** 2 + 0.4 * 0.06 ** 2) ** 0.5)
    assert readings([0.0] * 10) == (0.0, 0.0, 0.0)  # no line: the cascade defers
    train = {v: {"brier": 0.3, "ece_10": 0.1} for v in VERSIONS}
    train["adapter_expected"]["brier"] = 0.2
    assert choose(train) == "adapter_expected"
    train["token_calibrator"]["brier"] = 0.2  # a tie: the earlier version in VERSIONS
    assert choose(train) == "adapter_expected"
    assert choose(train, "ece_10") == "base_stated"


def toy_run(tmp_path, n=36):
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for i in range(n):
        ok = i % 3 != 0
        rows.append({"id": f"t{i}", "question": f"What is {i} + {i}?", "gold": str(2 * i),
                     "slm_correct": ok, "llm_correct": True,
                     "slm": {"text": f"{i} + {i} = \\boxed{{{2 * i if ok else 7}}}",
                             "answer": str(2 * i if ok else 7), "answer_method": "free",
                             "finish_reason": "stop",
                             "signals": {"solution_prob": 0.9 if ok else 0.5 + i / 200,
                                         "answer_prob": 0.8, "min_prob": 0.1 + i / 100,
                                         "n_tokens": 20 + i, "hit_length": False}}})
    (run / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "run.json").write_text(json.dumps({"split": "train", "dataset": "toy"}))
    return run


def test_crossfit_on_the_tiny_model_writes_out_of_fold_confidences_calibrator_and_card(tmp_path,
                                                                                   monkeypatch):
    from corea.backends.weights import safetensors_checkpoint
    from corea.signals.calibrator import load_plain
    from train.crossfit import main

    try:
        safetensors_checkpoint("embedded:slm", "~/.cache/corea")  # the tokenizer
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the embedded SLM checkpoint can't be built: {e}")
    out = tmp_path / "cf"
    recipe = ["--model", "tiny-random", "--runs", str(toy_run(tmp_path)),
              "--adapter_scope", "confidence", "--use_peft", "true",
              "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "1",
              "--per_device_train_batch_size", "2", "--report_to", "none", "--use_cpu", "true",
              "--disable_tqdm", "true", "--save_strategy", "no"]
    assert main(["--folds", "3", "--out", str(out)] + recipe) == 0
    oof = [json.loads(x) for x in (out / "oof.jsonl").read_text().splitlines()]
    assert len(oof) == 36 and sorted({o["fold"] for o in oof}) == [0, 1, 2]
    for f in range(3):  # each row was scored by the adapter that did not train on it
        trained = set(json.loads((out / f"fold-{f}" / "train_ids.json").read_text()))
        scored = {o["id"] for o in oof if o["fold"] == f}
        assert scored and not trained & scored and len(trained | scored) == 36
    assert all(0 <= o["expected"] <= 0.9 and 0 <= o["spread"] <= 0.45 for o in oof)
    card = json.loads((out / "crossfit.json").read_text())
    assert card["folds"] == 3 and card["n_scored"] == 36
    for k in ("stated", "expected", "token_calibrator", "combined"):
        assert card["crossfit"][k]["n"] == 36 and card["crossfit"][k]["auroc"] is not None
    assert card["regenerate"].startswith("python -m train.crossfit --folds 3")
    assert json.loads((out / "full" / "crossfit.json").read_text()) == card
    assert len(json.loads((out / "full" / "train_ids.json").read_text())) == 36
    assert (out / "full" / "adapter_config.json").is_file()
    cal = load_plain(out / "calibrator")
    assert cal.card.features[0] == "verbal" and cal.card.n == 36
    assert 0 <= cal.predict_one({"confidence": 0.3, "signals": {"solution_prob": 0.9}}) <= 1
    assert main(["--folds", "40", "--out", str(tmp_path / "x")] + recipe) == 2

    # Resumable: a rerun redoes no finished fold; a fold whose readings are gone is scored again
    # (its adapter is kept), and only what is missing is trained.
    import train.confidence
    import train.crossfit as cf

    calls = {"train": [], "score": 0}
    real_train, real_score = train.confidence.main, cf.score_fold

    def counted_train(args):
        calls["train"].append(args[args.index("--output_dir") + 1])
        return real_train(args)

    def counted_score(*a, **k):
        calls["score"] += 1
        return real_score(*a, **k)

    monkeypatch.setattr(train.confidence, "main", counted_train)
    monkeypatch.setattr(cf, "score_fold", counted_score)
    before = (out / "oof.jsonl").read_text()
    assert main(["--folds", "3", "--out", str(out)] + recipe) == 0
    assert calls == {"train": [], "score": 0} and (out / "oof.jsonl").read_text() == before
    (out / "fold-1" / "readings.jsonl").unlink()
    assert main(["--folds", "3", "--out", str(out)] + recipe) == 0
    assert calls == {"train": [], "score": 1} and (out / "oof.jsonl").read_text() == before


def test_compare_chooses_on_train_and_reports_test_from_scored_rows(tmp_path):
    """The metrics stage of train.expected_confidence on scored rows (no model): every version
    on train and test; the chosen one has the lowest train Brier score."""
    from train.expected_confidence import TOKEN_CALIBRATOR, compare, format_table

    run = toy_run(tmp_path)
    rows = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]

    def scored(rs):  # the adapter's expected confidence tracks correctness; the base's does not
        return {r["id"]: {"correct": r["slm_correct"], "base": [0.8, 0.7, 0.1],
                          "adapter": [0.6, 0.55, 0.05] if r["slm_correct"] else [0.1, 0.15, 0.05]}
                for r in rs}

    test = tmp_path / "test"
    test.mkdir()
    (test / "items.jsonl").write_text((run / "items.jsonl").read_text())
    (test / "run.json").write_text(json.dumps({"split": "test"}))
    per_row = {"train": scored(rows[:30]), "toy-test": scored(rows[30:])}
    res = compare(per_row, str(run), {"toy-test": str(test)}, TOKEN_CALIBRATOR)
    assert set(res["train"]) >= set(VERSIONS) and res["train"]["base_stated"]["n"] == 30
    assert res["train"]["adapter_expected"]["auroc"] == 1.0
    briers = {v: res["train"][v]["brier"] for v in VERSIONS}
    assert res["chosen"] == min(briers, key=briers.get)
    assert res["test"]["toy-test"]["adapter_stated"]["n"] == 6
    assert "(chosen on train)" in format_table(res)
    with pytest.raises(ValueError):  # a test run is never a place to choose
        compare(per_row, str(test), {}, TOKEN_CALIBRATOR)


def test_score_runs_reads_base_and_adapter_digits_as_live_and_resumes(tmp_path):
    """train.expected_confidence's llama.cpp path on the scripted fake backend: the base's ten
    digits from next_token_logprobs, the adapter's from its own line's alternatives; rows scored
    before are kept, not scored again."""
    import math

    from corea.backends.fake import FakeBackend
    from train.expected_confidence import score_runs

    alts = [("3", math.log(0.5)), ("1", math.log(0.5))]
    fake = FakeBackend(["x"], model_name="slm", chunk_chars=1,
                       next_logprobs=lambda m, p, c: {d: math.log(0.1) for d in c},
                       stated_confidence=["\nConfidence: 0.3"], top_logprobs=lambda piece: alts)
    run = str(toy_run(tmp_path, n=6))
    first = score_runs("unused", {"train": run}, {"train": {"t0"}}, 2, model=fake)
    assert list(first["train"]) == ["t1", "t2"]
    row = first["train"]["t1"]
    assert row["base"][:2] == [0.0, 0.45] and row["adapter"][:2] == [0.1, 0.2]  # ties: lowest
    n_calls = len(fake.calls)
    again = score_runs("unused", {"train": run}, {"train": {"t0"}}, 3, model=fake, done=first)
    assert list(again["train"]) == ["t1", "t2", "t3"]
    assert len([c for c in fake.calls[n_calls:] if c[0] == "score"]) == 1  # only t3 scored
