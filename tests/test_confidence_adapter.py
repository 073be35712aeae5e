"""A confidence-scoped adapter (``corea.adapters.SCOPES``): the SLM's solution is the base
model's; the adapted model writes only the confidence line after it.

Cascade behaviour on the scripted backend; the llama.cpp engine (one sequence and batched) on the
embedded SLM with a random adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corea.adapters import SCOPE_FILE, adapter_scope, write_adapter_scope
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Price, Settings
from corea.events import SLMDelta
from corea.parsing import strip_confidence
from corea.prompts import ANSWER_SUFFIX

CACHE = "~/.cache/corea"
PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}


def make(slm_reply, stated, continuations=(" 4",), mode="auto"):
    settings = Settings(threshold=0.5, confidence_mode=mode, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend([slm_reply], continuations=list(continuations), model_name="slm",
                      stated_confidence=stated)
    llm = FakeBackend(["It is \\boxed{5}"], model_name="llm")
    return Cascade(slm, llm, settings), slm


def run(cascade, q="What is 2+2?"):
    results = []
    events = list(cascade.run(q, on_result=results.append))
    return events, results[0]


# ------------------------------------------------------------------------------ scope files

def test_scope_file_round_trip_and_default(tmp_path):
    assert adapter_scope(tmp_path) == "all"  # no file: a plain checkpoint
    write_adapter_scope(tmp_path, "confidence")
    assert adapter_scope(tmp_path) == "confidence"
    (tmp_path / SCOPE_FILE).write_text(json.dumps({"scope": "everything"}))
    with pytest.raises(ValueError, match="scope must be one of"):
        adapter_scope(tmp_path)
    with pytest.raises(ValueError):
        write_adapter_scope(tmp_path, "solution")


@pytest.mark.parametrize("text,keep,want", [
    ("So \\boxed{4}.\n\nConfidence: 0.9", False, "So \\boxed{4}."),
    ("So \\boxed{4}.\n**Confidence:** 0.9\n", False, "So \\boxed{4}."),
    ("Hmm." + ANSWER_SUFFIX + " 4\nConfidence: 0.8", True, "Hmm." + ANSWER_SUFFIX + " 4"),
    ("Hmm." + ANSWER_SUFFIX + " 4\nConfidence: 0.8", False, "Hmm."),
    ("No confidence here, \\boxed{4}  \n", False, "No confidence here, \\boxed{4}"),
])
def test_strip_confidence(text, keep, want):
    assert strip_confidence(text, keep_answer=keep) == want


# ------------------------------------------------------------------------------ cascade

def test_the_adapter_states_the_confidence_after_the_base_solution():
    cascade, slm = make("Two plus two. \\boxed{4}\nConfidence: 0.9", ["\nConfidence: 0.3"])
    events, r = run(cascade)
    calls = [c for c in slm.calls if c[0] == "state_confidence"]
    assert [c[2] for c in calls] == ["Two plus two. \\boxed{4}"]  # its own line is dropped
    assert r.slm.answer == "4" and r.slm.answer_method == "free"
    assert r.slm.confidence == 0.3 and r.slm.confidence_method == "adapter"
    assert r.slm.text == "Two plus two. \\boxed{4}\nConfidence: 0.3"
    assert r.decision.defer  # 0.3 < τ 0.5: the base's own 0.9 did not decide
    streamed = [e.text for e in events if isinstance(e, SLMDelta)]
    assert "".join(streamed).endswith("\nConfidence: 0.3")
    assert not any(e.forced for e in events if isinstance(e, SLMDelta))  # nothing forced


def test_a_missing_answer_is_forced_first_then_the_adapter_states_the_confidence():
    cascade, slm = make("Let me think.", ["\nConfidence: 0.7"], continuations=[" 4"])
    _, r = run(cascade)
    assert [c[2] for c in slm.calls if c[0] == "continue"] == ["Let me think." + ANSWER_SUFFIX]
    assert [c[2] for c in slm.calls if c[0] == "state_confidence"] == \
        ["Let me think." + ANSWER_SUFFIX + " 4"]
    assert r.slm.answer == "4" and r.slm.answer_method == "forced"
    assert r.slm.confidence == 0.7 and r.slm.confidence_method == "adapter"


def test_an_unreadable_adapter_line_defers_and_says_why():
    cascade, _ = make("So \\boxed{4}", ["\nConfidence: high"])
    _, r = run(cascade)
    assert r.slm.confidence is None and "calibration adapter" in r.slm.confidence_note
    assert r.decision.defer


def test_a_cut_off_solution_gets_no_adapter_confidence():
    settings = Settings(threshold=0.5, prices=PRICES, db_url="sqlite://")
    settings.slm.max_new_tokens = 3
    slm = FakeBackend(["one two three four five six seven"], continuations=[" 4"],
                      model_name="slm", stated_confidence=["\nConfidence: 0.9"], chunk_chars=4)
    _, r = run(Cascade(slm, FakeBackend(["\\boxed{5}"], model_name="llm"), settings))
    assert r.slm.finish_reason == "length"
    assert not [c for c in slm.calls if c[0] == "state_confidence"]
    assert r.slm.confidence is None and "cut off" in r.slm.confidence_note


# ------------------------------------------------------------------------------ llama.cpp

@pytest.fixture(scope="module")
def scoped_adapter(tmp_path_factory):
    """A random LoRA on the embedded SLM's attention, saved with scope ``confidence``."""
    pytest.importorskip("llama_cpp")
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from corea.backends.weights import safetensors_checkpoint

    try:
        hf_dir = safetensors_checkpoint("embedded:slm", CACHE)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the embedded SLM checkpoint can't be built: {e}")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    out = tmp_path_factory.mktemp("scoped") / "ckpt"
    peft_model.save_pretrained(out)
    write_adapter_scope(out, "confidence")
    return out


