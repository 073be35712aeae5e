"""An engine in a supervised worker process (corea/backends/worker.py): it streams like the engine
itself; killed with SIGKILL or SIGSEGV while two visitors' turns stream, both turns get an engine
error (and the cascade carries on as for any engine fault), and the next question is answered by
the restarted worker. The engine is the scripted fake, run in the child (``functools.partial`` of
its class pickles); one test runs the embedded SLM on llama.cpp (``-m model``)."""

from __future__ import annotations

import functools
import os
import signal
import threading

import pytest

from corea.backends import make_backend
from corea.backends.base import BackendError, GenerationParams, collect
from corea.backends.fake import FakeBackend
from corea.backends.worker import WorkerBackend
from corea.config import ModelSettings, Settings
from corea.events import Final, SLMDelta
from corea.redact import plain_error
from corea.service import CoreaService
from corea.types import Message

REPLY = "Two and two make four. \\boxed{4}\nConfidence: 0.9"
MESSAGES = [Message("user", "What is 2 + 2?")]


def _worker(**fake) -> WorkerBackend:
    factory = functools.partial(FakeBackend, [REPLY], model_name="slm", **fake)
    return WorkerBackend("slm", factory, start_timeout_s=120, cancel_timeout_s=20)


@pytest.fixture
def worker():
    made = []

    def make(**fake):
        made.append(_worker(**fake))
        return made[-1]

    yield make
    for w in made:
        w.close()


def test_the_worker_streams_what_the_engine_streams(worker):
    w = worker(continuations=[" 0.5"])
    params = GenerationParams(max_new_tokens=64)
    here = FakeBackend([REPLY], continuations=[" 0.5"], model_name="slm")
    assert collect(w.stream_chat(MESSAGES, params)) == collect(here.stream_chat(MESSAGES, params))
    assert w.supports_continuation and not w.confidence_adapter and w.pid != os.getpid()
    assert collect(w.continue_chat(MESSAGES, "x", params))[0] == " 0.5"
    with pytest.raises(BackendError) as err:  # the engine's own error, with its kind
        w.next_token_logprobs(MESSAGES, "", ["Yes", "No"])
    assert err.value.kind == "unsupported"
    # closing a stream early stops it in the child; the worker stays usable
    it = worker(chunk_chars=2, delay_s=0.01).stream_chat(MESSAGES, params)
    next(it)
    it.close()
    assert w.restarts == 0


def test_isolate_setting_builds_a_worker(tmp_path):
    model = ModelSettings(backend="fake", model="scripted", isolate=True)
    backend = make_backend(model, tmp_path)
    try:
        assert isinstance(backend, WorkerBackend) and backend.model_name == "scripted"
        text, usage, finish = collect(backend.stream_chat(MESSAGES, GenerationParams()))
        assert finish == "stop" and backend.pid is not None
    finally:
        backend.close()
    assert not isinstance(make_backend(model.model_copy(update={"isolate": False}), tmp_path),
                          WorkerBackend)


def _run(service, question, out, key, on_delta=None):
    for ev in service.ask(question, threshold=0.7, session_id=key):
        if isinstance(ev, SLMDelta) and on_delta is not None:
            on_delta()
        if isinstance(ev, Final):
            out[key] = ev.result


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_crash_mid_stream_fails_the_turns_in_flight_and_the_worker_restarts(tmp_path, worker,
                                                                               sig):
    slm = worker(chunk_chars=2, delay_s=0.05)  # ~1.2 s per answer: killed while streaming
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'log.sqlite'}",
                        cache_dir=tmp_path / "cache")
    service = CoreaService(settings, slm=slm, llm=FakeBackend(["\\boxed{4}"], model_name="llm"))
    collect(slm.stream_chat(MESSAGES, GenerationParams()))  # the worker is up
    first_pid = slm.pid
    results = {}
    streaming = {"a": threading.Event(), "b": threading.Event()}
    visitors = [threading.Thread(target=_run, args=(service, q, results, key,
                                                    streaming[key].set))
                for key, q in (("a", "What is 2 + 2?"), ("b", "And 2 + 2 again?"))]
    for t in visitors:
        t.start()
    assert all(e.wait(30) for e in streaming.values())  # both turns stream at once
    os.kill(first_pid, sig)  # SIGSEGV: what a fault in libggml-cpu.so raises
    for t in visitors:
        t.join(60)
    assert not any(t.is_alive() for t in visitors)
    for key in ("a", "b"):
        hit = results[key]
        assert f"engine process stopped (signal {sig.name})" in hit.slm.error, key
        assert hit.final_answer == "4" and hit.decision.defer  # the LLM answered, as for any fault
    assert plain_error("small", results["a"].slm.error) == (  # what a visitor reads
        "The small model's engine stopped; it is restarting for the next question.")
    assert slm.restarts == 1
    _run(service, "What is 2 + 2, once more?", results, "c")
    assert results["c"].slm.error is None and results["c"].slm.answer == "4"
    assert not results["c"].decision.defer and slm.pid not in (None, first_pid)
    rows = service.store.list_interactions(limit=None)
    assert len(rows) == 3  # every turn logged once, the failed ones with their engine error
    crashed = [r for r in rows if any("engine process stopped" in e for e in r["errors"])]
    assert sorted(r["question"] for r in crashed) == ["And 2 + 2 again?", "What is 2 + 2?"]


@pytest.mark.model
def test_embedded_slm_in_a_worker_survives_sigkill():
    """The real engine: the embedded 0.5B SLM on llama.cpp (one thread) in a worker, killed after
    eight streamed chunks; the next call is answered by a new worker."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    settings = Settings(use_shipped_adapter=False)  # the shared weights cache
    model = settings.slm.model_copy(update={"isolate": True, "n_threads": 1})
    slm = make_backend(model, settings.cache_dir)
    params = GenerationParams(max_new_tokens=40)
    messages = [Message("user", "What is 12 + 30? Explain briefly.")]
    try:
        seen = 0
        with pytest.raises(BackendError, match=r"engine process stopped \(signal SIGKILL\)"):
            for _ in slm.stream_chat(messages, params):
                seen += 1
                if seen == 8:
                    os.kill(slm.pid, signal.SIGKILL)
        text, usage, finish = collect(slm.stream_chat(messages, params))
        assert "42" in text and usage.completion_tokens > 0 and slm.restarts == 1
    finally:
        slm.close()
