"""The program-of-thought sandbox: hostile programs fail safely, with a clear reason, and the
sandbox keeps answering; ordinary GSM8K-style programs compute the right value; the PoT
primitives (program extraction, answer reading, agreement) and ``corea sandbox``.

Short limits keep the file fast: about 1.5 s wall clock per run, 1 CPU second, 256 MiB.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from corea import cli
from corea.pot import (answer_from_output, answers_agree, extract_program, normalise_number,
                       run_completion)
from corea.prompts import POT_SLM_SYSTEM, POT_SYSTEM, POT_VERSION, pot_messages
from corea.sandbox import ERROR_KINDS, SandboxLimits, SandboxPool

SECRET = "corea-fake-secret-7f3a9c"
LIMITS = SandboxLimits(timeout_s=1.5, cpu_s=1, memory_mb=256, max_output_chars=2000)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool():
    """A private pool (two workers) started while a fake secret is in the parent's environment."""
    old = os.environ.get("COREA_FAKE_SECRET")
    os.environ["COREA_FAKE_SECRET"] = SECRET
    p = SandboxPool(max_workers=2, max_memory_mb=512)
    yield p
    p.close()
    if old is None:
        os.environ.pop("COREA_FAKE_SECRET", None)
    else:
        os.environ["COREA_FAKE_SECRET"] = old


def _still_answers(pool: SandboxPool) -> None:
    res = pool.run("print(6 * 7)", LIMITS)
    assert res.ok and res.output == "42\n", res


