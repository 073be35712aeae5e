"""The restricted-interpreter layer: compile a program with RestrictedPython and run it with
COREA's guards. Runs **inside** the worker process (:mod:`corea.sandbox.worker`); the OS layer
(:mod:`corea.sandbox.oslimits`) is what stops a program that gets past this one.

What a program may use (everything else is refused):

* Python statements for computation: assignments, ``if``/``for``/``while``, ``def``, ``lambda``,
  comprehensions and generator expressions, ``try``/``except``, ``assert``, ``print``.
* Builtins: numbers and strings (``int``, ``float``, ``complex``, ``str``, ``bool``, ``round``,
  ``abs``, ``divmod``, ``pow``, ``min``, ``max``, ``sum``, ...), plain data structures (``list``,
  ``dict``, ``set``, ``frozenset``, ``tuple``, ``range``, ``enumerate``, ``zip``, ``sorted``,
  ``reversed``, ``map``, ``filter``, ``any``, ``all``, ``len``), the usual exceptions, and a
  guarded ``getattr``/``hasattr``.
* ``import`` of :data:`ALLOWED_MODULES` only (``math``, ``fractions``, ``decimal``,
  ``statistics``, ``itertools``, ``datetime``), each handed over as a read-only view of its public
  names, without the modules it imports itself (``fractions.sys`` does not exist in the view).
* ``str.format``/``format_map`` only with plain field names (``"{:.2f}"``, ``"{0}"``,
  ``"{x}"``): a field that looks something up (``"{0.__class__}"``, ``"{0[x]}"``) is refused
  (CVE-2023-41039).

Refused at compile time (kind ``refused``): names and attributes starting with ``_``, frame /
generator / code / traceback internals (RestrictedPython's ``INSPECT_ATTRIBUTES``), ``class``,
``yield``, ``async``, ``match``, ``try``/``except*``, ``nonlocal``, augmented assignment to items
(``d[k] += 1``: RestrictedPython's rule; write ``d[k] = d[k] + 1``), imports outside the allowlist.
Refused at run time: the same attribute rules through ``getattr``, writing attributes, ``print``
to a file. A refusal is sticky: a program that catches the error is still reported refused.

Why RestrictedPython (9.0) and not smolagents' ``LocalPythonExecutor``: RestrictedPython is a
small, dependency-free compiler policy maintained by the Zope/Plone foundations since 2002,
audited per Python release, with security fixes published as CVEs and in its changelog
(generator ``gi_frame`` walks CVE-2023-37271, ``str.format`` CVE-2023-41039,
``AttributeError.obj`` CVE-2024-47532, ``try/except*`` CVE-2025-22153, ``string.Formatter``
CVE-2026-76825, positional-only names shadowing ``_getattr_`` in 8.3, C-iterating builtins in
9.0); it refuses every ``_`` name by construction, so the dunder walks that broke smolagents are
rejected before anything runs. smolagents' executor is an AST walker that its own maintainers
document as "not a security sandbox" (CVE-2025-5120, CVE-2025-9959, class dunder "time bombs"
in issue #2395, ``ctypes`` in #2094), pulls in a large dependency tree, and interprets Python in
Python (much slower). Neither is a boundary on its own, which is why this layer runs inside the
limited worker process.
"""

from __future__ import annotations

import ast
import importlib
import operator
import string
import types
from typing import Any, Callable

from RestrictedPython import RestrictingNodeTransformer, compile_restricted_exec
from RestrictedPython.Guards import (guarded_iter_unpack_sequence,
                                     guarded_unpack_sequence, raise_, safe_builtins,
                                     safer_getattr)
from RestrictedPython.PrintCollector import PrintCollector
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

__all__ = ["ALLOWED_MODULES", "Refusal", "OutputTooLarge", "execute"]

ALLOWED_MODULES = ("math", "fractions", "decimal", "statistics", "itertools", "datetime")
"""The only modules a program may import."""

_HIDDEN_NAMES = {
    # decimal's module-wide contexts: changing them would leak into the next program
    "decimal": {"DefaultContext", "BasicContext", "ExtendedContext", "setcontext"},
    "datetime": {"datetime_CAPI"},
}
_UNAVAILABLE = ("open", "exec", "eval", "compile", "globals", "locals", "vars", "dir", "input",
                "breakpoint", "type", "object", "super", "memoryview", "bytearray", "bytes",
                "help", "exit", "quit", "setattr", "delattr", "classmethod", "staticmethod",
                "property")
"""Builtins that exist in Python but refuse when a program calls them (a clear reason, not a
NameError)."""
_INTERNAL_IMPORTS = frozenset({"_strptime", "time"})
"""Modules that allowed C functions import on their own through the frame's ``__import__``
(``datetime.strptime``, ``strftime``); a program cannot name them: its own imports are checked
against :data:`ALLOWED_MODULES` at compile time."""
_BLOCKED_PREFIXES = ("f_", "tb_", "gi_", "cr_", "ag_", "co_")
_BLOCKED_ATTRS = {"mro", "format_field", "get_field", "get_value", "vformat"}


class Refusal(Exception):
    """The program used something outside the allowed subset (kind ``refused``)."""


