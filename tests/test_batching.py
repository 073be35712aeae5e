"""BatchingBackend: concurrent requests answered by one generate_batch call."""

from __future__ import annotations

import threading

import pytest

from corea.backends.base import BackendError, GenerationParams, Message, Usage, collect
from corea.backends.batching import BatchingBackend


class _Engine:
    model_name = "eng"
    supports_continuation = True

    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail
        self.settings = "S"

    def generate_batch(self, convs, params, assistant_prefixes=None, with_logprobs=False):
        self.calls.append((len(convs), assistant_prefixes, params))
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        out = []
        for i, c in enumerate(convs):
            q = c[-1].content
            pre = assistant_prefixes[i] if assistant_prefixes else ""
            out.append((f"re:{q}{pre}", Usage(len(q), 2), "stop", ((q, -0.5),)))
        return out


def _run_all(b, n, params=GenerationParams(max_new_tokens=5), prefix=None):
    res = [None] * n
    start = threading.Barrier(n)

    def w(i):
        start.wait()
        msgs = [Message("user", f"q{i}")]
        chunks = list(b.continue_chat(msgs, prefix, params) if prefix else
                      b.stream_chat(msgs, params))
        res[i] = chunks

    ts = [threading.Thread(target=w, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    return res


def test_concurrent_requests_share_batched_calls_and_keep_their_own_results():
    eng = _Engine()
    b = BatchingBackend(eng, max_batch=8, wait_s=0.2)
    res = _run_all(b, 8)
    assert sum(b.batch_sizes) == 8 and max(b.batch_sizes) > 1
    for i, chunks in enumerate(res):
        assert chunks[0].text == f"re:q{i}" and chunks[0].logprobs == ((f"q{i}", -0.5),)
        assert chunks[-1].usage == Usage(2, 2) and chunks[-1].finish_reason == "stop"
    assert b.model_name == "eng" and b.settings == "S"  # other attributes pass through


def test_continuations_pass_their_prefixes_and_params_split_batches():
    eng = _Engine()
    b = BatchingBackend(eng, max_batch=4, wait_s=0.2)
    res = _run_all(b, 3, prefix=" P")
    assert [collect(iter(c))[0] for c in res] == ["re:q0 P", "re:q1 P", "re:q2 P"]
    assert all(call[1] == [" P"] * call[0] for call in eng.calls)
    eng.calls.clear()
    res = [None, None]

    def w(i, p):
        res[i] = collect(b.stream_chat([Message("user", "x")], p))

    ts = [threading.Thread(target=w, args=(0, GenerationParams(max_new_tokens=5))),
          threading.Thread(target=w, args=(1, GenerationParams(max_new_tokens=9)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert sorted(c[0] for c in eng.calls) == [1, 1]  # different params: separate calls


def test_engine_failure_reaches_every_request_as_backend_error():
    b = BatchingBackend(_Engine(fail=True), max_batch=4, wait_s=0.05)
    with pytest.raises(BackendError, match="CUDA out of memory") as ei:
        collect(b.stream_chat([Message("user", "q")], GenerationParams()))
    assert ei.value.kind == "internal"
    with pytest.raises(TypeError):
        BatchingBackend(object())


def test_evaluate_wraps_only_batchable_engines():
    from corea.config import ModelSettings
    from corea.eval.harness import batched

    eng = _Engine()
    assert isinstance(batched(eng, ModelSettings(backend="transformers"), 4), BatchingBackend)
    assert batched(eng, ModelSettings(backend="transformers"), 1) is eng
    assert batched(eng, ModelSettings(backend="openai"), 4) is eng


def test_llamacpp_engine_fault_reaches_waiting_callers():
    """A scheduler fault is handed to every request in flight (no caller waits forever)."""
    pytest.importorskip("llama_cpp")
    import types

    import numpy as np

    from corea.backends.llamacpp_batch import BatchEngine, _Request, _sample

    eng = BatchEngine.__new__(BatchEngine)
    eng._cv = threading.Condition()
    eng._ctx = types.SimpleNamespace(memory=None)
    req = _Request(prompt=[1, 2], max_new=4, temperature=0.0, top_p=1.0,
                   rng=np.random.default_rng(0), seq=0)
    eng._active, eng._free, eng._cached = [req], set(), [[1]]
    eng._fail_all(BackendError("internal", "boom"))
    kind, err = req.out.get_nowait()
    assert kind == "error" and "boom" in str(err)
    assert eng._active == [] and eng._free == {0} and eng._cached == [[]]
    # greedy sampling returns the arg-max and its log-probability at temperature 1
    logits = np.array([0.0, 2.0, 1.0], dtype=np.float32)
    tok, lp = _sample(logits, req)
    assert tok == 1 and lp == pytest.approx(2.0 - np.log(np.exp(logits).sum()))
