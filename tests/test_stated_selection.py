"""The rule that lets the SLM's stated confidence decide (corea.selection): read from an
adapter's train cross-fit card; with the shipped artifacts (no cross-fit card yet) the token
calibrator keeps deciding."""

from __future__ import annotations

import json

from corea.adapters import CALIBRATED_SLM, SHIPPED
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade, auto_ranking
from corea.config import Settings
from corea.events import ModelOutput
from corea.selection import (CROSSFIT_FILE, STATED_DECIDES, crossfit_numbers, stated_decides,
                             stated_decides_for)
from corea.service import CoreaService

SIGNALS = {"solution_prob": 0.8, "answer_prob": 0.9, "min_prob": 0.2, "n_tokens": 200,
           "hit_length": False}


def card(stated, token):
    return {"stated": {"auroc": stated}, "token_calibrator": {"auroc": token}}


def test_the_rule_compares_cross_fit_aurocs():
    assert stated_decides(card(0.81, 0.80)) and stated_decides(card(0.8, 0.8))
    assert not stated_decides(card(0.67, 0.81))
    assert not stated_decides(card(None, 0.8)) and not stated_decides(None)
    assert not stated_decides({})


def adapter_with_card(tmp_path, numbers):
    d = tmp_path / "adapter"
    d.mkdir()
    (d / CROSSFIT_FILE).write_text(json.dumps({"crossfit": numbers}))
    return d


def test_an_adapter_whose_stated_confidence_ranks_as_well_decides_with_it(tmp_path):
    d = adapter_with_card(tmp_path, card(0.82, 0.81))
    assert crossfit_numbers(d) == card(0.82, 0.81) and stated_decides_for(str(d))
    settings = Settings(db_url="sqlite://", use_shipped_signals=True, use_shipped_adapter=True)
    svc = CoreaService(settings, slm=FakeBackend(["x"]), llm=FakeBackend(["y"]))
    cal = svc.calibrator
    assert cal is not None and auto_ranking(cal, None) == ["calibrated"]
    assert auto_ranking(cal, None, stated_first=True) == []
    out = ModelOutput(model="slm", answer="4", confidence=0.3, signals=SIGNALS)
    settings.slm.model = str(d)
    conf, signal, note = Cascade(svc.slm, svc.llm, settings, calibrator=cal) \
        .deciding_confidence(out)
    assert (conf, signal, note) == (0.3, "verbal", None)
    from corea.ui.ask import AskHandlers

    text = AskHandlers(svc).deciding_signal_text()
    assert text.startswith("verbal") and STATED_DECIDES in text


def test_with_the_shipped_artifacts_the_token_calibrator_decides():
    """No cross-fit card ships with the adapter (it trained on every train row it was given, so
    its stated confidence has no out-of-fold values): the rule keeps the calibrator."""
    assert crossfit_numbers(SHIPPED / "qwen2.5-coder-0.5b-instruct") is None
    assert not stated_decides_for(CALIBRATED_SLM)
    assert not stated_decides_for("embedded:slm")
    settings = Settings(db_url="sqlite://", use_shipped_signals=True, use_shipped_adapter=True)
    svc = CoreaService(settings, slm=FakeBackend(["x"]), llm=FakeBackend(["y"]))
    out = ModelOutput(model="slm", answer="4", confidence=0.3, signals=SIGNALS)
    _, signal, _ = Cascade(svc.slm, svc.llm, settings, calibrator=svc.calibrator) \
        .deciding_confidence(out)
    assert signal == "calibrated"
