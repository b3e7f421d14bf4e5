"""The notebooks run top to bottom (nbclient, a real kernel) against the test
server at small sizes; they are committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01-quickstart.ipynb",
        "02-adaptive-scaling-experiment.ipynb",
        "03-gpu-workers.ipynb",
    ]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, mongo_uri, monkeypatch, tmp_path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # committed without outputs
        assert not cell.get("outputs"), f"{path.name} has outputs committed"
    monkeypatch.setenv("LEPTON_MONGO_URI", mongo_uri)  # the kernel inherits it
    monkeypatch.setenv("LEPTON_NB_ROWS", "20000")
    monkeypatch.setenv("LEPTON_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    errors = [
        o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    expected = {
        "01-quickstart": ["accuracy:", "spend $", "cost page:"],
        "02-adaptive-scaling-experiment": ["x oracle", "balanced w=1: $"],
        "03-gpu-workers": ["Gram diagonal:", "k-means inertia:", "spend $"],
    }[path.stem]
    for s in expected:
        assert s in text, (s, text[-2000:])
    images = sum(
        1
        for c in nb.cells
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    )
    assert images >= {"02-adaptive-scaling-experiment": 2}.get(path.stem, 0)
