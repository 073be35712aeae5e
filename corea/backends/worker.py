"""A model's engine in a supervised worker process, so that an engine crash (llama.cpp has raised
general-protection faults in ``libggml-cpu.so`` under long batched runs) fails only the turns in
flight instead of the whole web app.

:class:`WorkerBackend` implements :class:`corea.backends.base.Backend` by forwarding every call to
a child process (``python -m corea.backends.worker``: a fresh interpreter, no forked threads, no
re-import of the parent's ``__main__``) that builds the real backend with ``factory(*args)`` (by
default :func:`corea.backends.make_backend`) and streams its chunks back over a
``multiprocessing`` pipe. Calls run concurrently: each has an id, runs in its own thread in the
child (the engine serialises or batches them as it does in-process, e.g. llama.cpp with
``n_parallel``), and a reader thread in the parent hands each message to its call.

When the child dies (a signal such as SIGSEGV or SIGKILL, or any exit), every call in flight
raises ``BackendError("internal", "... engine process stopped (signal SIGKILL) ...")`` — the
cascade records it as that model's error, like any engine fault — and the next call starts a new
child (:attr:`WorkerBackend.restarts` counts the crashes). Closing a stream early cancels it in
the child; a child that does not stop it in ``cancel_timeout_s`` is killed.

Costs: a child's start (imports, then the model loads there on first use, as in-process; again
after a crash) and one pickle round trip per streamed chunk.

Turned on per model by ``isolate`` (:class:`corea.config.ModelSettings`; default off).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from .base import BackendError, Chunk, GenerationParams, Message

__all__ = ["WorkerBackend"]

log = logging.getLogger(__name__)
_STREAMS = ("stream_chat", "continue_chat", "state_confidence")
_CALLS = ("next_token_logprobs",)


# ------------------------------------------------------------------------------- the child

def _run_call(backend, send, cid: int, method: str, args: tuple,
              cancel: threading.Event) -> None:
    """One call in the child: its chunks, then ``done`` / ``result`` / ``error``."""
    try:
        out = getattr(backend, method)(*args)
        if method in _CALLS:
            send((cid, "result", out))
            return
        it = iter(out)
        try:
            for chunk in it:
                send((cid, "chunk", chunk))
                if cancel.is_set():
                    break
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        send((cid, "done", None))
    except BackendError as exc:
        send((cid, "error", (exc.kind, str(exc))))
    except Exception as exc:  # noqa: BLE001 — an engine fault is that call's error
        send((cid, "error", ("internal", f"{type(exc).__name__}: {exc}")))


def _serve(conn) -> None:
    """The child: receive ``(factory, args)``, build the backend, say ``ready``; then run each
    ``("call", id, method, args)`` in a thread; ``("cancel", id)`` stops that stream between
    chunks; ``("stop",)`` or a closed pipe ends the process."""
    lock = threading.Lock()

    def send(msg) -> None:
        with lock:
            conn.send(msg)

    try:
        factory, args = conn.recv()
        backend = factory(*args)
    except Exception as exc:  # noqa: BLE001 — reported to the parent as the start's failure
        send((None, "error", (getattr(exc, "kind", "internal"), f"{type(exc).__name__}: {exc}")))
        return
    send((None, "ready", {
        "supports_continuation": bool(getattr(backend, "supports_continuation", False)),
        "confidence_adapter": bool(getattr(backend, "confidence_adapter", False)),
        "methods": [m for m in _STREAMS + _CALLS if callable(getattr(backend, m, None))]}))
    cancels: dict[int, threading.Event] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg[0] == "stop":
            break
        if msg[0] == "cancel":
            if msg[1] in cancels:
                cancels[msg[1]].set()
            continue
        _, cid, method, call_args = msg
        cancels[cid] = threading.Event()
        threading.Thread(target=_run_call, args=(backend, send, cid, method, call_args,
                                                 cancels[cid]), daemon=True).start()
    os._exit(0)  # calls still running die with the process


# ------------------------------------------------------------------------------ the parent

def _default_factory(model, cache_dir):
    from . import make_backend

    return make_backend(model.model_copy(update={"isolate": False}), cache_dir)


class _Child:
    """One running child: its process, pipe, reader thread and the calls in flight."""

    def __init__(self, name: str, factory, args, start_timeout_s: float, on_death):
        parent, child = multiprocessing.Pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "corea.backends.worker",
                                      str(child.fileno())], pass_fds=(child.fileno(),), env=env)
        child.close()
        self.name, self.conn, self.on_death = name, parent, on_death
        self.calls: dict[int, queue.Queue] = {}
        self.lock = threading.Lock()
        self.dead: BackendError | None = None
        self.killed = False
        try:
            parent.send((factory, args))
            ready = parent.poll(start_timeout_s)
            msg = parent.recv() if ready else None
        except (EOFError, OSError):
            msg = None
        if msg is None or msg[1] != "ready":
            why = msg[2][1] if msg is not None and msg[1] == "error" else self._exit_reason()
            self.kill()
            raise BackendError(msg[2][0] if msg is not None and msg[1] == "error" else "internal",
                               f"the {name} engine process could not start: {why}")
        self.info = msg[2]
        threading.Thread(target=self._read, daemon=True, name=f"corea-engine-{name}").start()

    def _exit_reason(self) -> str:
        try:  # a closed pipe can come before the exit status
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "its pipe closed"
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def _read(self) -> None:
        """Hand each message to its call; on a dead child, fail every call in flight."""
        while True:
            try:
                cid, kind, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            with self.lock:
                q = self.calls.get(cid)
            if q is not None:
                q.put((kind, payload))
        why = self._exit_reason()
        err = BackendError("internal", f"the {self.name} engine process stopped ({why}); it "
                                       "restarts for the next question")
        with self.lock:
            self.dead = err
            pending = list(self.calls.values())
        for q in pending:
            q.put(("died", err))
        self.on_death(self, why)

    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    def send(self, msg) -> None:
        with self.lock:
            if self.dead is not None:
                raise self.dead
            try:
                self.conn.send(msg)
            except OSError:
                pass  # the reader sees the closed pipe and fails the call

    def open(self, cid: int) -> queue.Queue:
        q: queue.Queue = queue.Queue()
        with self.lock:
            if self.dead is not None:
                raise self.dead
            self.calls[cid] = q
        return q

    def close_call(self, cid: int) -> None:
        with self.lock:
            self.calls.pop(cid, None)

    def kill(self) -> None:
        """Kill the process and close the pipe, once (the reader and a caller may both ask)."""
        with self.lock:
            if self.killed:
                return
            self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("the %s engine process %d did not exit", self.name, self.proc.pid)
        self.conn.close()


class WorkerBackend:
    """A backend whose engine runs in a supervised child process (see the module docstring).

    Args:
        model_name: the display/accounting name (known without starting the child).
        factory, args: build the real backend in the child: ``factory(*args)``; both must
            pickle (a module-level function or class; ``functools.partial`` of one).
        start_timeout_s: longest wait for the child to build its backend (seconds).
        cancel_timeout_s: longest wait for a cancelled stream to stop before the child is
            killed (seconds; the other calls in flight then fail too).

    Raises (from calls):
        BackendError: ``internal`` when the child died or could not start; otherwise what the
            engine raised in the child, with its ``kind``.
    """

    def __init__(self, model_name: str, factory: Callable[..., Any] = _default_factory,
                 args: tuple = (), start_timeout_s: float = 600.0,
                 cancel_timeout_s: float = 30.0):
        self.model_name = model_name
        self._factory, self._args = factory, args
        self.start_timeout_s = start_timeout_s
        self.cancel_timeout_s = cancel_timeout_s
        self.restarts = 0
        self._child: _Child | None = None
        self._ids = itertools.count()
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, model, cache_dir) -> WorkerBackend:
        """The worker for one :class:`corea.config.ModelSettings` (built with ``make_backend``
        in the child)."""
        return cls(model.name, _default_factory, (model, cache_dir))

    @property
    def pid(self) -> int | None:
        """The running child's process id (``None`` before the first call or after a crash)."""
        child = self._child
        return child.proc.pid if child is not None and child.alive() else None

    def _died(self, child: _Child, why: str) -> None:
        with self._lock:
            crashed = self._child is child  # else: closed on purpose, or already replaced
            if crashed:
                self._child = None
                self.restarts += 1
        if crashed:
            log.error("the %s engine process stopped (%s)", self.model_name, why)
        child.kill()

    def _running(self) -> _Child:
        """The live child, started if needed."""
        with self._lock:
            if self._child is None or not self._child.alive():
                self._child = _Child(self.model_name, self._factory, self._args,
                                     self.start_timeout_s, self._died)
            return self._child

    def close(self) -> None:
        """Stop the child (a later call starts a new one)."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            try:
                child.send(("stop",))
            except BackendError:
                pass
            child.kill()

    # -- the Backend interface
    @property
    def supports_continuation(self) -> bool:
        return bool(self._running().info["supports_continuation"])

    @property
    def confidence_adapter(self) -> bool:
        return bool(self._running().info["confidence_adapter"])

    def _call(self, method: str, args: tuple) -> tuple[_Child, int, queue.Queue]:
        child = self._running()
        cid = next(self._ids)
        q = child.open(cid)
        child.send(("call", cid, method, args))
        return child, cid, q

    def _stream(self, method: str, *args) -> Iterator[Chunk]:
        child, cid, q = self._call(method, args)
        ended = False
        try:
            while True:
                kind, payload = q.get()
                if kind == "chunk":
                    yield payload
                    continue
                ended = True
                if kind == "done":
                    return
                raise payload if kind == "died" else BackendError(*payload)
        finally:
            if not ended:
                self._cancel(child, cid, q)
            child.close_call(cid)

    def _cancel(self, child: _Child, cid: int, q: queue.Queue) -> None:
        """Stop a stream the consumer closed early; kill a child that does not stop it."""
        try:
            child.send(("cancel", cid))
            while q.get(timeout=self.cancel_timeout_s)[0] == "chunk":
                pass
        except BackendError:
            pass  # the child is dead already
        except queue.Empty:
            log.error("the %s engine process did not stop a cancelled stream; killing it",
                      self.model_name)
            child.kill()

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams
                    ) -> Iterator[Chunk]:
        return self._stream("stream_chat", list(messages), params)

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        return self._stream("continue_chat", list(messages), assistant_prefix, params)

    def state_confidence(self, messages: Sequence[Message], assistant_prefix: str,
                         params: GenerationParams) -> Iterator[Chunk]:
        return self._stream("state_confidence", list(messages), assistant_prefix, params)

    def next_token_logprobs(self, messages: Sequence[Message], assistant_prefix: str,
                            candidates: Sequence[str]) -> dict:
        child = self._running()
        if "next_token_logprobs" not in child.info["methods"]:
            raise BackendError("unsupported", f"{self.model_name} cannot score next tokens")
        child, cid, q = self._call("next_token_logprobs",
                                   (list(messages), assistant_prefix, list(candidates)))
        try:
            kind, payload = q.get()
        finally:
            child.close_call(cid)
        if kind == "result":
            return payload
        raise payload if kind == "died" else BackendError(*payload)


if __name__ == "__main__":  # the child: python -m corea.backends.worker <pipe fd>
    _serve(multiprocessing.connection.Connection(int(sys.argv[1])))