# (id, program, the error kinds that count as failing safely)
REFUSED, EXC, TIMEOUT, MEMORY = {"refused"}, {"exception"}, {"timeout"}, {"memory"}
ATTACKS = [
    # imports, directly and through __import__ / importlib / builtins
    ("import-os", "import os\nprint(os.listdir('/'))", REFUSED),
    ("import-subprocess", "import subprocess\nsubprocess.run(['id'])", REFUSED),
    ("from-os-import", "from os import system\nsystem('id')", REFUSED),
    ("dunder-import", "m = __import__('os')\nprint(m.environ)", REFUSED),
    ("importlib", "import importlib\nprint(importlib.import_module('os').environ)", REFUSED),
    ("import-builtins", "import builtins\nprint(builtins.open('/etc/passwd').read())", REFUSED),
    ("import-sys", "import sys\nprint(sys.modules['os'].environ)", REFUSED),
    ("relative-import", "from . import grading", REFUSED),
    ("module-view-has-no-sys", "import fractions\nprint(fractions.sys.modules['os'])", EXC),
    ("module-view-getattr-sys", "import statistics\nprint(getattr(statistics, 'random'))", EXC),
    ("module-loader", "import math\nprint(math.__loader__)", REFUSED),
    # dunder walks
    ("subclasses-walk", "print(().__class__.__bases__[0].__subclasses__())", REFUSED),
    ("mro-walk", "print([].__class__.__mro__[-1].__subclasses__())", REFUSED),
    ("getattr-computed-dunder", "c = getattr((), '__cla' + 'ss__')\nprint(c)", REFUSED),
    ("getattr-caught", "try:\n    c = getattr(1, '__class__')\nexcept Exception:\n"
     "    c = None\nprint('survived', c)", REFUSED),
    ("function-globals", "f = lambda: 0\nprint(f.__globals__)", REFUSED),
    ("getattr-globals", "def f():\n    return 1\nprint(getattr(f, '__glob' + 'als__'))",
     REFUSED),
    ("getattr-self", "print(getattr(getattr, '__self__'))", REFUSED),
    ("hasattr-probe", "print(hasattr(1, '__class__'))", REFUSED),
    ("type-mro", "print(str.mro())", REFUSED),
    # open / eval / exec / compile / namespaces
    ("open-passwd", "print(open('/etc/passwd').read())", REFUSED),
    ("eval", "print(eval('1 + 1'))", REFUSED),
    ("exec", "exec('import os')", REFUSED),
    ("compile", "c = compile('1', 'x', 'eval')\nprint(c)", REFUSED),
    ("globals", "print(globals())", REFUSED),
    ("locals-vars-dir", "print(vars(), dir())", REFUSED),
    ("builtins-name", "print(__builtins__)", REFUSED),
    ("type-call", "print(type(1))", REFUSED),
    ("setattr", "import math\nsetattr(math, 'pi', 3)", REFUSED),
    ("module-attribute-write", "import math\nmath.pi = 3\nprint(math.pi)", REFUSED),
    ("breakpoint", "breakpoint()", REFUSED),
    ("exit", "exit(0)", REFUSED),
    ("input", "print(input())", REFUSED),
    # environment and secrets, /proc
    ("os-environ", "import os\nprint(os.environ)", REFUSED),
    ("proc-self-environ", "print(open('/proc/self/environ').read())", REFUSED),
    ("proc-parent-environ", f"print(open('/proc/{os.getpid()}/environ').read())", REFUSED),
    ("proc-self-maps", "print(open('/proc/self/maps').read())", REFUSED),
    # sockets, ctypes, signals, processes
    ("socket", "import socket\nsocket.create_connection(('127.0.0.1', 80))", REFUSED),
    ("ctypes", "import ctypes\nctypes.CDLL(None).system(b'id')", REFUSED),
    ("signal", "import signal\nsignal.alarm(1)", REFUSED),
    ("fork-bomb", "import os\nwhile True:\n    os.fork()", REFUSED),
    ("multiprocessing", "import multiprocessing\nmultiprocessing.Process().start()", REFUSED),
    # loops, memory, recursion
    ("infinite-loop", "while True:\n    pass", TIMEOUT),
    ("itertools-count-loop", "import itertools\nfor i in itertools.count():\n    pass",
     TIMEOUT),
    ("loop-catching-everything", "while True:\n    try:\n        x = 1\n    except:\n"
     "        pass", TIMEOUT),
    ("memory-list", "x = [0] * (10 ** 10)", MEMORY),
    ("memory-string", "s = 'a' * (10 ** 10)", MEMORY),
    ("memory-doubling", "x = [1]\nwhile True:\n    x = x + x", MEMORY | TIMEOUT),
    ("memory-bigint", "x = 10 ** (10 ** 10)\nprint(x)", MEMORY | TIMEOUT),
    ("recursion", "def f(n):\n    return f(n + 1)\nf(0)", EXC),
    ("nested-parentheses", "x = " + "(" * 5000 + "1" + ")" * 5000, {"syntax", "refused"}),
    ("nested-unary", "x = " + "-" * 100000 + "1", {"syntax", "refused", "exception"}),
    # output
    ("huge-print", "print('x' * (10 ** 6))", {"output_too_large"}),
    ("many-prints", "for i in range(10 ** 8):\n    print(i)", {"output_too_large"}),
    ("print-overflow-caught", "for i in range(10 ** 5):\n    try:\n        print('x' * 100)\n"
     "    except:\n        pass\nprint('done')", {"output_too_large"}),
    ("print-to-file", "print('x', file=[])", REFUSED),
    # file writes
    ("file-write", "open('pwned.txt', 'w').write('data')", REFUSED),
    # format strings (CVE-2023-41039, string.Formatter CVE-2026-76825)
    ("format-attribute", "print('{0.__class__}'.format(1))", REFUSED),
    ("format-item", "print('{0[x]}'.format({'x': 1}))", REFUSED),
    ("format-map", "print('{x.__class__}'.format_map({'x': 1}))", REFUSED),
    ("format-nested-spec", "print('{0:{1.real}}'.format(1, 2))", REFUSED),
    ("format-on-type", "print(str.format('{0.__class__}', 1))", REFUSED),
    ("fstring-dunder", "print(f'{().__class__}')", REFUSED),
    ("string-formatter", "import string\nprint(string.Formatter().format('{0.__class__}', 1))",
     REFUSED),
    # pickle
    ("pickle", "import pickle\npickle.loads(b'cos\\nsystem\\n(S\"id\"\\ntR.')", REFUSED),
    ("reduce-class", "class X:\n    def __reduce__(self):\n        return (print, ('x',))",
     REFUSED),
    # generators, frames, tracebacks (CVE-2023-37271)
    ("gi-frame", "g = (i for i in [1])\nprint(g.gi_frame.f_back.f_globals)", REFUSED),
    ("gi-frame-getattr", "g = (i for i in [1])\nprint(getattr(g, 'gi_' + 'frame'))", REFUSED),
    ("gi-code", "g = (i for i in [1])\nprint(getattr(g, 'gi_code'))", REFUSED),
    ("yield-generator", "def g():\n    yield 1\nprint(list(g()))", REFUSED),
    ("traceback-frame", "try:\n    1 / 0\nexcept Exception as e:\n    print(e.__traceback__)",
     REFUSED),
    ("tb-frame-getattr", "try:\n    1 / 0\nexcept Exception as e:\n"
     "    print(getattr(e, 'with_traceback'), getattr(e, '__traceback__'))", REFUSED),
    # RestrictedPython's own past escapes
    ("try-except-star", "try:\n    pass\nexcept* ValueError:\n    pass", REFUSED),
    ("posonly-shadows-getattr", "def f(_getattr_, /):\n    return 1\nprint(f(1))", REFUSED),
    ("attributeerror-obj", "try:\n    (1).nope\nexcept AttributeError as e:\n"
     "    print(getattr(e.obj, '__class__'))", REFUSED),
    ("async-def", "async def f():\n    return 1", REFUSED),
    ("nonlocal", "def f():\n    x = 1\n    def g():\n        nonlocal x\n    return g", REFUSED),
    ("class-definition", "class A:\n    pass", REFUSED),
    # a class pattern reads attributes in C, past _getattr_
    ("match-class-pattern", "match ():\n    case tuple(__class__=c):\n        print(c)", REFUSED),
    ("format-width-bomb", "print('{:999999999}'.format(1))", MEMORY),
    ("decimal-context-write", "import decimal\ndecimal.getcontext().prec = 2", REFUSED),
    ("decimal-default-context", "import decimal\nprint(decimal.DefaultContext)", EXC),
]


