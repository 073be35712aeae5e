"""Push rated interactions to a Hugging Face dataset repository, now (:func:`push_ratings`,
``corea push-ratings``) or on a schedule (:class:`HubPusher`, started by the app when
``COREA_HUB_DATASET`` is set).

The repository is the record of what was pushed, so a push survives a restart with an empty log
(a free Space) and a crash at any point:

1. create the dataset repository if missing (private unless ``COREA_HUB_PRIVATE=false``);
2. read its head commit and its shards (``data/*.parquet``; each shard's ``record_id`` column,
   downloaded once per process: a shard's name is a hash of its ids, so it never changes);
3. build the rows of every rated turn in the log (:func:`corea.export.records.rating_row`) and
   keep those whose ``record_id`` is not in the repository;
4. commit one new shard and the dataset card in one commit whose parent is the head read in 2.

A Hub commit is atomic: a push that fails before it leaves nothing, and the next push sends the
same rows again. A commit whose reply is lost is found in step 2 of the next push, which sends
nothing twice. Two processes pushing at once: the second commit names a stale parent and is
refused; its rows go with the next push. Nothing is kept on local disk.

The token comes from ``COREA_HUB_TOKEN`` or ``HF_TOKEN`` in the environment; it is passed to
:class:`huggingface_hub.HfApi` only, never logged or shown. Errors raised by a push are
:class:`HubPushError` with a message that names no secret. Not
:class:`huggingface_hub.CommitScheduler`: it uploads a local folder, which a Space loses on
restart, and keeps its own notion of what was uploaded; here the rows come from the log and the
repository says what is already there.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from ..store import StorageError, Store
from .records import DATA_DIR, dataset_card, parquet_bytes, rating_row, rows_table, shard_name

__all__ = ["HubTarget", "PushResult", "HubPushError", "hub_token", "push_ratings",
           "write_local", "HubPusher", "start_pusher"]

log = logging.getLogger(__name__)

TOKEN_ENV = ("COREA_HUB_TOKEN", "HF_TOKEN")
"""Environment variables read for the write token, first set wins."""


class HubPushError(RuntimeError):
    """A push failed (network, permissions, a refused commit); the message names no secret.
    Nothing was half-written: the next push sends the same rows."""


def hub_token() -> str | None:
    """The write token from the environment (:data:`TOKEN_ENV`), or ``None``."""
    return next((os.environ[k] for k in TOKEN_ENV if os.environ.get(k)), None)


@dataclass(frozen=True)
class HubTarget:
    """Where to push. ``repo_id``: ``owner/name`` of the dataset repository; ``endpoint``: the
    Hub's URL (``None``: ``HF_ENDPOINT`` or huggingface.co); ``private``: create it private;
    ``license_id``: the card's ``license`` (``None``: left for the owner)."""

    repo_id: str
    endpoint: str | None = None
    private: bool = True
    license_id: str | None = None

    @classmethod
    def from_settings(cls, settings) -> HubTarget | None:
        """From :class:`corea.config.Settings` (``hub_*`` fields); ``None`` when no dataset is
        configured."""
        if not settings.hub_dataset:
            return None
        return cls(settings.hub_dataset, settings.hub_endpoint, settings.hub_private,
                   settings.hub_license)


@dataclass(frozen=True)
class PushResult:
    """One push: ``pushed`` rows sent in ``shard`` (``None`` when none were new), ``already``
    rows found in the repository, ``commit`` the new commit's id (or ``None``)."""

    pushed: int
    already: int
    shard: str | None = None
    commit: str | None = None

    def message(self) -> str:
        """One line for the console or log."""
        if not self.pushed:
            return f"nothing new to push ({self.already} rated turns already in the dataset)"
        return f"pushed {self.pushed} rated turns in {self.shard} ({self.already} were there)"


def _rated_rows(store: Store) -> list[dict]:
    """Every rated turn of the log as dataset rows (:func:`rating_row`)."""
    return [rating_row(r) for r in store.list_interactions(limit=None, rated=True)]


def write_local(store: Store, out_dir: str | os.PathLike, repo_id: str = "OWNER/DATASET",
                license_id: str | None = None) -> Path:
    """``--dry-run``: write every rated turn as one shard and the card under ``out_dir``
    (``README.md``, ``data/…parquet``), as a push would lay them out; returns the shard's path.

    Raises:
        StorageError: the log cannot be read. OSError: the files cannot be written.
    """
    table = rows_table(_rated_rows(store))
    out = Path(out_dir)
    shard = out / (shard_name(table) if table.num_rows else f"{DATA_DIR}/ratings-empty.parquet")
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_bytes(parquet_bytes(table))
    (out / "README.md").write_text(dataset_card(repo_id, license_id), encoding="utf-8")
    return shard


