"""Real-model integration tests for the local backends, on the embedded 0.5B SLM only.

Marked ``model`` (``pytest -m model`` runs them, ``-m "not model"`` skips them). Weights are assembled
(and, for transformers, converted once: ~1-3 min, ~4 GiB RAM) under ``$COREA_TEST_CACHE``, which
defaults to the app's cache ``~/.cache/corea`` so repeated runs reuse it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from corea.backends import GenerationParams, Message, collect
from corea.config import EMBEDDED_SLM, ModelSettings

BUDGET = 24  # max new tokens per call: keep the suite quick on a laptop CPU
QUESTION = [Message("user", "What is 2+3? Reply with just the number.")]
EXPLAIN = [Message("system", "You are a helpful assistant."),
           Message("user", "Explain in about 100 words what a Python list comprehension is.")]


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return Path(os.path.expanduser(os.environ.get("COREA_TEST_CACHE", "~/.cache/corea")))


def test_held_back_partial_stop_strings():
    from corea.backends.base import held_back as _held_back

    assert _held_back("abc Conf", ["Confidence:"]) == 4
    assert _held_back("abc", ["Confidence:"]) == 0
    assert _held_back("x\n\n", ["\n\nAnswer:", "\nC"]) == 2


# ------------------------------------------------------------------------------------ llama.cpp

@pytest.fixture(scope="session")
def llama(model_cache):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed "
                                            "(pip install llama-cpp-python)")
    from corea.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(ModelSettings(backend="llamacpp", model=EMBEDDED_SLM, n_ctx=2048),
                              model_cache)
    backend.load()
    return backend


@pytest.mark.model
def test_llamacpp_streams_text_and_usage(llama):
    chunks = list(llama.stream_chat(EXPLAIN, GenerationParams(max_new_tokens=BUDGET)))
    assert llama.model_name == "Qwen2.5-Coder-0.5B-Instruct" and llama.supports_continuation
    texts = [c.text for c in chunks[:-1]]
    assert len(texts) >= 5 and all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.usage is not None and last.finish_reason == "length"
    assert last.usage.completion_tokens == BUDGET
    assert 20 < last.usage.prompt_tokens < 60
    text = "".join(c.text for c in chunks)
    assert "list" in text.lower()
    # greedy decoding is reproducible
    again, usage, _ = collect(llama.stream_chat(EXPLAIN, GenerationParams(max_new_tokens=BUDGET)))
    assert again == text and usage == last.usage


@pytest.mark.model
def test_llamacpp_natural_stop_and_stop_strings(llama):
    text, usage, finish = collect(llama.stream_chat(QUESTION, GenerationParams(max_new_tokens=BUDGET)))
    assert "5" in text and finish == "stop" and usage.completion_tokens < BUDGET
    params = GenerationParams(max_new_tokens=BUDGET, stop=("4",))
    text, _, finish = collect(llama.stream_chat(
        [Message("user", "Count from 1 to 9, separated by commas.")], params))
    assert finish == "stop" and "4" not in text and text.startswith("1")


@pytest.mark.model
def test_llamacpp_continue_chat_continues_the_prefix(llama):
    plain = collect(llama.stream_chat(QUESTION, GenerationParams(max_new_tokens=4)))
    text, usage, _ = collect(llama.continue_chat(QUESTION, "The answer is",
                                                 GenerationParams(max_new_tokens=8)))
    assert "5" in text
    assert not text.lstrip().lower().startswith("the answer")
    assert usage.prompt_tokens == plain[1].prompt_tokens + 3  # "The", " answer", " is"
    assert "The answer is" in llama.render_prompt(QUESTION) + "The answer is"


@pytest.mark.model
def test_llamacpp_early_close_releases_the_model(llama):
    lm = llama.load()
    gen = llama.stream_chat(EXPLAIN, GenerationParams(max_new_tokens=BUDGET))
    try:
        lead = next(gen)  # the prompt's size, announced before any token (no text)
        assert lead.prompt_tokens and not lead.text
        first = next(gen)
        assert first.text and lm.lock.locked()
    finally:
        gen.close()  # (also on failure: a held model lock would hang every later test)
    assert not lm.lock.locked()
    text, usage, finish = collect(llama.stream_chat(QUESTION, GenerationParams(max_new_tokens=2)))
    assert text and usage.completion_tokens <= 2 and finish in ("stop", "length")


@pytest.mark.model
def test_llamacpp_shares_one_model_and_serializes_threads(llama, model_cache):
    from corea.backends.llamacpp import LlamaCppBackend

    other = LlamaCppBackend(ModelSettings(backend="llamacpp", model=EMBEDDED_SLM, n_ctx=2048,
                                          display_name="slm-2"), model_cache)
    assert other.load() is llama.load()
    results: list[str] = []

    def run(b):
        results.append(collect(b.stream_chat(QUESTION, GenerationParams(max_new_tokens=6)))[0])

    threads = [threading.Thread(target=run, args=(b,)) for b in (llama, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2 and results[0] == results[1]


@pytest.mark.model
def test_llamacpp_returns_one_logprob_per_token(llama):
    chunks = list(llama.stream_chat(QUESTION, GenerationParams(max_new_tokens=BUDGET)))
    pairs = [p for c in chunks for p in c.logprobs]
    assert len(pairs) == chunks[-1].usage.completion_tokens > 0
    assert all(lp <= 1e-6 for _, lp in pairs)
    assert "".join(t for t, _ in pairs) == "".join(c.text for c in chunks)
    # greedy on an easy question: the model is sure of the digit it writes
    digit = [lp for t, lp in pairs if t.strip() == "5"]
    assert digit and digit[0] > -0.7


MATH = ["What is 2+3? Reply with just the number.", "What is 4+4? Reply with just the number.",
        "What is 10-3? Reply with just the number.", "What is 6*2? Reply with just the number."]


@pytest.mark.model
def test_llamacpp_batched_engine_serves_concurrent_requests(model_cache):
    """n_parallel > 1: four concurrent generations decoded together, each correct and with
    log-probs; a continuation of a finished completion reuses its cached prefix."""
    from corea.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(ModelSettings(backend="llamacpp", model=EMBEDDED_SLM, n_ctx=1024,
                                      n_parallel=4, display_name="slm-batched"), model_cache)
    results: dict[int, tuple] = {}

    def run(i):
        chunks = list(b.stream_chat([Message("user", MATH[i])], GenerationParams(max_new_tokens=8)))
        results[i] = ("".join(c.text for c in chunks), chunks[-1].usage, chunks[-1].finish_reason,
                      [p for c in chunks for p in c.logprobs])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == [0, 1, 2, 3]
    for i, want in enumerate(["5", "8", "7", "12"]):
        text, usage, finish, pairs = results[i]
        assert want in text, (i, text)
        assert finish == "stop" and usage.completion_tokens == len(pairs) > 0
        assert all(lp <= 1e-6 for _, lp in pairs)
    engine = b.load().engine
    assert engine is not None and engine.n_parallel == 4
    # early close cancels the request and frees its slot for the next one
    stream = b.stream_chat(EXPLAIN, GenerationParams(max_new_tokens=200))
    next(iter(stream))
    stream.close()
    text, usage, _ = collect(b.continue_chat([Message("user", MATH[0])], results[0][0] + " So",
                                             GenerationParams(max_new_tokens=4)))
    assert usage.completion_tokens <= 4


# ---------------------------------------------------------------------------------- transformers

@pytest.fixture(scope="session")
def hf(model_cache):
    from corea.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(ModelSettings(backend="transformers", model=EMBEDDED_SLM),
                                  model_cache)
    backend.load()  # first run converts the GGUF (cached afterwards)
    return backend


@pytest.mark.model
def test_transformers_converted_checkpoint_streams(hf, model_cache):
    marker = model_cache / "hf" / "Qwen2.5-Coder-0.5B-Instruct" / "corea-source.json"
    assert marker.is_file()
    chunks = list(hf.stream_chat(QUESTION, GenerationParams(max_new_tokens=8)))
    text = "".join(c.text for c in chunks)
    last = chunks[-1]
    assert "5" in text and last.finish_reason == "stop"
    assert last.usage.prompt_tokens > 10 and 0 < last.usage.completion_tokens < 8
    text, usage, finish = collect(hf.stream_chat(EXPLAIN, GenerationParams(max_new_tokens=6)))
    assert text and usage.completion_tokens == 6 and finish == "length"


@pytest.mark.model
def test_transformers_continue_early_close_and_batch(hf):
    text, _, _ = collect(hf.continue_chat(QUESTION, "The answer is",
                                          GenerationParams(max_new_tokens=4)))
    assert "5" in text
    gen = hf.stream_chat(EXPLAIN, GenerationParams(max_new_tokens=BUDGET))
    assert next(gen).text
    gen.close()  # must end the worker thread (joined in close)
    assert not [t for t in threading.enumerate() if t.name == "corea-hf-generate"]
    rows = hf.generate_batch([QUESTION, EXPLAIN], GenerationParams(max_new_tokens=6))
    assert len(rows) == 2
    assert "5" in rows[0][0] and rows[0][2] == "stop"
    assert rows[1][1].completion_tokens == 6 and rows[1][2] == "length"
    # with log-probs: one (token, logprob) per generated token, the same greedy text
    lp_rows = hf.generate_batch([QUESTION, EXPLAIN], GenerationParams(max_new_tokens=6),
                                with_logprobs=True)
    for (text, usage, _), (text2, usage2, _, pairs) in zip(rows, lp_rows):
        assert text2 == text and len(pairs) == usage2.completion_tokens
        assert all(lp <= 1e-6 for _, lp in pairs)
    # streaming returns them too (on the final chunk)
    streamed = list(hf.stream_chat(QUESTION, GenerationParams(max_new_tokens=6)))
    assert len(streamed[-1].logprobs) == streamed[-1].usage.completion_tokens
    tok = hf.load().tokenizer
    for (_, usage, _), msgs in zip(rows, [QUESTION, EXPLAIN]):  # padding is not counted
        assert usage.prompt_tokens == len(tok(hf.render_prompt(msgs),
                                              add_special_tokens=False)["input_ids"])
