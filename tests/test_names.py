"""Every dotted ``lepton_dask.`` name that the docs, the docstrings and
``lepton.yaml`` mention resolves (to a module, or an attribute of one)."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest

import lepton_dask

ROOT = pathlib.Path(lepton_dask.__file__).parent.parent
NAME = re.compile(r"\blepton_dask(?:\.[A-Za-z_]\w*)+")


def _docstrings(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    nodes = [tree, *ast.walk(tree)]
    return [
        doc
        for node in nodes
        if isinstance(
            node,
            ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef,
        )
        and (doc := ast.get_docstring(node, clean=False))
    ]


def _mentions() -> dict[str, set[str]]:
    """Each dotted name -> the files that mention it (read at run time, so
    docs written or rewritten later are covered too)."""
    texts: list[tuple[str, str]] = []
    for path in sorted((ROOT / "lepton_dask").rglob("*.py")):
        texts += [(str(path.relative_to(ROOT)), d) for d in _docstrings(path)]
    for path in [
        ROOT / "lepton_dask" / "lepton.yaml",
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("**/*.md")),
    ]:
        if path.is_file():
            texts.append((str(path.relative_to(ROOT)), path.read_text()))
    found: dict[str, set[str]] = {}
    for where, text in texts:
        for name in NAME.findall(text):
            found.setdefault(name, set()).add(where)
    return found


def resolve(dotted: str) -> object:
    """The object ``dotted`` names: the longest importable module prefix, then
    attributes. AttributeError or ImportError when it does not resolve.

    >>> resolve("lepton_dask.scaling.SLOPolicy").__name__
    'SLOPolicy'
    """
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name is None or not ".".join(parts[:i]).startswith(e.name):
                raise
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


MENTIONS = _mentions()


def test_names_are_found():
    assert "lepton_dask.deadline" in MENTIONS, sorted(MENTIONS)


@pytest.mark.parametrize("name", sorted(MENTIONS))
def test_dotted_name_resolves(name):
    try:
        resolve(name)
    except (AttributeError, ImportError) as e:
        pytest.fail(f"{name} (in {', '.join(sorted(MENTIONS[name]))}): {e}")


@pytest.mark.parametrize(
    "name",
    ["deadline", "workload", "CostMonitor", "CostAwareAdaptive", "SLOPolicy", "KMeans"],
)
def test_top_level_api(name):
    assert name in lepton_dask.__all__
    assert getattr(lepton_dask, name) is not None
