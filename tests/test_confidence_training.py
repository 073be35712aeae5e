"""Confidence-only training (train/confidence.py): losses against brute force, data, batching, and
a CPU smoke run with resume."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from train.confidence import (DIGIT_VALUES, collate, examples_from_rows,  # noqa: E402
                              expected_loss, grpo_loss, point_loss, strip_confidence)


@pytest.mark.parametrize("target", ["brier", "group_l1", "group_l2"])
def test_exact_expected_loss_equals_the_brute_force_sum(target):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 10, generator=g)
    t = torch.tensor([0.0, 1.0, 0.25, 0.5, 0.9])
    got = expected_loss(logits, t, target)
    for b in range(5):
        z = [math.exp(x) for x in logits[b].tolist()]
        p = [x / sum(z) for x in z]
        want = sum(p[d] * (abs(DIGIT_VALUES[d] - t[b].item()) if target == "group_l1"
                           else (DIGIT_VALUES[d] - t[b].item()) ** 2) for d in range(10))
        assert got[b].item() == pytest.approx(want, rel=1e-5)


def test_exact_loss_gradient_moves_confidence_toward_the_target():
    logits = torch.zeros(2, 10, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    expected_loss(logits, t).sum().backward()
    g = logits.grad
    assert g[0, 9] > 0 > g[0, 0]   # wrong answer: descending lowers the mass on 0.9
    assert g[1, 0] > 0 > g[1, 9]   # right answer: descending raises it


def test_grpo_estimator_matches_the_exact_gradient_in_expectation():
    torch.manual_seed(0)
    base = torch.randn(1, 10)
    t = torch.tensor([0.3])
    exact = base.clone().requires_grad_(True)
    expected_loss(exact, t).sum().backward()
    est = base.clone().requires_grad_(True)
    loss, digits = grpo_loss(est, t, num_generations=20000,
                             generator=torch.Generator().manual_seed(1))
    loss.sum().backward()
    assert digits.shape == (1, 20000)
    cos = torch.nn.functional.cosine_similarity(exact.grad, est.grad).item()
    assert cos > 0.9


def test_grpo_gives_no_gradient_when_every_sample_scores_the_same():
    logits = torch.full((1, 10), -30.0)
    logits[0, 3] = 30.0  # all mass on 0.3
    logits.requires_grad_(True)
    loss, d = grpo_loss(logits, torch.tensor([0.3]), num_generations=8)
    loss.sum().backward()
    assert (d == 3).all() and torch.allclose(logits.grad, torch.zeros_like(logits.grad))
    assert point_loss(torch.tensor(0.3), torch.tensor(0.3), "brier").item() == 0


@pytest.mark.parametrize("text, want", [
    ("So 2+2 = \\boxed{4}\nConfidence: 0.9", "So 2+2 = \\boxed{4}"),
    ("So \\boxed{4}.\n\n**Confidence:** 85%\n", "So \\boxed{4}."),
    ("So \\boxed{4}\nConfidence: 0.7\nConfidence: 0.8", "So \\boxed{4}\nConfidence: 0.7"),
    ("No box here\n\nAnswer: 4\nConfidence: 0.5", "No box here"),   # forced suffixes
    ("I have low confidence in step 2, \\boxed{4}", "I have low confidence in step 2, \\boxed{4}"),
])
def test_strip_confidence_keeps_the_solution_up_to_its_answer(text, want):
    assert strip_confidence(text) == want


def test_examples_use_own_answers_and_the_group_accuracy():
    rows = [{"id": "q1", "question": "Q1", "slm_correct": True,
             "slm": {"text": "\\boxed{1}\nConfidence: 0.9", "answer": "1", "answer_method": "free",
                     "finish_reason": "stop"},
             "slm_samples": [
                 {"text": "\\boxed{2}", "answer": "2", "correct": False, "answer_method": "free",
                  "finish_reason": "stop"},
                 {"text": "cut", "answer": None, "correct": False, "finish_reason": "length"},
                 {"text": "x\n\nAnswer: 1", "answer": "1", "correct": True,
                  "answer_method": "forced", "finish_reason": "stop"}]},
            {"id": "q2", "question": "Q2", "slm_correct": None, "slm": {"text": "t"}}]
    ex = examples_from_rows(rows)
    assert [(e.id, e.solution, e.correct) for e in ex] == [("q1#0", "\\boxed{1}", True),
                                                           ("q1#1", "\\boxed{2}", False)]
    assert all(e.group_accuracy == 0.5 for e in ex)
    # the confidence-scoped adapter also states a confidence after an elicited answer
    scoped = examples_from_rows(rows, forced_answers=True)
    assert [(e.id, e.solution) for e in scoped][-1] == ("q1#3", "x\n\nAnswer: 1")


def test_collate_left_pads_so_every_suffix_ends_at_the_last_position():
    b = collate([{"input_ids": [5, 6, 7], "correct": 1.0, "group_accuracy": 0.5},
                 {"input_ids": [8], "correct": 0.0, "group_accuracy": 0.0}], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert b["correct"].tolist() == [1.0, 0.0]
    assert b["anchor_pos"].shape == (2, 0)


def test_collate_shifts_anchor_positions_by_the_padding():
    b = collate([{"input_ids": [5, 6, 7, 9], "correct": 1.0, "group_accuracy": 0.5,
                  "anchor_pos": [0, 2], "anchor_tgt": [6, 9]},
                 {"input_ids": [8, 4], "correct": 0.0, "group_accuracy": 0.0,
                  "anchor_pos": [0], "anchor_tgt": [4]}], pad_id=0)
    assert b["anchor_pos"].tolist() == [[0, 2], [2, 3]]   # row 2: 2 pads; its filler is n - 1
    assert b["anchor_tgt"].tolist() == [[6, 9], [4, 0]]
    assert b["anchor_mask"].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    ids = b["input_ids"]
    for i in range(2):  # each real anchor's target is the token after it
        for j in range(2):
            if b["anchor_mask"][i, j]:
                assert ids[i, b["anchor_pos"][i, j] + 1] == b["anchor_tgt"][i, j]


def test_encode_ends_with_suffix_digit_and_anchors_the_solution_line_breaks(tokenizer_dir):
    from transformers import AutoTokenizer

    from train.confidence import DIGITS, SUFFIX, Example, encode, end_of_turn_id

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    suffix = tok(SUFFIX, add_special_tokens=False)["input_ids"]
    ex = Example("q7#0", "What is 2 + 3?", None, "Step 1:\n2 + 3 = 5.\n\nSo \\boxed{5}", True, 1.0)
    plain = encode(ex, tok, suffix, 1024)
    assert plain["input_ids"][-len(suffix):] == suffix and plain["anchor_pos"] == []
    e = encode(ex, tok, suffix, 1024, end_id=end_of_turn_id(tok), max_anchors=48)
    assert e["input_ids"][:-1] == plain["input_ids"]
    assert tok.convert_ids_to_tokens(e["input_ids"][-1]) in DIGITS
    assert e == encode(ex, tok, suffix, 1024, end_of_turn_id(tok), 48)  # same digit every time
    n_text = len(plain["input_ids"]) - len(suffix)
    assert e["anchor_pos"] and all(p < n_text - 1 for p in e["anchor_pos"])
    for p, t in zip(e["anchor_pos"], e["anchor_tgt"]):
        assert e["input_ids"][p + 1] == t
        assert "\n" in tok.decode([e["input_ids"][p]]) + tok.decode([t])
    assert tok.convert_ids_to_tokens(end_of_turn_id(tok)) == "<|im_end|>"
    assert len(encode(ex, tok, suffix, 1024, end_of_turn_id(tok), 1)["anchor_pos"]) == 1


# ------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    from corea.backends.weights import safetensors_checkpoint

    try:
        return safetensors_checkpoint("embedded:slm", "~/.cache/corea")
    except Exception as e:  # missing embedded weights package, no disk, ...
        pytest.skip(f"the embedded SLM checkpoint can't be built: {type(e).__name__}: {e}")


def toy_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for i in range(6):
        ok = i % 2 == 0
        rows.append({"id": f"t{i}", "question": f"What is {i} + {i}?", "gold": str(2 * i),
                     "slm_correct": ok, "llm_correct": True,
                     "slm": {"text": f"{i} + {i} = \\boxed{{{2 * i if ok else 7}}}\nConfidence: 0.9",
                             "answer": str(2 * i if ok else 7), "answer_method": "free",
                             "finish_reason": "stop"}})
    (run / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "run.json").write_text(json.dumps({"split": "train", "dataset": "toy"}))
    return run


@pytest.mark.parametrize("estimator", ["exact", "grpo"])
def test_cpu_smoke_run_logs_saves_and_resumes(tmp_path, tokenizer_dir, estimator):
    from train.confidence import main

    out = tmp_path / "out"
    argv = ["--model", "tiny-random", "--runs", str(toy_run(tmp_path)), "--estimator", estimator,
            "--output_dir", str(out), "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--save_steps", "1",
            "--report_to", "none", "--use_cpu", "true", "--use_peft", "true",
            "--disable_tqdm", "true", "--lora_target_modules", "q_proj", "v_proj"]
    assert main(argv + ["--max_steps", "2"]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "calibration/ece" in x]
    assert [x["step"] for x in steps] == [1, 2]
    assert 0 <= steps[0]["calibration/mean_confidence"] <= 0.9
    assert steps[0]["seconds_per_step"] > 0 and steps[0]["format/nll"] > 0
    assert steps[0]["format/end_nll"] > 0 and steps[0]["format/anchor_nll"] > 0
    assert 0 < steps[0]["format/digit_mass"] <= 1
    assert (out / "checkpoint-2" / "adapter_config.json").is_file()
    from corea.jobs import read_confidences

    conf, y, logged = read_confidences(out)
    assert logged == [1, 2] and len(conf) == len(y) == 4  # batch 2 per step
    assert read_confidences(out, last_steps=1)[2] == [2]
    assert json.loads((out / "train_ids.json").read_text()) == [f"t{i}" for i in range(6)]
    check_teacher_forced_scores(out / "checkpoint-2", tokenizer_dir, tmp_path)
    assert main(argv + ["--max_steps", "3", "--resume_from_checkpoint", "last"]) == 0
    assert (out / "checkpoint-3").is_dir()
    (tmp_path / "x").mkdir()
    test_run = toy_run(tmp_path / "x")
    (test_run / "run.json").write_text(json.dumps({"split": "test"}))
    assert main(["--model", "tiny-random", "--runs", str(test_run), "--output_dir",
                 str(tmp_path / "bad"), "--report_to", "none", "--use_cpu", "true"]) == 2


def test_the_app_job_manager_runs_the_confidence_recipe(tmp_path, tokenizer_dir):
    from corea.jobs import DeviceInfo, JobManager, read_metrics
    from corea.store.storage import open_store

    store, _ = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    m = JobManager(store, runs_root=tmp_path / "runs",
                   device=DeviceInfo("cpu", "CPU", "CPU (test)"))
    rid = m.start_training("cpu-calibrate-0.5b", max_steps=2, model="tiny-random",
                           extra_args=["--runs", str(toy_run(tmp_path)),
                                       "--per_device_train_batch_size", "2",
                                       "--gradient_accumulation_steps", "1",
                                       "--save_steps", "1", "--lora_top_layers", "1"])
    job = m.wait(rid, 240)
    assert job["status"] == "completed", log_of(job)
    metrics = read_metrics(job["output_dir"])
    steps = [x for x in metrics if "calibration/ece" in x]
    assert [x["step"] for x in steps] == [1, 2]
    assert all(-1 <= x["rewards/calibration/mean"] <= 0 for x in steps)


def log_of(job):
    from corea.jobs import log_tail

    return log_tail(job.get("log_path") or "", 40) if job else "no job"


def check_teacher_forced_scores(checkpoint, tokenizer_dir, tmp_path):
    """train.score_confidence on a tiny checkpoint: trained questions are skipped by default,
    the expected and greedy confidences are in [0, 0.9], and the adapter changes them."""
    from transformers import AutoTokenizer

    from train.grpo import tiny_random_model
    from train.score_confidence import format_table, score

    def base():
        return tiny_random_model(tokenizer_dir, 42), AutoTokenizer.from_pretrained(tokenizer_dir)

    with pytest.raises(ValueError, match="no usable solution"):
        score(str(checkpoint), [str(tmp_path / "run")], base=base())
    res = score(str(checkpoint), [str(tmp_path / "run")], include_trained=True, base=base())
    assert res["n_questions"] == 6 and res["skipped_trained"] == 0
    for who in ("adapter", "base"):
        for how in ("expected", "greedy"):
            s = res[who][how]
            assert s["n"] == 6 and 0 <= s["mean"] <= 0.9 and s["accuracy"] == 0.5
    assert res["adapter"]["expected"]["mean"] != res["base"]["expected"]["mean"]
    assert "| adapter, greedy digit |" in format_table(res)


def test_confidence_scoped_run_trains_only_the_confidence_line(tmp_path, tokenizer_dir):
    """``adapter_scope: confidence``: the saved adapter says so; the scoped forward pass equals a
    full pass of the base over the prefix followed by the adapter over the tail, and the adapter
    does not touch what the base predicts inside the solution."""
    import torch

    from corea.adapters import adapter_scope
    from train.confidence import main, scoped_forward

    out = tmp_path / "out"
    argv = ["--model", "tiny-random", "--runs", str(toy_run(tmp_path)), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
            "--logging_steps", "1", "--save_steps", "2", "--report_to", "none",
            "--use_cpu", "true", "--use_peft", "true", "--disable_tqdm", "true",
            "--lora_target_modules", "q_proj", "v_proj", "--adapter_scope", "confidence",
            "--max_steps", "2"]
    assert main(argv) == 0
    assert adapter_scope(out / "checkpoint-2") == "confidence" == adapter_scope(out)
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in steps if "calibration/ece" in x]
    assert len(steps) == 2 and steps[0]["format/anchor_nll"] == 0  # no anchors when scoped
    check_teacher_forced_scores(out / "checkpoint-2", tokenizer_dir, tmp_path)

    from peft import PeftModel
    from transformers import AutoTokenizer

    from train.grpo import tiny_random_model

    model = PeftModel.from_pretrained(tiny_random_model(tokenizer_dir, 42), out / "checkpoint-2")
    model.eval()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = torch.tensor([tok("Q: 2+2? A: 4\nConfidence: 0.7", add_special_tokens=False)
                        ["input_ids"]])
    n, tail = ids.size(1), 4
    mask = torch.ones_like(ids)
    pos = torch.arange(n)[None, :]
    batch = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    cache: dict = {}
    with torch.no_grad():
        scoped = scoped_forward(model, batch, tail).logits
        for _ in range(2):  # computes the prefix KV, then reuses it
            cached = scoped_forward(model, {**batch, "row": torch.tensor([7])}, tail, cache)
            assert torch.allclose(cached.logits, scoped, atol=1e-5)
        assert list(cache) == [7]
        # a padded batch: the cached unpadded prefix is re-padded on the left
        pad_ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
        pad_mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), mask], 1)
        pad_pos = (pad_mask.cumsum(1) - 1).clamp(min=0)
        padded = scoped_forward(model, {"input_ids": pad_ids, "attention_mask": pad_mask,
                                        "position_ids": pad_pos, "row": torch.tensor([7])},
                                tail, cache).logits
        assert torch.allclose(padded, scoped, atol=1e-4)
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        adapted = model(input_ids=ids).logits
    assert scoped.shape[1] == tail
    assert not torch.allclose(scoped, base[:, n - tail:], atol=1e-5)    # the adapter acts ...
    assert not torch.allclose(scoped, adapted[:, n - tail:], atol=1e-5)  # ... on a base prefix
    with torch.no_grad():  # the same as base KV then adapter, token by token
        with model.disable_adapter():
            past = model(input_ids=ids[:, :n - tail], use_cache=True).past_key_values
        step = model(input_ids=ids[:, n - tail:], past_key_values=past,
                     position_ids=pos[:, n - tail:]).logits
    assert torch.allclose(scoped, step, atol=1e-5)
