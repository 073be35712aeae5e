"""Signal data recorded by the harness: hidden states, self-verification (P(True)) and sampled
solutions, on scripted backends."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import corea.eval.harness as ev
from corea.signals import hidden
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Settings
from corea.datasets import load_dataset
from corea.eval import runs
from corea.signals.consistency import agreement
from corea.eval.samples import load_samples, sample_seed, score_samples
from corea.prompts import VERIFY_PROMPT


def test_hidden_state_text_round_trip_is_float16_exact():
    v = np.linspace(-3, 3, 896).astype(np.float32)
    back = hidden.decode(hidden.encode(v))
    assert back.shape == (896,) and back.dtype == np.float32
    np.testing.assert_allclose(back, v.astype(np.float16).astype(np.float32))
    assert len(hidden.encode(v)) == math.ceil(896 * 2 / 3) * 4  # base64 of 2 bytes per value
    assert hidden.encode_all(None) is None and hidden.encode_all({}) is None
    with pytest.raises(ValueError):
        hidden.encode(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        hidden.encode(np.array([1.0, float("nan")]))


def states_for(messages, text):
    q = messages[-1].content
    return {"prompt": np.full(4, float(len(q)), np.float32),
            "end": np.full(4, float(len(text)), np.float32)}


def yes_no(p_yes_logit: float, p_no_logit: float):
    def f(messages, prefix, candidates):
        assert list(candidates) == ["Yes", "No"] and prefix == ""
        return {"Yes": p_yes_logit, "No": p_no_logit}
    return f


def make(slm_text="So \\boxed{4}\nConfidence: 0.8", **fake):
    settings = Settings(db_url="sqlite://", confidence_mode="free")
    slm = FakeBackend([slm_text], model_name="slm", **fake)
    llm = FakeBackend(["\\boxed{4}"], model_name="llm")
    return Cascade(slm, llm, settings), slm


def test_slm_output_carries_the_engines_hidden_states():
    cascade, _ = make(states=states_for)
    out = cascade.slm_output("What is 2+2?")
    assert set(out.states) == {"prompt", "end"}
    np.testing.assert_array_equal(hidden.decode(out.states["prompt"]), np.full(4, 12.0))
    np.testing.assert_array_equal(hidden.decode(out.states["end"]), np.full(4, len(out.text)))
    plain, _ = make()
    assert plain.slm_output("What is 2+2?").states is None


def test_verify_output_is_p_yes_over_yes_plus_no_after_the_own_solution():
    cascade, slm = make(next_logprobs=yes_no(math.log(0.6), math.log(0.2)))
    out = cascade.slm_output("What is 2+2?")
    v = cascade.verify_output("What is 2+2?", None, out)
    assert v["p_true"] == pytest.approx(0.75) and v["error"] is None
    kind, messages, prefix = slm.calls[-1]
    assert kind == "score"
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2].content == out.text
    assert messages[3].content == VERIFY_PROMPT.format(answer="4")


def test_verify_output_without_answer_or_support_is_none_with_a_reason():
    cascade, slm = make(slm_text="I do not know.", next_logprobs=yes_no(0.0, 0.0))
    out = cascade.slm_output("What is 2+2?")
    assert cascade.verify_output("What is 2+2?", None, out) == {
        "p_true": None, "logprobs": None, "error": "no answer"}
    assert not [c for c in slm.calls if c[0] == "score"]
    cascade, _ = make()  # the fake scores nothing unless scripted
    v = cascade.verify_output("What is 2+2?", None, cascade.slm_output("What is 2+2?"))
    assert v["p_true"] is None and "scores no next tokens" in v["error"]


def write_items(tmp_path, n=3):
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "question": f"What is {i}+{i}?",
                                        "answer": str(2 * i)}) + "\n" for i in range(n)))
    return load_dataset(path)


def test_harness_records_states_and_verification_and_identity_names_them(tmp_path):
    items = write_items(tmp_path, 2)
    settings = Settings(db_url="sqlite://", confidence_mode="free")
    settings = settings.model_copy(update={"slm": settings.slm.model_copy(
        update={"hidden_states": True})})
    slm = FakeBackend(["\\boxed{0}\nConfidence: 0.9"], model_name="slm", states=states_for,
                      next_logprobs=yes_no(0.0, 0.0))
    cascade = Cascade(slm, FakeBackend(["\\boxed{2}"], model_name="llm"), settings)
    run_dir = ev.evaluate(items, cascade, tmp_path / "run", progress=False, verify=True,
                          run_info={"dataset": "toy", "split": "train"})
    rows = {r["id"]: r for r in runs.load_results(run_dir)}
    assert rows["t0"]["slm_verify"]["p_true"] == pytest.approx(0.5)
    assert hidden.decode(rows["t1"]["slm"]["states"]["end"]).shape == (4,)
    assert rows["t0"]["llm"].get("states") is None
    identity = json.loads((run_dir / "run.json").read_text())["identity"]
    assert identity["verify"] is True and identity["hidden_states"] is True
    with pytest.raises(ev.RunMismatch, match="verify"):  # resuming without --verify is refused
        ev.evaluate(items, cascade, run_dir, progress=False,
                    run_info={"dataset": "toy", "split": "train"})


def test_samples_are_seeded_per_item_graded_and_resumable(tmp_path):
    items = write_items(tmp_path, 3)
    seen = []

    def reply(messages):
        return "\\boxed{2}\nConfidence: 0.7"

    settings = Settings(db_url="sqlite://", confidence_mode="free")
    slm = FakeBackend(reply, model_name="slm")
    orig = slm.stream_chat

    def spy(messages, params):
        seen.append(params)
        return orig(messages, params)

    slm.stream_chat = spy
    cascade = Cascade(slm, FakeBackend(["x"], model_name="llm"), settings)
    assert score_samples(items[:2], cascade, tmp_path / "run", k=3, temperature=0.7,
                         progress=False) == 2
    assert [p.temperature for p in seen] == [0.7] * 6
    assert [p.seed for p in seen[:3]] == [sample_seed("t0", j) for j in range(3)]
    assert len({p.seed for p in seen}) == 6
    got = load_samples(tmp_path / "run")
    assert set(got) == {"t0", "t1"} and len(got["t1"]) == 3
    assert [s["correct"] for s in got["t1"]] == [True] * 3  # 1+1 = 2
    assert [s["correct"] for s in got["t0"]] == [False] * 3
    assert got["t0"][0]["confidence"] == 0.7 and got["t0"][0]["grade"]
    # resume: only the new item is sampled
    assert score_samples(items, cascade, tmp_path / "run", k=3, temperature=0.7,
                         progress=False) == 1
    assert len(load_samples(tmp_path / "run")) == 3
    with pytest.raises(ValueError):
        score_samples(items, cascade, tmp_path / "r2", k=0)


def test_a_samples_session_is_recorded_in_the_runs_sessions_only_when_there_is_a_run(tmp_path):
    items = write_items(tmp_path, 3)
    settings = Settings(db_url="sqlite://", confidence_mode="free")
    cascade = Cascade(FakeBackend(lambda m: "\\boxed{2}\nConfidence: 0.7", model_name="slm"),
                      FakeBackend(["x"], model_name="llm"), settings)
    bare = tmp_path / "bare"
    score_samples(items[:1], cascade, bare, k=2, progress=False)
    assert not (bare / "run.json").exists()  # no identity to attach it to: none is invented
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"identity": {"dataset": "t"}, "sessions": []}))
    score_samples(items, cascade, run, k=2, progress=False)
    score_samples(items, cascade, run, k=2, progress=False)  # nothing left: no session
    (sess,) = json.loads((run / "run.json").read_text())["sessions"]
    assert sess["stage"] == "samples" and sess["status"] == "complete"
    assert sess["n_generated"] == sess["n_todo"] == 3 and sess["items_per_minute"] > 0


def test_an_items_samples_are_drawn_together_and_lines_are_written_as_items_finish(tmp_path):
    """With 4 workers and k = 2, two items are in flight with both their samples at once (4
    generations together, not 2), and a finished item's line does not wait for a slower one."""
    import threading
    import time

    from corea.eval.harness import score_each

    items = write_items(tmp_path, 2)
    lock, active, peak = threading.Lock(), [0], [0]
    settings = Settings(db_url="sqlite://", confidence_mode="free")
    slm = FakeBackend(lambda m: "\\boxed{2}\nConfidence: 0.7", model_name="slm")
    orig = slm.stream_chat

    def spy(messages, params):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        try:
            return orig(messages, params)
        finally:
            with lock:
                active[0] -= 1

    slm.stream_chat = spy
    cascade = Cascade(slm, FakeBackend(["x"], model_name="llm"), settings)
    assert score_samples(items, cascade, tmp_path / "run", k=2, workers=4, progress=False) == 2
    assert peak[0] == 4
    assert all(len(v) == 2 for v in load_samples(tmp_path / "run").values())

    path = tmp_path / "side" / "x.jsonl"

    def one(it):
        if it.id == "t0":  # finishes only once t1's line is on disk
            deadline = time.time() + 5
            while time.time() < deadline and not (path.exists() and "t1" in path.read_text()):
                time.sleep(0.02)
        return {"id": it.id}

    assert score_each(items, one, tmp_path / "side", "x.jsonl", workers=2, progress=False) == 2
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["t1", "t0"]


