"""Reward functions of train.rewards on literal completions (no model, no trainer)."""

from __future__ import annotations

import math
import pickle

import pytest

from train import rewards as R
from train.rewards import (CalibrationReward, REWARDS, WithBatchMetrics, batch_metrics, brier,
                           confidence_l1, confidence_l2, correctness, format_reward, get_reward,
                           group_accuracy, log_score)

LOG_MIN = math.log(1e-4)
BAD_GOLD = "\\frac{"  # math-verify cannot parse it: ungradable


def msg(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def good(ans: str, conf: str) -> list[dict[str, str]]:
    return msg(f"Step 1: 2 + 2 = 4.\nSo the answer is \\boxed{{{ans}}}.\nConfidence: {conf}")


CALIBRATION = [confidence_l1, confidence_l2, brier, log_score]
ALL = [correctness, format_reward, *CALIBRATION]


def call(f, completions, answer, **kw):
    kw.setdefault("prompts", [[{"role": "user", "content": "q"}]] * len(completions))
    return f(completions=completions, answer=answer, **kw)


def finite_or_none(xs):
    return all(x is None or (isinstance(x, float) and math.isfinite(x)) for x in xs)


# ------------------------------------------------------------------------------ registry

def test_registry_names_match_dunder_name():
    assert list(REWARDS) == ["correctness", "format", "confidence_l1", "confidence_l2", "brier",
                             "log_score"]
    for name, f in REWARDS.items():
        assert f.__name__ == name
        assert get_reward(name) is f
    assert get_reward("calibration") is confidence_l1
    assert get_reward("distinct_chars") is R.distinct_chars  # debug reward, not in REWARDS
    assert get_reward("train.rewards.brier") is brier  # dotted import path


def test_get_reward_params_and_errors():
    r = get_reward("log_score", eps=1e-3)
    assert isinstance(r, CalibrationReward) and r.__name__ == "log_score" and r.eps == 1e-3
    assert r is not log_score and log_score.eps == 1e-4
    assert call(r, [msg("")], ["4"]) == [pytest.approx(math.log(1e-3))]
    with pytest.raises(KeyError):
        get_reward("nope")
    with pytest.raises(TypeError):
        get_reward("correctness", eps=0.1)
    with pytest.raises(ValueError):
        CalibrationReward("hinge")


def test_picklable():
    for f in [*ALL, get_reward("log_score", eps=1e-3), WithBatchMetrics(correctness)]:
        g = pickle.loads(pickle.dumps(f))
        assert g.__name__ == f.__name__
        assert call(g, [good("4", "0.9")], ["4"]) == call(f, [good("4", "0.9")], ["4"])


def test_extra_kwargs_ignored_and_plain_strings():
    comps = [good("4", "0.9"), good("5", "0.2")]
    kw = dict(prompts=[[{"role": "user", "content": "q"}]] * 2, completion_ids=[[1], [2]],
              trainer_state=object(), log_extra=lambda *a: None, id=["a", "a"],
              choices=[None, None], unrelated=[1, 2])
    for f in ALL:
        plain = f(completions=[c[0]["content"] for c in comps], answer=["4", "4"], **kw)
        assert f(completions=comps, answer=["4", "4"], **kw) == plain


# ------------------------------------------------------------------------------ correctness

def test_correctness():
    comps = [good("4", "0.9"), good("5", "0.9"), msg("The answer is 4."), good("4.0", "1"),
             msg("\\boxed{1,234}\nConfidence: 0.5")]
    assert call(correctness, comps, ["4", "4", "4", "4", "1234"]) == [1.0, 0.0, 1.0, 1.0, 1.0]


def test_correctness_multiple_choice():
    choices = [["red", "blue", "green"]] * 2
    comps = [msg("\\boxed{B}\nConfidence: 0.7"), msg("\\boxed{C}\nConfidence: 0.7")]
    assert call(correctness, comps, ["B", "B"], choices=choices) == [1.0, 0.0]


def test_edge_empty_completion():
    comps = [msg(""), "", [], None]
    assert call(correctness, comps, ["4"] * 4) == [0.0] * 4
    assert call(format_reward, comps, ["4"] * 4) == [0.0] * 4
    for f in (confidence_l1, confidence_l2, brier):
        assert call(f, comps, ["4"] * 4) == [-1.0] * 4
    assert call(log_score, comps, ["4"] * 4) == [pytest.approx(LOG_MIN)] * 4


def test_edge_truncated_completion():
    comps = [msg("Let me compute: 2 + 2 = 4, then we multiply by"),
             msg("Adding up, we get \\boxed{4")]  # cut inside the box
    assert call(correctness, comps, ["4", "4"]) == [0.0, 0.0]
    assert call(format_reward, comps, ["4", "4"]) == [0.0, 0.0]
    assert call(confidence_l1, comps, ["4", "4"]) == [-1.0, -1.0]


def test_edge_no_parsable_confidence_gets_minimum():
    comps = [msg("\\boxed{4}\nConfidence: high"), msg("\\boxed{4}"),
             msg("\\boxed{4}\nConfidence: 150"), msg("\\boxed{4}\nI have low confidence.")]
    assert call(correctness, comps, ["4"] * 4) == [1.0] * 4
    assert call(format_reward, comps, ["4"] * 4) == [0.0] * 4
    for f in (confidence_l1, confidence_l2, brier):
        assert call(f, comps, ["4"] * 4) == [-1.0] * 4
    assert call(log_score, comps, ["4"] * 4) == [pytest.approx(LOG_MIN)] * 4


def test_edge_ungradable_gold_is_none():
    comps = [good("4", "0.9"), msg(""), msg("no answer here")]
    golds = [BAD_GOLD, "", None]
    assert call(correctness, comps, golds) == [None, None, None]
    for f in CALIBRATION:
        assert call(f, comps, golds) == [None, None, None]
    assert call(format_reward, comps, golds) == [1.0, 0.0, 0.0]  # format does not need gold


# ------------------------------------------------------------------------------ format

@pytest.mark.parametrize("text,want", [
    ("\\boxed{4}\nConfidence: 0.8", 1.0),
    ("Reasoning\nover\nlines.\n\nThe answer is \\boxed{4}.\n\nConfidence: 85%", 1.0),
    ("<think>\nhmm 2+2\n</think>\n\\boxed{4}\nConfidence: 0.8", 1.0),
    ("hmm 2+2 (template pre-filled <think>)\n</think>\n\\boxed{4}\nConfidence: 0.8", 1.0),
    ("\\boxed{4}\n**Confidence:** 0.9", 1.0),
    ("Confidence: 0.8\n\\boxed{4}", 0.0),              # confidence before the answer
    ("\\boxed{4}\nConfidence: 0.8\n\\boxed{5}", 0.0),  # answer changed after the confidence
    ("The answer is 4.\nConfidence: 0.8", 0.0),        # not boxed
    ("\\boxed{4}\nConfidence:", 0.0),
    ("\\boxed{}\nConfidence: 0.8", 0.0),               # empty box
])
def test_format(text, want):
    assert format_reward([msg(text)], ["4"]) == [want]
    assert format_reward([text]) == [want]


# ------------------------------------------------------------------------------ calibration

def test_calibration_values_by_hand():
    # one prompt, G=4: correct at 0.9, wrong at 0.8, correct at 0.5, empty -> group accuracy 0.5
    comps = [good("4", "0.9"), good("5", "0.8"), good("4", "0.5"), msg("")]
    ans = ["4"] * 4
    assert call(correctness, comps, ans) == [1.0, 0.0, 1.0, 0.0]
    assert call(confidence_l1, comps, ans) == pytest.approx([-0.4, -0.3, 0.0, -1.0])
    assert call(confidence_l2, comps, ans) == pytest.approx([-0.16, -0.09, 0.0, -1.0])
    assert call(brier, comps, ans) == pytest.approx([-0.01, -0.64, -0.25, -1.0])
    assert call(log_score, comps, ans) == pytest.approx(
        [math.log(0.9), math.log(0.2), math.log(0.5), LOG_MIN])


def test_log_score_clipped_never_inf_or_nan():
    comps = [good("4", "0"), good("5", "1"), good("4", "1"), good("5", "0")]
    out = call(log_score, comps, ["4"] * 4)
    assert out == pytest.approx([LOG_MIN, LOG_MIN, 0.0, 0.0])
    assert finite_or_none(out)


def test_no_nan_ever():
    comps = [msg(""), good("4", "0"), good("4", "1"), msg("\\boxed{4}\nConfidence: nan"),
             msg("\\boxed{4}\nConfidence: -0.5"), msg("\\boxed{x}\nConfidence: 1.5"), None]
    for gold in ("4", BAD_GOLD):
        for f in ALL:
            out = call(f, comps, [gold] * len(comps))
            assert len(out) == len(comps) and finite_or_none(out), (f.__name__, out)


def test_group_accuracy_trl_layout_single_process():
    # GRPO repeats each prompt G times consecutively (RepeatSampler, mini_repeat_count=G)
    G = 3
    rows = [("gsm-7", "4"), ("gsm-2", "9"), ("gsm-5", "1")]
    ids = [i for i, _ in rows for _ in range(G)]
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in ids]
    answer = [a for _, a in rows for _ in range(G)]
    comps = [good("4", "0.6"), good("4", "0.6"), good("3", "0.6"),   # 2/3 correct
             good("9", "1"), good("9", "1"), good("9", "1"),          # 3/3
             good("0", "0.2"), msg(""), good("1", "0.2")]             # 1/3
    kw = dict(prompts=prompts, answer=answer, completion_ids=[[0]] * 9, choices=[None] * 9)
    with_id = confidence_l1(completions=comps, id=ids, **kw)
    without_id = confidence_l1(completions=comps, **kw)  # falls back to prompt identity
    want = [-abs(0.6 - 2 / 3)] * 3 + [0.0] * 3 + [-abs(0.2 - 1 / 3), -1.0, -abs(0.2 - 1 / 3)]
    assert with_id == pytest.approx(want) and without_id == pytest.approx(want)
    # groups are by identity, not position: shuffling the batch changes nothing per completion
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]
    shuffled = confidence_l1(completions=[comps[i] for i in order],
                             **{k: [v[i] for i in order] for k, v in {**kw, "id": ids}.items()})
    assert shuffled == pytest.approx([want[i] for i in order])


