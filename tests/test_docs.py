"""The README and the pages of ``docs/`` hold: every Python example runs, each
in a fresh namespace of its own, against the test server (as a user pasting
that one block into a new notebook would); the generated reference sections
match the code; every relative link points to a file (and heading) that
exists.

A ```python block preceded by ``<!-- not run by tests: why -->`` is left out;
the reason names where its behaviour is tested instead. Only ```python blocks
run: ```console, ```yaml and plain blocks are shown, not executed.
"""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path

import dask
import pytest

from lepton_dask.cli import _reference as reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("**/*.md"))]
FENCE = re.compile(r"^(\s*)```python\s*$")
SKIP = "<!-- not run by tests:"


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(first line number, code, skipped) of each ```python block.

    >>> python_blocks("x\\n```python\\na = 1\\n```\\n")
    [(3, 'a = 1', False)]
    """
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        prev = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        end = i + 1
        while lines[end].strip() != "```":
            end += 1
        code = textwrap.dedent("\n".join(lines[i + 1 : end]))
        out.append((i + 2, code, prev.strip().startswith(SKIP)))
        i = end + 1
    return out


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


BLOCKS = [
    pytest.param(page, line, code, id=f"{_name(page)}:{line}")
    for page in PAGES
    for line, code, skipped in python_blocks(page.read_text())
    if not skipped
]


def test_blocks_are_found_and_skips_say_why():
    counts = {_name(p): python_blocks(p.read_text()) for p in PAGES}
    assert len(counts) >= 10, "README.md and the docs/ pages"
    assert any(not s for _, _, s in counts["README.md"]), "the quick start runs"
    run = sum(not s for blocks in counts.values() for _, _, s in blocks)
    skipped = sum(s for blocks in counts.values() for _, _, s in blocks)
    assert run >= 15
    assert skipped <= 10, "keep the examples that do not run few"
    for page in PAGES:
        for line in page.read_text().splitlines():
            if SKIP in line:
                assert re.search(r"not run by tests: \S.*-->", line), (page, line)


@pytest.fixture
def docs_world(mongo_uri, monkeypatch, tmp_path):
    """What a reader has: a server at LEPTON_MONGO_URI, an empty directory."""
    from distributed import Client, SpecCluster

    monkeypatch.setenv("LEPTON_MONGO_URI", mongo_uri)
    monkeypatch.chdir(tmp_path)
    # each Client sets dask's default scheduler and restores it on close only
    # when closed in reverse order of creation; an example may close them in
    # any order (or not at all), so the whole configuration is restored
    config_before = copy.deepcopy(dask.config.config)
    clients_before = set(Client._instances)
    clusters_before = set(SpecCluster._instances)
    try:
        yield
    finally:
        for c in set(Client._instances) - clients_before:
            c.close()
        for c in set(SpecCluster._instances) - clusters_before:
            c.close()
        dask.config.config.clear()
        dask.config.config.update(config_before)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("page, line, code", BLOCKS)
def test_example_runs_alone(page, line, code, docs_world):
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(code, f"{_name(page)}:{line}", "exec"), namespace)


@pytest.mark.parametrize("name", sorted(reference.SECTIONS))
def test_reference_is_current(name):
    page, generate = reference.SECTIONS[name]
    text = (DOCS / page).read_text()
    assert reference.render(text, name, generate()) == text, (
        f"docs/{page}: the generated {name} reference is stale; "
        f"regenerate it with `{reference.REGENERATE}` (from the repository root)"
    )


def test_metric_reference_names_every_metric():
    from lepton_dask.cost.metrics import METRICS

    table = reference.metrics_reference()
    missing = [n for n, _, _ in METRICS if f"`{n}`" not in table]
    assert not missing, f"not reached by the reference's snapshot: {missing}"


# -- links -----------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_FENCE = re.compile(r"^```.*?^```\s*$", re.S | re.M)


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return CODE_FENCE.sub("", text)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown page.

    >>> sorted(anchors("# A `b.c`: d\\n## A `b.c`: d"))
    ['a-bc-d', 'a-bc-d-1']
    """
    out: set[str] = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", _prose(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n, candidate = 0, slug
        while candidate in out:
            n += 1
            candidate = f"{slug}-{n}"
        out.add(candidate)
    return out


def _links() -> list:
    out = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            out.append(pytest.param(page, target, id=f"{_name(page)}->{target}"))
    return out


@pytest.mark.parametrize("page, target", _links())
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{_name(page)}: {target} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest.read_text()), (
            f"{_name(page)}: no heading #{anchor} in {dest.relative_to(ROOT)}"
        )


def test_simulator_page_lists_every_trace():
    from lepton_dask.sim import TRACES

    page = (DOCS / "simulator.md").read_text()
    missing = [name for name in TRACES if f"| `{name}` |" not in page]
    assert not missing, f"docs/simulator.md: add these traces to its table: {missing}"
