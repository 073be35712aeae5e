"""Early exit on scripted backends: a tier stopped while it writes when a probe on its state
predicts failure, what it records and shows, and the cases where it must write on."""

from __future__ import annotations

import numpy as np
import pytest

from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.cascade.early_exit import EARLY_EXIT, EarlyExit, load_early_exit
from corea.config import EarlyExitSettings, Price, Settings
from corea.events import Decision, Final, TierDelta
from corea.signals.checkpoint_probe import CheckpointCard, CheckpointProbe
from corea.signals.probe import LinearProbe, ProbeCard
from corea.ui.turn_view import decision_icon

PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}
# 12 chunks of 4 characters (one token each on the scripted engine)
SOLUTION = "aaaabbbbccccddddeeeeffffgggghhhhiiiijjjj \\boxed{4}\nConfidence: 0.9"


def probe(slm: str = "slm") -> CheckpointProbe:
    """A pooled checkpoint probe whose P(correct) is sigmoid(x[0]) (the position ignored)."""
    card = ProbeCard(slm=slm, position="end", target="slm_correct", dim=4, c=1.0, n_train=10,
                     n_positive=5)
    piece = LinearProbe(np.zeros(4), np.ones(4), np.array([1.0, 0.0, 0.0, 0.0]), 0.0, card)
    return CheckpointProbe(CheckpointCard(slm=slm, k=4, form="pooled", c=1.0,
                                          positions=[4, 8], n_items=10, n_pairs=20),
                           {"pooled": piece})


def falling(after_chars: int):
    """Scripted states: the state reads 'sure' until ``after_chars`` characters were written,
    then 'failing' (x[0] = +3, then -3)."""
    def states(_msgs, before: str) -> dict:
        x = 3.0 if len(before) < after_chars else -3.0
        return {"prompt": np.zeros(2), "end": np.array([x, 0.0])}
    return states


def make(states=falling(16), tau_e=0.4, k=4, slm_probe=None):
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend([SOLUTION], model_name="slm", states=states)
    llm = FakeBackend(["It is \\boxed{5}"], model_name="llm")
    ee = EarlyExit(slm_probe or probe(), k, tau_e)
    return Cascade(slm, llm, settings, early_exit=ee), slm, llm


def run(cascade, tau=None):
    events = list(cascade.run("What is 2+2?", threshold=tau))
    assert isinstance(events[-1], Final)
    return events, events[-1].result


def test_a_decode_whose_state_turns_bad_is_stopped_and_deferred_with_its_reasoning_kept():
    cascade, slm, llm = make(falling(16))
    events, r = run(cascade)
    out = r.tiers[0].output
    # chunk i (1-based) carries the state after i - 1 chunks: the 5th chunk's is the first bad one
    # (16 characters written before it), read at position 4 (k = 4): stopped after 5 tokens
    assert out.finish_reason == EARLY_EXIT and out.text == SOLUTION[:20]
    assert out.completion_tokens == 5 and out.answer is None
    assert slm.closed_early == 1 and [c[0] for c in slm.calls] == ["chat"]  # nothing forced
    d = r.tiers[0].decision
    assert d.defer and d.reason == EARLY_EXIT and d.signal == "early_exit"
    assert d.confidence == pytest.approx(1 / (1 + np.exp(3))) and d.threshold == 0.4
    assert "5 tokens" in d.message and "5%" in d.message and "40%" in d.message
    assert r.final_answer == "5" and r.answered_tier == 1 and len(llm.calls) == 1
    # the partial reasoning was streamed to the visitor before the decision
    shown = "".join(e.text for e in events if isinstance(e, TierDelta) and e.tier == 0)
    assert shown == SOLUTION[:20]
    assert [e.info.reason for e in events if isinstance(e, Decision)] == [EARLY_EXIT]
    assert r.tiers[0].to_dict()["reason"] == EARLY_EXIT and decision_icon(EARLY_EXIT)


def test_a_decode_the_probe_stays_sure_of_writes_to_its_end_and_decides_answer_first():
    cascade, slm, llm = make(falling(10_000))
    _, r = run(cascade)
    assert r.tiers[0].output.finish_reason == "stop" and r.final_answer == "4"
    assert r.tiers[0].decision.reason == "confident" and not llm.calls


def test_the_probe_is_read_every_k_tokens_only():
    seen = []

    class Counting:
        card = probe().card

        def confidence(self, state, t):
            seen.append(t)
            return 0.9
    cascade, _, _ = make(falling(10_000), k=4, slm_probe=Counting())
    run(cascade)
    assert seen and seen == list(range(4, 4 * len(seen) + 1, 4))


def test_a_threshold_of_zero_is_never_stopped_early():
    cascade, slm, llm = make(falling(0))
    _, r = run(cascade, tau=0.0)
    assert r.tiers[0].output.finish_reason == "stop" and r.final_answer == "4"
    assert not llm.calls


def test_a_failing_probe_never_stops_an_answer_and_says_why():
    class Broken:
        card = probe().card

        def confidence(self, state, t):
            raise ValueError("bad size")
    cascade, _, _ = make(falling(0), slm_probe=Broken())
    _, r = run(cascade)
    d = r.tiers[0].decision
    assert r.tiers[0].output.finish_reason == "stop" and d.reason == "confident"
    assert "early exit" in d.signal_note and "failed" in d.signal_note


def test_an_engine_without_states_is_never_checked():
    cascade, _, llm = make(states=None)
    _, r = run(cascade)
    assert r.final_answer == "4" and r.tiers[0].decision.signal_note is None and not llm.calls


def test_settings_and_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("COREA_SLM__EARLY_EXIT", '{"threshold": 0.25, "k": 16}')
    s = Settings(db_url="sqlite://")
    assert s.slm.early_exit.threshold == 0.25 and s.slm.early_exit.k == 16
    assert Settings(db_url="sqlite://").llm.early_exit is None
    probe("slm").save(tmp_path / "p")
    ee = load_early_exit(EarlyExitSettings(probe=tmp_path / "p", threshold=0.3), "slm")
    assert ee.k == 4 and ee.threshold == 0.3  # k from the probe's card
    with pytest.raises(ValueError, match="fit for slm"):
        load_early_exit(EarlyExitSettings(probe=tmp_path / "p"), "other")
    assert load_early_exit(None, "slm") is None
    with pytest.raises(ValueError):
        EarlyExit(probe(), 0, 0.5)


def test_the_service_stops_early_with_the_probe_its_settings_name_and_logs_why(tmp_path):
    from corea.service import CoreaService

    probe().save(tmp_path / "cp")
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://",
                        slm={"display_name": "slm", "route": None,
                             "early_exit": {"probe": str(tmp_path / "cp"), "threshold": 0.4}})
    slm = FakeBackend([SOLUTION], model_name="slm", states=falling(16))
    svc = CoreaService(settings, slm=slm, llm=FakeBackend(["\\boxed{5}"], model_name="llm"))
    assert svc.early_exit is not None and svc.early_exit.k == 4
    r = list(svc.ask("What is 2+2?"))[-1].result
    assert r.final_answer == "5" and r.tiers[0].decision.reason == EARLY_EXIT
    row = svc.store.get_interaction(r.interaction_id)
    assert row["decision_reason"] == EARLY_EXIT
    t0 = row["tiers"][0]
    assert t0["reason"] == EARLY_EXIT and t0["message"].startswith("Stopped early")
    off = CoreaService(Settings(db_url="sqlite://", slm={"route": None}), slm=FakeBackend(),
                       llm=FakeBackend())
    assert off.early_exit is None  # off by default