def test_group_accuracy_across_processes():
    # TRL's docstring layout: 2 processes, per-device batch 3, G=2 -> GPU0 holds 0 0 1, GPU1
    # holds 1 2 2: prompt 1's group straddles both processes; rewards run before the gather.
    keys0, correct0 = ["p0", "p0", "p1"], [True, False, True]
    keys1, correct1 = ["p1", "p2", "p2"], [False, True, True]
    gather0 = lambda obj: [obj, list(zip(keys1, correct1))]  # noqa: E731
    assert group_accuracy(keys0, correct0, gather=gather0) == [0.5, 0.5, 0.5]
    assert group_accuracy(keys0, correct0, gather=lambda o: [o]) == [0.5, 0.5, 1.0]
    assert group_accuracy(["a", "a", "b"], [None, True, None]) == [1.0, 1.0, None]


def test_calibration_uses_cross_process_gather(monkeypatch):
    other = [("id:q1", False), ("id:q1", False), ("id:q1", False)]
    monkeypatch.setattr(R, "_all_gather", lambda obj: [obj, other])
    out = confidence_l1(completions=[good("4", "1")], answer=["4"], id=["q1"])
    assert out == pytest.approx([-0.75])  # group accuracy 1/4 over both processes


def test_group_needs_prompt_or_id():
    with pytest.raises(ValueError, match="prompts"):
        confidence_l1(completions=[good("4", "1")], answer=["4"])
    assert brier(completions=[good("4", "1")], answer=["4"]) == [0.0]  # no group needed


