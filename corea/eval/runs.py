"""Run folders: the files of one evaluation run, read and written safely.

(Over 400 lines: every file of a run folder, the items and each side file, has its one reader
and writer here, so that resuming, packing and repairing follow one set of rules.)

A run folder (default ``runs/<dataset>-<split>-<limit>-<slm>-<llm>``) holds:

* ``run.json``: the configuration, start/update times, machine info and one entry per generation
  session (:mod:`corea.eval.harness` writes it);
* ``items.jsonl``: one JSON object per item, appended, flushed and fsynced as soon as the item is
  done. A torn last line left by a crash is ignored when read, and cut off before a resumed run
  appends (``read_items(..., repair=True)``);
* ``priors.jsonl``: confidence-first turns, one ``{"id", "slm_prior"}`` per line;
* ``samples.jsonl``: sampled SLM solutions per item (:mod:`corea.eval.samples`);
* ``llm_states.jsonl``: the LLM's hidden state after its own prompt, one prefill per item
  (:mod:`corea.eval.llm_states`);
* ``llm_verify.jsonl``: the LLM's P(True) on the SLM's answer, one prefill per item
  (:mod:`corea.eval.llm_verify`);
* ``tiers.jsonl``: only in a folder of the former N-tier runner (one row per item with every
  tier's record, its ``items.jsonl`` then derived from it): :func:`load_results` reads its rows
  instead, and :func:`corea.eval.harness.evaluate` adopts it into ``items.jsonl``;
* ``summary.json`` / ``sweep.json``: written by :func:`corea.eval.summary.write_summary`;
* ``.lock``: held by the one process that writes the folder (:func:`run_lock`).

A run that took hours of CPU can be committed compressed: :func:`pack_run` writes ``X.jsonl.gz``
beside each ``X.jsonl`` (deterministic gzip). Readers take ``X.jsonl.gz`` where ``X.jsonl`` is
absent, and a resumed run first unpacks it (:func:`unpack_run`), so the same command continues a
packed run on a fresh clone.

Every JSON file is strict JSON: NaN and infinities become ``null`` (:func:`clean`).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import platform
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

__all__ = ["ITEMS_FILE", "RUN_FILE", "SUMMARY_FILE", "SWEEP_FILE", "PRIORS_FILE", "SAMPLES_FILE",
           "LOCK_FILE", "TIERS_FILE", "LLM_STATES_FILE", "LLM_VERIFY_FILE",
           "read_items", "load_results", "read_run", "append_json_line",
           "run_lock", "write_json", "NotTrainSplit", "require_train_split",
           "clean", "now", "machine_info", "default_run_dir", "list_runs", "items_file", "pack_run",
           "unpack_run"]

ITEMS_FILE = "items.jsonl"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
SWEEP_FILE = "sweep.json"
PRIORS_FILE = "priors.jsonl"  # confidence-first turns, one {"id", "slm_prior"} per line
SAMPLES_FILE = "samples.jsonl"  # sampled SLM solutions, one {"id", "samples": [...]} per line
LLM_STATES_FILE = "llm_states.jsonl"  # the LLM's prompt state, one {"id", "states", ...} per line
LLM_VERIFY_FILE = "llm_verify.jsonl"  # the LLM's P(True) on the SLM's answer, {"id", "p_true", ...}
TIERS_FILE = "tiers.jsonl"  # the former N-tier runner's rows: read in place of items.jsonl
LOCK_FILE = ".lock"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict:
    """Platform, Python, CPU model and counts, host name: recorded in run.json."""
    proc = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    proc = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "cpu_usable": usable, "processor": proc or None,
            "hostname": platform.node()}


def clean(x):
    """NaN/inf -> None, recursively, so files are strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented strict JSON, atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(obj), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def append_json_line(path: Path, row: dict) -> None:
    """Append one strict-JSON line to ``path``, flushed and fsynced (callers serialise writers)."""
    line = json.dumps(clean(row), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def run_lock(run_dir: Path):
    """Refuse a second process writing the same run folder.

    Raises:
        RuntimeError: another process holds the folder's lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    f = open(Path(run_dir) / LOCK_FILE, "w")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise RuntimeError(f"{run_dir} is being written by another process") from exc
        yield
    finally:
        f.close()


def read_items(path: Path, repair: bool) -> list[dict]:
    """Parse a JSONL file of item rows. A torn last line (crash mid-write) is ignored, and cut off
    if ``repair``.

    Raises:
        ValueError: an invalid line that is not the last one.
    """
    path = Path(path)
    packed = path.with_name(path.name + ".gz")
    if not path.is_file():
        if not packed.is_file():
            return []
        data, repair = gzip.decompress(packed.read_bytes()), False
    else:
        data = path.read_bytes()
    rows: list[dict] = []
    good_end = 0
    pos = 0
    lineno = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        lineno += 1
        line = data[pos:end]
        last = end >= len(data)
        try:
            row = json.loads(line) if line.strip() else None
            if row is not None and not (isinstance(row, dict) and "id" in row):
                raise ValueError("not an item object")
            if nl < 0 and row is not None:
                raise ValueError("no trailing newline")  # complete JSON but cut before the newline
        except ValueError as exc:
            if not last:
                raise ValueError(f"{path}:{lineno}: corrupt line ({exc}); fix or remove it") \
                    from exc
            break
        if row is not None:
            rows.append(row)
        good_end = end
        pos = end
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    return rows


def pack_run(run_dir: str | os.PathLike) -> list[Path]:
    """Write ``X.jsonl.gz`` for every ``X.jsonl`` of a run folder (gzip level 9, no timestamp,
    so the same rows give the same bytes); returns the packed files.

    Only complete lines are packed (a torn last line is left out).
    """
    out = []
    for path in sorted(Path(run_dir).glob("*.jsonl")):
        rows = read_items(path, repair=False)
        text = "".join(json.dumps(clean(r), ensure_ascii=False) + "\n" for r in rows)
        dest = path.with_name(path.name + ".gz")
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
        os.replace(tmp, dest)
        out.append(dest)
    return out


def unpack_run(run_dir: str | os.PathLike) -> list[Path]:
    """Decompress every ``X.jsonl.gz`` that has no ``X.jsonl`` beside it (before appending to a
    packed run); returns the files written."""
    out = []
    for packed in sorted(Path(run_dir).glob("*.jsonl.gz")):
        dest = packed.with_name(packed.name[:-3])
        if dest.exists():
            continue
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(gzip.decompress(packed.read_bytes()))
        os.replace(tmp, dest)
        out.append(dest)
    return out


def load_results(run_dir: str | os.PathLike) -> list[dict]:
    """The item rows of a run folder, in id order (natural: ``item-2`` before ``item-10``), one
    per id (a repeated id keeps the last row), each with both its tier records (``tiers``,
    ``n_tiers``) and its two-tier keys (``slm``, ``llm``, ``slm_correct``, ...), whichever it
    was written with (:func:`corea.eval.records.with_views`), its confidence-first turn
    (``slm_prior``) when ``priors.jsonl`` has one, its sampled solutions (``slm_samples``;
    a later tier's as its record's ``samples``) when ``samples.jsonl`` has them, and the LLM's
    state after its prompt (``llm.states.prompt``) when ``llm_states.jsonl`` has one, and the
    LLM's P(True) on the SLM's answer (``llm_verify``) when ``llm_verify.jsonl`` has one. A folder of the
    former N-tier runner is read from its ``tiers.jsonl``.

    Id order, not file order: items finish (and the LLM phase rewrites them) in an order that
    depends on the machine, and every cross-validated fit on these rows (probe, calibrator,
    held-out folds) must not.

    A torn last line is ignored (the file is not modified).

    Raises:
        FileNotFoundError: no ``items.jsonl`` in ``run_dir``.
        ValueError: a corrupt line other than the last.
    """
    from .records import with_views

    path = Path(run_dir) / ITEMS_FILE
    if not path.is_file() and not path.with_name(ITEMS_FILE + ".gz").is_file():
        raise FileNotFoundError(f"no results at {path}")
    by_id: dict[str, dict] = {}
    for row in read_items(path, repair=False):
        by_id.pop(str(row["id"]), None)
        by_id[str(row["id"])] = row
    for row in read_items(Path(run_dir) / TIERS_FILE, repair=False):  # the former N-tier runner
        by_id[str(row["id"])] = {**row, "n_tiers": len(row.get("tiers") or ())}
    by_id = {k: with_views(r) for k, r in by_id.items()}
    for p in read_items(Path(run_dir) / PRIORS_FILE, repair=False):
        if str(p["id"]) in by_id:
            by_id[str(p["id"])]["slm_prior"] = p.get("slm_prior")
    for p in read_items(Path(run_dir) / SAMPLES_FILE, repair=False):
        if str(p["id"]) in by_id:
            _attach_samples(by_id[str(p["id"])], p)
    for p in read_items(Path(run_dir) / LLM_STATES_FILE, repair=False):
        if str(p["id"]) in by_id and p.get("states"):
            _attach_llm_states(by_id[str(p["id"])], p["states"])
    for p in read_items(Path(run_dir) / LLM_VERIFY_FILE, repair=False):
        if str(p["id"]) in by_id:
            by_id[str(p["id"])]["llm_verify"] = {k: p.get(k) for k in (
                "p_true", "context", "prompt_tokens", "model", "error")}
    return [by_id[k] for k in sorted(by_id, key=natural_key)]


def _attach_samples(row: dict, line: dict) -> None:
    """A ``samples.jsonl`` line's samples on its row: the first tier's as ``slm_samples``, each
    later deciding tier's (``by_tier``) as its tier record's ``samples``."""
    row["slm_samples"] = line.get("samples") or []
    tiers = row["tiers"] = [dict(t) for t in row["tiers"]]
    if tiers:
        tiers[0]["samples"] = row["slm_samples"]
    for k, samples in (line.get("by_tier") or {}).items():
        if int(k) < len(tiers):
            tiers[int(k)]["samples"] = samples


def _attach_llm_states(row: dict, states: dict) -> None:
    """An ``llm_states.jsonl`` line's states on the row's last-tier record (``llm`` and the last
    of ``tiers``, copied so no other view changes); a row without an LLM record is left as is."""
    if not row.get("llm"):
        return
    llm = {**row["llm"], "states": {**(row["llm"].get("states") or {}), **states}}
    row["llm"] = llm
    if row.get("tiers"):
        row["tiers"] = [*row["tiers"][:-1], {**row["tiers"][-1], "output": llm}]


def natural_key(item_id: str) -> tuple:
    """Sort key of an item id that orders its digit runs as numbers (``q2`` before ``q10``)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.split(r"(\d+)", str(item_id)) if t)


