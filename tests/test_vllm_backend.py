"""VLLMBackend without a GPU: the missing-package path, and the glue code against a stub ``vllm``."""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass

import pytest

from corea.backends import make_backend
from corea.backends.base import BackendError, GenerationParams, Message, Usage, collect
from corea.config import ModelSettings

HAS_VLLM = importlib.util.find_spec("vllm") is not None
SETTINGS = ModelSettings(backend="vllm", model="Qwen/Qwen2.5-7B-Instruct")
MSGS = [Message("system", "Be brief."), Message("user", "2+2?")]


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_constructing_without_vllm_raises_importerror(tmp_path):
    from corea.backends.vllm_backend import VLLMBackend  # the module itself imports fine

    with pytest.raises(ImportError):
        VLLMBackend(SETTINGS, tmp_path)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_make_backend_without_vllm_is_unsupported(tmp_path):
    with pytest.raises(BackendError) as ei:
        make_backend(SETTINGS, tmp_path)
    assert ei.value.kind == "unsupported" and "vllm" in str(ei.value)


# ---- stub vllm: checks the prompt rendering, sampling params and result mapping --------------

@dataclass
class _Comp:
    text: str
    token_ids: list
    finish_reason: str | None


@dataclass
class _Out:
    prompt_token_ids: list
    outputs: list


class _Tokenizer:
    def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</s>" for m in msgs) + "<assistant>"


class _LLM:
    instances: list["_LLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        _LLM.instances.append(self)

    def get_tokenizer(self):
        return _Tokenizer()

    def generate(self, prompts, sp, use_tqdm=True):
        self.calls.append((list(prompts), sp))
        if any("BOOM" in p for p in prompts):
            raise RuntimeError("CUDA out of memory")
        return [_Out(list(p.split()), [_Comp(f"ans{i}", [1] * (i + 1),
                                             "length" if i else "stop")])
                for i, p in enumerate(prompts)]


@pytest.fixture
def stub_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.LLM = _LLM
    mod.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", mod)
    _LLM.instances.clear()
    return mod


def test_stream_chat_one_chunk_plus_usage(stub_vllm, tmp_path):
    b = make_backend(SETTINGS, tmp_path)
    assert b.model_name == "Qwen/Qwen2.5-7B-Instruct" and b.supports_continuation is True
    llm = _LLM.instances[0]
    assert llm.kwargs["model"] == "Qwen/Qwen2.5-7B-Instruct"
    chunks = list(b.stream_chat(MSGS, GenerationParams(max_new_tokens=7, temperature=0.5,
                                                       top_p=0.9, seed=3, stop=("\n",))))
    assert [c.text for c in chunks] == ["ans0", ""]
    prompts, sp = llm.calls[0]
    assert chunks[-1].usage == Usage(len(prompts[0].split()), 1)
    assert chunks[-1].finish_reason == "stop"
    assert prompts == ["<system>Be brief.</s><user>2+2?</s><assistant>"]
    assert sp == {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["\n"],
                  "logprobs": 0}


def test_continue_chat_appends_prefix(stub_vllm, tmp_path):
    b = make_backend(SETTINGS, tmp_path)
    text, usage, finish = collect(b.continue_chat(MSGS, "4\n\nConfidence:", GenerationParams()))
    assert text == "ans0"
    prompt = _LLM.instances[0].calls[0][0][0]
    assert prompt.endswith("<assistant>4\n\nConfidence:")


def test_generate_batch_in_order(stub_vllm, tmp_path):
    b = make_backend(SETTINGS, tmp_path)
    res = b.generate_batch([MSGS, [Message("user", "hi")]], GenerationParams())
    assert [r[0] for r in res] == ["ans0", "ans1"]
    assert res[1][1].completion_tokens == 2 and res[1][2] == "length"
    assert len(_LLM.instances[0].calls) == 1  # one batched call
    assert b.generate_batch([], GenerationParams()) == []


def test_engine_failure_is_backend_error(stub_vllm, tmp_path):
    b = make_backend(SETTINGS, tmp_path)
    with pytest.raises(BackendError) as ei:
        list(b.stream_chat([Message("user", "BOOM")], GenerationParams()))
    assert ei.value.kind == "internal" and "out of memory" in str(ei.value)


def test_embedded_weights_rejected(stub_vllm, tmp_path):
    with pytest.raises(BackendError) as ei:
        make_backend(ModelSettings(backend="vllm", model="embedded:slm"), tmp_path)
    assert ei.value.kind == "unsupported"


def test_sampled_token_logprobs_are_returned(stub_vllm, tmp_path):
    from types import SimpleNamespace as NS

    b = make_backend(SETTINGS, tmp_path)
    llm = _LLM.instances[0]
    comp = _Comp("ab", [5, 6], "stop")
    comp.logprobs = [{5: NS(logprob=-0.1, rank=1, decoded_token="a")},
                     {6: NS(logprob=-2.0, rank=3, decoded_token="b")}]
    llm.generate = lambda prompts, sp, use_tqdm=True: (llm.calls.append((prompts, sp)),
                                                       [_Out([1, 2], [comp])])[1]
    chunks = list(b.stream_chat(MSGS, GenerationParams(max_new_tokens=4)))
    assert chunks[0].text == "ab" and chunks[0].logprobs == (("a", -0.1), ("b", -2.0))
    assert llm.calls[-1][1]["logprobs"] == 0
