"""Linear probes on hidden states: fit, predict, save, load, targets (synthetic states)."""

from __future__ import annotations

import numpy as np
import pytest

from corea.signals import hidden
from corea.signals.probe import LinearProbe, fit_probe, probe_values, state_matrix, target_labels


def make_rows(n=120, dim=16, seed=0, with_states=True):
    """Rows whose 'end' state carries the SLM's correctness along dimension 0 (plus noise), and
    whose 'prompt' state is pure noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ok = bool(rng.random() < 0.4)
        llm = bool(rng.random() < 0.7)
        end = rng.normal(size=dim).astype(np.float32)
        end[0] += 2.5 if ok else -2.5
        prompt = rng.normal(size=dim).astype(np.float32)
        slm = {"confidence": 0.9, "answer": "1"}
        if with_states:
            slm["states"] = {"end": hidden.encode(end), "prompt": hidden.encode(prompt)}
        rows.append({"id": f"r{i}", "slm": slm, "slm_correct": ok, "llm_correct": llm})
    return rows


def test_a_probe_finds_the_direction_that_carries_correctness(tmp_path):
    train, test = make_rows(seed=0), make_rows(seed=1)
    probe = fit_probe(train, slm="toy", position="end", data=["toy/train"], version="v1")
    card = probe.card
    assert card.signal == "probe" and card.dim == 16 and card.n_train == 120
    assert card.cv["auroc"] > 0.9 and card.cv["folds"] == 5
    assert card.cv_verbal["auroc"] == pytest.approx(0.5)  # a constant stated confidence
    conf = np.array(probe_values(probe, test))
    y = np.array([r["slm_correct"] for r in test])
    assert conf[y].mean() > 0.7 and conf[~y].mean() < 0.3
    back = LinearProbe.load(probe.save(tmp_path / "p"))
    np.testing.assert_allclose(probe_values(back, test), conf, atol=1e-5)
    assert back.card == card
    one = back.confidence_of(test[0]["slm"]["states"])
    assert one == pytest.approx(conf[0], abs=1e-5)
    assert back.confidence_of(None) is None and back.confidence_of({"end": ""}) is None


def test_a_noise_position_does_not_rank():
    probe = fit_probe(make_rows(n=200, seed=2), slm="toy", position="prompt")
    assert probe.card.signal == "prior_probe" and abs(probe.card.cv["auroc"] - 0.5) < 0.15


def test_llm_helps_target_and_its_complement():
    rows = make_rows(seed=3)
    labels = target_labels(rows, "llm_helps")
    assert labels == [(not r["slm_correct"]) and r["llm_correct"] for r in rows]
    probe = fit_probe(rows, slm="toy", target="llm_helps")
    assert probe.card.signal == "probe_helps"
    X, _ = state_matrix(rows, "end")
    np.testing.assert_allclose(probe.confidence(X), 1.0 - probe.probability(X))


def test_rows_without_states_are_skipped_and_bad_input_is_refused():
    rows = make_rows(n=60, seed=4) + make_rows(n=5, seed=5, with_states=False)
    X, has = state_matrix(rows, "end")
    assert X.shape == (60, 16) and has.sum() == 60 and not has[-1]
    probe = fit_probe(rows, slm="toy")
    assert probe.card.n_train == 60 and probe_values(probe, rows)[-1] is None
    with pytest.raises(ValueError, match="at least"):
        fit_probe([dict(r, slm_correct=True) for r in rows], slm="toy")
    with pytest.raises(ValueError, match="no rows"):
        fit_probe(make_rows(n=10, with_states=False), slm="toy")
    with pytest.raises(ValueError):
        state_matrix(rows, "middle")
    with pytest.raises(ValueError, match="expects 16"):
        probe.confidence(np.zeros((1, 8)))


# -- the probe deciding live ---------------------------------------------------------------------

def fit_toy_probe(tmp_path, slm="slm", dim=4):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        ok = bool(i % 2)
        v = rng.normal(size=dim).astype(np.float32)
        v[0] += 3.0 if ok else -3.0
        rows.append({"slm": {"confidence": 0.9, "states": {"end": hidden.encode(v),
                                                         "prompt": hidden.encode(v)}},
                     "slm_correct": ok, "llm_correct": True})
    probe = fit_probe(rows, slm=slm, version="v1")
    return probe.save(tmp_path / "probe")


def service_with_probe(tmp_path, end_value: float, source="auto", slm_name="slm"):
    from corea.backends.fake import FakeBackend
    from corea.config import Settings
    from corea.service import CoreaService

    folder = fit_toy_probe(tmp_path)

    def states(messages, text):
        v = np.zeros(4, np.float32)
        v[0] = end_value
        return {"prompt": v, "end": v}

    settings = Settings(db_url="sqlite://", probe_dir=folder, confidence_source=source,
                        calibrators_dir=tmp_path / "cal")
    slm = FakeBackend(["So \\boxed{4}\nConfidence: 0.9"], model_name=slm_name, states=states)
    settings = settings.model_copy(update={"slm": settings.slm.model_copy(
        update={"display_name": slm_name})})
    return CoreaService(settings, slm=slm, llm=FakeBackend(["\\boxed{4}"], model_name="llm"))


def run_decision(service, tau=0.5):
    from corea.events import Final

    events = list(service.ask("What is 2+2?", threshold=tau))
    assert isinstance(events[-1], Final)
    return events[-1].result.decision


def test_auto_decides_with_the_probe_and_says_so(tmp_path):
    d = run_decision(service_with_probe(tmp_path, end_value=-3.0))
    assert d.signal == "probe" and d.defer and d.reason == "low_confidence"
    assert d.confidence < 0.1 and d.verbal_confidence == 0.9
    assert "probe confidence" in d.message and "(stated: 0.90)" in d.message
    d = run_decision(service_with_probe(tmp_path, end_value=3.0))
    assert d.signal == "probe" and not d.defer


def test_the_probe_is_not_used_for_another_slm_or_when_turned_off(tmp_path):
    svc = service_with_probe(tmp_path, end_value=-3.0, slm_name="other")
    assert svc.probe is None and run_decision(svc).signal == "verbal"
    svc = service_with_probe(tmp_path, end_value=-3.0)
    svc.settings = svc.settings.model_copy(update={"use_probe": False})
    svc._probe_loaded = False
    assert svc.probe is None and run_decision(svc).signal == "verbal"


def test_probe_requested_without_hidden_states_falls_back_with_a_note(tmp_path):
    from corea.backends.fake import FakeBackend

    svc = service_with_probe(tmp_path, end_value=3.0, source="probe")
    svc._slm = FakeBackend(["So \\boxed{4}\nConfidence: 0.9"], model_name="slm")  # no states
    d = run_decision(svc)
    assert d.signal == "verbal" and "no hidden states" in d.signal_note


def test_a_broken_probe_file_is_ignored(tmp_path):
    svc = service_with_probe(tmp_path, end_value=3.0)
    (tmp_path / "probe" / "probe.npz").write_bytes(b"not a zip")
    svc._probe_loaded = False
    assert svc.probe is None and run_decision(svc).signal == "verbal"


def test_cli_fits_a_probe_on_a_train_run_and_refuses_a_test_split(tmp_path, capsys):
    import json

    from corea.cli import main

    for split in ("train", "test"):
        d = tmp_path / split
        d.mkdir()
        (d / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_rows(60)))
        (d / "run.json").write_text(json.dumps({"split": split, "dataset": "toy",
                                                "models": {"slm": "toy-slm"}}))
    out = tmp_path / "p"
    assert main(["probe", "--train", str(tmp_path / "train"), "--version", "v1", "--out",
                 str(out)]) == 0
    card = LinearProbe.load(out).card
    assert card.slm == "toy-slm" and card.version == "v1" and "toy/train" in card.data[0]
    assert "out-of-fold AUROC" in capsys.readouterr().out
    assert main(["probe", "--train", str(tmp_path / "test"), "--out", str(out)]) == 2
    assert main(["probe", "--train", str(tmp_path / "nope")]) == 2
    # --test records held-out metrics on the card (never fit on); a train run is refused there
    assert main(["probe", "--train", str(tmp_path / "train"), "--out", str(out), "--test",
                 f"toy-test={tmp_path / 'test'}"]) == 0
    rec = LinearProbe.load(out).card.test["toy-test"]
    assert rec["n"] == 60 and 0.0 <= rec["auroc"] <= 1.0 and "verbal" in rec
    assert "held-out toy-test" in capsys.readouterr().out
    assert main(["probe", "--train", str(tmp_path / "train"), "--out", str(out), "--test",
                 f"again={tmp_path / 'train'}"]) == 2


def test_a_tokens_probe_also_reads_the_token_signals_and_needs_them_live(tmp_path):
    """tokens=True: the input is the state plus the calibrator's 7 features; here only the
    answer's token probability carries correctness, so the state-only probe cannot rank and
    the tokens probe can."""
    from corea.cascade import Cascade
    from corea.config import Settings
    from corea.events import ModelOutput
    from corea.backends.fake import FakeBackend

    rows = make_rows(160, seed=3)
    rng = np.random.default_rng(4)
    for r in rows:
        r["slm"]["states"]["end"] = hidden.encode(rng.normal(size=16).astype(np.float32))
        ok = r["slm_correct"]
        r["slm"]["signals"] = {"solution_prob": 0.8, "min_prob": 0.2, "n_tokens": 100,
                               "hit_length": False,
                               "answer_prob": float(rng.uniform(0.7, 1.0) if ok
                                                    else rng.uniform(0.05, 0.5))}
    plain = fit_probe(rows, "toy")
    tok = fit_probe(rows, "toy", tokens=True)
    assert tok.card.tokens and tok.card.dim == 16 + 7 and tok.card.signal == "probe_tokens"
    assert tok.card.cv["auroc"] > 0.9 > plain.card.cv["auroc"] + 0.2
    tok.save(tmp_path / "t")
    back = LinearProbe.load(tmp_path / "t")
    assert back.card.tokens
    assert probe_values(back, rows) == pytest.approx(probe_values(tok, rows), abs=1e-5)
    state = rows[0]["slm"]["states"]
    assert back.confidence_of(state) is None  # no token signals given
    assert 0.0 <= back.confidence_of(state, rows[0]["slm"]) <= 1.0
    settings = Settings(db_url="sqlite://", confidence_source="probe")
    cascade = Cascade(FakeBackend(["x"]), FakeBackend(["y"]), settings, probe=back)
    out = ModelOutput(model="toy", answer="1", confidence=0.9, states=state)
    conf, signal, note = cascade.deciding_confidence(out)
    assert signal == "verbal" and "no token log-probabilities" in note
    out.signals = rows[0]["slm"]["signals"]
    assert cascade.deciding_confidence(out)[1] == "probe"
