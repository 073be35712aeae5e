"""LoRA checkpoints on llama.cpp (corea.backends.lora_gguf): the adapter GGUF's layout, its cache, the
refused variants, the base lookup, and — on the embedded SLM — that llama.cpp with the converted
adapter computes what PEFT computes."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from corea.backends.lora_gguf import LORA_GGUF, base_gguf, is_adapter_dir, lora_gguf

gguf = pytest.importorskip("gguf")
from safetensors.numpy import save_file  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("COREA_CACHE_DIR", "~/.cache/corea"))


def write_adapter(d, *, r=4, alpha=8, layers=2, hidden=16, kv=8, base="", seed=0, **cfg):
    """A PEFT-style LoRA adapter folder on q/v projections of a ``layers``-block Qwen2."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i in range(layers):
        for proj, out in (("q_proj", hidden), ("v_proj", kv)):
            key = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(size=(r, hidden)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.normal(size=(out, r)).astype(np.float32)
    save_file(tensors, str(d / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "bias": "none",
              "base_model_name_or_path": base, "target_modules": ["q_proj", "v_proj"]}
    config.update(cfg)
    (d / "adapter_config.json").write_text(json.dumps(config))
    return tensors


def fields(path):
    reader = gguf.GGUFReader(str(path))
    kv = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return kv, {t.name: t for t in reader.tensors}


def test_layout_names_shapes_and_values(tmp_path):
    tensors = write_adapter(tmp_path / "ckpt")
    assert is_adapter_dir(tmp_path / "ckpt") and not is_adapter_dir(tmp_path)
    out = lora_gguf(tmp_path / "ckpt")
    assert out == tmp_path / "ckpt" / LORA_GGUF
    kv, ts = fields(out)
    assert kv["general.architecture"] == "qwen2"
    assert kv["general.type"] == "adapter" and kv["adapter.type"] == "lora"
    assert kv["adapter.lora.alpha"] == pytest.approx(8.0)
    assert sorted(ts) == sorted(f"blk.{i}.attn_{p}.weight.lora_{ab}"
                                for i in range(2) for p in "qv" for ab in "ab")
    a, b = ts["blk.1.attn_v.weight.lora_a"], ts["blk.1.attn_v.weight.lora_b"]
    # ggml order (ne): lora_a [in, r], lora_b [r, out] -- what llama.cpp's loader checks
    assert list(a.shape) == [16, 4] and list(b.shape) == [4, 8]
    np.testing.assert_array_equal(
        np.asarray(b.data).reshape(8, 4),
        tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"])


def test_conversion_is_cached_until_the_weights_change(tmp_path):
    write_adapter(tmp_path / "c")
    out = lora_gguf(tmp_path / "c")
    first = out.stat().st_mtime_ns
    assert lora_gguf(tmp_path / "c").stat().st_mtime_ns == first
    w = tmp_path / "c" / "adapter_model.safetensors"
    os.utime(w, ns=(first + 10**9, first + 10**9))
    assert lora_gguf(tmp_path / "c").stat().st_mtime_ns > first


def test_the_shipped_adapter_converts_into_the_cache_never_into_the_package(tmp_path):
    from corea.adapters import CALIBRATED_SLM, shipped_adapter_dir
    from corea.shipped import ASSETS

    if shipped_adapter_dir() is None:
        pytest.skip("no shipped adapter")
    before = sorted(p for p in ASSETS.rglob("*"))
    with pytest.raises(ValueError, match="cache"):
        lora_gguf(CALIBRATED_SLM)
    out = lora_gguf(CALIBRATED_SLM, cache_dir=tmp_path)
    assert out.is_relative_to(tmp_path / "lora") and out.name == LORA_GGUF
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)
    assert lora_gguf(CALIBRATED_SLM, cache_dir=tmp_path) == out  # converted once
    assert sorted(p for p in ASSETS.rglob("*")) == before


def test_the_cache_name_changes_with_the_weights(tmp_path, monkeypatch):
    import corea.backends.lora_gguf as lg

    write_adapter(tmp_path / "c")
    monkeypatch.setattr(lg.os, "access", lambda *a, **k: False)  # read-only (root ignores modes)
    first = lora_gguf(tmp_path / "c", cache_dir=tmp_path / "cache")
    assert first.parent.parent == tmp_path / "cache" / "lora"
    assert not (tmp_path / "c" / LORA_GGUF).exists()
    write_adapter(tmp_path / "c", seed=1)
    second = lora_gguf(tmp_path / "c", cache_dir=tmp_path / "cache")
    assert second != first
    kv1, t1 = fields(first)
    kv2, t2 = fields(second)
    assert not np.array_equal(np.asarray(t1["blk.0.attn_q.weight.lora_a"].data),
                              np.asarray(t2["blk.0.attn_q.weight.lora_a"].data))


def test_rslora_scale_is_folded_into_alpha(tmp_path):
    write_adapter(tmp_path / "c", r=4, alpha=8, use_rslora=True)
    kv, _ = fields(lora_gguf(tmp_path / "c"))
    # PEFT: alpha / sqrt(r) = 4; llama.cpp: alpha' / r -> alpha' = 16
    assert kv["adapter.lora.alpha"] == pytest.approx(8 * math.sqrt(4))


@pytest.mark.parametrize("cfg", [{"use_dora": True}, {"peft_type": "IA3"}, {"bias": "all"},
                                 {"modules_to_save": ["lm_head"]}, {"rank_pattern": {"q": 2}},
                                 {"target_modules": ["q_proj", "lm_head"]},
                                 {"target_modules": "all-linear"}, {"lora_alpha": None}])
def test_unsupported_variants_are_refused(tmp_path, cfg):
    write_adapter(tmp_path / "c", **cfg)
    with pytest.raises(ValueError):
        lora_gguf(tmp_path / "c")
    assert not (tmp_path / "c" / LORA_GGUF).exists()


def test_concurrent_callers_convert_once(tmp_path, monkeypatch):
    import threading

    import corea.backends.lora_gguf as lg

    write_adapter(tmp_path / "c", layers=4)
    calls, real = [], lg._write

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(lg, "_write", counting)
    results, errors = [], []

    def work():
        try:
            results.append(lg.lora_gguf(tmp_path / "c"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if ".tmp" in p.name) == []
    assert len(fields(results[0])[1]) == 16


def test_missing_weights_and_foreign_tensors(tmp_path):
    write_adapter(tmp_path / "c")
    (tmp_path / "c" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError):
        lora_gguf(tmp_path / "c")
    d = tmp_path / "d"
    write_adapter(d)
    save_file({"base_model.model.lm_head.weight": np.zeros((2, 2), np.float32)},
              str(d / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="unsupported adapter tensor"):
        lora_gguf(d)


def test_base_gguf_follows_the_safetensors_marker(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    base = tmp_path / "hf" / "m"
    base.mkdir(parents=True)
    (base / "corea-source.json").write_text(json.dumps({"source": str(src)}))
    write_adapter(tmp_path / "c", base=str(base))
    assert base_gguf(tmp_path / "c", tmp_path) == src
    src.unlink()
    with pytest.raises(FileNotFoundError):
        base_gguf(tmp_path / "c", tmp_path)
    write_adapter(tmp_path / "g", base=str(tmp_path / "x.gguf"))
    with pytest.raises(FileNotFoundError):  # a .gguf path that does not exist
        base_gguf(tmp_path / "g", tmp_path)
    write_adapter(tmp_path / "h", base="Qwen/Qwen2.5-1.5B-Instruct")
    with pytest.raises(ValueError, match="transformers backend"):
        base_gguf(tmp_path / "h", tmp_path)


def test_llamacpp_backend_reports_an_unconvertible_adapter(tmp_path):
    pytest.importorskip("llama_cpp")
    from corea.backends.base import BackendError
    from corea.backends.llamacpp import LlamaCppBackend
    from corea.config import ModelSettings

    write_adapter(tmp_path / "c", base="Qwen/Qwen2.5-1.5B-Instruct")
    be = LlamaCppBackend(ModelSettings(backend="llamacpp", model=str(tmp_path / "c")), tmp_path)
    with pytest.raises(BackendError, match="transformers backend") as exc:
        be.load()
    assert exc.value.kind == "model_missing"


@pytest.mark.model
def test_llamacpp_with_the_adapter_computes_what_peft_computes(tmp_path):
    """A random LoRA on the embedded SLM's attention: the change it makes to the next-token logits
    is the same under PEFT (float32 base) and llama.cpp (quantized base + converted adapter)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corea.backends.llamacpp import LlamaCppBackend
    from corea.backends.base import GenerationParams, Message
    from corea.config import ModelSettings
    from corea.backends.weights import embedded_gguf, safetensors_checkpoint

    torch.manual_seed(0)
    hf_dir = safetensors_checkpoint("embedded:slm", CACHE)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok("Natalia sold clips to 48 of her friends in April, and then", return_tensors="pt")
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        hf_base = model(**ids).logits[0, -1].numpy()
    peft_model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False))
    with torch.no_grad():  # a moderate random update (B is small)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.2)
    peft_model.eval()
    with torch.inference_mode():
        hf_lora = peft_model(**ids).logits[0, -1].numpy()
    peft_model.save_pretrained(tmp_path / "ckpt")
    del model, peft_model
    assert base_gguf(tmp_path / "ckpt", CACHE) == embedded_gguf("embedded:slm", CACHE)

    tokens = ids["input_ids"][0].tolist()

    def llama_logits(lora):
        llm = llama_cpp.Llama(model_path=str(embedded_gguf("embedded:slm", CACHE)), n_ctx=256,
                              n_threads=2, verbose=False, lora_path=lora)
        llm.eval(tokens)
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        out = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()
        llm.close()
        return out

    cpp_base, cpp_lora = llama_logits(None), llama_logits(str(lora_gguf(tmp_path / "ckpt")))
    hf_delta, cpp_delta = hf_lora - hf_base, cpp_lora - cpp_base
    assert np.abs(hf_delta).mean() > 0.5  # the adapter really changes the logits
    corr = np.corrcoef(hf_delta, cpp_delta)[0, 1]
    scale = np.linalg.norm(cpp_delta) / np.linalg.norm(hf_delta)  # alpha / r applied once
    print(f"PEFT vs llama.cpp logit change: corr {corr:.4f}, norm ratio {scale:.3f}")
    assert corr > 0.95, corr
    assert 0.85 < scale < 1.15, scale
    assert np.argmax(cpp_lora) == np.argmax(hf_lora)

    # the backend's batch engine (n_parallel > 1) applies the adapter to its own context too
    params = GenerationParams(max_new_tokens=8, temperature=0.0)
    msgs = [Message("user", "What is 12 times 7?")]
    outs = {}
    for name, model_setting in (("base", "embedded:slm"), ("lora", str(tmp_path / "ckpt"))):
        for n_parallel in (1, 2):
            be = LlamaCppBackend(ModelSettings(backend="llamacpp", model=model_setting,
                                               n_parallel=n_parallel, n_ctx=512), CACHE)
            outs[name, n_parallel] = "".join(c.text for c in be.stream_chat(msgs, params))
    assert outs["lora", 1] == outs["lora", 2]
    assert outs["lora", 1] != outs["base", 1]


def test_checkpoint_backend_and_use_slm_pick_llamacpp_for_a_gguf_based_adapter(tmp_path):
    pytest.importorskip("llama_cpp")
    from corea.backends.fake import FakeBackend
    from corea.config import Settings
    from corea.backends.lora_gguf import checkpoint_backend
    from corea.service import CoreaService

    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    base = tmp_path / "hf" / "m"
    base.mkdir(parents=True)
    (base / "corea-source.json").write_text(json.dumps({"source": str(src)}))
    write_adapter(tmp_path / "run" / "checkpoint-20", base=str(base))
    write_adapter(tmp_path / "hub" / "checkpoint-20", base="Qwen/Qwen2.5-1.5B-Instruct")
    write_adapter(tmp_path / "dora" / "checkpoint-20", base=str(base), use_dora=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    assert checkpoint_backend(tmp_path / "run" / "checkpoint-20", tmp_path) == "llamacpp"
    assert checkpoint_backend(tmp_path / "hub" / "checkpoint-20", tmp_path) == "transformers"
    assert checkpoint_backend(tmp_path / "full", tmp_path) == "transformers"
    assert checkpoint_backend(tmp_path / "dora" / "checkpoint-20", tmp_path) == "transformers"

    svc = CoreaService(Settings(db_url=f"sqlite:///{tmp_path / 'a.sqlite'}", cache_dir=tmp_path),
                       llm=FakeBackend(["\\boxed{1}"], model_name="l"))
    assert svc.use_slm(str(tmp_path / "run" / "checkpoint-20")) == "run/checkpoint-20"
    assert svc.settings.slm.backend == "llamacpp"
    svc.use_slm(str(tmp_path / "hub" / "checkpoint-20"))
    assert svc.settings.slm.backend == "transformers"
