"""The code-size rules of the style guide, checked on every module of ``corea/``: a module over
400 lines says why at the top of its docstring (a parenthesised line mentioning its lines), no
function is over 80 lines, no class over 300 (issue 28)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "corea"
MODULES = sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_module_function_and_class_sizes(path):
    src = path.read_text(encoding="utf-8")
    tree = ast.parse(src)
    lines = src.count("\n")
    doc = ast.get_docstring(tree) or ""
    if lines > 400:
        head = doc[:600]
        assert "(" in head and "lines" in head, (
            f"{path.name}: {lines} lines and no one-line reason at the top of its docstring")
    too_long = []
    for node in ast.walk(tree):
        size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 80:
            too_long.append(f"function {node.name} ({size} lines)")
        elif isinstance(node, ast.ClassDef) and size > 300:
            too_long.append(f"class {node.name} ({size} lines)")
    assert not too_long, f"{path.name}: " + ", ".join(too_long)