@pytest.mark.parametrize("code,kinds", [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_attack_fails_safely_and_the_sandbox_still_answers(pool, code, kinds):
    res = pool.run(code, LIMITS)
    assert not res.ok and res.error in kinds, res
    assert res.answer is None and res.message.strip()
    assert "Traceback" not in res.message and len(res.message) <= 500
    for text in (res.output, res.message):
        assert SECRET not in text
        assert "root:" not in text  # no /etc/passwd line
    _still_answers(pool)


def test_there_are_at_least_forty_attacks():
    assert len(ATTACKS) >= 40
    assert len({a[0] for a in ATTACKS}) == len(ATTACKS)
    assert all(k <= set(ERROR_KINDS) for _, _, k in ATTACKS)


def test_huge_source_is_refused_before_it_reaches_a_worker(pool):
    res = pool.run("x = 1\n" * 5000, SandboxLimits(max_source_chars=1000))
    assert res.error == "refused" and "longer than 1000" in res.message


def test_cpu_seconds_stop_a_program_even_with_a_long_wall_clock(pool):
    res = pool.run("while True:\n    pass", SandboxLimits(timeout_s=20, cpu_s=1))
    assert res.error == "timeout" and res.seconds < 20, res
    _still_answers(pool)


def test_a_refused_program_does_not_leak_state_into_the_next(pool):
    assert pool.run("import math\nmath.pi = 3", LIMITS).error == "refused"
    res = pool.run("import math, decimal\nprint(math.pi, decimal.Decimal(1) / decimal.Decimal(7))",
                   LIMITS)
    assert res.output == "3.141592653589793 0.1428571428571428571428571429\n", res
    res = pool.run("leak = 1\nprint(1)", LIMITS)
    assert pool.run("print(leak)", LIMITS).error == "exception"  # globals are per program


def test_hostile_programs_in_parallel_do_not_stop_benign_ones(pool):
    progs = ["while True:\n    pass", "x = [0] * (10 ** 10)", "print(sum(range(101)))",
             "print(open('/etc/passwd').read())", "print(2 ** 10)"]
    results: dict[int, object] = {}

    def go(i: int) -> None:
        results[i] = pool.run(progs[i], LIMITS)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(progs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results[0].error == "timeout" and results[1].error == "memory"
    assert results[2].output == "5050\n" and results[4].output == "1024\n"
    assert results[3].error == "refused"


def _worker_pids() -> list[int]:
    """Live sandbox workers started by this test process (read from /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and b"corea.sandbox.worker" in cmd:
            pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_have_an_empty_environment_and_their_own_folder(pool):
    _still_answers(pool)
    pids = _worker_pids()
    assert pids
    for pid in pids:
        assert (Path(f"/proc/{pid}/environ")).read_bytes() == b""
        assert "corea-sandbox-" in os.readlink(f"/proc/{pid}/cwd")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux layers")
def test_layers_are_reported_and_active_on_this_machine(pool):
    layers = pool.layers()
    assert set(layers) == {"network", "user", "rlimits", "seccomp"}
    assert "FSIZE 0" in layers["rlimits"] and "NPROC 0" in layers["rlimits"]
    assert "namespace" in layers["network"] or "seccomp refuses socket()" in layers["network"]
    if os.geteuid() == 0:
        assert layers["user"].startswith(("dropped", "unavailable"))


_OS_LAYER_PROBE = r"""
import json, os, socket, sys, tempfile
sys.path.insert(0, sys.argv[1])
from corea.sandbox import oslimits
work = tempfile.mkdtemp()
os.chdir(work)
layers = oslimits.lock_down(work, 256, 10)
out = {"layers": layers}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ALLOWED"
    except BaseException as exc:
        out[name] = type(exc).__name__
attempt("read_passwd", lambda: open("/etc/passwd").read())
attempt("read_proc_environ", lambda: open("/proc/1/environ").read())
attempt("write_file", lambda: open("x.txt", "w").write("x"))
attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("fork", os.fork)
attempt("memory", lambda: bytearray(1 << 30))
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux layers")
def test_the_os_layer_alone_stops_files_sockets_processes_and_memory():
    """Defense in depth: plain Python (no restricted interpreter) after the lock-down."""
    r = subprocess.run([sys.executable, "-I", "-c", _OS_LAYER_PROBE, str(REPO)],
                       capture_output=True, text=True, timeout=60, env={})
    out = json.loads(r.stdout.strip().splitlines()[-1])
    allowed = [k for k, v in out.items() if v == "ALLOWED"]
    if "unavailable" in out["layers"].get("seccomp", ""):
        pytest.skip(f"no seccomp here: {out['layers']['seccomp']}")
    assert not allowed, out
    assert out["memory"] == "MemoryError"


# ------------------------------------------------------------------------- positive programs

GOOD = [
    ("janet-ducks", "eggs = 16 - 3 - 4\nanswer = eggs * 2\nprint(answer)", "18"),
    ("functions-loops", "def cost(items):\n    total = 0\n    for name, price, qty in items:\n"
     "        total = total + price * qty\n    return total\n"
     "answer = cost([('pen', 1.5, 4), ('book', 12, 2)])\nprint(answer)", "30.0"),
    ("fractions", "from fractions import Fraction\nanswer = Fraction(1, 3) + Fraction(1, 4)\n"
     "print(answer)", "7/12"),
    ("decimal-money", "from decimal import Decimal\nanswer = Decimal('19.99') * 3\nprint(answer)",
     "59.97"),
    ("statistics", "import statistics\nprint(statistics.mean([82, 90, 75, 93]))", "85"),
    ("datetime", "import datetime\nd = datetime.date(2024, 3, 1) - datetime.date(2024, 2, 1)\n"
     "print(d.days)", "29"),
    ("strptime", "from datetime import datetime\n"
     "t = datetime.strptime('09:15', '%H:%M') - datetime.strptime('07:45', '%H:%M')\n"
     "print(int(t.total_seconds() // 60))", "90"),
    ("itertools", "import itertools\nprint(len(list(itertools.combinations(range(6), 2))))",
     "15"),
    ("math", "import math\nprint(math.ceil(250 / 12) + math.floor(math.sqrt(50)))", "28"),
    ("data-structures", "d = {}\nfor w in 'a b a c a b'.split():\n    d[w] = d.get(w, 0) + 1\n"
     "best = sorted(d.items(), key=lambda kv: -kv[1])[0]\n"
     "pairs = list(zip(range(3), reversed([1, 2, 3])))\n"
     "print(best[0], best[1], sum(i * j for i, j in pairs), len({1, 2, 2}))", "a 3 4 2"),
    ("format", "x = 2 / 3\nprint('{:.2f}'.format(x), f'{x:.3f}', '%d%%' % 50)",
     "0.67 0.667 50%"),
    ("augmented", "n = 10\nn += 5\nn *= 2\nprint(n)", "30"),
    ("print-options", "print(1, 2, sep='-', end='!\\n', flush=True)", "1-2!"),
    ("handled-exception", "try:\n    r = 1 / 0\nexcept ZeroDivisionError:\n    r = 0\nprint(r)",
     "0"),
    ("unpacking", "a, (b, c) = 1, (2, 3)\nfor i, (x, y) in enumerate([(4, 5)]):\n"
     "    print(a + b + c + i + x + y)", "15"),
]


@pytest.mark.parametrize("code,printed", [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_ordinary_programs_compute_the_right_value(pool, code, printed):
    res = pool.run(code, LIMITS)
    assert res.ok and res.error is None and res.message == "", res
    assert res.output.strip().splitlines()[-1] == printed
    assert res.seconds >= 0


def test_answer_variable_without_print_and_no_output(pool):
    res = pool.run("answer = 6 * 7", LIMITS)
    assert res.ok and res.output == "" and res.answer == "42"
    res = pool.run("x = 1", LIMITS)
    assert res.error == "no_output" and not res.ok


def test_unprintable_text_comes_back_as_valid_utf8(pool):
    res = pool.run("print('caf\\u00e9', '\\ud800')", LIMITS)
    assert res.ok and res.output == "café ?\n", res


def test_syntax_error_names_the_line(pool):
    res = pool.run("x = 1\nprint(x +)", LIMITS)
    assert res.error == "syntax" and "line 2" in res.message


def test_exception_message_is_one_line(pool):
    res = pool.run("print('partial')\nraise ValueError('bad value')", LIMITS)
    assert res.error == "exception" and res.message == "ValueError: bad value"
    assert res.output == "partial\n"


def test_limits_are_validated():
    with pytest.raises(ValueError):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError):
        SandboxLimits(memory_mb=16)


# ------------------------------------------------------------------------- PoT primitives

def test_extract_program_from_fences_and_bare_code():
    fenced = ("Let me write code.\n```python\neggs = 16 - 7\nanswer = eggs * 2\nprint(answer)\n"
              "```\nOutput:\n```\n18\n```\nConfidence: 0.9")
    assert extract_program(fenced) == "eggs = 16 - 7\nanswer = eggs * 2\nprint(answer)"
    assert extract_program("x = 5\nprint(x * 3)\nConfidence: 0.8") == "x = 5\nprint(x * 3)"
    assert extract_program("First:\nx = 5\nprint(x)\nThat's it.") == "x = 5\nprint(x)"
    assert extract_program("```python\nanswer = 3\nprint(answer)") == "answer = 3\nprint(answer)"
    assert extract_program("The answer is 18.") is None
    assert extract_program("```\n18\n```") is None
    assert extract_program("") is None


@pytest.mark.parametrize("printed,expected", [
    ("18\n", "18"), ("18.0", "18"), ("$1,234.50", "1234.5"), ("25%", "25"), ("1e-05", "0.00001"),
    ("17.999999999999996", "18"), ("0.30000000000000004", "0.3"), ("3/4", "3/4"),
    ("123456789012345678", "123456789012345678"), ("Janet earns $18 a day", "18"),
    ("The answer is 42.", "42"), ("Answer: 7", "7"), ("x = 5", "5"), ("(2, 3)", "(2, 3)"),
    ("True", "True"), ("step 1\n\n9\n", "9"), ("", None),
])
def test_answer_from_output(printed, expected):
    assert answer_from_output(printed) == expected


def test_answer_from_output_falls_back_to_the_answer_variable():
    assert answer_from_output("", "12.0") == "12"
    assert normalise_number("not a number") is None


def test_run_completion(pool, monkeypatch):
    import corea.pot
    monkeypatch.setattr(corea.pot, "run_program", pool.run)
    ok = run_completion("```python\nanswer = (16 - 3 - 4) * 2\nprint(answer)\n```", LIMITS)
    assert ok.ok and ok.answer == "18" and ok.program.startswith("answer =")
    assert ok.status_line().startswith("answer: 18")
    bad = run_completion("```python\nimport os\nprint(os.environ)\n```", LIMITS)
    assert not bad.ok and bad.error == "refused" and bad.answer is None
    assert bad.status_line().startswith("refused: ")
    none = run_completion("I think it is 18.", LIMITS)
    assert none.error == "no_program" and none.result is None and none.program is None
    assert json.loads(json.dumps(ok.as_dict()))["result"]["output"] == "18\n"


def test_an_unavailable_sandbox_is_an_unusable_answer_not_an_error(monkeypatch):
    import corea.pot
    from corea.sandbox import SandboxUnavailable

    def broken(code, limits=None):
        raise SandboxUnavailable("the sandbox worker did not start")

    monkeypatch.setattr(corea.pot, "run_program", broken)
    out = run_completion("```python\nprint(1)\n```")
    assert out.error == "unavailable" and out.answer is None and out.program == "print(1)"


def test_answers_agree_uses_the_grading_equivalence():
    assert answers_agree("18", "18.00") and answers_agree("18.00", "18")
    assert answers_agree("1/2", "0.5") and answers_agree("0.5", "\\frac{1}{2}")
    assert answers_agree("1,234", "1234")
    assert not answers_agree("3", "4")
    assert not answers_agree(None, "4") and not answers_agree("4", None)
    assert not answers_agree("", "")


def test_pot_prompts_have_no_placeholders_and_a_version():
    assert POT_VERSION
    for text in (POT_SYSTEM, POT_SLM_SYSTEM):
        assert "answer" in text and "print" in text and "<" not in text and "{" not in text
    msgs = pot_messages("What is 2 + 3?", confidence=True)
    assert msgs[0].content == POT_SLM_SYSTEM and msgs[1].content == "What is 2 + 3?"
    mc = pot_messages("Pick one.", ["4", "5"])
    assert mc[0].content == POT_SYSTEM and "(B) 5" in mc[1].content
    assert "\\boxed" not in mc[1].content


# ------------------------------------------------------------------------- corea sandbox

def test_cli_runs_a_file_and_exit_codes(tmp_path, capsys, monkeypatch):
    good = tmp_path / "good.py"
    good.write_text("answer = 6 * 7\nprint(answer)\n")
    assert cli.main(["sandbox", str(good)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "42\n" and captured.err.startswith("answer: 42")

    bad = tmp_path / "bad.py"
    bad.write_text("import os\nprint(os.environ)\n")
    assert cli.main(["sandbox", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("refused: ")

    assert cli.main(["sandbox", str(tmp_path / "missing.py")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "latin.py").write_bytes(b"print('\xe9')")
    assert cli.main(["sandbox", str(tmp_path / "latin.py")]) == 2
    assert cli.main(["sandbox"]) == 2

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        b"Here:\n```python\nprint(2 + 3)\n```\nConfidence: 0.9\n")))
    assert cli.main(["sandbox", "--completion", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == "5" and out["program"] == "print(2 + 3)"
