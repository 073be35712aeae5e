"""The shared rules of corea.policy: the final answer, forcing and the τ check (scalar and
vector forms agree)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corea.policy import (ANSWER, CONFIDENCE, TierRun, check_threshold, final_tier, final_tiers,
                          needs_forcing)


# ----------------------------------------------------------------------------- check_threshold

@pytest.mark.parametrize("tau", [0, 0.0, 0.7, 1, 1.0, np.float32(0.5)])
def test_check_threshold_accepts(tau):
    assert check_threshold(tau) == pytest.approx(float(tau))
    assert isinstance(check_threshold(tau), float)


@pytest.mark.parametrize("tau", [-0.01, 1.01, math.nan, math.inf, -math.inf, "0.5x", None, True])
def test_check_threshold_refuses_with_the_name(tau):
    with pytest.raises(ValueError, match=r"--fixed-threshold must be"):
        check_threshold(tau, "--fixed-threshold")


def test_settings_use_the_one_check():
    from pydantic import ValidationError

    from corea.config import Settings

    for bad in (math.nan, 1.5):
        with pytest.raises(ValidationError, match=r"threshold must be in \[0, 1\]"):
            Settings(threshold=bad)


# ----------------------------------------------------------------------------- final answer

OK, CUT, NONE = (TierRun.of_output("42", "stop"), TierRun.of_output("42", "length"),
                 TierRun.of_output(None, "stop"))


def test_tier_run_of_output():
    assert OK.usable and not CUT.usable and not NONE.usable
    failed = TierRun.of_output("42", "error", error="timeout: slow")
    assert failed.failed and not failed.usable


def test_kept_first_tier_is_final():
    assert final_tier([OK], 2) == 0


def test_usable_last_tier_is_final():
    assert final_tier([TierRun(True, deferred=True), OK], 2) == 1


@pytest.mark.parametrize("last", [CUT, NONE, TierRun(False, failed=True)])
def test_unusable_last_tier_falls_back_to_the_latest_usable(last):
    slm = TierRun(True, deferred=True)
    assert final_tier([slm, last], 2) == 0
    mid_cut = TierRun(False, deferred=True)
    assert final_tier([slm, mid_cut, last], 3) == 0           # skips the cut-off middle tier
    assert final_tier([slm, TierRun(True, deferred=True), last], 3) == 1


def test_no_usable_answer_anywhere_is_none():
    assert final_tier([TierRun(False, deferred=True), CUT], 2) is None
    # a cut-off last-tier answer is never kept, even with nothing to fall back to
    assert final_tier([TierRun(False, deferred=True), TierRun(False, deferred=True), CUT], 3) \
        is None


def test_cancelled_last_tier_falls_back():
    assert final_tier([TierRun(True, deferred=True), OK], 2, cancelled=True) == 0


def test_run_stopped_at_a_deciding_tier():
    # cancelled before the tier decided: its (partial) text is shown
    assert final_tier([TierRun(False)], 3, cancelled=True) == 0
    # deferred, then stopped before the next tier started: an unusable answer is not shown
    assert final_tier([TierRun(False, deferred=True)], 2, cancelled=True) is None
    assert final_tier([TierRun(True, deferred=True)], 2, cancelled=True) == 0
    assert final_tier([TierRun(True, failed=True)], 2) is None


def test_final_tier_refuses_more_tiers_than_the_cascade():
    with pytest.raises(ValueError):
        final_tier([OK, OK, OK], 2)


def test_vector_twin_agrees_with_the_scalar_rule():
    rng = np.random.default_rng(7)
    for t in (1, 2, 3, 4):
        n = 3000
        u, f, d = (rng.random((n, t)) < p for p in (0.6, 0.15, 0.5))
        n_ran = rng.integers(1, t + 1, n)
        cancelled = rng.random(n) < 0.2
        got = final_tiers(u, f, d, n_ran, cancelled)
        for i in range(n):
            ran = [TierRun(bool(u[i, k]), bool(f[i, k]), bool(d[i, k]))
                   for k in range(n_ran[i])]
            want = final_tier(ran, t, bool(cancelled[i]))
            assert got[i] == (-1 if want is None else want), (t, i)


def test_vector_twin_broadcasts_leading_axes():
    u = np.array([[True, False], [False, True]])          # (2 items, 2 tiers)
    d = np.array([[[True, False]], [[False, False]]])     # (2 τ, 1, 2) against 2 items
    n_ran = np.array([[2, 2], [1, 1]])
    out = final_tiers(u[None], False, d, n_ran)
    assert out.shape == (2, 2)
    assert out.tolist() == [[0, 1], [0, 0]]


def test_vector_twin_refuses_bad_counts():
    with pytest.raises(ValueError):
        final_tiers(np.ones((2, 2), bool), False, False, [0, 1])


# ----------------------------------------------------------------------------- forcing

@pytest.mark.parametrize("has_answer,stated,finish,mode,adapter,want", [
    (True, True, "stop", "auto", False, ()),
    (True, False, "stop", "auto", False, (CONFIDENCE,)),
    (False, True, "stop", "auto", False, (ANSWER,)),
    (False, False, "stop", "auto", False, (ANSWER, CONFIDENCE)),
    (False, False, "length", "auto", False, ()),      # cut off: nothing is elicited
    (True, False, "length", "forced", False, ()),
    (True, True, "stop", "forced", False, (CONFIDENCE,)),  # a stated one is not taken
    (False, False, "stop", "free", False, ()),
    (False, False, "stop", "auto", True, (ANSWER,)),  # the adapter states the confidence
    (False, False, "stop", "free", True, (ANSWER,)),
    (True, False, "stop", "auto", True, ()),
    (False, False, "length", "auto", True, ()),
    (False, False, None, "auto", False, (ANSWER, CONFIDENCE)),
])
def test_needs_forcing(has_answer, stated, finish, mode, adapter, want):
    assert needs_forcing(has_answer, stated, finish, mode, adapter) == want


def test_needs_forcing_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="confidence mode"):
        needs_forcing(True, True, "stop", "sometimes")


def test_needs_forcing_mirrors_the_cascade():
    """The live cascade (scripted fake backend) forces exactly what the rule says."""
    from corea.backends.fake import FakeBackend
    from corea.cascade import Cascade
    from corea.config import Settings
    from corea.parsing import extract_answer, parse_confidence

    def cont(_msgs, prefix):
        return " 4" if prefix.rstrip().endswith("Answer:") else " 0.5"

    # (reply, token budget): the fake engine stops at the budget with finish_reason "length"
    cases = [("x = \\boxed{4}\nConfidence: 0.9", 64), ("x = \\boxed{4}", 64),
             ("we add and", 64), ("we add and then more", 3), ("x = \\boxed{4} and more", 3)]
    for mode in ("auto", "forced", "free"):
        for text, budget in cases:
            slm = FakeBackend([text], continuations=cont)
            settings = Settings(confidence_mode=mode, slm={"max_new_tokens": budget})
            out = Cascade(slm, FakeBackend(["\\boxed{4}"]), settings).slm_output("2 + 2?")
            forced = tuple(s for s, m in ((ANSWER, out.answer_method),
                                          (CONFIDENCE, out.confidence_method)) if m == "forced")
            free = text if budget > 10 else " ".join(text.split()[:budget])
            want = needs_forcing(extract_answer(free) is not None,
                                 parse_confidence(free).value is not None, out.finish_reason,
                                 mode)
            assert forced == want, (mode, text, budget, out)


# ----------------------------------------------------------------------------- split guard

def test_require_train_split(tmp_path):
    import json

    from corea.eval.runs import NotTrainSplit, require_train_split

    d = tmp_path / "run"
    d.mkdir()
    with pytest.raises(NotTrainSplit, match="split is unknown"):
        require_train_split(d)
    (d / "run.json").write_text(json.dumps({"dataset": "gsm8k"}))
    with pytest.raises(NotTrainSplit, match="records no split.*probes are fit on train"):
        require_train_split(d, "probes are fit")
    (d / "run.json").write_text(json.dumps({"split": "test"}))
    with pytest.raises(ValueError, match="is a 'test' split"):
        require_train_split(d)
    (d / "run.json").write_text(json.dumps({"split": "train", "dataset": "gsm8k"}))
    assert require_train_split(d)["dataset"] == "gsm8k"


def test_confidence_training_refuses_a_run_without_a_split(tmp_path):
    pytest.importorskip("torch")
    from train.confidence import ConfidenceArguments, load_examples

    d = tmp_path / "run"
    d.mkdir()
    (d / "items.jsonl").write_text("")
    with pytest.raises(ValueError, match="split is unknown"):
        load_examples(ConfidenceArguments(runs=[str(d)]), 0)


# ----------------------------------------------------------------------------- signal names

def test_one_name_for_the_token_probability_confidence():
    from corea.signals.registry import NAMES, SIGNALS, available
    from corea.events import ModelOutput
    from corea.eval.scored import flat_row
    from corea.signals.tokens import TOKPROB, signal_name, token_probability

    assert TOKPROB == "tokprob" and TOKPROB in SIGNALS and "avgprob" not in SIGNALS
    assert signal_name("avgprob") == signal_name("solution_prob") == TOKPROB
    assert signal_name("p_true") == "p_true" and "avgprob" in NAMES
    out = {"signals": {"solution_prob": 0.25, "answer_prob": 0.5, "min_prob": 0.1}}
    assert token_probability(out) == 0.25 and token_probability({}) is None
    assert token_probability(ModelOutput(model="m", signals=out["signals"])) == 0.25
    row = {"id": "a", "slm": out, "llm": {}, "slm_correct": True, "llm_correct": True}
    assert flat_row(row)[TOKPROB] == 0.25 and SIGNALS[TOKPROB].values([row]) == [0.25]
    assert available([row], ["avgprob", "verbal"]) == [TOKPROB, "verbal"]  # old name read


# ----------------------------------------------------------------------------- trainer arguments

def test_both_trainers_share_their_common_arguments_and_honour_the_cache_dir(monkeypatch):
    import dataclasses

    pytest.importorskip("trl")
    from train.args import TrainerArguments
    from train.confidence import ConfidenceArguments
    from train.grpo import ScriptArguments

    common = {f.name for f in dataclasses.fields(TrainerArguments)}
    assert {"model", "limit", "corea_cache_dir", "trainer"} <= common
    for cls, trainer in ((ScriptArguments, "train.grpo"), (ConfidenceArguments,
                                                           "train.confidence")):
        assert issubclass(cls, TrainerArguments)
        monkeypatch.setenv("COREA_CACHE_DIR", "/tmp/corea-cache-test")
        assert cls().corea_cache_dir == "/tmp/corea-cache-test" and cls().trainer == trainer
        monkeypatch.delenv("COREA_CACHE_DIR")
        assert cls().corea_cache_dir == "~/.cache/corea"
