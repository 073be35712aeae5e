"""Real-model integration: the embedded SLM and LLM (GGUF from the installed PyPI packages, run by
llama.cpp) answer a real GSM8K test question through the cascade and the app's handler.

Greedy decoding, short budgets. Skipped with a reason when llama-cpp-python or the data is absent.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from corea.config import ModelSettings, Settings
from corea.events import Final, SLMDelta
from corea.service import CoreaService

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/install.sh)")


def gsm8k_test_item(data_dir, index=0):
    path = data_dir / "gsm8k" / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == index:
                return json.loads(line)
    raise IndexError(index)


def settings(tmp_path, threshold):
    return Settings(
        threshold=threshold, db_url=f"sqlite:///{tmp_path / 'real.sqlite'}",
        slm=ModelSettings(backend="llamacpp", model="embedded:slm", max_new_tokens=512),
        llm=ModelSettings(backend="llamacpp", model="embedded:llm", max_new_tokens=320))


def test_embedded_slm_answers_a_gsm8k_question(tmp_path, data_dir):
    # Item 1 (the robe): greedy, the untrained 0.5B ends it with a boxed answer. On item 0 it boxes
    # only a "probability of being correct" and then answers the forced "Answer:" suffix with a
    # confidence too, so no answer can be parsed there (that deferral is what the cascade is for).
    item = gsm8k_test_item(data_dir, 1)
    svc = CoreaService(settings(tmp_path, threshold=0.0))  # τ = 0: keep any parsed confidence
    events = list(svc.ask(item["question"], session_id="itest"))
    r = events[-1].result
    assert isinstance(events[-1], Final) and r.status == "ok"
    streamed = [e for e in events if isinstance(e, SLMDelta) and not e.forced]
    assert len(streamed) > 5, "the SLM's text should arrive in many chunks"
    slm = r.slm
    assert slm.model == "Qwen2.5-Coder-0.5B-Instruct" and slm.error is None
    assert slm.completion_tokens > 10 and slm.prompt_tokens > 20
    assert slm.answer, f"no parsed answer in: {slm.text[-300:]!r}"
    if slm.confidence is None:
        assert r.decision.reason == "no_confidence" and r.decision.defer
    else:
        assert 0.0 <= slm.confidence <= 1.0 and slm.confidence_method in ("free", "forced")
        assert r.decision.reason == "confident" and r.final_model == slm.model
    row = svc.store.get_interaction(r.interaction_id)
    assert row["question"] == item["question"] and row["slm_output"] == slm.text
    assert row["confidence"] == slm.confidence and row["cost_usd"] == pytest.approx(r.cost_usd)


def test_full_cascade_through_the_app_handler_with_both_real_models(tmp_path, data_dir):
    from corea.ui.ask import AskHandlers

    item = gsm8k_test_item(data_dir, 1)  # the SLM states 0.6 here, so τ = 1 defers
    svc = CoreaService(settings(tmp_path, threshold=1.0))  # τ = 1: defer unless certain
    h = AskHandlers(svc)
    outs = list(h.respond(item["question"], [], 1.0, [], SimpleNamespace(session_hash="real")))
    history, box, details, target, my_ids = outs[-1]
    r = svc.store.get_interaction(my_ids[-1][0])
    texts = "\n".join(m["content"] for m in history)
    assert "Small model's answer" in texts
    if r["confidence"] is not None and r["confidence"] >= 1.0:
        pytest.skip("the SLM stated certainty 1.0, so τ = 1 kept its answer")
    assert r["decision_defer"] and r["llm_model"] == "Qwen2.5-Coder-1.5B-Instruct"
    assert "Large model (Qwen2.5-Coder-1.5B-Instruct)" in texts
    assert r["llm_output"] and r["llm_completion_tokens"] > 10
    assert r["final_model"] == "Qwen2.5-Coder-1.5B-Instruct" and r["final_answer"]
    assert f"logged as #{r['id']}" in details
    assert h.rate("up", r["id"], "", "checked by the test").startswith("Saved rating 👍")
    assert svc.store.get_interaction(r["id"])["rating_thumbs"] == "up"


def test_a_fresh_clone_decides_with_the_shipped_learned_signal_and_says_so(tmp_path, data_dir):
    """Default settings (``confidence_source=auto``, the signals shipped in corea/assets): the
    service reads the SLM's hidden states and log-probabilities, and the decision is made by the
    shipped probe or calibrator, named in the message next to the stated confidence."""
    item = gsm8k_test_item(data_dir, 1)
    s = settings(tmp_path, threshold=0.5).model_copy(update={"use_shipped_signals": True})
    svc = CoreaService(s)
    assert svc.probe is not None and svc.calibrator is not None
    r = list(svc.ask(item["question"], session_id="shipped"))[-1].result
    d = r.decision
    assert d.signal in ("probe", "calibrated"), (d.signal, d.signal_note)
    assert r.slm.states and r.slm.signals and 0.0 <= d.confidence <= 1.0
    name = "probe confidence" if d.signal == "probe" else "calibrated confidence"
    assert name in d.message, d.message


@pytest.mark.parametrize("hidden_states", [False, True])
def test_identical_greedy_questions_give_identical_answers(tmp_path, hidden_states):
    # reuse_prefix is off by default: each new question is evaluated in full, so the answer does
    # not depend on what the previous request left in the KV cache (with reuse it did: 42, then 50)
    from corea.backends import make_backend
    from corea.cascade import Cascade
    from corea.signals import hidden

    s = settings(tmp_path, threshold=0.5)
    s = s.model_copy(update={"slm": s.slm.model_copy(update={
        "max_new_tokens": 32, "hidden_states": hidden_states})})
    slm = make_backend(s.slm, s.cache_dir)
    cascade = Cascade(slm, slm, s)
    outs = [cascade.slm_output(q) for q in ("What is 12 + 30?", "What is 7 * 8?",
                                            "What is 12 + 30?", "What is 12 + 30?")]
    texts = {o.text for o in outs[:1] + outs[2:]}
    assert len(texts) == 1, texts
    if hidden_states:  # read in the same decode, one per position, model-sized
        assert hidden.decode(outs[0].states["end"]).shape == (896,)
        assert set(outs[1].states) == {"prompt", "end"}


def test_a_real_run_carries_every_signal(tmp_path, data_dir):
    # two GSM8K train items through the harness with hidden states, P(True) and 2 samples on
    # the embedded pair (short budgets), then every deferral signal computed from the rows
    import numpy as np

    from corea.signals import hidden
    from corea.backends import make_backend
    from corea.cascade import Cascade
    from corea.datasets import load_dataset
    from corea.signals.registry import SIGNALS
    from corea.eval.harness import batched, evaluate, with_parallel
    from corea.eval.runs import load_results
    from corea.eval.samples import score_samples
    from corea.signals.probe import LinearProbe, ProbeCard

    items = load_dataset("gsm8k", "train", 2, data_dir=data_dir)
    s = with_parallel(settings(tmp_path, 0.5), 2)
    s = s.model_copy(update={
        "slm": s.slm.model_copy(update={"max_new_tokens": 32, "hidden_states": True}),
        "llm": s.llm.model_copy(update={"max_new_tokens": 16})})
    slm = batched(make_backend(s.slm, s.cache_dir), s.slm, 2)
    llm = batched(make_backend(s.llm, s.cache_dir), s.llm, 2)
    cascade = Cascade(slm, llm, s)
    run = evaluate(items, cascade, tmp_path / "run", workers=2, progress=False, verify=True,
                   run_info={"dataset": "gsm8k", "split": "train", "limit": 2})
    score_samples(items, cascade, run, k=2, workers=2, progress=False)
    rows = load_results(run)
    assert len(rows) == 2 and all(len(r["slm_samples"]) == 2 for r in rows)
    for r in rows:
        assert set(r["slm"]["states"]) == {"prompt", "end"}
        assert hidden.decode(r["slm"]["states"]["end"]).shape == (896,)
    for name in ("verbal", "tokprob", "answer_prob", "min_prob", "p_true", "sc2"):
        vals = SIGNALS[name].values(rows)
        assert all(v is None or 0.0 <= v <= 1.0 for v in vals), (name, vals)
    assert all(v is not None for v in SIGNALS["tokprob"].values(rows))
    answered = [r for r in rows if r["slm"]["answer"]]
    assert all(r["slm_verify"]["p_true"] is not None for r in answered)
    # a probe of the right size reads the real states (a fitted one needs train data: corea probe)
    rng = np.random.default_rng(0)
    probe = LinearProbe(np.zeros(896), np.ones(896), rng.normal(size=896) * 0.01, 0.0,
                        ProbeCard(slm="x", position="end", target="slm_correct", dim=896, c=1.0,
                                  n_train=0, n_positive=0))
    assert all(0.0 < v < 1.0 for v in SIGNALS["probe"].values(rows, probe))


def test_the_shipped_calibration_adapter_answers_and_states_its_own_confidence(tmp_path, data_dir):
    """``use_shipped_adapter``: the embedded SLM runs with its calibration adapter on llama.cpp
    (the quantized GGUF + the LoRA at run time, switched on for the confidence line only), is
    named so, answers the robe item and the adapted model writes its confidence line itself."""
    from corea.adapters import shipped_adapter_dir

    if shipped_adapter_dir() is None:
        pytest.skip("no calibration adapter ships in this checkout")
    item = gsm8k_test_item(data_dir, 1)
    s = settings(tmp_path, threshold=0.0).model_copy(update={"use_shipped_adapter": True})
    s = Settings.model_validate(s.model_dump())  # the switch applies when settings are built
    assert s.slm.model == "embedded:slm+calibration"
    svc = CoreaService(s)
    r = list(svc.ask(item["question"], session_id="adapter"))[-1].result
    assert r.slm.model == s.slm.name and "calibration adapter" in r.slm.model
    assert r.slm.error is None and r.slm.finish_reason == "stop", r.slm.text[-300:]
    assert r.slm.answer and r.slm.confidence_method == "adapter", r.slm.text[-300:]
    assert 0.0 <= r.slm.confidence <= 1.0
    assert r.slm.text.rstrip().splitlines()[-1].startswith("Confidence: 0.")


def test_corea_ask_solve_pot_with_the_embedded_models(tmp_path, monkeypatch, capsys):
    """``corea ask --solve pot``: the embedded SLM writes a program, the sandbox runs it, and a
    number is the answer (τ = 0 keeps it when it ran; else a tier after it answers)."""
    from corea import cli
    from corea.backends.weights import embedded_gguf

    try:
        embedded_gguf("slm", Settings().cache_dir)
    except Exception as exc:  # noqa: BLE001 — no weights package here: say so
        pytest.skip(f"the embedded SLM's weights are not available: {exc}")
    for key, value in {"COREA_SLM__N_THREADS": "1", "COREA_LLM__N_THREADS": "1",
                       "COREA_SLM__MAX_NEW_TOKENS": "320", "COREA_LLM__MAX_NEW_TOKENS": "320",
                       "COREA_DB_URL": f"sqlite:///{tmp_path / 'pot.sqlite'}"}.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["ask", "--solve", "pot", "-t", "0", "What is 17 * 23?"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    ran = [t for t in result["tiers"] if t["program"]]
    assert ran and all(t["solve"] == "pot" for t in result["tiers"]), result["tiers"]
    assert "[program]" in err
    float(result["final_answer"])  # a number (raises otherwise)
    answering = result["tiers"][result["answered_tier"]]
    assert answering["answer_method"] == "program" and answering["program_error"] is None
    assert answering["program_output"].strip()
