"""The one grader used by evaluation and by RL rewards.

(Longer than 400 lines on purpose: the multiple-choice rules, the math normalisations on top of
math-verify and the worker processes that bound each item's time are one contract, read together.)

:func:`grade` decides whether a prediction matches a gold answer and returns a :class:`Grade`.

Multiple choice (``choices`` given)
    The gold answer is normalised to an option letter (a letter ``A``.., a 0-based index, or the
    option text) and compared with the letter read from the prediction (``\\boxed{C}``, ``(C)``,
    ``C``, ``C) text``, ``Answer: C``, or the exact option text). No sympy is involved.

Math (no ``choices``)
    Gold and prediction are parsed with math-verify (``parse`` + ``verify``), with these documented
    choices on top of its defaults:

    * **Numbers compare exactly.** math-verify rounds floats to ``float_rounding=6`` decimals and
      evaluates differences with an *absolute* ``evalf(chop=True)``, so ``0.0000001 == 0.0000002``
      and ``2^{-99} == 2^{-98}`` come out equal. Here every decimal literal is first turned into
      the exact rational it spells (``0.1`` -> ``1/10``), and when both sides are numeric constants
      they are compared at 100 significant digits with a *relative* tolerance of 1e-80 (exact for
      rationals; a decision to 80 digits for irrational constants such as ``\\sqrt{2}/2`` vs
      ``1/\\sqrt{2}``). Other answers (tuples, sets, intervals, equations, text) go to ``verify``
      with the same float-to-rational conversion and ``numeric_precision=100``.
    * **No rounding tolerance:** a truncated decimal of a non-terminating value is wrong,
      ``\\frac{1}{3}`` vs ``0.33333`` (and ``0.333333``) -> incorrect. MATH asks for exact forms,
      and when a problem asks for a rounded decimal its gold is that decimal. Any tolerance
      reintroduces the tiny-number false positives above.
    * **Percent signs are dropped on both sides** (as the Hendrycks MATH / PRM800K normalisers do):
      ``28\\%`` = ``28`` but ``28\\%`` != ``0.28``. The question fixes the unit, and ``0.28`` is a
      different number in that unit.
    * Thousands separators: ``1,234`` = ``1234`` (also ``10,\\!080``). A prediction containing
      ``\\boxed{..}`` is graded on its last box. Otherwise ``Confidence: ..`` lines are removed
      and math-verify extracts the answer from the text.
    * A gold that math-verify cannot parse -> ``ungradable`` (``correct=None``, never True).

Time bound and threads
    math-verify's own timeouts use ``signal.alarm``, which raises ``ValueError: signal only works in
    main thread`` outside the main thread. A signal also cannot interrupt a long C-level big-integer
    operation. Here ``parse`` and ``verify`` are always called with their timeouts disabled
    (``parsing_timeout=None``, ``timeout_seconds=None``), and the bound is enforced outside them:

    * ``backend="process"`` (default): sympy work runs in a small pool of persistent worker
      subprocesses (``python -c``, JSON lines over pipes, so no ``fork`` of a threaded or CUDA
      parent and no ``__main__`` re-import). When an item exceeds ``timeout_s``, its worker is
      **killed** and replaced, and the item gets status ``timeout``. A stuck sympy call (e.g.
      ``9^{9^{9^{9}}}``, which hangs in ``evalf``) cannot keep burning CPU or memory. Workers also
      cap their address space (``COREA_GRADER_MEM_MB``, default 4096 MiB), and running out of
      memory reports ``timeout``. The cost is one start of about 1 s per worker. The per-item IPC
      cost is lost in the noise (about 0.8 ms per simple LaTeX item with either backend). Two cases
      are graded in-process without sympy and never touch the pool: a plain-number gold against a
      plain-number or boxed-number prediction (GSM8K/SVAMP), compared exactly with
      ``fractions.Fraction``, and multiple choice.
    * ``backend="thread"``: the work runs in a daemon thread joined with ``timeout_s``. It has no
      subprocesses, but a stuck sympy call **cannot be killed** in a thread: it keeps running (and
      holding memory) in the background after ``timeout`` is returned. Use it only where
      subprocesses are unavailable.

    Select the backend with :func:`configure` or ``COREA_GRADER_BACKEND``. The time bound covers
    the work on the item, not the wait for a free worker or the worker's one-off start-up.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Sequence

__all__ = ["Grade", "GradeStatus", "grade", "configure", "shutdown", "last_boxed"]

logger = logging.getLogger(__name__)

GradeStatus = Literal["correct", "incorrect", "no_prediction", "ungradable", "timeout"]
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Grade:
    """Outcome of grading one item.

    Attributes:
        correct: True/False when decided; ``False`` for ``no_prediction``; ``None`` for
            ``ungradable`` (bad gold) and ``timeout`` (undecided). It is never True unless status
            is ``correct``.
        status: ``correct`` | ``incorrect`` | ``no_prediction`` | ``ungradable`` | ``timeout``.
        note: a short human-readable reason (may be empty).
    """

    correct: bool | None
    status: GradeStatus
    note: str = ""

    @property
    def reward(self) -> float:
        """1.0 if correct, else 0.0 (timeouts and ungradable items count as 0)."""
        return 1.0 if self.correct is True else 0.0


def _mk(status: GradeStatus, note: str = "") -> Grade:
    correct = {"correct": True, "incorrect": False, "no_prediction": False}.get(status)
    return Grade(correct=correct, status=status, note=note)


# ----------------------------------------------------------------------------- text helpers

def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces matched.

    Returns None when there is no complete box.
    """
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            best = text[m.end():i - 1]
    return best


