"""Typed rows of the sandbox: the limits a program runs under and what the caller gets back.

Plain dataclasses, no behaviour; :mod:`corea.sandbox.pool` fills them, every caller reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

ErrorKind = Literal["syntax", "exception", "timeout", "memory", "output_too_large", "refused",
                    "no_output"]
"""Why a program gave no usable result:

* ``syntax`` -- not valid Python (the message names the line);
* ``exception`` -- raised an exception while running (``ZeroDivisionError``, ``RecursionError``,
  ...), or the worker process died without a verdict;
* ``timeout`` -- ran past the wall-clock limit or its CPU seconds (the worker is killed);
* ``memory`` -- ran out of its address space (``MemoryError``; the worker is replaced);
* ``output_too_large`` -- printed more than the output cap;
* ``refused`` -- used something outside the allowed subset (an import, a name starting with ``_``,
  ``open``/``eval``/``exec``, a frame or generator internals, a class, ...), at compile time or at
  run time; a program that tried and caught the error is still refused;
* ``no_output`` -- ran but printed nothing and set no ``answer``.
"""

ERROR_KINDS: tuple[ErrorKind, ...] = ("syntax", "exception", "timeout", "memory",
                                      "output_too_large", "refused", "no_output")


@dataclass(frozen=True)
class SandboxLimits:
    """The limits one program runs under.

    Attributes:
        timeout_s: wall-clock seconds for the run, measured by the parent; past it the worker is
            killed (``timeout``).
        cpu_s: CPU seconds the run may use (``RLIMIT_CPU`` soft limit, whole seconds, at least 1).
        memory_mb: address space of the worker process in MiB (``RLIMIT_AS``), the interpreter's
            own ~40 MiB included.
        max_output_chars: characters the program may print (and of its ``answer``'s text).
        max_source_chars: characters of program text accepted at all.
    """

    timeout_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 512
    max_output_chars: int = 16_384
    max_source_chars: int = 20_000

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.cpu_s < 1 or self.memory_mb < 128:
            raise ValueError("sandbox limits: timeout_s > 0, cpu_s >= 1 and memory_mb >= 128 "
                             f"are required, got {self}")
        if self.max_output_chars < 1 or self.max_source_chars < 1:
            raise ValueError(f"sandbox limits: the size caps must be positive, got {self}")


@dataclass(frozen=True)
class SandboxResult:
    """What running one program gave.

    Attributes:
        ok: True when the program ran to its end and printed something or set ``answer``.
        output: what it printed (at most ``max_output_chars``; what was printed before a failure
            is kept).
        answer: ``str()`` of the program's global ``answer`` variable, or None when unset or when
            the run failed.
        error: None when ``ok``; otherwise the :data:`ErrorKind`.
        message: a one-line human-readable reason ("" when ok), never a traceback of COREA's code.
        seconds: wall-clock seconds of the run as the parent measured it (waiting for a free
            worker and a worker's start excluded).
    """

    ok: bool
    output: str
    answer: str | None
    error: ErrorKind | None
    message: str
    seconds: float

    def as_dict(self) -> dict:
        """A JSON-ready dict (for run records and the API)."""
        return asdict(self)
