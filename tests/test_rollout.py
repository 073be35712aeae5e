"""Forced-suffix rollouts (train.rollout): the cascade's forcing applied to GRPO completions —
token layout, env_mask, the ``forced`` column, the format reward — and a short smoke run."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest

pytest.importorskip("trl")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

from corea.prompts import ANSWER_SUFFIX, CONFIDENCE_SUFFIX  # noqa: E402
from train.rewards import batch_metrics, format_reward  # noqa: E402
from train.rollout import ForcedSuffixRollout, missing  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("COREA_CACHE_DIR", "~/.cache/corea"))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from corea.backends.weights import safetensors_checkpoint

    try:
        return AutoTokenizer.from_pretrained(safetensors_checkpoint("embedded:slm", CACHE))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no embedded SLM tokenizer: {type(e).__name__}: {e}")


def test_missing_parses_like_the_cascade():
    assert missing("so \\boxed{3}\nConfidence: 0.8") == (False, False)
    assert missing("so \\boxed{3}") == (False, True)
    assert missing("Step 1: 2 + 1 =") == (True, True)


def test_format_reward_pays_only_self_written_answers_and_confidences():
    done = "\\boxed{3}\nConfidence: 0.8"
    assert format_reward([done, done, done], forced=["", "confidence", "answer+confidence"]) \
        == [1.0, 0.0, 0.0]
    assert format_reward([done]) == [1.0]  # no column: plain rollouts
    m = batch_metrics([done, done], ["3", "3"], forced=["", "confidence"])
    assert m["forced_confidence"] == 0.5 and m["no_confidence"] == 0.0
    assert batch_metrics([done], ["3"])["forced_confidence"] is None


def scripted_trainer(tokenizer, free_texts, continuations):
    """A stand-in for GRPOTrainer with scripted free completions and forced continuations."""
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    calls = []

    def generate_single_turn(prompt_ids, images, fields, n):
        assert images is None and len(prompt_ids) == len(free_texts)
        return [tokenizer(t, add_special_tokens=False)["input_ids"] + ([eos] if end else [])
                for t, end in free_texts], None

    tr = SimpleNamespace(processing_class=tokenizer, eos_token_ids=[eos], use_vllm=False,
                         num_generations=2, _generate_single_turn=generate_single_turn)
    script = iter(continuations)

    def fake_continue(self, trainer, seqs):
        calls.append([tokenizer.decode(s) for s in seqs])
        return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in next(script)]

    return tr, calls, fake_continue, eos


def test_rollout_layout(tokenizer, monkeypatch):
    prompts = [[{"role": "user", "content": "What is 1 + 2?"}]] * 4
    free = [("1 + 2 = 3, so \\boxed{3}\nConfidence: 0.9", True),   # complete: untouched
            ("1 + 2 = 3, so \\boxed{3}", True),                     # no confidence
            ("Step 1: we add one and", True),                       # ended: no answer, no conf
            ("Step 1: we add one and two", False)]                  # cut at the budget
    conts = [[" 3\nmore"],                     # stage 1 (answer) for row 2: stops at the newline
             [" 0.6\n", " 0.2<|im_end|>"]]   # stage 2 (confidence) for rows 1 and 2
    tr, calls, fake_continue, eos = scripted_trainer(tokenizer, free, conts)
    monkeypatch.setattr(ForcedSuffixRollout, "_continue", fake_continue)
    out = ForcedSuffixRollout()(prompts, tr)

    # the cut-off completion gets nothing forced, as the cascade (corea.policy.needs_forcing)
    assert out["forced"] == ["", "confidence", "answer+confidence", ""]
    assert out["logprobs"] is None and len(out["prompt_ids"]) == 4
    assert out["completion_ids"][3] == tokenizer(free[3][0], add_special_tokens=False)["input_ids"]
    assert all(out["env_mask"][3])
    texts = [tokenizer.decode(c) for c in out["completion_ids"]]
    assert texts[0] == free[0][0] + "<|im_end|>"
    assert texts[1] == free[1][0] + CONFIDENCE_SUFFIX + " 0.6<|im_end|>"
    assert texts[2] == free[2][0] + ANSWER_SUFFIX + " 3" + CONFIDENCE_SUFFIX + " 0.2<|im_end|>"
    # the forced continuation sees the prompt + the completion so far (the free EOS dropped)
    assert calls[0][0].endswith("we add one and" + ANSWER_SUFFIX)
    assert calls[1][0].endswith("\\boxed{3}" + CONFIDENCE_SUFFIX)
    for ids, mask, f in zip(out["completion_ids"], out["env_mask"], out["forced"]):
        assert len(ids) == len(mask)
        own = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        other = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
        if not f:
            assert all(mask)
        else:  # suffixes and the closing EOS are not the model's; the values are
            assert "Confidence:" in other and "Confidence" not in own and other.endswith(
                "<|im_end|>") and ids[-1] == eos
    own2 = tokenizer.decode([t for t, m in zip(out["completion_ids"][2], out["env_mask"][2]) if m])
    assert own2 == free[2][0] + " 3 0.2"
    # the rewards now see a confidence in every completion
    done = [tokenizer.decode(c, skip_special_tokens=True) for c in out["completion_ids"]]
    assert [missing(t)[1] for t in done] == [False, False, False, True]


def test_rollout_refuses_vllm(tokenizer):
    tr = SimpleNamespace(use_vllm=True)
    with pytest.raises(ValueError, match="use_vllm"):
        ForcedSuffixRollout()([], tr)


def test_smoke_run_with_forced_suffix(tmp_path, tokenizer):
    """Two GRPO steps of the tiny random model with forced-suffix rollouts: every completion has
    a confidence (forced or not), the logs are finite, and the parameters moved."""
    from pathlib import Path

    from train import grpo

    repo = Path(__file__).resolve().parents[1]
    data = tmp_path / "mini.jsonl"
    import json
    data.write_text("".join(json.dumps({"id": f"m{i}", "question": f"What is {i} + {i}?",
                                        "answer": str(2 * i)}) + "\n" for i in range(8)))
    trainer = grpo.main(["--config", str(repo / "train" / "recipes" / "cpu-smoke.yaml"),
                         "--output_dir", str(tmp_path / "run"), "--max_steps", "2",
                         "--dataset", str(data), "--forced_suffix", "true",
                         "--forced_max_new_tokens", "4"])
    logs = [r for r in trainer.state.log_history if "calibration/no_confidence" in r]
    assert len(logs) == 2
    for r in logs:
        for k, v in r.items():
            if isinstance(v, (int, float)):
                assert math.isfinite(v), (k, v)
        # the random model never writes a confidence itself: every completion that ended on its
        # own was forced, the ones cut off at their budget have none (as in the cascade); a
        # forced value the random model garbles counts in both shares
        assert r["calibration/forced_confidence"] + r["calibration/no_confidence"] \
            >= 1.0 - 1e-9
        assert r["rewards/format/mean"] == 0.0  # forced answers/confidences earn no format


def test_forcing_follows_the_cascade_rule():
    """train.rollout forces exactly what corea.policy.needs_forcing says (auto mode): nothing
    after a completion cut off at its budget (before: an answer and a confidence were forced)."""
    from train.rollout import finish_reason, forcing

    eos = {9}
    assert finish_reason([1, 2, 9], eos) == "stop" and finish_reason([1, 2], eos) == "length"
    assert finish_reason([], eos) == "length"
    assert forcing("we add one and", [1, 2], eos) == ()
    assert forcing("we add one and", [1, 9], eos) == ("answer", "confidence")
    assert forcing("so \\boxed{3}", [1, 9], eos) == ("confidence",)
    assert forcing("so \\boxed{3}\nConfidence: 0.8", [1, 9], eos) == ()
