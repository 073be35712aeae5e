"""Rated interactions as dataset rows: the Parquet schema, one row per rating, and the dataset
card. Pure functions: no database, no network (:mod:`corea.export.hub` reads the log and pushes).

A row holds what a turn asked and answered and how it was rated, built from an allow-list of
the log's fields (:data:`ROW_FIELDS`): never a visitor's identity (no session id, key id, IP
address or user name; the log's ``session_id`` and ``journal_key`` are not read), nor a server
path (a model given as a local file is named by its file name; tier errors and ``extra`` pass
through :func:`corea.redact.redact`). Units:
confidences and τ in [0, 1], tokens, seconds, USD; times UTC.

``record_id`` names one rating of one turn: a hash of the turn's time, question and final
answer and of the rating's time and fields, so the same rating read twice gives the same id (a
push skips ids already in the repository) and turns of two databases (a Space restarted with an
empty log) do not collide. A turn rated twice gives two rows with the same ``interaction_uid``;
the one with the latest ``rated_at`` counts, as in the log.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ..redact import redact
from ..store.tiers import TIER_KEYS

__all__ = ["ROW_FIELDS", "SCHEMA", "rating_row", "rows_table", "parquet_bytes",
           "shard_name", "dataset_card", "DATA_DIR"]

DATA_DIR = "data"
"""Folder of the Parquet shards in the dataset repository."""

_STR, _F64, _I64, _BOOL = pa.string(), pa.float64(), pa.int64(), pa.bool_()
_TS = pa.timestamp("us", tz="UTC")

_TIER_TYPES = {"index": _I64, "answered": _BOOL, "threshold": _F64, "stated_confidence": _F64,
               "prompt_tokens": _I64, "completion_tokens": _I64, "cost_usd": _F64,
               "latency_s": _F64, "ttft_s": _F64, "signal_value": _F64}
TIER_TYPE = pa.struct([(k, _TIER_TYPES.get(k, _STR)) for k in TIER_KEYS])
"""One tier record (:data:`corea.store.tiers.TIER_KEYS`; ``extra`` as a JSON string)."""

SCHEMA = pa.schema([
    ("record_id", _STR), ("interaction_uid", _STR), ("created_at", _TS), ("rated_at", _TS),
    ("question", _STR),
    ("context", pa.list_(pa.struct([("role", _STR), ("content", _STR)]))),
    ("slm_answer", _STR), ("slm_output", _STR), ("llm_answer", _STR), ("llm_output", _STR),
    ("final_answer", _STR), ("final_model", _STR), ("confidence", _F64), ("threshold", _F64),
    ("decision_defer", _BOOL), ("decision_reason", _STR), ("rating_thumbs", _STR),
    ("rating_correction", _STR), ("rating_comment", _STR), ("tiers", pa.list_(TIER_TYPE)),
])
"""Columns of every shard, in order (explicit, so that all shards load as one split)."""

ROW_FIELDS = tuple(SCHEMA.names)

_COPIED = ("question", "slm_answer", "slm_output", "llm_answer", "llm_output", "final_answer",
           "final_model", "confidence", "threshold", "decision_defer", "decision_reason",
           "rating_thumbs", "rating_correction", "rating_comment")
"""Log fields copied as they are (an allow-list: nothing else of the row is read)."""

_FEATURES = {
    "record_id": "one rating of one turn (hash; stable across pushes)",
    "interaction_uid": "one turn (hash of its time, question and final answer)",
    "created_at": "when the question was answered (UTC)",
    "rated_at": "when the rating was given (UTC)",
    "question": "the question as typed",
    "context": "earlier turns sent with the question: list of {role, content}",
    "slm_answer / slm_output": "the first (small) model's extracted answer / full completion",
    "llm_answer / llm_output": "the last (large) model's, when the question was deferred",
    "final_answer / final_model": "the answer shown and the model that gave it",
    "confidence": "the first model's confidence compared with τ, in [0, 1]",
    "threshold": "τ, in [0, 1]",
    "decision_defer / decision_reason": "whether the first model deferred, and why",
    "rating_thumbs": "`up` (right), `down` (wrong) or null",
    "rating_correction": "the rater's corrected answer, or null",
    "rating_comment": "the rater's comment, or null",
    "tiers": "one record per tier that ran: model, answer, stated confidence, decision "
             "(`kept`/`deferred`), signal and its value, tokens, seconds, USD, output; "
             "`extra` a JSON string of the tier's other signals",
}


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _digest(*parts: Any, n: int = 32) -> str:
    text = json.dumps(parts, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def _model(name: str | None) -> str | None:
    """A model's name without the server's folders (a local ``.gguf`` path → its file name; a
    Hub id such as ``Qwen/Qwen2.5-Coder-1.5B-Instruct`` is kept)."""
    if name and name.startswith(("/", "~", "./", "../")):
        return PurePosixPath(name).name
    return name


def _tier(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: rec.get(k) for k in TIER_KEYS}
    out["model"] = _model(out["model"])
    out["error"] = redact(out["error"]) if out["error"] else None
    out["extra"] = redact(json.dumps(rec.get("extra") or {}, ensure_ascii=False,
                                     sort_keys=True, default=str))
    return out


def rating_row(row: dict[str, Any]) -> dict[str, Any]:
    """The dataset row of one rated interaction.

    Args:
        row: a :meth:`corea.store.storage.Store.list_interactions` dict of a rated turn
            (``rating_created_at`` set; ``extra["context"]`` optional; ``tiers`` the tier
            records).

    Returns:
        A dict with the keys of :data:`ROW_FIELDS` (times aware UTC datetimes).

    Raises:
        ValueError: the row has no rating.
    """
    rated_at = _utc(row.get("rating_created_at"))
    if rated_at is None:
        raise ValueError(f"interaction {row.get('id')} has no rating")
    created_at = _utc(row.get("created_at"))
    out: dict[str, Any] = {k: row.get(k) for k in _COPIED}
    out["decision_defer"] = bool(out["decision_defer"])
    out["final_model"] = _model(out["final_model"])
    context = (row.get("extra") or {}).get("context") or []
    out["context"] = [{"role": str(m.get("role")), "content": str(m.get("content"))}
                      for m in context if isinstance(m, dict)]
    out["tiers"] = [_tier(t) for t in row.get("tiers") or []]
    uid = _digest(created_at, row.get("question"), row.get("final_answer"), n=16)
    out.update(created_at=created_at, rated_at=rated_at, interaction_uid=uid,
               record_id=_digest(uid, rated_at, row.get("rating_thumbs"),
                                 row.get("rating_correction"), row.get("rating_comment")))
    return {k: out[k] for k in ROW_FIELDS}


def rows_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """:func:`rating_row` dicts as an Arrow table of :data:`SCHEMA`, oldest rating first."""
    ordered = sorted(rows, key=lambda r: (r["rated_at"], r["record_id"]))
    return pa.Table.from_pylist(ordered, schema=SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as one Parquet file (zstd-compressed)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def shard_name(table: pa.Table) -> str:
    """The repository path of a shard holding these rows: ``data/ratings-<last rated_at>-<hash of
    its record ids>.parquet``. The same rows always get the same name, so a retried push
    rewrites the same file rather than adding a second one."""
    ids = sorted(table.column("record_id").to_pylist())
    last = max(table.column("rated_at").to_pylist())
    return f"{DATA_DIR}/ratings-{last:%Y%m%dT%H%M%SZ}-{_digest(*ids, n=12)}.parquet"


def dataset_card(repo_id: str, license_id: str | None = None) -> str:
    """The dataset card (``README.md``): YAML front matter (``configs`` pointing the default
    split at every shard, ``license`` only when the owner set one) and a description of the
    features and of how the rows were collected."""
    meta = ["---", f"pretty_name: COREA rated interactions ({repo_id})"]
    if license_id:
        meta.append(f"license: {license_id}")
    meta += ["task_categories:", "- question-answering", "tags:", "- corea", "- cascade",
             "- confidence", "- human-feedback", "configs:", "- config_name: default",
             "  data_files:", "  - split: train", f"    path: {DATA_DIR}/*.parquet", "---"]
    features = "\n".join(f"| `{k}` | {v} |" for k, v in _FEATURES.items())
    lic = (f"`{license_id}`, set by the owner." if license_id else
           "not set: the repository's owner chooses one (`COREA_HUB_LICENSE`, or edit this "
           "card's `license:` field).")
    return f"""{chr(10).join(meta)}

# COREA rated interactions

Questions asked in a [COREA](https://arxiv.org/abs/2603.03752) app (a small model answers first
and states its confidence; below the threshold τ the question goes to a larger model) that a
visitor rated with 👍/👎, a corrected answer or a comment.

## How it was collected

The app logs every turn; the owner of the app turned on the push of *rated* turns to this
repository (`COREA_HUB_DATASET`). On a schedule, the app adds one Parquet shard of the ratings
not yet here under `{DATA_DIR}/`; a rating is never pushed twice (`record_id`). A turn rated
again appears once per rating: keep the latest `rated_at` per `interaction_uid`.
No visitor identity is stored: no session id, key id, IP address or user name. Questions,
corrections and comments are free text typed by visitors and may contain anything they wrote.

```python
from datasets import load_dataset
ds = load_dataset("{repo_id}", split="train")
```

## Features

| column | meaning |
|---|---|
{features}

Confidences and τ are in [0, 1]; tokens are tokens, times seconds, costs USD.

## License

{lic}
"""
