"""Run a trained LoRA checkpoint on llama.cpp: convert a PEFT adapter to llama.cpp's LoRA GGUF.

``train.grpo`` saves LoRA checkpoints as PEFT adapter folders (``adapter_config.json`` +
``adapter_model.safetensors``) on top of the float32 safetensors copy of an embedded GGUF
(:func:`corea.backends.weights.safetensors_checkpoint`). The transformers backend loads such a folder
directly but decodes ~4x slower than llama.cpp on CPU. This module lets the llama.cpp backend run
the same checkpoint: the *unchanged* quantized base GGUF plus the adapter, applied at run time
(``llama_cpp.Llama(lora_path=...)``), so a before/after comparison differs only by the adapter.

The adapter file follows llama.cpp's ``convert_lora_to_gguf.py`` layout: metadata
``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha``; one pair of F32
tensors ``<base tensor>.lora_a`` (shape ``(r, in)``) and ``<base tensor>.lora_b`` (``(out, r)``) per
adapted weight, named with gguf-py's tensor-name map of the architecture. llama.cpp scales the
product by ``alpha / r``, as PEFT does (rsLoRA's ``alpha / sqrt(r)`` is folded into the stored
alpha).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_GGUF = "adapter-lora.gguf"
_SOURCE_MARKER = "corea-source.json"  # written by corea.backends.weights.safetensors_checkpoint


def _folder(model: str | os.PathLike[str]) -> Path:
    """The folder ``model`` names (the shipped adapter for ``embedded:slm+calibration``)."""
    from ..adapters import resolve_adapter

    return resolve_adapter(model)


def is_adapter_dir(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` is a PEFT adapter folder (has ``adapter_config.json``), or the id of a
    shipped one (:data:`corea.adapters.CALIBRATED_SLM`)."""
    try:
        p = _folder(model)
    except FileNotFoundError:
        return False
    return p.is_dir() and (p / ADAPTER_CONFIG).is_file()


def lora_scope(model: str | os.PathLike[str]) -> str:
    """Where the adapter ``model`` names applies (:data:`corea.adapters.SCOPES`); ``all`` for a
    folder without a scope file and for a model that is no adapter folder.

    Raises:
        ValueError: the adapter's scope file names an unknown scope."""
    from ..adapters import adapter_scope

    return adapter_scope(_folder(model)) if is_adapter_dir(model) else "all"


def _config(adapter_dir: Path) -> dict:
    try:
        cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG} is not readable JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG} is not a JSON object")
    return cfg


def _check_config(adapter_dir: Path, cfg: dict) -> tuple[int, float]:
    """``(r, alpha as llama.cpp applies it)`` of a plain LoRA config; ValueError otherwise."""
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{adapter_dir} is a {cfg.get('peft_type')} adapter, not LoRA")
    if cfg.get("use_dora") or cfg.get("modules_to_save") or cfg.get("bias", "none") != "none" \
            or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError(f"{adapter_dir}: DoRA, trained biases, modules_to_save and per-module "
                         "ranks are not supported by the llama.cpp LoRA export")
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str) or any(t in ("lm_head", "embed_tokens") for t in targets):
        raise ValueError(f"{adapter_dir}: only LoRA on linear layers of the transformer blocks "
                         f"(named target_modules) runs on llama.cpp, not {targets!r}")
    try:
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG}: no valid r / lora_alpha") from exc
    if cfg.get("use_rslora"):  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha/r
        alpha *= math.sqrt(r)
    return r, alpha


def gguf_architecture(path: str | os.PathLike[str]) -> str:
    """``general.architecture`` of a GGUF file (e.g. ``qwen2``), read with gguf-py.

    Raises:
        ValueError: not a GGUF file, or no architecture recorded.
    """
    import gguf

    try:
        field = gguf.GGUFReader(str(path)).fields.get("general.architecture")
    except Exception as exc:  # gguf-py raises ValueError / struct errors on a bad file
        raise ValueError(f"{path} is not a readable GGUF file: {exc}") from exc
    if field is None:
        raise ValueError(f"{path} records no general.architecture")
    return str(field.contents())


