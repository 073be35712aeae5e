"""The learned deciding signals that ship for the embedded SLM (``corea/assets/``): fit on train
data only, and what ``auto`` decides with on a fresh clone."""

from __future__ import annotations

import numpy as np

from corea.signals import hidden
from corea.backends.fake import FakeBackend
from corea.signals.calibrator import TOKEN_FEATURES, load_plain, shipped_calibrator_dir
from corea.cascade import Cascade
from corea.config import Settings
from corea.events import ModelOutput
from corea.signals.probe import LinearProbe
from corea.service import CoreaService


def shipped_settings() -> Settings:
    return Settings(db_url="sqlite://", use_shipped_signals=True)


def test_the_shipped_probe_is_fit_on_train_data_for_the_embedded_slm():
    settings = shipped_settings()
    path = settings.probe_path()
    assert path is not None, "no probe ships for the embedded SLM"
    card = LinearProbe.load(path).card
    assert card.slm == settings.slm.name and card.dim == 896 and card.position == "end"
    assert card.target == "slm_correct" and card.version and card.fitted_at
    assert card.data and all("/train," in d for d in card.data), card.data
    assert card.n_train >= 100 and card.n_positive >= 20 and card.beats_verbal()
    assert card.test and all(m["n"] > 0 for m in card.test.values())


def test_the_shipped_calibrator_is_fit_on_train_data_for_the_embedded_slm():
    settings = shipped_settings()
    d = shipped_calibrator_dir(settings.slm.name)
    assert d is not None, "no calibrator ships for the embedded SLM"
    cal = load_plain(d)
    assert cal.card.slm == settings.slm.name and cal.card.kind == "logistic"
    assert cal.card.n >= 100 and cal.card.beats_verbal()
    assert cal.card.sources and all("train" in s for s in cal.card.sources), cal.card.sources


def test_auto_decides_with_the_better_shipped_signal_and_names_it():
    """``auto`` compares the probe's and the calibrator's held-out AUROC (their cards, both
    measured out of fold on train rows) and uses the higher one."""
    settings = shipped_settings()
    svc = CoreaService(settings, slm=FakeBackend(["x"]), llm=FakeBackend(["y"]))
    probe, cal = svc.probe, svc.calibrator
    assert probe is not None and cal is not None
    want = "probe" if (probe.card.cv["auroc"] or 0) > (cal.card.held_out["auroc"] or 0) \
        else "calibrated"
    state = hidden.encode(np.asarray(probe.mean, dtype=np.float32))
    out = ModelOutput(model=settings.slm.name, answer="4", confidence=0.9,
                      states={"end": state, "prompt": state},
                      signals={"solution_prob": 0.8, "answer_prob": 0.9, "min_prob": 0.2,
                               "n_tokens": 200, "hit_length": False})
    cascade = Cascade(svc.slm, svc.llm, settings, calibrator=cal, probe=probe)
    conf, signal, note = cascade.deciding_confidence(out)
    assert signal == want and note is None and 0.0 < conf < 1.0
    # the Ask tab's model panel names the same signal the cascade decides with
    from corea.ui.ask import AskHandlers

    assert AskHandlers(svc).deciding_signal_text().startswith(want)


def test_the_default_app_names_its_calibrator_honestly():
    """The adapted SLM (the default) decides with its token-feature calibrator, whose card has no
    out-of-sample stated confidence: the panel says so instead of claiming it beat it."""
    from corea.ui.ask import AskHandlers

    settings = Settings(db_url="sqlite://", use_shipped_signals=True, use_shipped_adapter=True)
    svc = CoreaService(settings, slm=FakeBackend(["x"]), llm=FakeBackend(["y"]))
    assert svc.probe is None and svc.calibrator is not None
    text = AskHandlers(svc).deciding_signal_text()
    assert text.startswith("calibrated (calibrator v1: held-out AUROC 0.81")
    assert "no out-of-sample stated confidence" in text and "beats" not in text
    off = Settings(db_url="sqlite://", use_shipped_signals=False)
    assert off.probe_path() is None


def test_the_held_out_report_measures_the_calibrator_that_decides_by_default():
    """``corea heldout``'s ``calibrator_tokens``, fit on the committed train generations, is the
    shipped calibrator of the adapted SLM (the app's default): same features, same rows, same
    probabilities — so its held-out row is what a fresh clone decides with."""
    from pathlib import Path

    from corea.adapters import CALIBRATED_SLM
    from corea.signals.registry import SIGNALS
    from corea.eval.runs import load_results

    settings = Settings(db_url="sqlite://", use_shipped_signals=True, use_shipped_adapter=True)
    assert settings.slm.model == CALIBRATED_SLM, "the calibration adapter ships and is the default"
    shipped = load_plain(shipped_calibrator_dir(settings.slm.name))
    assert tuple(shipped.card.features) == TOKEN_FEATURES
    train = Path(__file__).resolve().parent.parent / "data/generations/gsm8k-train-1000"
    rows = load_results(train)
    sig = SIGNALS["calibrator_tokens"]
    refit = sig.values(rows, sig.fit(rows, "Qwen2.5-Coder-0.5B-Instruct"))
    want = shipped.predict([r["slm"] for r in rows])
    assert len(rows) == shipped.card.n
    assert np.allclose(refit, want, atol=1e-4)
