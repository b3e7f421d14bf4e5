"""The notebooks run top to bottom (nbclient, a real kernel) against the test
server at small sizes; they are committed without outputs. Notebooks 01 and 03
run twice: on a cluster they start, and against a running ``lepton-dask up``
(``LEPTON_SCHEDULER``), whose scheduler then counts their work."""

from __future__ import annotations

import ast
import base64
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lepton_dask import _protocol as protocol
from tests.helpers import wait_for

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
BY_STEM = {p.stem: p for p in NOTEBOOKS}
CLI = [sys.executable, "-m", "lepton_dask.cli"]

EXPECTED = {
    "01-quickstart": ["accuracy:", "spend $", "cost page:", "utilization"],
    "02-adaptive-scaling-experiment": ["online-feasible optimum", "balanced w=1: $"],
    "03-gpu-workers": ["Gram diagonal:", "k-means inertia:", "spend $", "cheaper)"],
}
#: images each notebook must show: 01 the spend/utilisation timeline and spend by
#: pool, 02 its two plots, 03 the cost of each step on CPU vs GPU
IMAGES = {"01-quickstart": 2, "02-adaptive-scaling-experiment": 2, "03-gpu-workers": 1}


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01-quickstart.ipynb",
        "02-adaptive-scaling-experiment.ipynb",
        "03-gpu-workers.ipynb",
    ]


def run_notebook(path, monkeypatch, tmp_path, mongo_uri, scheduler=None):
    """Execute ``path`` in a fresh kernel; return its text output and the
    titles of the figures it showed (each checked to be a PNG)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # committed without outputs
        assert not cell.get("outputs"), f"{path.name} has outputs committed"
    monkeypatch.setenv("LEPTON_MONGO_URI", mongo_uri)  # the kernel inherits it
    monkeypatch.setenv("LEPTON_NB_ROWS", "20000")
    monkeypatch.setenv("LEPTON_NB_SMALL", "1")
    # Jupyter's own inline backend, whatever the caller's MPLBACKEND: plt.show()
    # then puts a PNG in the cell's outputs
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    if scheduler:
        monkeypatch.setenv("LEPTON_SCHEDULER", scheduler)
    else:
        monkeypatch.delenv("LEPTON_SCHEDULER", raising=False)
    NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    text = "\n".join(o.get("text", "") for o in outputs)
    for s in EXPECTED[path.stem]:
        assert s in text, (s, text[-2000:])
    images = [
        o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})
    ]
    for png in images:
        assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(images) >= IMAGES[path.stem], (path.stem, len(images))
    return text


def check_pricing(text):
    """Notebook 03 prices its GPU worker as the catalog's g5.xlarge, read back
    from the scheduler (not the `local` type of an unpriced worker)."""
    from lepton_dask.cost.catalog import load_catalog

    catalog = load_catalog()
    for itype in ("m6i.large", "g5.xlarge"):
        price = catalog[itype].usd_per_hour("on-demand")
        assert f"{itype} ${price:.4f}/h" in text, (itype, text[:2000])
    # each step's tasks ran in the pool it was placed on (scheduler's counts)
    lines = re.findall(r"^(\S+) \((?:numpy|cupy) blocks\):.*\n  tasks per pool: (.*)$",
                       text, re.M)  # fmt: skip
    assert [pool for pool, _ in lines] == ["m6i.large", "g5.xlarge"], text[:3000]
    for pool, counts in lines:
        for step, by_pool in ast.literal_eval(counts).items():
            assert by_pool[pool] > 0, (pool, step, by_pool)
            assert sum(by_pool.values()) == by_pool[pool], (pool, step, by_pool)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, mongo_uri, monkeypatch, tmp_path):
    text = run_notebook(path, monkeypatch, tmp_path, mongo_uri)
    if path.stem == "01-quickstart":
        assert "(started here)" in text
    if path.stem == "03-gpu-workers":
        check_pricing(text)


@pytest.fixture(scope="module")
def lepton_up(mongo_server):
    """A real ``lepton-dask up`` (scheduler with the CostMonitor, 2 workers) on
    free loopback ports; yields its scheduler address."""
    proc = subprocess.Popen(
        [*CLI, "up", "--port", "0", "--dashboard-port", "0", "--nworkers", "2",
         "--uri", mongo_server.uri, "--database", "nb_up"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:

        def address():
            line = proc.stdout.readline()
            lines.append(line)
            m = re.match(r"export LEPTON_SCHEDULER=(\S+)", line)
            return m.group(1) if m else (proc.poll() is not None and "exited")

        addr = wait_for(address, timeout=120)
        assert addr != "exited", "".join(lines)
        yield addr
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()


def up_snapshot(addr):
    from distributed import Client

    with Client(addr, timeout=30) as c:
        return c.sync(getattr(c.scheduler, protocol.COST_SNAPSHOT)), len(
            c.scheduler_info()["workers"]
        )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stem", ["01-quickstart", "03-gpu-workers"])
def test_notebook_runs_against_lepton_dask_up(
    stem, lepton_up, mongo_uri, monkeypatch, tmp_path
):
    before, workers = up_snapshot(lepton_up)
    text = run_notebook(BY_STEM[stem], monkeypatch, tmp_path, mongo_uri, lepton_up)
    after, workers_after = up_snapshot(lepton_up)
    # the work was done through that scheduler, and its CostMonitor counted it
    assert after["run_id"] == before["run_id"]
    assert after["tasks"] > before["tasks"]
    assert after["spend_usd"] > before["spend_usd"]
    assert f"run {before['run_id']}" in text
    if stem == "01-quickstart":
        assert f"scheduler: {lepton_up} (existing)" in text
    else:
        check_pricing(text)
        # its two workers were priced as their types on that scheduler, and left
        assert after["pools"]["g5.xlarge"]["tasks"] > 0
        assert after["pools"]["m6i.large"]["tasks"] > 0
        assert workers_after == workers