_CONF_LINE = re.compile(r"^\s*\**\s*confidence\b.*$", re.IGNORECASE | re.MULTILINE)


def _strip_confidence(text: str) -> str:
    return _CONF_LINE.sub("", text)


def _unwrap_text(s: str) -> str:
    """Remove ``\\text{..}``/``\\textbf{..}``/``\\mathrm{..}`` wrappers, ``$``, ``**`` and outer
    spaces."""
    s = s.strip()
    for _ in range(3):
        s = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("**", "").replace("\\$", "").replace("$", "")
    return s.strip()


def _drop_percent(s: str) -> str:
    return re.sub(r"\\?%", "", s)


# ----------------------------------------------------------------------------- multiple choice

def _norm_option(s: str) -> str:
    s = _unwrap_text(s).casefold()
    s = re.sub(r"\s+", " ", s).strip()
    return s.rstrip(".").strip()


def _gold_letter(gold: str | int, choices: Sequence[str]) -> tuple[str | None, str]:
    n = len(choices)
    if isinstance(gold, int) and not isinstance(gold, bool):
        return (_LETTERS[gold], "") if 0 <= gold < n else (None, f"gold index {gold} out of range")
    g = _unwrap_text(str(gold))
    m = re.fullmatch(r"\(?\s*([A-Za-z])\s*\)?", g)
    if m and _LETTERS.index(m.group(1).upper()) < n:
        return m.group(1).upper(), ""
    normed = [_norm_option(c) for c in choices]
    hits = [i for i, c in enumerate(normed) if c and c == _norm_option(g)]
    if len(hits) == 1:
        return _LETTERS[hits[0]], ""
    if len(hits) > 1:
        return None, "gold text matches several options"
    if re.fullmatch(r"\d+", g) and int(g) < n:
        return _LETTERS[int(g)], ""
    return None, f"gold {str(gold)[:40]!r} is not a letter, 0-based index or option text"


