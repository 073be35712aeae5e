"""train.gpu_run: the one-command GRPO run (evaluate base, train, evaluate trained, card), its
GPU refusal and the whole pipeline on CPU with the cpu-smoke recipe's tiny random model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from train import gpu_run

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"
DATA_DIR = Path(os.environ.get("COREA_DATA_DIR", REPO.parent / "shared" / "data"))
CACHE = os.path.expanduser(os.environ.get("COREA_CACHE_DIR", "~/.cache/corea"))


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(gpu_run, "gpu_name", lambda: None)


def test_recipe_values_apply_overrides():
    v = gpu_run.recipe_values(RECIPES / "gpu-7b.yaml",
                              ["--max_steps", "3", "--use_vllm=false", "--use_lora",
                               "--lora_target_modules", "q_proj", "v_proj", "--model",
                               "tiny-random"])
    assert v["max_steps"] == 3 and v["use_vllm"] is False and v["use_lora"] is True
    assert v["lora_target_modules"] == ["q_proj", "v_proj"] and v["model"] == "tiny-random"
    assert v["bf16"] is True and v["advantage"] == "blockwise"  # untouched recipe values


def test_backend_choice(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # vllm "installed"
    assert gpu_run.choose_backend("auto", "NVIDIA H100", "Qwen/Qwen2.5-1.5B-Instruct") == "vllm"
    assert gpu_run.choose_backend("auto", None, "Qwen/Qwen2.5-1.5B-Instruct") == "transformers"
    assert gpu_run.choose_backend("auto", "NVIDIA H100", "embedded:slm") == "transformers"
    assert gpu_run.choose_backend("transformers", "NVIDIA H100", "x") == "transformers"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert gpu_run.choose_backend("auto", "NVIDIA H100", "Qwen/x") == "transformers"


@pytest.mark.parametrize("recipe", ["gpu-1.5b", "gpu-7b"])
def test_gpu_recipe_without_gpu_exits_2_with_one_line(recipe, no_gpu, tmp_path, capsys):
    out = tmp_path / "run"
    assert gpu_run.main(["--config", str(RECIPES / f"{recipe}.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a GPU" in err
    # --allow-cpu is for the tiny model only
    assert gpu_run.main(["--config", str(RECIPES / f"{recipe}.yaml"), "--out", str(out),
                         "--allow-cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tiny" in err
    assert not out.exists()


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert gpu_run.main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert gpu_run.main(["--config", str(RECIPES / "cpu-smoke.yaml"), "--output_dir", "x"]) == 2
    assert gpu_run.main(["--config", str(RECIPES / "cpu-smoke.yaml"), "--items", "0"]) == 2
    assert capsys.readouterr().err.count("error: ") == 3


def test_dry_run_of_a_gpu_recipe_on_cpu(no_gpu, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--config", str(RECIPES / "gpu-1.5b.yaml"), "--out", str(out), "--items", "5",
            "--dry-run", "--allow-cpu", "--model", "tiny-random", "--max_steps", "2"]
    assert gpu_run.main(argv) == 0
    text = capsys.readouterr().out
    train = next(line for line in text.splitlines() if line.startswith("2. "))
    assert "-m train.grpo" in train and f"--output_dir {out / 'train'}" in train
    assert f"--model {out / 'base'}" in train and "--max_steps 2" in train
    assert "--use_vllm false --bf16 false --use_cpu true" in train
    evals = [line for line in text.splitlines() if line.startswith(("1. ", "3. "))]
    assert len(evals) == 2 and all("--slm-only" in e and "--limit 5" in e for e in evals)
    assert "--max-new-tokens 512" in evals[0]  # the recipe's max_completion_length
    assert not out.exists()  # nothing ran
    # without --allow-cpu the dry run says it would refuse
    assert gpu_run.main(argv[:6] + ["--dry-run"]) == 0
    assert "not runnable here (exit 2)" in capsys.readouterr().out


# ------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    pytest.importorskip("trl")
    from corea.backends.weights import safetensors_checkpoint

    try:
        return safetensors_checkpoint("embedded:slm", CACHE)
    except Exception as e:  # missing embedded weights package, no disk, ...
        pytest.skip(f"the embedded SLM checkpoint (tokenizer for tiny-random) can't be built: "
                    f"{type(e).__name__}: {e}")


def _recipe_and_eval_data(tmp_path: Path) -> tuple[Path, list[str]]:
    """The cpu-smoke recipe and the GSM8K test split when the benchmark data is here, else a
    copy of the recipe and evaluation on a small generated .jsonl."""
    if (DATA_DIR / "gsm8k" / "test.jsonl").is_file():
        return RECIPES / "cpu-smoke.yaml", ["--data-dir", str(DATA_DIR), "--data_dir",
                                            str(DATA_DIR)]
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps({"id": f"m{i}", "question": f"What is {i} + {i}?",
                                        "answer": str(2 * i)}) + "\n" for i in range(8)))
    recipe = tmp_path / "smoke.yaml"
    recipe.write_text((RECIPES / "cpu-smoke.yaml").read_text().replace(
        "dataset: gsm8k", f"dataset: {path}"))
    return recipe, ["--dataset", str(path)]


def test_whole_pipeline_on_cpu_with_the_tiny_model(tmp_path, tokenizer_dir):
    recipe, data = _recipe_and_eval_data(tmp_path)
    out = tmp_path / "run"
    argv = ["--config", str(recipe), "--items", "2", "--out", str(out), "--max-new-tokens", "8",
            "--torch-threads", "1", *data, "--max_steps", "1", "--advantage", "blockwise"]
    assert gpu_run.main(argv) == 0

    card = json.loads((out / "card.json").read_text())
    readme = (out / "README.md").read_text()
    # before and after on the same two items, graded
    ids = card["eval"]["item_ids"]
    assert len(ids) == 2 and card["eval"]["same_items"]
    for side in ("eval-before", "eval-after"):
        rows = [json.loads(x) for x in (out / side / "items.jsonl").read_text().splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(ids)
    assert card["comparison"]["n"] == 2 and card["comparison_error"] is None
    for side in ("before", "after"):  # the tiny model may state no confidence: None, not absent
        assert set(card[side]) >= {"pass_at_1", "ece_10", "brier", "auroc", "mean_confidence"}
        assert 0.0 <= card[side]["pass_at_1"] <= 1.0
    # the recipe, the base and trained models, the training run
    assert card["recipe"] == str(recipe.resolve()) and card["model"] == "tiny-random"
    assert card["recipe_values"]["advantage"] == "blockwise" and card["train_steps"] == 1
    assert card["base_model"] == str(out / "base") and card["trained_model"] == str(out / "train")
    assert (out / "train" / "model.safetensors").is_file()
    assert card["eval"]["backend"] == "transformers" and card["eval"]["max_new_tokens"] == 8
    # machine, wall time, regenerate command
    assert card["machine"]["gpu"] is None and card["machine"]["packages"]["trl"]
    assert "hostname" not in card["machine"]
    assert set(card["wall_s"]) == {"before_eval", "train", "after_eval", "total"}
    assert all(v > 0 for v in card["wall_s"].values())
    assert card["command"].startswith("python -m train.gpu_run --config ")
    assert "--max_steps 1" in card["command"]
    assert "| pass@1 |" in readme and card["command"] in readme and "GPU: none" in readme


def test_a_lora_result_is_merged_for_the_evaluation(tmp_path, tokenizer_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.grpo import tiny_random_model

    base = tmp_path / "run" / "base"
    tiny_random_model(tokenizer_dir).save_pretrained(base)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(base)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                          LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    train = tmp_path / "run" / "train"
    lora.save_pretrained(train)
    tok.save_pretrained(train)
    plan = gpu_run.Plan(recipe=RECIPES / "cpu-smoke.yaml", recipe_values={}, out=tmp_path / "run",
                        model="tiny-random", base_model=str(base), gpu=None,
                        backend="transformers", dataset="gsm8k", split="test", items=1, seed=None,
                        data_dir=None, max_new_tokens=8, workers=1, torch_threads=1)

    merged = gpu_run.trained_model(plan)
    assert merged == str(tmp_path / "run" / "merged")
    model = AutoModelForCausalLM.from_pretrained(merged)  # full weights: what vLLM can load
    assert not (Path(merged) / "adapter_config.json").exists()
    assert (Path(merged) / "tokenizer_config.json").is_file()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        want = lora(ids).logits
        got = model(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    base_logits = AutoModelForCausalLM.from_pretrained(base)(ids).logits
    assert not torch.allclose(got, base_logits, atol=1e-5)  # the adapter did change the model
    # a full-weight result is evaluated where it was saved
    (train / "adapter_config.json").unlink()
    assert gpu_run.trained_model(plan) == str(train)