def test_self_consistency_agreement():
    s = [{"answer": "4"}, {"answer": " 4"}, {"answer": "5"}, {"answer": None}]
    assert agreement("4", s) == 0.5
    assert agreement("4", s, k=2) == 1.0
    assert agreement(None, s) is None and agreement("4", []) is None


def test_a_packed_run_is_read_and_resumed_by_the_same_command(tmp_path):
    items = write_items(tmp_path, 3)
    settings = Settings(db_url="sqlite://", confidence_mode="free")
    slm = FakeBackend(["\\boxed{0}\nConfidence: 0.9"], model_name="slm")
    cascade = Cascade(slm, FakeBackend(["\\boxed{2}"], model_name="llm"), settings)
    info = {"dataset": "toy", "split": "train"}
    run_dir = ev.evaluate(items[:2], cascade, tmp_path / "run", progress=False, run_info=info)
    score_samples(items[:1], cascade, run_dir, k=2, progress=False)
    packed = runs.pack_run(run_dir)
    assert {p.name for p in packed} == {"items.jsonl.gz", "samples.jsonl.gz"}
    before = (run_dir / "items.jsonl.gz").read_bytes()
    runs.pack_run(run_dir)
    assert (run_dir / "items.jsonl.gz").read_bytes() == before  # deterministic bytes
    # a fresh clone has only the packed files
    (run_dir / "items.jsonl").unlink()
    (run_dir / "samples.jsonl").unlink()
    assert [r["id"] for r in runs.load_results(run_dir)] == ["t0", "t1"]
    assert set(load_samples(run_dir)) == {"t0"}
    n_calls = len(slm.calls)
    ev.evaluate(items, cascade, run_dir, progress=False, run_info=info)
    assert len(slm.calls) == n_calls + 1  # only t2 is new
    assert [r["id"] for r in runs.load_results(run_dir)] == ["t0", "t1", "t2"]
    assert score_samples(items[:2], cascade, run_dir, k=2, progress=False) == 1