def _pred_letter(pred: str, choices: Sequence[str]) -> str | None:
    boxed = last_boxed(pred)
    text = boxed if boxed is not None else _strip_confidence(pred)
    s = _unwrap_text(text).strip().rstrip(".").strip()
    m = re.fullmatch(r"\(?\s*([A-Za-z])\s*\)?", s)
    if m:
        return m.group(1).upper()
    normed = _norm_option(s)
    for i, c in enumerate(choices):
        if normed and normed == _norm_option(c):
            return _LETTERS[i]
    m = re.match(r"\(?([A-Z])[).:]\s", s + " ")
    if m:
        return m.group(1)
    hits = re.findall(r"answer\s*(?:is|:)\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])", s, re.IGNORECASE)
    hits = [h for h in hits if h.isupper()]
    if hits:
        return hits[-1]
    paren = set(re.findall(r"\(([A-Z])\)", s))
    if len(paren) == 1:
        return paren.pop()
    return None


def _grade_mc(prediction: str, gold: str | int, choices: Sequence[str]) -> Grade:
    if len(choices) > 26:
        return _mk("ungradable", "more than 26 options")
    g, why = _gold_letter(gold, choices)
    if g is None:
        return _mk("ungradable", why)
    p = _pred_letter(prediction, choices)
    if p is None:
        return _mk("no_prediction", "no option letter found in prediction")
    if _LETTERS.index(p) >= len(choices):
        return _mk("incorrect", f"predicted letter {p} is not one of the {len(choices)} options")
    return _mk("correct" if p == g else "incorrect", f"pred {p} vs gold {g}")


# ----------------------------------------------------------------------------- math: fast path

_NUM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _plain_number(s: str) -> Fraction | None:
    """Exact value of a bare decimal (``-3``, ``1,234``, ``\\$18.50``, ``28\\%``), else None."""
    s = _drop_percent(_unwrap_text(s))
    s = s.replace("\\!", "").replace("{,}", ",").replace(" ", "").rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _NUM.fullmatch(s):
        return Fraction(s)
    return None


# ----------------------------------------------------------------------------- math: sympy core

def _is_bare(s: str) -> bool:
    """True if ``s`` looks like a bare answer (LaTeX/math), not prose."""
    if re.search(r"(?<!\\)\$", s) or "\n" in s.strip():
        return False
    t = re.sub(r"\\(?:text|textbf|mathrm|mathbf|operatorname|begin|end)\s*\{[^{}]*\}", " ", s)
    t = re.sub(r"\\[A-Za-z]+", " ", t)
    return not re.search(r"[A-Za-z]{2,}", t)


def _grade_math_core(gold: str, pred: str) -> tuple[str, str]:
    """Parse and compare with sympy -> (status, note). Runs in a worker (process or thread)."""
    import sympy
    from math_verify import parse, verify

    def sym_items(parsed):
        return [x for x in parsed if not isinstance(x, str)]

    gold_parsed = parse("\\boxed{" + _drop_percent(gold.strip()) + "}", parsing_timeout=None)
    if not sym_items(gold_parsed):
        return "ungradable", f"gold {gold[:60]!r} could not be parsed"

    boxed = last_boxed(pred)
    if boxed is not None:
        candidates = ["\\boxed{" + _drop_percent(boxed) + "}"]
    else:
        text = _drop_percent(_strip_confidence(pred)).strip()
        boxed_text = "\\boxed{" + text.rstrip(".") + "}"
        candidates = [boxed_text, text] if _is_bare(text) else [text, boxed_text]
    pred_parsed: list = []
    for c in candidates:
        pred_parsed = parse(c, parsing_timeout=None)
        if sym_items(pred_parsed):
            break
    if not sym_items(pred_parsed):
        return "no_prediction", "no parsable answer in prediction"

    def exact(e):
        try:
            floats = e.atoms(sympy.Float)
            return e.xreplace({f: sympy.Rational(str(f)) for f in floats}) if floats else e
        except Exception:
            return e

    gl = [exact(x) if not isinstance(x, str) else x for x in gold_parsed]
    pl = [exact(x) if not isinstance(x, str) else x for x in pred_parsed]
    g, p = sym_items(gl)[0], sym_items(pl)[0]

    bad = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)
    if (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr) and g.is_number and p.is_number
            and not g.has(*bad) and not p.has(*bad)):
        try:
            vg, vp = sympy.N(g, 100), sympy.N(p, 100)
            diff, scale = abs(sympy.N(vg - vp, 100)), max(abs(vg), abs(vp))
            if diff.is_number and scale.is_number:
                same = bool(diff <= sympy.Float(10, 100) ** -80 * scale) or bool(diff == 0)
                return ("correct" if same else "incorrect"), "numeric, 100 digits"
        except Exception:  # fall through to math-verify
            pass
    ok = verify(gl, pl, float_rounding=6, numeric_precision=100, timeout_seconds=None)
    return ("correct" if ok else "incorrect"), "math-verify"


