"""The house rules, read from the package's source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

from lepton_dask import _protocol as protocol

PACKAGE = Path(__file__).resolve().parents[1] / "lepton_dask"
#: a sanity limit, not a seam: modules split where their concepts part
MAX_MODULE_LINES = 1000


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def test_no_module_over_1000_lines():
    """A module past about 1,000 lines likely holds more than one concept;
    below that, line counts do not decide where a module is split."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (lines): {long}"


def _keeps_the_traceback(handler: ast.ExceptHandler) -> bool:
    """The handler logs with ``exc_info``, keeps ``traceback.format_exc()``,
    or raises."""
    for node in ast.walk(handler):
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            if any(k.arg == "exc_info" for k in node.keywords):
                return True
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("format_exc", "print_exc"):
                return True
    return False


def test_broad_excepts_keep_the_traceback():
    """Each ``except Exception`` (or bare ``except``) either narrows to what it
    expects or keeps the traceback a user needs (``exc_info``)."""
    bad = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ExceptHandler):
                continue
            broad = node.type is None or (
                isinstance(node.type, ast.Name)
                and node.type.id in ("Exception", "BaseException")
            )
            if broad and not _keeps_the_traceback(node):
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert bad == [], f"narrow these or log them with exc_info=True: {bad}"


def test_handler_names_are_spelled_only_in_the_protocol_module():
    names = set(protocol.HANDLERS)
    found = []
    for path, tree in _modules():
        if path.name == "_protocol.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == [], f"use lepton_dask._protocol's constants: {found}"


MAX_FUNCTION_LINES = 80


def test_no_function_over_80_lines():
    """Functions fit on a screen: at most 80 lines of code each (the
    docstring, a numpydoc one with its examples, is not counted)."""
    long = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(
                getattr(first, "value", None), ast.Constant
            ):
                if isinstance(first.value.value, str):
                    n -= first.end_lineno - first.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({n} lines)")
    assert long == [], f"split these functions: {long}"


def test_lepton_defaults_live_in_lepton_yaml_only():
    """``dask.config.get("lepton....")`` never repeats a default in code:
    ``lepton.yaml`` holds every one (loaded on first import)."""
    repeated = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "config"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith("lepton.")
            ):
                continue
            if len(node.args) > 1 or any(k.arg == "default" for k in node.keywords):
                repeated.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert repeated == [], f"read these from lepton.yaml alone: {repeated}"