class OutputTooLarge(BaseException):
    """The program printed more than its cap (a BaseException: ``except Exception`` in the
    program does not catch it; a bare ``except`` does, and the run is still reported)."""


class _Run:
    """Per-run state: the first refusal and whether the output cap was hit (sticky flags)."""

    def __init__(self, max_output_chars: int):
        self.max_output_chars = max_output_chars
        self.refusal: str | None = None
        self.overflow = False

    def refuse(self, why: str) -> Refusal:
        if self.refusal is None:
            self.refusal = why
        return Refusal(why)


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus COREA's: no classes, no ``yield``, allowlisted imports."""

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        self.error(node, "class definitions are not allowed (plain functions and data only)")
        return node

    def visit_Yield(self, node: ast.Yield) -> Any:
        self.error(node, "yield is not allowed (use a list or a generator expression)")
        return node

    def visit_YieldFrom(self, node: ast.YieldFrom) -> Any:
        self.error(node, "yield from is not allowed")
        return node

    def check_import_names(self, node: ast.Import | ast.ImportFrom) -> Any:
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
            a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.level:
            names = ["." * node.level + (node.module or "")]
        for name in names:
            if name not in ALLOWED_MODULES:
                self.error(node, f"import of {name!r} is not allowed (allowed: "
                           f"{', '.join(ALLOWED_MODULES)})")
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            self.error(node, "'from ... import *' is not allowed")
        return super().check_import_names(node)


def _module_view(name: str) -> types.SimpleNamespace:
    """A read-only view of an allowed module: its public names (``__all__`` when it has one),
    without submodules, imported modules or the names in :data:`_HIDDEN_NAMES`."""
    mod = importlib.import_module(name)
    public = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    hidden = _HIDDEN_NAMES.get(name, set())
    return types.SimpleNamespace(**{
        n: getattr(mod, n) for n in public
        if not n.startswith("_") and n not in hidden and hasattr(mod, n)
        and not isinstance(getattr(mod, n), types.ModuleType)})


_VIEWS = {name: _module_view(name) for name in ALLOWED_MODULES}

_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow,
    "<<=": operator.ilshift, ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior,
    "^=": operator.ixor, "@=": operator.imatmul,
}


def _plain_fields(template: str) -> bool:
    """Whether every replacement field of a format string (nested specs too) is a bare
    position or name, so formatting cannot look anything up."""
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is not None and ("." in field or "[" in field):
            return False
        if spec and "{" in spec and not _plain_fields(spec):
            return False
    return True


class _BoundedPrint(PrintCollector):
    """RestrictedPython's print collector with the output cap (one per run)."""

    def __init__(self, run: _Run):
        super().__init__()
        self.run, self.size = run, 0

    def write(self, text: str) -> None:
        room = self.run.max_output_chars - self.size
        if len(text) > room:
            self.txt.append(text[:max(room, 0)])
            self.size = self.run.max_output_chars
            self.run.overflow = True
            raise OutputTooLarge(f"printed more than {self.run.max_output_chars} characters")
        self.txt.append(text)
        self.size += len(text)

    def flush(self) -> None:
        """``print(..., flush=True)``: nothing to flush."""

    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is not None:
            raise self.run.refuse("print to a file is not allowed")
        kwargs["file"] = self
        print(*objects, **kwargs)


