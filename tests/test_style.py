"""House style that a machine can check: one function does one step (STYLE.md).

A function whose body runs past ``MAX_BODY_LINES`` is several functions. The body is
counted from its first statement after the docstring to its last line, so the
signature and the docstring are free; nested functions and methods are functions too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import robustcam

MAX_BODY_LINES = 60
PACKAGE = Path(robustcam.__file__).parent
ROOT = PACKAGE.parent

# qualified name (module path + function qualname) -> why it may be long for now; only
# robustcam/cli.py, and each entry goes when its function is split
EXCEPTIONS: dict[str, str] = {}
EXCEPTION_MODULES = ("robustcam.cli",)


class FunctionBody(NamedTuple):
    qualified_name: str
    location: str  # file:line of the ``def``
    lines: int  # of the body, without signature and docstring


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's last line."""
    body = function.body
    if ast.get_docstring(function, clean=False) is not None:
        body = body[1:]
    if not body:
        return 0
    end = function.end_lineno if function.end_lineno is not None else body[-1].lineno
    return end - body[0].lineno + 1


def _functions(tree: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function under ``tree`` with its qualname (``Class.method``, ``outer.<locals>.inner``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def function_bodies() -> Iterator[FunctionBody]:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for qualname, function in _functions(tree, ""):
            location = f"{path.relative_to(ROOT)}:{function.lineno}"
            yield FunctionBody(f"{module}.{qualname}", location, body_lines(function))


def test_body_lines_count_from_the_first_statement_after_the_docstring() -> None:
    source = 'def f(\n    x,\n):\n    """Doc.\n\n    More.\n    """\n    y = x\n\n    return y\n'
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    assert body_lines(function) == 3
    bare = ast.parse("def g():\n    return 1\n").body[0]
    assert isinstance(bare, ast.FunctionDef) and body_lines(bare) == 1


def test_no_function_body_is_longer_than_the_limit() -> None:
    offenders = [f for f in function_bodies() if f.lines > MAX_BODY_LINES and f.qualified_name not in EXCEPTIONS]
    listing = "\n".join(f"  {f.location} {f.qualified_name}: {f.lines} lines" for f in offenders)
    assert not offenders, f"function bodies longer than {MAX_BODY_LINES} lines (split them into steps):\n{listing}"


def test_exceptions_are_few_in_cli_only_and_still_needed() -> None:
    assert all(name.rsplit(".", 1)[0] in EXCEPTION_MODULES for name in EXCEPTIONS), EXCEPTIONS
    lengths = {f.qualified_name: f.lines for f in function_bodies()}
    stale = sorted(name for name in EXCEPTIONS if lengths.get(name, 0) <= MAX_BODY_LINES)
    assert not stale, (
        f"these functions are now at most {MAX_BODY_LINES} lines (or gone); drop them from EXCEPTIONS: {stale}"
    )
