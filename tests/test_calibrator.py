"""The learned calibrator (corea.signals.calibrator), its CLI (corea calibrate) and the cascade's
confidence source."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from corea.backends.fake import FakeBackend
from corea.cli.calibrate import main as calibrate_main
from corea.eval.calibrate import labels_from_ratings, labels_from_runs
from corea.signals.calibrator import (CalibratorStore, InsufficientLabels, features, fit_calibrator,
                              has_token_signals)
from corea.cascade import Cascade
from corea.config import Settings
from corea.events import Final


def _outputs(n=120, seed=0):
    """Synthetic completions whose solution_prob predicts correctness and whose verbal
    confidence does not (the untrained SLM's situation)."""
    rng = np.random.default_rng(seed)
    outs, ys = [], []
    for _ in range(n):
        y = bool(rng.random() < 0.4)
        p = float(np.clip(rng.normal(0.85 if y else 0.6, 0.08), 0.01, 0.999))
        outs.append({"confidence": float(rng.choice([0.8, 0.9, 0.95])),
                     "signals": {"solution_prob": p, "answer_prob": p, "min_prob": p / 3,
                                 "n_tokens": int(rng.integers(50, 400)), "hit_length": False}})
        ys.append(y)
    return outs, ys


def test_features_impute_missing_values_and_flag_them():
    f = features({"confidence": None, "signals": {"solution_prob": 0.5, "n_tokens": 9}})
    assert f[0] == 0.5 and f[1] == 0.0  # verbal imputed, flagged missing
    assert f[2] == pytest.approx(math.log(0.5)) and f[3] == f[2]  # answer_prob falls back
    assert f[4] == pytest.approx(math.log(1e-6)) and f[5] == pytest.approx(math.log(10))
    assert not has_token_signals({"confidence": 0.9, "signals": None})


@pytest.mark.parametrize("kind", ["logistic", "isotonic"])
def test_fit_reports_held_out_metrics_and_beats_uninformative_verbal(kind):
    outs, ys = _outputs()
    cal = fit_calibrator(outs, ys, "slm-x", kind=kind, sources={"synthetic": 120})
    card = cal.card
    assert card.n == 120 and card.n_positive == sum(ys) and card.cv_folds == 5
    assert card.held_out["auroc"] > 0.8 and card.verbal_held_out["auroc"] < 0.65
    assert card.beats_verbal()
    p = cal.predict(outs)
    assert p.shape == (120,) and ((0 <= p) & (p <= 1)).all()
    assert p[np.array(ys)].mean() > p[~np.array(ys)].mean()


def test_too_few_labels_is_refused_with_a_clear_message():
    outs, ys = _outputs(20)
    with pytest.raises(InsufficientLabels, match="at least 30 labelled answers"):
        fit_calibrator(outs, ys, "slm-x")
    outs, _ = _outputs(60)
    with pytest.raises(InsufficientLabels, match="0 correct"):
        fit_calibrator(outs, [False] * 60, "slm-x")
    with pytest.raises(ValueError, match="same length"):
        fit_calibrator(outs, [True], "slm-x")


def test_store_versions_save_and_load(tmp_path):
    outs, ys = _outputs()
    store = CalibratorStore(tmp_path)
    assert store.load("Qwen/x") is None and store.versions("Qwen/x") == []
    a = fit_calibrator(outs, ys, "Qwen/x")
    store.save(a)
    b = fit_calibrator(outs, ys, "Qwen/x", kind="isotonic")
    store.save(b)
    assert store.versions("Qwen/x") == [1, 2]
    got = store.load("Qwen/x")
    assert got.card.version == 2 and got.card.kind == "isotonic"
    np.testing.assert_allclose(got.predict(outs), b.predict(outs))
    assert store.load("Qwen/x", version=1).card.kind == "logistic"
    card = json.loads((tmp_path / "Qwen_x" / "v1.json").read_text())
    assert card["slm"] == "Qwen/x" and "held_out" in card


def _cascade(conf_text, lp, source, calibrator=None):
    slm = FakeBackend([f"so \\boxed{{7}}\nConfidence: {conf_text}"], chunk_chars=200,
                      model_name="s", token_logprob=lp)
    llm = FakeBackend(["\\boxed{8}"], model_name="l")
    return Cascade(slm, llm, Settings(confidence_source=source), calibrator=calibrator)


def _decision(cascade, tau=0.7):
    res = [e for e in cascade.run("q?", threshold=tau) if isinstance(e, Final)][0].result
    return res.decision


def test_tokprob_source_decides_with_the_solution_probability():
    d = _decision(_cascade("0.95", math.log(0.5), "tokprob"))
    assert d.signal == "tokprob" and d.defer and d.confidence == pytest.approx(0.5)
    assert d.verbal_confidence == 0.95
    assert "token-probability confidence 0.50 (stated: 0.95) < threshold 0.70" in d.message


def test_calibrated_source_without_calibrator_falls_back_to_verbal_and_says_so():
    d = _decision(_cascade("0.95", -0.1, "calibrated"))
    assert d.signal == "verbal" and not d.defer and "no calibrator" in d.signal_note


def test_auto_uses_a_calibrator_that_beats_verbal_and_ignores_one_that_does_not():
    outs, ys = _outputs()
    good = fit_calibrator(outs, ys, "s")
    d = _decision(_cascade("0.95", math.log(0.55), "auto", good), tau=0.9)
    assert d.signal == "calibrated" and d.defer and d.verbal_confidence == 0.95
    assert d.confidence < 0.9
    good.card.held_out["auroc"] = 0.3  # pretend it lost to verbal on held-out data
    d = _decision(_cascade("0.95", math.log(0.55), "auto", good), tau=0.9)
    assert d.signal == "verbal" and not d.defer


def _run_dir(tmp_path, outs, ys):
    d = tmp_path / "run"
    d.mkdir()
    with open(d / "items.jsonl", "w") as f:
        for i, (o, y) in enumerate(zip(outs, ys)):
            f.write(json.dumps({"id": str(i), "slm": {**o, "model": "Qwen2.5-Coder-0.5B-Instruct"},
                                "llm": {}, "slm_correct": y, "llm_correct": True}) + "\n")
        f.write(json.dumps({"id": "u", "slm": outs[0], "llm": {}, "slm_correct": None,
                            "llm_correct": None}) + "\n")
    (d / "run.json").write_text(json.dumps({"split": "train", "dataset": "toy"}))
    return d


def test_labels_from_runs_keep_gradable_items_with_signals(tmp_path):
    outs, ys = _outputs(40)
    outs[3] = {"confidence": 0.9, "signals": None}
    ls = labels_from_runs([_run_dir(tmp_path, outs, ys)], "Qwen2.5-Coder-0.5B-Instruct")
    assert len(ls.labels) == 39 and ls.skipped == {"ungradable": 1,
                                                   "no token log-probabilities": 1}


def test_labels_from_ratings(tmp_path):
    from corea.store import open_store
    from corea.events import CascadeResult, DecisionInfo, ModelOutput

    store, err = open_store(f"sqlite:///{tmp_path / 'r.sqlite'}")
    assert err is None
    sig = {"solution_prob": 0.8, "answer_prob": 0.9, "min_prob": 0.2, "n_tokens": 50,
           "hit_length": False}

    def log(answer, thumbs=None, correction=None, signals=sig):
        r = CascadeResult(question="q", threshold=0.5,
                          slm=ModelOutput(model="S", text=f"\\boxed{{{answer}}}", answer=answer,
                                          confidence=0.9, signals=signals))
        r.decision = DecisionInfo(False, "confident", 0.9, 0.5, "kept")
        r.final_answer, r.final_model = answer, "S"
        i = store.log_interaction(r, "s")
        store.add_rating(i, thumbs=thumbs, correction=correction)

    log("4", thumbs="up")                 # SLM right
    log("5", correction="6")              # SLM wrong
    log("7", thumbs="down")               # SLM wrong (its answer was final)
    log("8", thumbs="up", signals=None)   # no log-probs: skipped
    ls = labels_from_ratings(store, "S")
    assert sorted(ls.labels) == [False, False, True] and ls.sources == {"ratings": 3}
    assert ls.skipped == {"no token log-probabilities": 1}


def test_cli_fits_saves_and_refuses_too_few(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COREA_CACHE_DIR", str(tmp_path / "cache"))
    outs, ys = _outputs(80)
    run = _run_dir(tmp_path, outs, ys)
    assert calibrate_main(["--runs", str(run), "--save"]) == 0
    out = capsys.readouterr().out
    assert "new calibrator (logistic, 5-fold held-out)" in out and "saved as version 1" in out
    assert CalibratorStore(tmp_path / "cache" / "calibrators").versions(
        "Qwen2.5-Coder-0.5B-Instruct") == [1]
    small = tmp_path / "small"
    small.mkdir()
    (small / "items.jsonl").write_text((run / "items.jsonl").read_text().splitlines()[0] + "\n")
    assert calibrate_main(["--runs", str(small)]) == 2    # no run.json: the split is unknown
    assert "split is unknown" in capsys.readouterr().err
    (small / "run.json").write_text((run / "run.json").read_text())
    assert calibrate_main(["--runs", str(small)]) == 2
    assert "need at least 30" in capsys.readouterr().err
    assert calibrate_main([]) == 2


def test_app_calibration_panel_fits_from_ratings_and_switches(tmp_path, monkeypatch):
    import corea.signals.calibrator as calmod
    from corea.signals.calibrator import save_plain
    from corea.ui.calibration import CalibrationHandlers
    from corea.service import CoreaService
    from corea.events import CascadeResult, DecisionInfo, ModelOutput

    svc = CoreaService(Settings(db_url=f"sqlite:///{tmp_path / 'a.sqlite'}",
                                cache_dir=tmp_path / "cache"),
                       slm=FakeBackend(["x"], model_name="Qwen2.5-Coder-0.5B-Instruct"),
                       llm=FakeBackend(["y"], model_name="l"))
    cb = CalibrationHandlers(svc, runs_root=tmp_path / "runs")
    assert "No calibrator" in cb.current()
    msg, token = cb.fit([], True, "logistic")
    assert "need at least 30" in msg and token == ""
    outs, ys = _outputs(60)
    for o, y in zip(outs, ys):
        r = CascadeResult(question="q", threshold=0.5,
                          slm=ModelOutput(model="Qwen2.5-Coder-0.5B-Instruct", answer="4",
                                          confidence=o["confidence"], signals=o["signals"]))
        r.decision = DecisionInfo(False, "confident", 0.9, 0.5, "kept")
        r.final_answer, r.final_model = "4", "Qwen2.5-Coder-0.5B-Instruct"
        i = svc.store.log_interaction(r, "s")
        svc.store.add_rating(i, thumbs="up" if y else "down")
    msg, token = cb.fit([], True, "logistic")
    assert token and "new calibrator" in msg and "verbal (stated)" in msg
    assert cb.switch("")[1] == "Fit a calibrator first."
    current, msg, cleared = cb.switch(token)
    assert msg.startswith("Saved as v1") and cleared == "" and "Calibrator **v1**" in current
    assert svc.calibrator is not None and svc.calibrator.card.sources == {"ratings": 60}
    assert cb.switch(token)[1] == "Fit a calibrator first."  # a candidate is saved once
    assert str(tmp_path) not in msg  # no server path on the page

    # with the shipped calibrator on (a better one), a worse refit is saved but does not switch,
    # and the panel says so
    outs, ys = _outputs(120)
    shipped = fit_calibrator(outs, ys, "Qwen2.5-Coder-0.5B-Instruct")
    shipped.card.held_out["auroc"] = 1.0  # no refit can rank better
    monkeypatch.setattr(calmod, "SHIPPED", tmp_path / "assets")
    save_plain(shipped, tmp_path / "assets" / "qwen2.5-coder-0.5b-instruct")
    svc.settings = svc.settings.model_copy(update={"use_shipped_signals": True})
    svc.reload_calibrator()
    assert svc.calibrator.origin == "shipped" and "(shipped, logistic" in cb.current()
    msg, token = cb.fit([], True, "logistic")
    current, msg, _ = cb.switch(token)
    assert msg.startswith("Saved as v2") and "shipped for this SLM stays in use" in msg


def test_a_broken_calibrator_falls_back_to_verbal_and_says_why():
    outs, ys = _outputs()
    cal = fit_calibrator(outs, ys, "s")
    cal.model = None  # e.g. an artifact from an incompatible scikit-learn
    d = _decision(_cascade("0.95", math.log(0.55), "calibrated", cal), tau=0.9)
    assert d.signal == "verbal" and not d.defer and "calibrator failed" in d.signal_note


def test_cli_refuses_to_replace_a_better_calibrator_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COREA_CACHE_DIR", str(tmp_path / "cache"))
    outs, ys = _outputs(80)
    good = _run_dir(tmp_path, outs, ys)
    assert calibrate_main(["--runs", str(good), "--save"]) == 0
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    (noisy / "run.json").write_text((good / "run.json").read_text())
    rng = np.random.default_rng(1)
    with open(noisy / "items.jsonl", "w") as f:  # labels unrelated to the signals
        for i, o in enumerate(outs):
            f.write(json.dumps({"id": str(i), "slm": {**o, "model": "Qwen2.5-Coder-0.5B-Instruct"},
                                "llm": {}, "slm_correct": bool(rng.random() < 0.4),
                                "llm_correct": True}) + "\n")
    capsys.readouterr()
    assert calibrate_main(["--runs", str(noisy), "--save"]) == 1
    assert "not saved" in capsys.readouterr().err
    store = CalibratorStore(tmp_path / "cache" / "calibrators")
    assert store.versions("Qwen2.5-Coder-0.5B-Instruct") == [1]
    assert calibrate_main(["--runs", str(noisy), "--save", "--force"]) == 0
    assert store.versions("Qwen2.5-Coder-0.5B-Instruct") == [1, 2]


def test_plain_calibrator_round_trip_predicts_like_the_fitted_one(tmp_path):
    from corea.signals.calibrator import PlainLogistic, load_plain, save_plain

    outs, ys = _outputs(120)
    cal = fit_calibrator(outs, ys, "S", sources={"train": 120})
    path = save_plain(cal, tmp_path / "c")
    assert path.name == "calibrator.json" and b"joblib" not in path.read_bytes()
    back = load_plain(tmp_path / "c")
    assert isinstance(back.model, PlainLogistic) and back.card == cal.card
    assert np.allclose(back.predict(outs), cal.predict(outs), atol=1e-9)
    iso = fit_calibrator(outs, ys, "S", kind="isotonic")
    with pytest.raises(ValueError, match="logistic"):
        save_plain(iso, tmp_path / "i")


def test_cli_out_writes_the_shipped_format_from_train_runs_only(tmp_path, monkeypatch, capsys):
    from corea.signals.calibrator import load_plain

    monkeypatch.setenv("COREA_CACHE_DIR", str(tmp_path / "cache"))
    outs, ys = _outputs(80)
    run = _run_dir(tmp_path, outs, ys)
    (run / "run.json").write_text(json.dumps({"split": "test", "dataset": "toy"}))
    assert calibrate_main(["--runs", str(run), "--out", str(tmp_path / "ship")]) == 2
    assert "train splits only" in capsys.readouterr().err
    (run / "run.json").write_text(json.dumps({"split": "train", "dataset": "toy"}))
    assert calibrate_main(["--runs", str(run), "--out", str(tmp_path / "ship")]) == 0
    cal = load_plain(tmp_path / "ship")
    assert cal.card.n == 80 and cal.card.version == 1 and str(run) in cal.card.sources
    assert calibrate_main(["--runs", str(run), "--ratings", "--out", str(tmp_path / "x")]) == 2


def test_the_service_uses_the_better_of_the_shipped_and_its_own_calibrator(tmp_path, monkeypatch):
    import corea.signals.calibrator as calmod
    from corea.signals.calibrator import save_plain
    from corea.service import CoreaService

    outs, ys = _outputs(120)
    shipped = fit_calibrator(outs, ys, "Qwen2.5-Coder-0.5B-Instruct")
    shipped.card.held_out["auroc"] = 0.80
    save_plain(shipped, tmp_path / "assets" / "qwen2.5-coder-0.5b-instruct")
    monkeypatch.setattr(calmod, "SHIPPED", tmp_path / "assets")

    def service(**kw):
        s = Settings(db_url="sqlite://", calibrators_dir=tmp_path / "own", **kw)
        return CoreaService(s, slm=FakeBackend(["x"]), llm=FakeBackend(["y"]))

    svc = service(use_shipped_signals=True)
    assert svc.calibrator.card.held_out["auroc"] == 0.80 and svc.calibrator.origin == "shipped"
    assert service(use_shipped_signals=False).calibrator is None
    own = fit_calibrator(outs, ys, "Qwen2.5-Coder-0.5B-Instruct")
    own.card.held_out["auroc"] = 0.70
    CalibratorStore(tmp_path / "own").save(own)
    assert service(use_shipped_signals=True).calibrator.card.held_out["auroc"] == 0.80
    own.card.held_out["auroc"] = 0.90
    CalibratorStore(tmp_path / "own").save(own)  # a better refit replaces the shipped one
    svc = service(use_shipped_signals=True)
    assert svc.calibrator.card.version == 2 and svc.calibrator.origin == "fitted"


def test_a_token_only_calibrator_ignores_the_stated_confidence_and_round_trips(tmp_path):
    from corea.signals.calibrator import TOKEN_FEATURES, load_plain, save_plain

    outs, ys = _outputs(120)
    cal = fit_calibrator(outs, ys, "S", features=TOKEN_FEATURES)
    assert cal.card.features == list(TOKEN_FEATURES)
    moved = [{**o, "confidence": 0.05} for o in outs]  # another stated confidence
    assert np.allclose(cal.predict(moved), cal.predict(outs))
    assert cal.card.held_out["auroc"] > 0.8
    back = load_plain(save_plain(cal, tmp_path / "c").parent)
    assert back.card.features == list(TOKEN_FEATURES)
    assert np.allclose(back.predict(outs), cal.predict(outs), atol=1e-9)
    assert features(outs[0], ("log_n_tokens",)) == [features(outs[0])[5]]
    for bad in ([], ["verbal", "verbal"], ["nope"]):
        with pytest.raises(ValueError, match="features"):
            fit_calibrator(outs, ys, "S", features=bad)


def test_cli_fits_an_adapted_slm_on_its_base_runs_with_token_features_only(
        tmp_path, monkeypatch, capsys):
    from corea.signals.calibrator import TOKEN_FEATURES, load_plain

    monkeypatch.setenv("COREA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COREA_SLM__DISPLAY_NAME", "Adapted SLM")
    outs, ys = _outputs(80)
    run = _run_dir(tmp_path, outs, ys)  # rows of Qwen2.5-Coder-0.5B-Instruct
    (run / "run.json").write_text(json.dumps({"split": "train", "dataset": "toy"}))
    base = "Qwen2.5-Coder-0.5B-Instruct"
    assert calibrate_main(["--runs", str(run)]) == 2  # another SLM's rows: no labels
    capsys.readouterr()
    assert calibrate_main(["--runs", str(run), "--from-slm", base]) == 2
    assert "leave out the stated confidence" in capsys.readouterr().err
    assert calibrate_main(["--runs", str(run), "--from-slm", base, "--features", "token",
                           "--out", str(tmp_path / "ship")]) == 0
    cal = load_plain(tmp_path / "ship")
    assert cal.card.slm == "Adapted SLM" and cal.card.features == list(TOKEN_FEATURES)
    assert cal.card.n == 80 and cal.card.verbal_held_out["n"] == 0 and cal.card.beats_verbal()
    assert list(cal.card.sources) == [f"{run} ({base})"]
