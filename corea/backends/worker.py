"""A model's engine in a supervised worker process, so that an engine crash (llama.cpp has raised
general-protection faults in ``libggml-cpu.so`` under long batched runs) fails only the turns in
flight instead of the whole web app.

:class:`WorkerBackend` implements :class:`corea.backends.base.Backend` by forwarding every call to
a child process (``python -m corea.backends.worker``: a fresh interpreter, no forked threads, no
re-import of the parent's ``__main__``) that builds the real backend with ``factory(*args)`` (by
default :func:`corea.backends.make_backend`) and streams its chunks back over a
``multiprocessing`` pipe. One call runs at a time per worker (as in-process engines serialise too).

When the child dies (a signal such as SIGSEGV or SIGKILL, or any exit), the call in flight raises
``BackendError("internal", "... engine process stopped (SIGKILL) ...")`` — the cascade records it
as that model's error, like any engine fault — and the next call starts a new child
(:attr:`WorkerBackend.restarts` counts them). Closing a stream early sends the child a cancel
and waits for it to stop; a child that does not stop in ``cancel_timeout_s`` is killed.

Costs: a child's start (imports, then the model loads there on first use, as in-process) and one
pickle round trip per streamed chunk.

Turned on per model by ``isolate`` (:class:`corea.config.ModelSettings`; default off).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
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


def _serve(conn) -> None:
    """The child's loop: receive ``(factory, args)`` and build the backend, then answer
    ``("call", method, args)`` messages with ``("chunk", Chunk)``... ``("done",)``,
    ``("result", value)`` or ``("error", kind, text)``; a ``("cancel",)`` between chunks ends the
    stream; ``("stop",)`` or a closed pipe ends it."""
    try:
        factory, args = conn.recv()
        backend = factory(*args)
    except Exception as exc:  # noqa: BLE001 — reported to the parent as the start's failure
        conn.send(("error", getattr(exc, "kind", "internal"), f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {
        "supports_continuation": bool(getattr(backend, "supports_continuation", False)),
        "confidence_adapter": bool(getattr(backend, "confidence_adapter", False)),
        "methods": [m for m in _STREAMS + _CALLS if callable(getattr(backend, m, None))]}))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        if msg[0] != "call":
            continue  # a cancel that arrived after its stream ended
        _, method, call_args = msg
        try:
            out = getattr(backend, method)(*call_args)
            if method in _CALLS:
                conn.send(("result", out))
                continue
            it = iter(out)
            try:
                for chunk in it:
                    conn.send(("chunk", chunk))
                    if conn.poll() and conn.recv()[0] == "cancel":
                        break
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            conn.send(("done",))
        except BackendError as exc:
            conn.send(("error", exc.kind, str(exc)))
        except Exception as exc:  # noqa: BLE001 — an engine fault is that call's error
            conn.send(("error", "internal", f"{type(exc).__name__}: {exc}"))


def _default_factory(model, cache_dir):
    from . import make_backend

    return make_backend(model.model_copy(update={"isolate": False}), cache_dir)


class WorkerBackend:
    """A backend whose engine runs in a supervised child process (see the module docstring).

    Args:
        model_name: the display/accounting name (known without starting the child).
        factory, args: build the real backend in the child: ``factory(*args)``; both must
            pickle (a module-level function or class; ``functools.partial`` of one).
        start_timeout_s: longest wait for the child to build its backend (seconds).
        cancel_timeout_s: longest wait for a cancelled stream to stop before the child is
            killed (seconds).

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
        self._proc = None
        self._conn = None
        self._info: dict | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, model, cache_dir) -> WorkerBackend:
        """The worker for one :class:`corea.config.ModelSettings` (built with ``make_backend``
        in the child)."""
        return cls(model.name, _default_factory, (model, cache_dir))

    # -- the child
    @property
    def pid(self) -> int | None:
        """The running child's process id (``None`` before the first call or after a crash)."""
        return self._proc.pid if self._alive() else None

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        parent, child = multiprocessing.Pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen([sys.executable, "-m", "corea.backends.worker",
                                 str(child.fileno())], pass_fds=(child.fileno(),), env=env)
        child.close()
        self._proc, self._conn = proc, parent
        try:
            parent.send((self._factory, self._args))
        except OSError:
            pass  # the child is already gone: _receive says how
        msg = self._receive(self.start_timeout_s, starting=True)
        if msg[0] != "ready":
            self._discard()
            raise BackendError(msg[1] if msg[0] == "error" else "internal",
                               f"the {self.model_name} engine process could not start: "
                               f"{msg[-1]}")
        self._info = msg[1]

    def _ensure(self) -> None:
        if not self._alive():
            if self._proc is not None:
                self._discard()
            self._start()

    def _discard(self) -> None:
        """Forget a dead (or hopeless) child: reap it; the next call starts a new one."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("the %s engine process %d did not exit", self.model_name, proc.pid)

    def _died(self, starting: bool = False) -> BackendError:
        code = None
        if self._proc is not None:
            try:  # a closed pipe can come before the exit status
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        self._discard()
        self.restarts += 0 if starting else 1
        why = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit code {code}" if code is not None else "its pipe closed")
        log.error("the %s engine process stopped (%s)", self.model_name, why)
        return BackendError("internal", f"the {self.model_name} engine process stopped ({why}); "
                                        "it restarts for the next question")

    def _receive(self, timeout_s: float | None = None, starting: bool = False) -> tuple:
        """The child's next message; raises the crash as a ``BackendError``."""
        waited = 0.0
        while True:
            try:
                if self._conn.poll(0.2):
                    return self._conn.recv()
            except (EOFError, OSError):
                raise self._died(starting) from None
            if not self._alive():
                raise self._died(starting)
            waited += 0.2
            if timeout_s is not None and waited >= timeout_s:
                self._discard()
                raise BackendError("timeout", f"the {self.model_name} engine process did not "
                                              f"answer in {timeout_s:.0f} s")

    def close(self) -> None:
        """Stop the child (it is started again on the next call)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(("stop",))
                except OSError:
                    pass
            self._discard()

    # -- the Backend interface
    def _info_of(self, key: str):
        with self._lock:
            self._ensure()
            return self._info[key]

    @property
    def supports_continuation(self) -> bool:
        return bool(self._info_of("supports_continuation"))

    @property
    def confidence_adapter(self) -> bool:
        return bool(self._info_of("confidence_adapter"))

    def _stream(self, method: str, *args) -> Iterator[Chunk]:
        with self._lock:
            self._ensure()
            self._conn.send(("call", method, args))
            ended = False
            try:
                while True:
                    msg = self._receive()
                    if msg[0] == "chunk":
                        yield msg[1]
                    elif msg[0] == "done":
                        ended = True
                        return
                    elif msg[0] == "error":
                        ended = True
                        raise BackendError(msg[1], msg[2])
            except BackendError:
                ended = True
                raise
            finally:
                if not ended:
                    self._cancel()

    def _cancel(self) -> None:
        """Stop the stream in flight (the consumer closed it early)."""
        if self._conn is None:
            return
        try:
            self._conn.send(("cancel",))
            while self._receive(self.cancel_timeout_s)[0] == "chunk":
                pass
        except BackendError:
            pass  # the child died or hung while stopping: discarded, restarted on next call
        except OSError:
            self._discard()

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
        with self._lock:
            self._ensure()
            if "next_token_logprobs" not in self._info["methods"]:
                raise BackendError("unsupported", f"{self.model_name} cannot score next tokens")
            self._conn.send(("call", "next_token_logprobs",
                             (list(messages), assistant_prefix, list(candidates))))
            msg = self._receive()
            if msg[0] == "error":
                raise BackendError(msg[1], msg[2])
            return msg[1]


if __name__ == "__main__":  # the child: python -m corea.backends.worker <pipe fd>
    _serve(multiprocessing.connection.Connection(int(sys.argv[1])))