class _Guards:
    """The hooks RestrictedPython's compiled code calls (``_getattr_``, ``_write_``,
    ``__import__``, ...), bound to one run's sticky refusal state."""

    def __init__(self, run: _Run):
        self.run = run
        self.printer = _BoundedPrint(run)

    def getattr_(self, obj: Any, name: str, *default: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError("attribute name must be a string")
        if (name.startswith("_") or name in INSPECT_ATTRIBUTES or name in _BLOCKED_ATTRS
                or name.startswith(_BLOCKED_PREFIXES)):
            raise self.run.refuse(f"access to the attribute {name!r} is not allowed")
        if name in ("format", "format_map"):
            if isinstance(obj, type):
                raise self.run.refuse(f"{name} on a type is not allowed; call it on a string")
            if isinstance(obj, str):
                return self.checked_format(obj, name)
        try:
            return safer_getattr(obj, name, default[0] if default else raise_)
        except NotImplementedError as exc:
            raise self.run.refuse(str(exc)) from None

    def checked_format(self, template: str, name: str) -> Callable[..., str]:
        def fmt(*args: Any, **kwargs: Any) -> str:
            if not _plain_fields(template):
                raise self.run.refuse("format fields that look up attributes or items are "
                                      "not allowed")
            return (template.format(*args, **kwargs) if name == "format"
                    else template.format_map(*args))
        return fmt

    def hasattr_(self, obj: Any, name: str) -> bool:
        try:
            self.getattr_(obj, name)
        except AttributeError:
            return False
        return True

    def import_(self, name: str, globals_: Any = None, locals_: Any = None, fromlist: Any = (),
                level: int = 0) -> Any:
        if name in _INTERNAL_IMPORTS and not level:
            return importlib.import_module(name)
        if level or name not in _VIEWS:
            raise self.run.refuse(f"import of {name!r} is not allowed")
        return _VIEWS[name]

    def write_(self, obj: Any) -> Any:
        if type(obj) in (dict, list):
            return obj
        raise self.run.refuse("changing attributes or items of a "
                              f"{type(obj).__name__} is not allowed (lists and dicts only)")

    def inplace(self, op: str, x: Any, y: Any) -> Any:
        if op not in _INPLACE:
            raise self.run.refuse(f"operator {op} is not allowed")
        return _INPLACE[op](x, y)

    def unavailable(self, name: str) -> Callable[..., Any]:
        def refuse(*_: Any, **__: Any) -> Any:
            raise self.run.refuse(f"{name}() is not available in the sandbox")
        return refuse

    def namespace(self) -> dict[str, Any]:
        """A fresh globals dict for one program."""
        builtins = {k: v for k, v in safe_builtins.items()
                    if k not in ("__build_class__", "setattr", "delattr", "_getattr_")}
        builtins.update(
            __import__=self.import_, getattr=self.getattr_, hasattr=self.hasattr_, list=list,
            dict=dict, set=set, frozenset=frozenset, tuple=tuple, enumerate=enumerate, zip=zip,
            sorted=sorted, reversed=reversed, map=map, filter=filter, sum=sum, min=min, max=max,
            any=any, all=all, iter=iter, next=next, format=format, bin=bin,
            **{name: self.unavailable(name) for name in _UNAVAILABLE})
        return {
            "__builtins__": builtins, "__name__": "program", "__metaclass__": None,
            "_getattr_": self.getattr_, "_getitem_": operator.getitem, "_getiter_": iter,
            "_write_": self.write_, "_print_": lambda *_: self.printer,
            "_inplacevar_": self.inplace, "_apply_": lambda f, *a, **k: f(*a, **k),
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence,
        }


def _text(s: str) -> str:
    """Valid UTF-8 text (a lone surrogate the program printed becomes ``?``)."""
    return s.encode("utf-8", "replace").decode("utf-8")


def _verdict(kind: str | None, message: str, output: str, answer: str | None,
             executed: bool = False) -> dict:
    return {"kind": kind, "message": _text(message[:500]), "output": _text(output),
            "answer": None if answer is None else _text(answer), "executed": executed}


def _compile(source: str) -> tuple[Any, dict | None]:
    """``(code, None)`` or ``(None, verdict)`` for a syntax error or a policy refusal."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        return None, _verdict("syntax", f"line {exc.lineno}: {exc.msg}", "", None)
    except (RecursionError, MemoryError, ValueError) as exc:
        return None, _verdict("refused", f"the program cannot be parsed: {type(exc).__name__}",
                              "", None)
    try:
        result = compile_restricted_exec(source, "<program>", policy=_Policy)
    except (RecursionError, MemoryError) as exc:
        return None, _verdict("refused", f"the program is nested too deeply "
                              f"({type(exc).__name__})", "", None)
    if result.errors or result.code is None:
        return None, _verdict("refused", "; ".join(result.errors) or "not allowed", "", None)
    return result.code, None


def _answer_text(glb: dict, cap: int) -> str | None:
    if "answer" not in glb:
        return None
    try:
        return str(glb["answer"])[:cap]
    except Exception as exc:  # e.g. an int too long to print
        return f"<unprintable answer: {type(exc).__name__}>"


def execute(source: str, max_output_chars: int) -> dict:
    """Compile and run ``source`` in this process under the restricted policy.

    Returns:
        ``{"kind": ErrorKind | None, "message": str, "output": str, "answer": str | None,
        "executed": bool}``; ``kind`` None means the program ran and printed or set ``answer``;
        ``executed`` False means it was stopped at compile time (nothing of it ran). Never
        raises for anything the program does (``SystemExit`` and ``KeyboardInterrupt``
        included); the caller (the worker) stops it by the OS limits when it does not return.
    """
    code, failed = _compile(source)
    if failed is not None:
        return failed
    run = _Run(max_output_chars)
    guards = _Guards(run)
    glb = guards.namespace()
    import decimal
    decimal.setcontext(decimal.Context())  # a fresh context: nothing leaks between programs
    kind, message = None, ""
    try:
        exec(code, glb)  # noqa: S102 -- restricted bytecode with COREA's guards
    except OutputTooLarge as exc:
        kind, message = "output_too_large", str(exc)
    except MemoryError:
        kind, message = "memory", "the program ran out of memory"
    except Refusal as exc:
        kind, message = "refused", str(exc)
    except BaseException as exc:  # the program's own error, SystemExit included
        kind, message = "exception", f"{type(exc).__name__}: {exc}"
    output = guards.printer()
    answer = _answer_text(glb, max_output_chars) if kind is None else None
    if run.refusal is not None:
        kind, message, answer = "refused", run.refusal, None
    elif run.overflow:
        kind, message = "output_too_large", f"printed more than {max_output_chars} characters"
        answer = None
    elif kind is None and not output.strip() and answer is None:
        kind, message = "no_output", "the program printed nothing and set no `answer`"
    return _verdict(kind, message, output, answer, executed=True)