# ------------------------------------------------------------------------------ metrics

def test_batch_metrics_by_hand():
    comps = [good("4", "0.9"), good("5", "0.8"), good("4", "0.5"), msg("\\boxed{4}")]
    m = batch_metrics(comps, ["4"] * 4)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["mean_confidence"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    assert m["no_confidence"] == pytest.approx(0.25)
    # ECE, 10 bins: {0.9: correct} |1-0.9|, {0.8: wrong} |0-0.8|, {0.5: correct} |1-0.5|
    assert m["ece"] == pytest.approx((0.1 + 0.8 + 0.5) / 3)
    assert m["brier"] == pytest.approx((0.01 + 0.64 + 0.25) / 3)
    assert m["n"] == 4


def test_batch_metrics_undefined_are_none():
    m = batch_metrics([msg(""), msg("x")], [BAD_GOLD, BAD_GOLD])
    assert m["accuracy"] is None and m["mean_confidence"] is None
    assert m["ece"] is None and m["brier"] is None and m["no_confidence"] == 1.0


def test_with_batch_metrics_logs_through_log_metric():
    logged: dict[str, float] = {}
    f = WithBatchMetrics(correctness)
    assert f.__name__ == "correctness"
    comps = [good("4", "0.9"), msg("")]
    out = f(completions=comps, answer=["4", "4"], log_metric=logged.__setitem__)
    assert out == [1.0, 0.0]
    assert logged == pytest.approx({"calibration/accuracy": 0.5,
                                    "calibration/mean_confidence": 0.9,
                                    "calibration/no_confidence": 0.5,
                                    "calibration/ece": 0.1, "calibration/brier": 0.01})
    assert f(completions=comps, answer=["4", "4"]) == [1.0, 0.0]  # no log_metric: no logging
