"""The worker process: warm up, lock itself down, then run programs one at a time.

Started by :mod:`corea.sandbox.pool` as ``python -I -B -X utf8 -c <WORKER_CMD> <repo root>
<config JSON>`` with an empty environment, its private working folder as the current directory
and pipes for stdin/stdout/stderr. Protocol, JSON lines:

* worker -> parent, once: ``{"ready": true, "layers": {...}}`` (:func:`corea.sandbox.oslimits.
  lock_down`'s description of the active layers);
* parent -> worker: ``{"code": str, "cpu_s": int, "memory_mb": int, "max_output_chars": int}``;
* worker -> parent: :func:`corea.sandbox.policy.execute`'s verdict plus ``"cpu_left"`` (CPU
  seconds left of the worker's lifetime budget).

Exit status 3: the worker ran out of memory even for its reply (the parent reports ``memory``).
A worker that breaks a limit is killed by the kernel (``SIGXCPU``) or by the parent (wall clock),
which then starts another.
"""

from __future__ import annotations

import json
import os
import resource
import sys

WORKER_CMD = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from corea.sandbox.worker import main; main()")
EXIT_OUT_OF_MEMORY = 3

# run once before the lock-down, so that every lazy import and file read already happened
_WARM_UP = """
import math, fractions, decimal, statistics, itertools, datetime
x = datetime.datetime.strptime('2024-03-01', '%Y-%m-%d') - datetime.timedelta(days=1)
d = decimal.Decimal('1.10') * 3 + fractions.Fraction(1, 3).limit_denominator(10).numerator
s = statistics.median([1, 2, 3]) + statistics.stdev([1.0, 2.0]) + math.comb(5, 2)
print(x.strftime('%B %d'), d, s, '{:.2f}'.format(1 / 3),
      list(itertools.islice(itertools.count(), 2)))
"""


def _cpu_left() -> int:
    used = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY:
        return 10 ** 6
    return max(0, int(hard - used.ru_utime - used.ru_stime))


def _serve(proto, policy, oslimits) -> None:  # type: ignore[no-untyped-def]
    for raw in sys.stdin.buffer:
        req = json.loads(raw.decode("utf-8"))
        oslimits.set_cpu_budget(int(req["cpu_s"]))
        mem = int(req["memory_mb"]) << 20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (min(mem, hard), hard))
        try:
            verdict = policy.execute(req["code"], int(req["max_output_chars"]))
            verdict["cpu_left"] = _cpu_left()
            proto.write(json.dumps(verdict) + "\n")
        except MemoryError:
            try:
                proto.write('{"kind": "memory", "message": "out of memory", "output": "", '
                            '"answer": null, "cpu_left": 0}\n')
            except MemoryError:
                os._exit(EXIT_OUT_OF_MEMORY)


def main() -> None:
    """Entry point of the worker process (see the module docstring)."""
    config = json.loads(sys.argv[2])
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 -- lives with the process
    sys.stdout = devnull  # nothing but the protocol reaches the parent's stdout pipe
    from corea.sandbox import oslimits, policy

    warm = policy.execute(_WARM_UP, 1000)
    if warm["kind"] is not None:
        raise RuntimeError(f"sandbox warm-up failed: {warm}")
    layers = oslimits.lock_down(os.getcwd(), int(config["memory_mb"]),
                                int(config["cpu_lifetime_s"]))
    sys.stderr = devnull
    proto.write(json.dumps({"ready": True, "layers": layers}) + "\n")
    _serve(proto, policy, oslimits)
