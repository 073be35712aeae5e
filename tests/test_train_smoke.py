"""train.grpo: CLI config parsing, data loading, and the cpu-smoke recipe end to end (in-process,
tiny random model with the real Qwen tokenizer; about 30-60 s on 2 CPU cores)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

pytest.importorskip("trl")
# TRL 1.16 still calls transformers' deprecated gradient_checkpointing_* names
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

from train import grpo  # noqa: E402
from train.rewards import confidence_l1  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"
SMOKE = RECIPES / "cpu-smoke.yaml"
DATA_DIR = Path(os.environ.get("COREA_DATA_DIR", REPO.parent / "shared" / "data"))
CACHE = os.path.expanduser(os.environ.get("COREA_CACHE_DIR", "~/.cache/corea"))


# ------------------------------------------------------------------------------ CLI parsing

def test_cli_parses_yaml_and_overrides():
    s, t, m = grpo.parse_args(["--config", str(SMOKE), "--max_steps", "7",
                               "--rewards", "correctness", "brier", "--reward_weights", "1", "0.5",
                               "--num_generations", "4", "--per_device_train_batch_size", "4",
                               "--use_lora", "true", "--lora_target_modules", "q_proj",
                               "v_proj"])
    # from the YAML
    assert s.model == "tiny-random" and s.dataset == "gsm8k" and s.limit == 8
    assert t.use_cpu and not t.bf16 and t.beta == 0.0 and t.loss_type == "dapo"
    assert t.max_completion_length == 16 and t.save_steps == 2 and t.report_to in ([], "none",
                                                                                    ["none"])
    # overridden on the command line
    assert t.max_steps == 7 and t.num_generations == 4 and t.per_device_train_batch_size == 4
    assert s.rewards == ["correctness", "brier"] and t.reward_weights == [1.0, 0.5]
    assert s.use_lora and m.use_peft and m.lora_target_modules == ["q_proj", "v_proj"]


def test_cli_rejects_mismatched_weights_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="reward_weights"):
        grpo.parse_args(["--config", str(SMOKE), "--reward_weights", "1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text() + "\nno_such_option: 1\n")
    with pytest.raises(ValueError, match="no_such_option"):
        grpo.parse_args(["--config", str(bad)])


@pytest.mark.parametrize("recipe", ["cpu-lora-0.5b", "gpu-1.5b", "gpu-7b"])
def test_other_recipes_parse(recipe):
    # bf16 needs a GPU to pass TrainingArguments' checks; everything else is parsed as written
    s, t, m = grpo.parse_args(["--config", str(RECIPES / f"{recipe}.yaml"), "--bf16", "false"])
    assert s.rewards[:2] == ["correctness", "format"] and len(t.reward_weights) == len(s.rewards)
    assert t.beta == 0.0 and t.loss_type == "dapo"
    if recipe.startswith("gpu"):
        assert s.model.startswith("Qwen/Qwen2.5-") and t.use_vllm and t.vllm_mode == "colocate"
        assert t.num_generations == 8 and s.rewards == ["correctness", "format", "confidence_l1"]
    else:
        assert s.model == "embedded:slm" and m.use_peft and m.lora_r == 8 and t.use_cpu
        assert m.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
        assert m.lora_alpha == 16 and m.lora_dropout == 0.0
        assert 2 <= t.num_generations <= 4 and t.max_completion_length == 256
        assert s.forced_suffix and not t.use_vllm


def test_resolve_resume(tmp_path):
    assert grpo.resolve_resume(None, str(tmp_path)) is None
    with pytest.raises(FileNotFoundError):
        grpo.resolve_resume("last", str(tmp_path))
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    assert grpo.resolve_resume("last", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert grpo.resolve_resume("some/dir", str(tmp_path)) == "some/dir"


# ------------------------------------------------------------------------------ data

def test_rated_export_keeps_only_rows_with_a_correct_answer(tmp_path):
    rows = [
        {"id": 1, "question": "1+1?", "final_answer": "2", "rating_thumbs": "up",
         "rating_correction": None},
        {"id": 2, "question": "2+2?", "final_answer": "5", "rating_thumbs": "down",
         "rating_correction": "4"},
        {"id": 3, "question": "3+3?", "final_answer": "7", "rating_thumbs": "down",
         "rating_correction": None},
        {"id": 4, "question": "4+4?", "final_answer": "8", "rating_thumbs": None,
         "rating_correction": None},
        {"id": 5, "question": "5+5?", "final_answer": None, "rating_thumbs": "up",
         "rating_correction": ""},
    ]
    path = tmp_path / "rated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = grpo.ScriptArguments(dataset=str(path))
    got = grpo.load_rows(args)
    assert [(r["id"], r["question"], r["answer"]) for r in got] == [
        ("rated-1", "1+1?", "2"), ("rated-2", "2+2?", "4")]
    ds = grpo.build_dataset(got)
    assert ds[0]["prompt"][0]["role"] == "system" and ds[0]["prompt"][1] == {
        "role": "user", "content": "1+1?"}
    assert ds["answer"] == ["2", "4"] and ds["id"] == ["rated-1", "rated-2"]


def test_plain_jsonl_dataset(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "Pick red.", "choices": ["red", "blue"],
                                "answer": "red"}) + "\n")
    ds = grpo.build_dataset(grpo.load_rows(grpo.ScriptArguments(dataset=str(path))))
    assert ds[0]["answer"] == "A" and ds[0]["choices"] == ["red", "blue"]
    assert "(A) red" in ds[0]["prompt"][1]["content"]


def test_group_accuracy_with_trl_repeat_sampler_layout(monkeypatch):
    """Lay a batch out with TRL's own RepeatSampler, split it over 2 fake processes like
    GRPOTrainer does (rewards are computed per process BEFORE the gather)."""
    from trl.trainer.utils import RepeatSampler

    G, n_proc, per_device = 2, 2, 3
    questions = [f"q{i}" for i in range(6)]
    order = list(RepeatSampler(questions, mini_repeat_count=G, batch_size=n_proc * per_device // G,
                               repeat_count=1, shuffle=True, seed=0))[:n_proc * per_device]
    correct_of = {0: True, 1: False}  # completion k of every prompt: first right, second wrong
    seen: dict[int, int] = {}
    rows = []
    for idx in order:
        k = seen.get(idx, 0)
        seen[idx] = k + 1
        rows.append((idx, "\\boxed{4}" if correct_of[k] else "\\boxed{5}"))
    slices = [rows[p * per_device:(p + 1) * per_device] for p in range(n_proc)]
    assert {r[0] for r in slices[0]} & {r[0] for r in slices[1]}  # a group straddles processes

    def run(p):
        local = slices[p]
        comps = [[{"role": "assistant", "content": f"{t}\nConfidence: 0.5"}] for _, t in local]
        kw = dict(prompts=[[{"role": "user", "content": questions[i]}] for i, _ in local],
                  answer=["4"] * len(local), id=[questions[i] for i, _ in local])
        return comps, kw

    from train import rewards as R

    payloads = []
    for p in range(n_proc):  # what each process contributes to the all-gather
        comps, kw = run(p)
        _, ok = R._judge_all(comps, kw["answer"], kw)
        payloads.append(list(zip(R._group_keys(len(comps), kw), ok)))
    for p in range(n_proc):
        comps, kw = run(p)
        monkeypatch.setattr(R, "_all_gather",
                            lambda obj, p=p: [obj if q == p else payloads[q] for q in range(n_proc)])
        out = confidence_l1(completions=comps, **kw)
        assert out == pytest.approx([0.0] * len(comps))  # every group: 1 of 2 right, conf 0.5


# ------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    from corea.backends.weights import safetensors_checkpoint

    try:
        return safetensors_checkpoint("embedded:slm", CACHE)
    except Exception as e:  # missing embedded weights package, no disk, ...
        pytest.skip(f"the embedded SLM checkpoint (tokenizer for tiny-random) can't be built: "
                    f"{type(e).__name__}: {e}")


def _dataset_args(tmp_path: Path) -> list[str]:
    if (DATA_DIR / "gsm8k" / "train.jsonl").is_file():
        return ["--data_dir", str(DATA_DIR)]  # the recipe's own dataset
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps({"id": f"m{i}", "question": f"What is {i} + {i}?",
                                        "answer": str(2 * i)}) + "\n" for i in range(8)))
    return ["--dataset", str(path)]


def _finite_logs(history: list[dict]) -> None:
    assert history
    for rec in history:
        for k, v in rec.items():
            assert v is not None, k
            if isinstance(v, (int, float)):
                assert math.isfinite(v), (k, v)


def test_cpu_smoke_recipe_end_to_end(tmp_path, tokenizer_dir):
    import torch

    out = tmp_path / "run"
    argv = ["--config", str(SMOKE), "--output_dir", str(out), *_dataset_args(tmp_path)]
    trainer = grpo.main(argv)

    assert trainer.state.global_step == 3
    # a checkpoint on the schedule (save_steps 2) and the final model
    ckpt = out / "checkpoint-2"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "trainer_state.json").is_file()
    assert (out / "model.safetensors").is_file()

    # parameters moved away from the (seeded) initialisation
    init = grpo.tiny_random_model(tokenizer_dir, seed=trainer.args.seed).state_dict()
    trained = trainer.model.state_dict()
    changed = [k for k, v in trained.items() if not torch.equal(v.cpu(), init[k])]
    assert changed, "no parameter changed"
    assert any("layers.0" in k for k in changed)

    # every logged metric is finite; rewards and batch calibration metrics were logged per step
    history = trainer.state.log_history
    _finite_logs(history)
    steps = [h for h in history if "reward" in h]
    assert len(steps) == 3
    for h in steps:
        for key in ("rewards/correctness/mean", "rewards/format/mean",
                    "rewards/confidence_l1/mean", "calibration/accuracy",
                    "calibration/no_confidence"):
            assert key in h, key
        assert -1.0 <= h["rewards/confidence_l1/mean"] <= 0.0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    _finite_logs(lines)
    assert [x["step"] for x in lines if "reward" in x] == [1, 2, 3]

    # resume from the newest checkpoint with a new save schedule: the command line's save_steps
    # wins over the checkpoint's (transformers alone would keep saving every 2 steps: no 5)
    trainer2 = grpo.main([*argv, "--max_steps", "6", "--save_steps", "1",
                          "--resume_from_checkpoint", "last"])
    assert trainer2.state.global_step == 6 and trainer2.state.save_steps == 1
    assert (out / "checkpoint-5" / "model.safetensors").is_file()
    assert (out / "checkpoint-6" / "model.safetensors").is_file()

    # the trained folder answers as the SLM of the cascade (what "Use as SLM in Ask" does)
    from corea.backends.fake import FakeBackend
    from corea.config import Settings
    from corea.events import Final
    from corea.service import CoreaService

    svc = CoreaService(Settings(db_url=f"sqlite:///{tmp_path / 'ask.sqlite'}"),
                       llm=FakeBackend(["\\boxed{1}"], model_name="l"))
    name = svc.use_slm(str(out))
    assert name == f"{tmp_path.name}/run" and svc.settings.slm.backend == "transformers"
    svc.settings = svc.settings.model_copy(update={"slm": svc.settings.slm.model_copy(
        update={"max_new_tokens": 8}), "forced_max_new_tokens": 4})
    final = [e for e in svc.ask("What is 1+1?") if isinstance(e, Final)][0].result
    assert final.status == "ok" and final.slm.model == name and final.slm.completion_tokens > 0
    assert final.slm.signals["n_tokens"] > 0 and final.slm.signals["solution_prob"] is not None
    assert svc.store.get_interaction(final.interaction_id)["slm_model"] == name


def test_cpu_smoke_recipe_with_lora(tmp_path, tokenizer_dir):
    import torch

    out = tmp_path / "lora"
    trainer = grpo.main(["--config", str(SMOKE), "--output_dir", str(out), "--max_steps", "2",
                         "--use_lora", "true", "--lora_target_modules", "q_proj", "v_proj",
                         *_dataset_args(tmp_path)])
    assert trainer.state.global_step == 2
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    _finite_logs(trainer.state.log_history)
    params = dict(trainer.model.named_parameters())
    trainable = [k for k, p in params.items() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    # LoRA B starts at zero: a non-zero B means the adapters were trained
    assert any(torch.count_nonzero(params[k]) for k in trainable if "lora_B" in k)
    init = grpo.tiny_random_model(tokenizer_dir, seed=trainer.args.seed).state_dict()
    base = trainer.model.get_base_model().state_dict()
    for k, v in init.items():  # the frozen base weights did not move
        mod, _, leaf = k.rpartition(".")
        key = k if k in base else f"{mod}.base_layer.{leaf}"
        assert torch.equal(base[key].cpu(), v), k



def test_cpu_smoke_recipe_with_blockwise_advantages(tmp_path, tokenizer_dir):
    out = tmp_path / "blockwise"
    trainer = grpo.main(["--config", str(SMOKE), "--output_dir", str(out), "--max_steps", "2",
                         "--advantage", "blockwise", "--forced_suffix", "true",
                         *_dataset_args(tmp_path)])
    assert trainer.state.global_step == 2
    _finite_logs(trainer.state.log_history)
    steps = [h for h in trainer.state.log_history if "reward" in h]
    # the random model's completions are cut off at their 16-token budget, and a cut-off
    # completion gets no forced confidence (corea.policy.needs_forcing, as in the cascade): the
    # confidence span may be empty; the spans themselves are tested in tests/test_blockwise.py
    assert steps and all(0 <= h["blockwise/confidence_token_share"] <= 1 for h in steps)
    assert (out / "checkpoint-2").is_dir()
