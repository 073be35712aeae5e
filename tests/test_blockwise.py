"""Blockwise advantages: the confidence span on literal token sequences, group normalisation, the
per-token advantages, and a CPU smoke run of train.grpo with --advantage blockwise."""

from __future__ import annotations

import doctest
import math

import pytest

torch = pytest.importorskip("torch")

import train.blockwise as bw  # noqa: E402
from train.blockwise import (blockwise_advantages, confidence_token_mask,  # noqa: E402
                             group_normalize)


def test_doctests():
    assert doctest.testmod(bw).failed == 0


@pytest.mark.parametrize("tokens, want", [
    (["So", " \\boxed{4}", "\n", "Confidence", ":", " 0", ".", "8"],
     [0, 0, 0, 1, 1, 1, 1, 1]),
    # a forced suffix: "\nConfidence:" then the sampled value
    (["x", " \\boxed{4}", "\n", "Conf", "idence", ":", " ", "0", ".", "3", "<|im_end|>"],
     [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]),
    # prose mentioning confidence is not the label; the last label wins
    (["I", " have low confidence", " here.", " Confidence: 0.9", "\n", "Confidence", ": 0.4"],
     [0, 0, 0, 0, 0, 1, 1]),
    (["**", "Confidence", ":**", " 85%"], [0, 1, 1, 1]),
    (["no", " label", " at all"], [0, 0, 0]),
    ([], []),
])
def test_confidence_span_on_literal_tokens(tokens, want):
    assert confidence_token_mask(tokens) == [bool(x) for x in want]


def test_group_normalize_ignores_nan_and_zero_std_gives_zero():
    r = torch.tensor([1.0, 0.0, float("nan"), 1.0, 1.0, 1.0, 1.0, 1.0])
    a = group_normalize(r, 4)
    m = (1 + 0 + 1) / 3
    sd = math.sqrt(((1 - m) ** 2 * 2 + m ** 2) / 3)
    assert a[0].item() == pytest.approx((1 - m) / (sd + 1e-4), rel=1e-4)
    assert a[2].item() == 0.0 and torch.allclose(a[4:], torch.zeros(4))


def test_each_span_gets_its_own_rewards_advantage():
    # two groups of 2; rewards: correctness (solution), confidence_l1 (calibration)
    r = torch.tensor([[1.0, -0.9], [0.0, -0.1], [1.0, -0.5], [1.0, -0.5]])
    w = torch.tensor([1.0, 1.0])
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    a = blockwise_advantages(r, w, [False, True], 2, mask)
    # group 1: correctness +1 / -1, calibration -1 / +1 (the right answer was overconfident)
    assert a[0, 0] > 0 and a[0, 2] < 0 and a[1, 0] < 0 and a[1, 2] > 0
    assert a[0, 0] == pytest.approx(-a[0, 2], rel=1e-4)
    # group 2: equal rewards -> all zero; row 3 has no confidence span -> A_sol + A_conf
    assert torch.allclose(a[2:], torch.zeros(2, 4))
    plain = blockwise_advantages(r, w, [False, True], 2, torch.zeros(4, 4, dtype=torch.bool))
    assert torch.allclose(plain[0], torch.full((4,), (a[0, 0] + a[0, 2]).item()))


def test_recorder_keeps_name_and_outputs():
    def correctness(completions, **kw):
        return [1.0, None]

    rec = bw.RewardRecorder(correctness)
    assert rec(["a", "b"]) == [1.0, None] and rec.last == [1.0, None]
    assert rec.__name__ == "correctness"
    assert bw.record_rewards([rec])[0] is rec