@pytest.mark.model
def test_llamacpp_runs_the_adapter_only_on_the_confidence_line(scoped_adapter):
    """The scoped adapter's solution is the base model's, token for token; its continuation of a
    solution has the log-probabilities PEFT computes for base KV + adapter tail (not those of the
    base, nor of the adapter on every token), on one sequence and batched; nothing the adapter
    computed leaks into the next base generation."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corea.backends.base import BackendError, GenerationParams, Message
    from corea.backends.llamacpp import LlamaCppBackend
    from corea.backends.weights import safetensors_checkpoint
    from corea.config import ModelSettings

    msgs = [Message("user", "What is 12 times 7? Answer briefly.")]
    sol_params = GenerationParams(max_new_tokens=12, temperature=0.0)
    conf_params = GenerationParams(max_new_tokens=4, temperature=0.0)
    half = "12 times 7"  # a solution in the middle: the continuation has text to score

    def text(stream):
        return "".join(c.text for c in stream)

    base = LlamaCppBackend(ModelSettings(backend="llamacpp", model="embedded:slm", n_ctx=512),
                           CACHE)
    assert not base.confidence_adapter
    with pytest.raises(BackendError):
        base.state_confidence(msgs, "x", conf_params)
    base_sol = text(base.stream_chat(msgs, sol_params))
    outs = {}
    for n_parallel in (1, 2):
        be = LlamaCppBackend(ModelSettings(backend="llamacpp", model=str(scoped_adapter),
                                           n_parallel=n_parallel, n_ctx=512), CACHE)
        assert be.confidence_adapter
        sol = text(be.stream_chat(msgs, sol_params))
        chunks = list(be.state_confidence(msgs, half, conf_params))
        again = text(be.stream_chat(msgs, sol_params))
        assert sol == base_sol == again    # the solution is the base's, before and after
        outs[n_parallel] = ("".join(c.text for c in chunks),
                            np.array([lp for c in chunks for _, lp in c.logprobs or ()]))
    assert outs[1][0] == outs[2][0] and len(outs[1][1]) == 4

    hf_dir = safetensors_checkpoint("embedded:slm", CACHE)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32), scoped_adapter).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": msgs[0].content}],
                                     tokenize=False, add_generation_prompt=True) + half
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    cont = tok(outs[1][0], add_special_tokens=False)["input_ids"]
    full, n = torch.tensor([ids + cont]), len(ids)

    def scores(logits):  # log-probabilities of the continuation's tokens
        lp = torch.log_softmax(logits[0, -len(cont) - 1:-1], -1)
        return np.array([lp[i, t].item() for i, t in enumerate(cont)])

    with torch.no_grad():
        with model.disable_adapter():
            hf_base = scores(model(full).logits)
            past = model(full[:, :n - 1], use_cache=True).past_key_values
        tail = model(full[:, n - 1:], past_key_values=past).logits
        hf_scoped = scores(torch.cat([tail[:, :1], tail], 1))  # pad: scores() drops the last
        hf_all = scores(model(full).logits)
    for _, lps in outs.values():  # the first token is within the quantization noise of both
        d_scoped, d_base = np.abs(lps - hf_scoped)[1:].sum(), np.abs(lps - hf_base)[1:].sum()
        d_all = np.abs(lps - hf_all)[1:].sum()
        print(f"llama.cpp vs PEFT scoped {d_scoped:.3f}, base {d_base:.3f}, all {d_all:.3f}")
        assert d_scoped < 0.5 * d_base and d_scoped < 0.1 * d_all


@pytest.mark.model
def test_batched_base_and_adapter_requests_decode_together(scoped_adapter):
    """Two solutions in flight while confidence lines are decoded with the adapter on: each
    request gets what it gets alone."""
    import threading

    from corea.backends.base import GenerationParams, Message
    from corea.backends.llamacpp import LlamaCppBackend
    from corea.config import ModelSettings

    be = LlamaCppBackend(ModelSettings(backend="llamacpp", model=str(scoped_adapter),
                                       n_parallel=4, n_ctx=512), CACHE)
    qs = [[Message("user", f"What is {a} plus {a}?")] for a in (3, 11)]
    sol_p = GenerationParams(max_new_tokens=20, temperature=0.0)
    conf_p = GenerationParams(max_new_tokens=6, temperature=0.0)
    alone = {}
    for i, m in enumerate(qs):
        sol = "".join(c.text for c in be.stream_chat(m, sol_p))
        alone[i] = (sol, "".join(c.text for c in be.state_confidence(m, sol, conf_p)))
    got: dict = {}

    def solve(i):
        got["sol", i] = "".join(c.text for c in be.stream_chat(qs[i], sol_p))

    def state(i):
        got["conf", i] = "".join(c.text for c in be.state_confidence(qs[i], alone[i][0], conf_p))

    threads = [threading.Thread(target=f, args=(i,)) for f in (solve, state) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in (0, 1):
        assert got["sol", i] == alone[i][0]
        assert got["conf", i] == alone[i][1]
    assert np.all([not t.is_alive() for t in threads])


def test_the_ask_tab_shows_the_adapter_line_instead_of_the_base_models_own():
    from corea.ui.ask import TurnView

    cascade, _ = make("So \\boxed{4}\nConfidence: 0.9", ["\nConfidence: 0.2"])
    history: list = []
    view = TurnView(history, 0.5)
    for ev in cascade.run("What is 2+2?"):
        view.apply(ev)
    reasoning = history[0]["content"]
    assert reasoning == "So \\boxed{4}\nConfidence: 0.2"  # the base's own "0.9" is gone
    text = "\n".join(m["content"] for m in history)
    assert "stated confidence: 20% (written by the calibration adapter)" in text