class _Remote:
    """The dataset repository through :class:`huggingface_hub.HfApi`, with the record ids of
    the shards read so far (shards never change: their names hash their ids)."""

    def __init__(self, target: HubTarget, token: str | None):
        from huggingface_hub import HfApi

        self.target = target
        self.api = HfApi(endpoint=target.endpoint, token=token)
        self._ids: dict[str, set[str]] = {}

    def head(self) -> tuple[str | None, list[str]]:
        """Create the repository if missing; its head commit and file paths."""
        t = self.target
        self.api.create_repo(t.repo_id, repo_type="dataset", private=t.private, exist_ok=True)
        info = self.api.dataset_info(t.repo_id, revision="main")
        return info.sha, [s.rfilename for s in info.siblings or []]

    def ids_in(self, shard: str, revision: str | None) -> set[str]:
        """The record ids of one shard (downloaded on first use)."""
        if shard not in self._ids:
            from huggingface_hub import hf_hub_download

            with tempfile.TemporaryDirectory() as tmp:
                path = hf_hub_download(self.target.repo_id, shard, repo_type="dataset",
                                       revision=revision, local_dir=tmp,
                                       endpoint=self.target.endpoint, token=self.api.token)
                ids = pq.read_table(path, columns=["record_id"]).column("record_id")
                self._ids[shard] = set(ids.to_pylist())
        return self._ids[shard]

    def remember(self, shard: str, ids: set[str]) -> None:
        """Record the ids of a shard this process just committed."""
        self._ids[shard] = set(ids)

    def commit(self, files: dict[str, bytes], parent: str | None, message: str) -> str:
        """Add these files (path → bytes) in one commit on top of ``parent``; its id."""
        from huggingface_hub import CommitOperationAdd

        ops = [CommitOperationAdd(path, data) for path, data in files.items()]
        info = self.api.create_commit(self.target.repo_id, ops, commit_message=message,
                                      repo_type="dataset", parent_commit=parent)
        return info.oid


def push_ratings(store: Store, target: HubTarget, token: str | None = None,
                 remote: _Remote | None = None) -> PushResult:
    """Push the rated turns not yet in the repository (the steps in the module docstring).

    Args:
        store: the log to read.
        target: the repository.
        token: a write token (default :func:`hub_token`).
        remote: reuse one between pushes (keeps the shards' ids read so far).

    Raises:
        HubPushError: the Hub refused or could not be reached; nothing was half-written.
        StorageError: the log cannot be read.
    """
    remote = remote or _Remote(target, token if token is not None else hub_token())
    try:
        head, files = remote.head()
        shards = [f for f in files if f.startswith(f"{DATA_DIR}/") and f.endswith(".parquet")]
        there = set().union(*(remote.ids_in(s, head) for s in shards))
        rows = _rated_rows(store)
        new = [r for r in rows if r["record_id"] not in there]
        if not new and "README.md" in files:
            return PushResult(0, len(there))
        card = dataset_card(target.repo_id, target.license_id).encode("utf-8")
        if not new:
            return PushResult(0, len(there), commit=remote.commit(
                {"README.md": card}, head, "Add the dataset card"))
        table = rows_table(new)
        shard = shard_name(table)
        commit = remote.commit({shard: parquet_bytes(table), "README.md": card}, head,
                               f"Add {len(new)} rated interactions")
        remote.remember(shard, {r["record_id"] for r in new})
        return PushResult(len(new), len(there), shard, commit)
    except StorageError:
        raise
    except Exception as exc:  # the network boundary: HTTP, connection, file and Hub errors
        raise HubPushError(f"push to dataset {target.repo_id} failed: "
                           f"{_safe(exc, remote.api.token)}") from exc


def _safe(exc: BaseException, token: str | None) -> str:
    """The error's message on one line (the server's reason kept, help links dropped) with the
    token blanked out wherever it appears (a server may echo a request)."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.startswith("For more information")]
    text = " — ".join(lines) or type(exc).__name__
    return text.replace(token, "***") if token else text


class HubPusher:
    """Push on a schedule in a daemon thread: every ``every_s`` seconds, and once more at
    :meth:`stop`. A failed push is logged (no secret in it) and retried at the next tick.

    Args:
        target: the repository.
        store: a callable returning the log, or ``None`` while it is unavailable (that tick
            is skipped).
        every_s: seconds between pushes (> 0).
        token: a write token (default :func:`hub_token`).

    Raises:
        ValueError: ``every_s`` is not positive.
    """

    def __init__(self, target: HubTarget, store: Callable[[], Store | None], every_s: float,
                 token: str | None = None):
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, not {every_s}")
        self.target, self.every_s, self._store = target, float(every_s), store
        self._remote = _Remote(target, token if token is not None else hub_token())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: PushResult | None = None
        self.last_error: str | None = None

    def push_now(self) -> PushResult | None:
        """One push (one at a time); ``None`` when the log is unavailable or the push failed
        (the reason in :attr:`last_error`)."""
        store = self._store()
        if store is None:
            self.last_error = "the log is not available"
            return None
        with self._lock:
            try:
                self.last, self.last_error = push_ratings(store, self.target,
                                                          remote=self._remote), None
            except (HubPushError, StorageError) as exc:
                self.last_error = str(exc)
                log.warning("[hub] %s", exc)
                return None
        log.info("[hub] %s", self.last.message())
        return self.last

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.push_now()

    def start(self) -> HubPusher:
        """Start the thread (once); returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="corea-hub-push",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, final_push: bool = True) -> None:
        """Stop the thread; with ``final_push``, push what is left first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if final_push:
            self.push_now()


def start_pusher(settings, store: Callable[[], Store | None]) -> HubPusher | None:
    """The app's pusher when ``settings.hub_dataset`` is set (``None`` otherwise), started,
    with a last push when the process exits."""
    import atexit

    target = HubTarget.from_settings(settings)
    if target is None:
        return None
    pusher = HubPusher(target, store, settings.hub_push_every_s).start()
    atexit.register(pusher.stop)
    return pusher
