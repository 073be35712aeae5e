"""The sandbox that runs model-written Python (program-of-thought): hostile input by default.

Defense in depth, two independent layers (docs/sandbox.md says what they guarantee and what not):

1. **A restricted interpreter** (:mod:`corea.sandbox.policy`): the program is compiled by
   RestrictedPython with COREA's policy (no ``_`` names, no frame/generator internals, no classes,
   imports of ``math``, ``fractions``, ``decimal``, ``statistics``, ``itertools`` and ``datetime``
   only, as read-only views; no ``open``/``eval``/``exec``/``compile``/``globals``/...). The module
   docstring there says why RestrictedPython and not smolagents' executor.
2. **A separate, locked-down worker process** (:mod:`corea.sandbox.oslimits`,
   :mod:`corea.sandbox.worker`, :mod:`corea.sandbox.pool`): empty environment, private temporary
   folder, a network namespace when permitted, ``nobody`` when started as root, ``RLIMIT_CPU`` /
   ``RLIMIT_AS`` / ``RLIMIT_NPROC`` 0 / ``RLIMIT_FSIZE`` 0, a seccomp filter refusing files,
   sockets, processes and signals, a wall-clock timeout and an output cap; a worker that breaks a
   limit is killed and replaced.

Use::

    from corea.sandbox import run_program, SandboxLimits
    res = run_program("x = 18 * 2\\nanswer = x\\nprint(answer)")
    res.ok, res.output, res.answer, res.error, res.message, res.seconds
    # True, '36\\n', '36', None, '', 0.004

:func:`run_program` uses one process-wide pool (:func:`configure` sets its size, :func:`shutdown`
stops it; it restarts on the next call). ``corea sandbox FILE`` runs a file the same way.
"""

from __future__ import annotations

import atexit
import threading

from .pool import SandboxPool, SandboxUnavailable
from .types import ERROR_KINDS, ErrorKind, SandboxLimits, SandboxResult

__all__ = ["ERROR_KINDS", "ErrorKind", "SandboxLimits", "SandboxPool", "SandboxResult",
           "SandboxUnavailable", "configure", "layers", "run_program", "shutdown"]

_pool: SandboxPool | None = None
_pool_args: dict = {}
_lock = threading.Lock()


def _get_pool() -> SandboxPool:
    global _pool
    with _lock:
        if _pool is None:
            _pool = SandboxPool(**_pool_args)
        return _pool


def configure(max_workers: int | None = None, max_memory_mb: int | None = None) -> None:
    """Size the process-wide pool (default 2 workers, 1024 MiB ceiling); a change stops the
    current pool, and the next call starts a new one.

    Raises:
        ValueError: ``max_workers < 1`` or ``max_memory_mb < 128``.
    """
    if max_workers is not None and max_workers < 1:
        raise ValueError("max_workers must be >= 1")
    if max_memory_mb is not None and max_memory_mb < 128:
        raise ValueError("max_memory_mb must be >= 128")
    new = {k: v for k, v in (("max_workers", max_workers), ("max_memory_mb", max_memory_mb))
           if v is not None}
    if new and {**_pool_args, **new} != _pool_args:
        _pool_args.update(new)
        shutdown()


def run_program(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` (untrusted Python) in the sandbox and say what happened.

    Args:
        code: the program text; it should print its result and/or set a global ``answer``.
        limits: :class:`SandboxLimits` (default: 5 s wall clock, 5 CPU s, 512 MiB, 16 KiB of
            output, 20,000 characters of source).

    Returns:
        :class:`SandboxResult` (``ok``, ``output``, ``answer``, ``error``, ``message``,
        ``seconds``). Everything the program does is reported there, never raised.

    Raises:
        SandboxUnavailable: no worker process could be started on this machine.
    """
    return _get_pool().run(code, limits)


def layers() -> dict[str, str]:
    """What each OS layer achieved on this machine: ``network``, ``user``, ``rlimits``,
    ``seccomp`` (a description, or ``unavailable (reason)``)."""
    return _get_pool().layers()


def shutdown() -> None:
    """Stop the pool's workers (registered with atexit; the next call starts new ones)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


atexit.register(shutdown)
