"""The registry of deciding signals (corea/signals/registry.py): one entry makes a signal
available everywhere. The worked example of docs/architecture.md ("Add a deciding signal"), a
solution-length signal, is registered here (in the test only) and then decides offline (held-out
report, signal comparison, explorer) and live (a cascade on scripted backends) with no other
module touched."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from corea.backends.fake import FakeBackend
from corea.cascade import Cascade, TierOptions
from corea.config import ConfidenceSource, Settings
from corea.eval import compare
from corea.eval.heldout import heldout_report
from corea.model_config import TierSettings
from corea.signals import registry
from corea.signals.base import WHEN, Live, Signal
from corea.ui.cards import signal_words, turn_card
from corea.ui.explorer import ExplorerHandlers

# --------------------------------------------------------------- the example, as in the docs

SCALE = 20
"""Completion tokens at which the length confidence is 0.5."""


def length_confidence(completion_tokens: int) -> float:
    """1 / (1 + tokens / SCALE): a short solution is kept, a long one deferred."""
    return 1.0 / (1.0 + max(0, int(completion_tokens or 0)) / SCALE)


def length_score(rows, _fitted):
    """Offline: one confidence per evaluation row, from the SLM's completion tokens."""
    return [length_confidence((r.get("slm") or {}).get("completion_tokens")) for r in rows]


def length_live(out, _opts):
    """Live: the same number from one tier's output."""
    return length_confidence(out.completion_tokens)


LENGTH = Signal("length", "solution length (shorter = keep)", "after", length_score,
                setting="length", live=Live(length_live, what="the length signal"),
                word="length confidence", plain="how short the small model's solution was")


@pytest.fixture
def length_signal():
    registry.register(LENGTH)
    yield LENGTH
    registry.SIGNALS.pop(LENGTH.name)


def rows(n: int, seed: int) -> list[dict]:
    """Rows whose SLM is right exactly on its short solutions (5 tokens vs 60)."""
    out = []
    for i in range(n):
        ok = (i + seed) % 3 != 0
        out.append({"id": f"{seed}-{i}", "slm_correct": ok, "llm_correct": True,
                    "slm": {"answer": "1", "confidence": 0.9, "finish_reason": "stop",
                            "prompt_tokens": 30, "completion_tokens": 5 if ok else 60},
                    "llm": {"answer": "1", "finish_reason": "stop", "prompt_tokens": 30,
                            "completion_tokens": 90}})
    return out


# --------------------------------------------------------------------------------- tests

def test_every_builtin_entry_is_complete_and_the_settings_come_from_it():
    for name, sig in registry.SIGNALS.items():
        assert sig.name == name and sig.label and sig.when in WHEN
        assert (sig.setting is None) == (sig.live is None)
        if sig.setting:  # every live signal has its visitor words
            assert sig.plain and signal_words(sig.setting) == sig.plain
    assert set(registry.SETTINGS) == {"verbal", "tokprob", "calibrated", "probe", "agreement"}
    assert set(get_args(ConfidenceSource)) == {*registry.SETTINGS, "auto"}
    middle = get_args(TierSettings.model_fields["confidence_source"].annotation)
    assert set(middle) == {"verbal", "tokprob", "agreement"} == set(registry.MIDDLE_SETTINGS)
    assert registry.get("avgprob").name == registry.get("solution_prob").name == "tokprob"
    assert registry.get("calibrated") is registry.by_setting("calibrated") is \
        registry.SIGNALS["calibrator"]
    with pytest.raises(KeyError, match="unknown signal 'nope'"):
        registry.get("nope")
    with pytest.raises(ValueError, match="unknown inputs"):
        Signal("x", "x", "after", length_score, needs=("telepathy",))


def test_a_registered_signal_is_available_offline(length_signal, tmp_path):
    train, test = rows(60, 0), rows(30, 1)
    assert "length" in registry.available(test)
    assert length_signal.values(test[1:3]) == [length_confidence(5), length_confidence(60)]
    # the held-out report fits nothing for it, chooses τ on train and measures it on test
    report = heldout_report(train, {"test": test}, "toy", (1.0, 2.0),
                            signals=["verbal", "length"])
    by = {s["name"]: s for s in report["signals"]}
    assert by["length"]["label"] == "solution length (shorter = keep)"
    assert by["length"]["tests"]["test"]["auroc"] == 1.0
    assert by["length"]["train"]["thresholds"] is not None  # τ chosen on train
    # the signal comparison of `corea report`
    cmp = compare.compare_signals(test, (1.0, 2.0), signals=("verbal", "length"))
    assert [e["name"] for e in cmp["signals"]] == ["verbal", "length"]
    assert {e["name"]: e["auroc"] for e in cmp["signals"]}["length"] == 1.0
    # the explorer's menu, and its view deciding with it
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    h = ExplorerHandlers(None, runs_root=tmp_path)
    assert ("solution length (shorter = keep)", "length") in h.signal_choices("run")
    assert dict(h.update_tau("run", 0.5, signal="length")[1])["deferral rate"] == \
        pytest.approx(10 / 30, abs=1e-4)  # the table rounds to 4 decimals


def reply(answer, confidence, words: int = 0) -> str:
    return " ".join(["step"] * words) + f" \\boxed{{{answer}}}\nConfidence: {confidence}"


def run(cascade):
    results = []
    list(cascade.run("What is 2+2?", on_result=results.append))
    return results[0]


def test_a_registered_signal_decides_live(length_signal):
    settings = Settings(db_url="sqlite://", use_probe=False, threshold=0.5)
    for words, kept in ((3, True), (60, False)):
        slm = FakeBackend([reply(4, 0.9, words)], model_name="s")
        llm = FakeBackend(["The answer is \\boxed{5}"], model_name="l")
        cascade = Cascade(slm, llm, settings, options=[TierOptions(signal="length")])
        result = run(cascade)
        d = result.decision
        out = result.tiers[0].output
        assert d.signal == "length" and d.verbal_confidence == 0.9
        assert d.confidence == pytest.approx(length_confidence(out.completion_tokens))
        assert d.defer is not kept and "length confidence" in d.message
        assert result.final_answer == ("4" if kept else "5")
        # the visitor's card names the deciding number with the entry's plain words
        assert signal_words("length") == "how short the small model's solution was"
        assert "how short the small model's solution was" in turn_card(result)


def test_a_live_signal_without_its_inputs_or_that_fails_falls_back_to_verbal(length_signal):
    settings = Settings(db_url="sqlite://", use_probe=False, threshold=0.5)
    broken = Signal("broken", "always fails", "after", length_score, setting="broken",
                    live=Live(lambda out, opts: 1 / 0, what="the broken signal"))
    registry.register(broken)
    try:
        for signal, note in (("broken", "the broken signal failed"),
                             ("nothing", "nothing is not a known deciding signal")):
            cascade = Cascade(FakeBackend([reply(4, 0.9)], model_name="s"),
                              FakeBackend(["\\boxed{5}"], model_name="l"), settings,
                              options=[TierOptions(signal=signal)])
            d = run(cascade).decision
            assert d.signal == "verbal" and d.confidence == 0.9 and note in d.signal_note
    finally:
        registry.SIGNALS.pop("broken")
