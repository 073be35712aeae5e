"""The parent side: a small pool of worker processes that run programs, and the verdicts.

Each worker (:mod:`corea.sandbox.worker`) is a separate ``python`` process started with an empty
environment, ``-I`` (no user site, no ``PYTHON*`` variables), its own private temporary folder
(mode 0700, removed when the worker ends) and no inherited file descriptors. The pool
enforces what the worker cannot enforce on itself:

* a **wall-clock timeout** per run: past ``timeout_s`` the worker is killed (``SIGKILL``) and the
  verdict is ``timeout``;
* a **reply size cap**: a reply line over :data:`MAX_REPLY_BYTES` kills the worker;
* **replacement**: a worker that timed out, ran out of memory, printed too much, was refused
  while running (a refusal at compile time ran nothing), died, spent its CPU budget or served
  :attr:`SandboxPool.max_runs` programs is killed and the
  next request starts a fresh one, so one hostile program never stops the next from being served.

Thread-safe: any number of threads may call :meth:`SandboxPool.run`; at most ``max_workers``
programs run at once and the others wait for a free worker.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .types import SandboxLimits, SandboxResult
from .worker import EXIT_OUT_OF_MEMORY, WORKER_CMD

__all__ = ["SandboxPool", "SandboxUnavailable", "MAX_REPLY_BYTES"]

MAX_REPLY_BYTES = 8 << 20
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
_RECYCLE_AFTER = {"timeout", "memory", "output_too_large", "refused"}


class SandboxUnavailable(RuntimeError):
    """A worker process could not be started (environment problem, not the program's fault)."""


class _Worker:
    """One worker process and the threads that read its pipes."""

    def __init__(self, memory_mb: int, cpu_lifetime_s: int, startup_timeout_s: float):
        self.workdir = tempfile.mkdtemp(prefix="corea-sandbox-")
        config = json.dumps({"memory_mb": memory_mb, "cpu_lifetime_s": cpu_lifetime_s})
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-X", "utf8", "-c", WORKER_CMD, _REPO_ROOT, config],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={},
            cwd=self.workdir, close_fds=True, start_new_session=True)
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        self.stderr_tail = b""
        self.runs = 0
        self.cpu_left = cpu_lifetime_s
        self.killed_by_pool = False
        threading.Thread(target=self._read, daemon=True, name="corea-sandbox-out").start()
        threading.Thread(target=self._drain, daemon=True, name="corea-sandbox-err").start()
        try:
            first = self.lines.get(timeout=startup_timeout_s)
        except queue.Empty:
            first = None
        hello = json.loads(first) if isinstance(first, bytes) else {}
        if not hello.get("ready"):
            self.kill()
            tail = self.stderr_tail.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise SandboxUnavailable("the sandbox worker did not start"
                                     + (f": {tail[0][:300]}" if tail else ""))
        self.layers: dict[str, str] = hello.get("layers", {})

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            line = out.readline(MAX_REPLY_BYTES)
            if not line:
                break
            if not line.endswith(b"\n"):  # over the cap: a protocol violation
                self.lines.put("too_large")
                return
            self.lines.put(line)
        self.lines.put(None)

    def _drain(self) -> None:
        err = self.proc.stderr
        assert err is not None
        for chunk in iter(lambda: err.read(4096), b""):
            self.stderr_tail = (self.stderr_tail + chunk)[-4096:]

    def ask(self, request: dict, timeout_s: float) -> dict | str:
        """Send one request: the reply dict, or ``"timeout"`` / ``"too_large"`` / ``"dead"``."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
            self.proc.stdin.flush()
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            return "timeout"
        except (OSError, ValueError):
            return "dead"
        if line is None:
            return "dead"
        if line == "too_large":
            return "too_large"
        try:
            return json.loads(line)
        except ValueError:
            return "dead"

    def kill(self) -> int | None:
        """Kill the process, remove its folder; its exit status (negative: the signal)."""
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        return rc


def _death_verdict(rc: int | None, limits: SandboxLimits) -> tuple[str, str]:
    """(error kind, message) for a worker that ended without a reply."""
    if rc == -signal.SIGXCPU:
        return "timeout", f"the program used more than {limits.cpu_s} CPU seconds"
    if rc == -signal.SIGXFSZ:
        return "refused", "the program tried to write a file"
    if rc == -signal.SIGSYS:
        return "refused", "the program made a forbidden system call"
    if rc == EXIT_OUT_OF_MEMORY:
        return "memory", "the program ran out of memory"
    return "exception", f"the worker process ended without a result (status {rc})"


class SandboxPool:
    """A pool of at most ``max_workers`` sandbox workers.

    Args:
        max_workers: programs run at once (each worker is one process of ~40 MiB resident).
        max_memory_mb: the workers' address-space ceiling (``RLIMIT_AS`` hard limit); a run's
            ``memory_mb`` above it is capped to it.
        cpu_lifetime_s: CPU seconds one worker may use over its life before it is replaced.
        max_runs: programs one worker serves before it is replaced.
        startup_timeout_s: seconds to wait for a new worker to say it is ready.
    """

    def __init__(self, max_workers: int = 2, max_memory_mb: int = 1024,
                 cpu_lifetime_s: int = 300, max_runs: int = 200,
                 startup_timeout_s: float = 60.0):
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.max_workers, self.max_memory_mb = max_workers, max_memory_mb
        self.cpu_lifetime_s, self.max_runs = cpu_lifetime_s, max_runs
        self.startup_timeout_s = startup_timeout_s
        self._idle: list[_Worker] = []
        self._live = 0
        self._cond = threading.Condition()
        self._last_layers: dict[str, str] = {}
        self._closed = False

    def _acquire(self, limits: SandboxLimits) -> _Worker:
        with self._cond:
            while not self._idle and self._live >= self.max_workers:
                self._cond.wait()
            while self._idle:
                w = self._idle.pop()
                if w.cpu_left > limits.cpu_s and w.runs < self.max_runs:
                    return w
                w.kill()  # spent: replace it
                self._live -= 1
            self._live += 1
        try:
            w = _Worker(self.max_memory_mb, self.cpu_lifetime_s, self.startup_timeout_s)
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise
        self._last_layers = w.layers
        return w

    def _release(self, w: _Worker, healthy: bool) -> None:
        healthy = healthy and not self._closed
        if not healthy:
            w.kill()
        with self._cond:
            if healthy:
                self._idle.append(w)
            else:
                self._live -= 1
            self._cond.notify()

    def run(self, code: str, limits: SandboxLimits | None = None) -> SandboxResult:
        """Run one program; never raises for anything the program does.

        Raises:
            SandboxUnavailable: no worker could be started.
        """
        limits = limits or SandboxLimits()
        if len(code) > limits.max_source_chars:
            return SandboxResult(False, "", None, "refused", f"the program is longer than "
                                 f"{limits.max_source_chars} characters", 0.0)
        w = self._acquire(limits)
        request = {"code": code, "cpu_s": limits.cpu_s, "max_output_chars": limits.max_output_chars,
                   "memory_mb": min(limits.memory_mb, self.max_memory_mb)}
        start = time.perf_counter()
        reply = w.ask(request, limits.timeout_s)
        seconds = time.perf_counter() - start
        w.runs += 1
        if isinstance(reply, dict):
            w.cpu_left = int(reply.get("cpu_left", 0))
            kind = reply.get("kind")
            self._release(w, not (kind in _RECYCLE_AFTER and reply.get("executed", True)))
            return SandboxResult(kind is None, str(reply.get("output", "")),
                                 reply.get("answer"), kind, str(reply.get("message", "")),
                                 seconds)
        if reply == "timeout":
            self._release(w, False)
            return SandboxResult(False, "", None, "timeout", f"no result within "
                                 f"{limits.timeout_s:g} s (the program was stopped)", seconds)
        rc = w.kill() if reply == "dead" else None
        self._release(w, False)
        if reply == "too_large":
            return SandboxResult(False, "", None, "output_too_large",
                                 "the worker's reply was over the size cap", seconds)
        kind, message = _death_verdict(rc, limits)
        return SandboxResult(False, "", None, kind, message, seconds)  # type: ignore[arg-type]

    def layers(self) -> dict[str, str]:
        """What each OS layer achieved on this machine (starts a worker when none ran yet)."""
        if not self._last_layers:
            self._release(self._acquire(SandboxLimits()), True)
        return dict(self._last_layers)

    def close(self) -> None:
        """Kill the idle workers; busy ones are killed (and their folders removed) when their
        run ends. A closed pool still serves: each run then uses a new worker."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
        for w in idle:
            w.kill()