def base_gguf(adapter_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """The GGUF file an adapter was trained on top of.

    The adapter's ``base_model_name_or_path`` is the safetensors copy made by
    :func:`corea.backends.weights.safetensors_checkpoint` (whose ``corea-source.json`` names the source
    GGUF), a ``.gguf`` path or ``embedded:slm`` / ``embedded:llm``.

    Raises:
        ValueError: the base is a hub id or a plain model folder (no GGUF to run it on: use the
            transformers backend), or the config is unreadable.
        FileNotFoundError: the recorded source GGUF no longer exists.
    """
    from .weights import resolve_gguf

    adapter_dir = _folder(adapter_dir)
    base = str(_config(adapter_dir).get("base_model_name_or_path") or "")
    marker = Path(base).expanduser() / _SOURCE_MARKER
    if base and marker.is_file():
        try:
            source = Path(json.loads(marker.read_text(encoding="utf-8"))["source"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{marker} is unreadable: {exc}") from exc
        if not source.is_file():
            raise FileNotFoundError(f"the base GGUF of {adapter_dir} ({source}) is missing")
        return source
    gguf = resolve_gguf(base, cache_dir) if base else None
    if gguf is None:
        raise ValueError(f"{adapter_dir} adapts {base or 'an unnamed model'!r}, which is not a GGUF "
                         "model: run it with the transformers backend")
    return gguf


def _arch(cfg: dict) -> str:
    """gguf architecture name from the base folder's ``config.json`` (``model_type``)."""
    base = Path(str(cfg.get("base_model_name_or_path") or "")).expanduser()
    try:
        return str(json.loads((base / "config.json").read_text(encoding="utf-8"))["model_type"])
    except (OSError, ValueError, KeyError, TypeError):
        return "qwen2"  # the embedded models


def checkpoint_backend(model: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> str:
    """The engine to run a trained checkpoint folder with: ``"llamacpp"`` for a LoRA adapter on a
    GGUF base when llama-cpp-python is installed (~4x faster on CPU, and the engine the base was
    evaluated with), else ``"transformers"`` (full-weight checkpoints, hub bases)."""
    import importlib.util

    if is_adapter_dir(model) and importlib.util.find_spec("llama_cpp") is not None:
        try:
            _check_config(_folder(model), _config(_folder(model)))
            base_gguf(model, cache_dir)
            return "llamacpp"
        except (OSError, ValueError):
            pass
    return "transformers"


def lora_gguf(adapter_dir: str | os.PathLike[str], arch: str | None = None,
              cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The adapter as a llama.cpp LoRA GGUF, converted once.

    Where the file goes (:func:`lora_gguf_path`): ``<adapter_dir>/adapter-lora.gguf`` for a
    user's checkpoint folder, rebuilt when the adapter weights or config are newer; for an adapter
    that ships inside the installed package (or any folder this process cannot write to),
    ``<cache_dir>/lora/<folder>-<sha256[:16]>/adapter-lora.gguf``, named by the content of the
    adapter's config and weights, so the package's files are never written to and a changed
    adapter gets a new file. Concurrent callers (threads or processes) convert once: the build
    holds :func:`corea.backends.weights.locked` and writes a unique temporary file that is renamed
    into place. Conversion reads the safetensors with ``safetensors`` and writes with gguf-py
    (``gguf.GGUFWriter``); it takes well under a second for a rank-8 adapter of the 0.5B model.

    Args:
        adapter_dir: PEFT adapter folder (or :data:`corea.adapters.CALIBRATED_SLM`).
        arch: gguf-py architecture name of the base model (``general.architecture``); default:
            the base folder's ``model_type``, else ``qwen2``.
        cache_dir: the cache root (:attr:`corea.config.Settings.cache_dir`) for adapters whose
            folder must not be written to.

    Raises:
        ValueError: not a LoRA adapter, an unsupported variant (DoRA, trained biases or
            ``modules_to_save``, per-module ranks, LoRA on embeddings / ``lm_head``), a tensor
            llama.cpp cannot map, unreadable weights (e.g. bfloat16, which numpy lacks), or a
            shipped / read-only adapter without ``cache_dir``.
        FileNotFoundError: no ``adapter_model.safetensors``.
    """
    from .weights import locked

    adapter_dir = _folder(adapter_dir)
    cfg = _config(adapter_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist")
    r, alpha = _check_config(adapter_dir, cfg)
    out = lora_gguf_path(adapter_dir, cache_dir)
    beside = out.parent == adapter_dir

    def fresh() -> bool:
        if not beside:  # named by content: the file is the adapter's as long as it exists
            return out.is_file()
        newest = max(weights.stat().st_mtime_ns, (adapter_dir / ADAPTER_CONFIG).stat().st_mtime_ns)
        return out.is_file() and out.stat().st_mtime_ns >= newest

    if fresh():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked(out):
        if fresh():
            return out
        _write(weights, out, arch or _arch(cfg), r, alpha)
    return out


def lora_gguf_path(adapter_dir: str | os.PathLike[str],
                   cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`lora_gguf` keeps the adapter's llama.cpp file (see there); nothing is written.

    Raises:
        FileNotFoundError: no ``adapter_model.safetensors`` (the cache name hashes it).
        ValueError: the folder is shipped with the package or not writable, and no ``cache_dir``.
    """
    import hashlib

    from ..shipped import ASSETS

    adapter_dir = _folder(adapter_dir)
    shipped = adapter_dir.resolve().is_relative_to(ASSETS)
    if not shipped and os.access(adapter_dir, os.W_OK):
        return adapter_dir / LORA_GGUF
    if cache_dir is None:
        why = "shipped with the package" if shipped else "read-only"
        raise ValueError(f"{adapter_dir} is {why}: its llama.cpp file needs a cache folder "
                         "(cache_dir)")
    h = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        with open(adapter_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    name = f"{adapter_dir.name}-{h.hexdigest()[:16]}"
    return Path(cache_dir).expanduser() / "lora" / name / LORA_GGUF


def _write(weights: Path, out: Path, arch: str, r: int, alpha: float) -> None:
    import tempfile

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own errors (bad header, bf16 in numpy)
        raise ValueError(f"cannot read {weights}: {exc}") from exc
    layers = 1 + max((int(k.split(".layers.")[1].split(".")[0]) for k in tensors
                      if ".layers." in k), default=-1)
    arch_id = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), None)
    if arch_id is None:
        raise ValueError(f"unknown gguf architecture {arch!r}")
    name_map = gguf.get_tensor_name_map(arch_id, layers)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        for part, suffix in (("a", ".lora_A.weight"), ("b", ".lora_B.weight")):
            if key.endswith(suffix):
                hf = key.removeprefix("base_model.model.").removesuffix(suffix) + ".weight"
                name = name_map.get_name(hf, try_suffixes=(".weight",))
                if name is None:
                    raise ValueError(f"no llama.cpp tensor for {key}")
                pairs.setdefault(name, {})[part] = value.astype(np.float32)
                break
        else:
            raise ValueError(f"unsupported adapter tensor {key} (only LoRA A/B weights)")
    for name, ab in pairs.items():
        if set(ab) != {"a", "b"} or ab["a"].shape[0] != r or ab["b"].shape[1] != r:
            raise ValueError(f"{name}: expected lora_A (r={r}, in) and lora_B (out, r={r})")

    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", alpha)
        for name in sorted(pairs):
            writer.add_tensor(f"{name}.lora_a", pairs[name]["a"])  # (r, in)  -> ggml ne [in, r]
            writer.add_tensor(f"{name}.lora_b", pairs[name]["b"])  # (out, r) -> ggml ne [r, out]
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