# ----------------------------------------------------------------------------- backends

_REPO_ROOT = str(Path(__file__).resolve().parents[1])
_WORKER_CMD = "from corea.grading import _worker_main; _worker_main()"


def _worker_main() -> None:
    """Worker loop: JSON lines ``{"gold","pred"}`` on stdin -> ``{"status","note"}`` on stdout."""
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    try:
        import resource
        mb = int(os.environ.get("COREA_GRADER_MEM_MB", "4096"))
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    except Exception:
        pass
    parent = os.getppid()

    def watchdog():  # exit even if stuck in sympy once the parent is gone
        import time
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    import math_verify  # noqa: F401  (warm import before "ready")
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            req = json.loads(line)
            status, note = _grade_math_core(req["gold"], req["pred"])
        except MemoryError:
            status, note = "timeout", "worker memory limit reached"
        except Exception as e:  # never guess a verdict
            status, note = "ungradable", f"grader error: {type(e).__name__}: {e}"[:200]
        proto.write(json.dumps({"status": status, "note": note}) + "\n")


class _Worker:
    def __init__(self, startup_timeout: float = 120.0):
        env = dict(os.environ)
        extra = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _REPO_ROOT + (os.pathsep + extra if extra else "")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CMD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, encoding="utf-8",
                                     bufsize=1, env=env)
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            first = self.lines.get(timeout=startup_timeout)
        except queue.Empty:
            first = None
        if not first or not json.loads(first).get("ready"):
            self.kill()
            raise RuntimeError("corea.grading: grading worker failed to start "
                               f"(cmd: {sys.executable} -c {_WORKER_CMD!r}); see stderr")

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def ask(self, req: dict, timeout: float) -> dict | None:
        """Send one request; the reply, or None on timeout / worker death."""
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            line = self.lines.get(timeout=timeout)
        except (OSError, ValueError, queue.Empty):
            return None
        return json.loads(line) if line else None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:
            pass


