"""The README's Python examples run, top to bottom in one namespace, against
the test server (as a user pasting them into one notebook would). A block
preceded by ``<!-- not run by tests: why -->`` is left out; the reason names
where its behaviour is tested instead."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path

import dask
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^(\s*)```python\s*$")
SKIP = "<!-- not run by tests:"


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(first line number, code, skipped) of each ```python block."""
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


def test_blocks_are_found_and_skips_say_why():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 10
    for line in README.read_text().splitlines():
        if SKIP in line:
            assert re.search(r"not run by tests: \S.*-->", line), line


@pytest.mark.timeout(420)
def test_readme_python_examples_run(mongo_uri, monkeypatch, tmp_path):
    import pymongo
    from distributed import Client, SpecCluster

    monkeypatch.setenv("LEPTON_MONGO_URI", mongo_uri)
    monkeypatch.chdir(tmp_path)
    # what the row-collection example reads: a collection of one document per row
    mongo = pymongo.MongoClient(mongo_uri)
    db = mongo["lepton"]
    db.drop_collection("events")
    db.drop_collection("scores")
    db["events"].insert_many(
        [
            {
                "_id": i,
                "kind": "trade" if i % 3 else "quote",
                "price": 1.0 + i,
                "qty": i % 7,
            }
            for i in range(3000)
        ]
    )
    # each Client sets dask's default scheduler and restores it on close only
    # when closed in reverse order of creation: the examples' clients are
    # closed in any order, so the whole configuration is restored after them
    config_before = copy.deepcopy(dask.config.config)
    clients_before = set(Client._instances)
    clusters_before = set(SpecCluster._instances)
    ns: dict = {"__name__": "readme"}
    ran = []
    try:
        for line, code, skipped in python_blocks(README.read_text()):
            if skipped:
                continue
            exec(compile(code, f"README.md:{line}", "exec"), ns)
            ran.append(line)
        assert len(ran) >= 7
        # what the examples claim, checked on what they left behind
        assert db["scores"].count_documents({}) == 2000  # the seeded trades
        assert ns["km"].cluster_centers_.shape == ns["pca"].components_.shape == (8, 16)
        assert ns["clf"].n_iter_[0] > 0
        # (nothing computes here: the last example's cluster starts its workers
        # with the 60 s startup it simulates)
        assert ns["r"].cost_usd > 0
    finally:
        mongo.close()
        # every client and cluster the examples made, also those whose names
        # later examples reuse
        for c in set(Client._instances) - clients_before:
            c.close()
        for c in set(SpecCluster._instances) - clusters_before:
            c.close()
        dask.config.config.clear()
        dask.config.config.update(config_before)