def read_run(run_dir: str | os.PathLike) -> dict | None:
    """The run.json record of a run folder; None when missing or not valid JSON."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


class NotTrainSplit(ValueError):
    """A run folder that a command would fit or choose on is not recorded as a train split."""


def require_train_split(run_dir: str | os.PathLike, what: str = "fit or choose τ") -> dict:
    """The one split guard of every command that fits or chooses (``corea heldout --train``,
    ``corea probe --train``, ``corea calibrate --runs``, ``python -m train.confidence --runs``):
    the run folder's ``run.json`` must record ``"split": "train"``.

    Args:
        run_dir: the run folder.
        what: what the caller does with it, for the message (e.g. ``"fit a probe"``).

    Returns:
        the run's ``run.json`` record.

    Raises:
        NotTrainSplit (a ValueError): the folder records another split, or none at all (no
            ``run.json``, an unreadable one, or one without ``split``), with a message that
            says which and how to make a train run.
    """
    rec = read_run(run_dir)
    split = None if rec is None else rec.get("split")
    if split == "train":
        return rec
    if rec is None:
        why = "has no readable run.json, so its split is unknown"
    elif split is None:
        why = "records no split in its run.json"
    else:
        why = f"is a '{split}' split"
    raise NotTrainSplit(f"{run_dir} {why}; {what} on train splits only (make one with "
                        "`corea evaluate --split train ...`)")


def record_side_session(run_dir: str | os.PathLike, session: dict) -> bool:
    """Put ``session`` (a side-file stage's: ``stage``, ``started_at``, counts, ``status``) in
    the run's ``run.json`` ``sessions``, replacing the entry with the same ``stage`` and
    ``started_at``. Only an existing run records it: a folder without a valid ``run.json``
    identity (a side file made before the first evaluation session) is left alone, since the
    identity is what the first session writes and checks.

    Returns:
        whether it was recorded.
    """
    record = read_run(run_dir)
    if not record or not record.get("identity"):
        return False
    sessions = record.setdefault("sessions", [])
    for i, old in enumerate(sessions):
        if (old.get("stage"), old.get("started_at")) == (session["stage"],
                                                        session["started_at"]):
            sessions[i] = session
            break
    else:
        sessions.append(session)
    write_json(Path(run_dir) / RUN_FILE, record)
    return True


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._-") or "x"


def default_run_dir(dataset: str, split: str, limit: int | None, slm: str, llm: str,
                    seed: int | None = None, middle: Sequence[str] = (),
                    solve: str = "cot") -> Path:
    """``runs/<dataset>-<split>-<limit>-<slm>-<llm>[-seed<N>][-<solve>]``, each part sanitised;
    an N-tier run names its ``middle`` tiers between the first and the last
    (``...-<slm>-<tier 2>-...-<llm>``); a run whose tiers solve otherwise than by chain of thought
    ends with its mode (``-pot``, ``-mot``; ``-mixed`` when the tiers differ)."""
    ds = Path(dataset).stem if (dataset.endswith(".jsonl") or "/" in dataset) else dataset
    parts = [ds, split, "all" if limit is None else str(limit), slm.split("/")[-1],
             *(m.split("/")[-1] for m in middle), llm.split("/")[-1]]
    name = "-".join(_slug(p) for p in parts)
    if seed is not None:
        name += f"-seed{seed}"
    if solve != "cot":
        name += f"-{_slug(solve)}"
    return Path("runs") / name


def items_file(run_dir: str | os.PathLike) -> Path | None:
    """The run's item rows file: ``items.jsonl``, else its packed ``items.jsonl.gz``
    (:func:`pack_run`); None when neither is there."""
    plain = Path(run_dir) / ITEMS_FILE
    for f in (plain, plain.with_name(ITEMS_FILE + ".gz")):
        if f.is_file():
            return f
    return None


def list_runs(root: str | os.PathLike = "runs") -> list[str]:
    """Run folders (paths as strings, sorted by name) directly under ``root`` that hold a non-empty
    ``items.jsonl`` or a packed ``items.jsonl.gz``; ``[]`` if ``root`` does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        try:
            f = items_file(d) if d.is_dir() else None
            if f is not None and f.stat().st_size > 0:
                out.append(str(d))
        except OSError:
            continue
    return out