class _ProcessPool:
    def __init__(self, max_workers: int):
        self.max_workers = max_workers
        self.idle: list[_Worker] = []
        self.live = 0
        self.cond = threading.Condition()

    def _acquire(self) -> _Worker:
        with self.cond:
            while not self.idle and self.live >= self.max_workers:
                self.cond.wait()
            if self.idle:
                return self.idle.pop()
            self.live += 1
        try:
            return _Worker()
        except BaseException:
            with self.cond:
                self.live -= 1
                self.cond.notify()
            raise

    def _release(self, w: _Worker, healthy: bool) -> None:
        if not healthy:
            w.kill()
        with self.cond:
            if healthy:
                self.idle.append(w)
            else:
                self.live -= 1
            self.cond.notify()

    def run(self, gold: str, pred: str, timeout: float) -> tuple[str, str]:
        w = self._acquire()
        reply = w.ask({"gold": gold, "pred": pred}, timeout)
        self._release(w, reply is not None)
        if reply is None:
            return "timeout", f"no verdict within {timeout:g} s (worker killed)"
        return reply["status"], reply["note"]

    def close(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
            self.live -= len(idle)
        for w in idle:
            w.kill()


def _run_in_thread(gold: str, pred: str, timeout: float) -> tuple[str, str]:
    box: list = []

    def target():
        try:
            box.append(_grade_math_core(gold, pred))
        except Exception as e:
            box.append(("ungradable", f"grader error: {type(e).__name__}: {e}"[:200]))

    t = threading.Thread(target=target, daemon=True, name="corea-grade")
    t.start()
    t.join(timeout)
    if t.is_alive() or not box:
        return "timeout", f"no verdict within {timeout:g} s (thread left running)"
    return box[0]


_backend = os.environ.get("COREA_GRADER_BACKEND", "process")
_pool: _ProcessPool | None = None
_pool_lock = threading.Lock()
_max_workers = max(1, min(4, os.cpu_count() or 1))


def configure(backend: Literal["process", "thread"] | None = None,
              max_workers: int | None = None) -> None:
    """Choose how sympy work is bounded (see module docstring). A change stops the current pool.

    Args:
        backend: ``"process"`` (killable worker subprocesses, default) or ``"thread"``.
        max_workers: size of the process pool (default ``min(4, cpu_count)``).

    Raises:
        ValueError: unknown backend or ``max_workers < 1``.
    """
    global _backend, _max_workers
    if backend is not None and backend not in ("process", "thread"):
        raise ValueError(f"backend must be 'process' or 'thread', got {backend!r}")
    if max_workers is not None and max_workers < 1:
        raise ValueError("max_workers must be >= 1")
    new = (backend or _backend, max_workers or _max_workers)
    if new != (_backend, _max_workers):
        _backend, _max_workers = new
        shutdown()  # the pool is rebuilt lazily with the new settings


def shutdown() -> None:
    """Stop the worker processes (they restart on the next call). Registered with atexit."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


atexit.register(shutdown)


def _get_pool() -> _ProcessPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _ProcessPool(_max_workers)
        return _pool


# ----------------------------------------------------------------------------- public entry

def grade(prediction: str | None, gold: str | int, choices: Sequence[str] | None = None,
          timeout_s: float = 5.0) -> Grade:
    """Grade one prediction against the gold answer. Thread-safe, with bounded time per item.

    Args:
        prediction: the model's final answer, or its whole completion (then the last
            ``\\boxed{}`` is used if present). None/blank -> ``no_prediction``.
        gold: the gold answer: a number or LaTeX for math, or, for multiple choice, the letter,
            a 0-based index (int or digit string), or the option text.
        choices: option texts in letter order (A, B, ...) for multiple choice; None for math.
        timeout_s: wall-clock bound (seconds) on the sympy work for this item. When it is exceeded,
            status is ``timeout`` with ``correct=None``.

    Returns:
        :class:`Grade`. See the module docstring for the equivalence rules (exact numbers, percent,
        thousands separators).

    Raises:
        RuntimeError: a grading worker process could not be started (environment problem).
    """
    gold_s = gold if isinstance(gold, int) and not isinstance(gold, bool) else str(gold or "")
    if isinstance(gold_s, str) and not gold_s.strip():
        return _mk("ungradable", "empty gold answer")
    if prediction is None or not str(prediction).strip():
        return _mk("no_prediction", "empty prediction")
    prediction = str(prediction)
    if choices:
        return _grade_mc(prediction, gold_s, list(choices))
    gold_s = str(gold_s)

    # Fast path without sympy: both sides plain decimal numbers -> exact comparison.
    g_num = _plain_number(gold_s)
    boxed = last_boxed(prediction)
    p_text = boxed if boxed is not None else _strip_confidence(prediction)
    p_num = _plain_number(p_text)
    if g_num is not None and p_num is not None:
        return _mk("correct" if g_num == p_num else "incorrect", "exact decimal comparison")

    if _backend == "thread":
        status, note = _run_in_thread(gold_s, prediction, timeout_s)
    else:
        status, note = _get_pool().run(gold_s, prediction, timeout_s)
    return _mk(status, note)  # type: ignore[arg-type]


def same_answer(a: str | None, b: str | None) -> bool:
    """Whether two answers say the same: equal after stripping, else equivalent by
    :func:`grade` (math-verify; letters for choices). ``None`` is never the same as anything.
    Used for self-consistency agreement and for a correction checked against an answer."""
    if a is None or b is None:
        return False
    if a.strip() == b.strip():
        return True
    return bool(grade(a, b, None).correct)
