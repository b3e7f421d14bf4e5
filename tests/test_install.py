"""An install without the Makefile: a fresh virtualenv, ``pip install`` of the
package without extras, used against a running server.

It shows that no development-only package came along (the test tools, the
servers the tests run against, the plotting and Kubernetes extras) and that
the store, the cost monitor on a LocalCluster, the scaling policies and the
command line work in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: packages that only the tests, lint, the plots or the extras bring
NOT_IN_A_PLAIN_INSTALL = {
    "pytest", "pytest-timeout", "hypothesis", "jsonschema", "ruff", "dask-ml",
    "nbclient", "nbformat", "ipykernel", "dask-kubernetes", "kubernetes",
    "kubernetes-validate", "kopf", "grafana-foundation-sdk", "dask-jobqueue",
    "import-linter", "dask-gateway-server", "dask-gateway", "sqlalchemy",
    "matplotlib", "cupy-cuda12x", "cupy-cuda13x",
}  # fmt: skip

#: run in the fresh virtualenv (argv[1]: the server's URI, argv[2]: a database)
USE = textwrap.dedent(
    """
    import sys

    import numpy as np
    from distributed import Client, LocalCluster

    import lepton_dask
    from lepton_dask import CostMonitor, FeatureStore, SLOPolicy
    from lepton_dask.cost.ledger import Ledger

    uri, database = sys.argv[1:3]
    store = FeatureStore(uri, database)
    x = np.arange(12.0).reshape(6, 2)
    store.put_array("x", x, chunks=(3, 2))
    np.testing.assert_array_equal(store.get_array("x").compute(), x)
    assert SLOPolicy(deadline="10m").deadline == 600.0
    monitor = CostMonitor(ledger=Ledger(store.spec))
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False,
            dashboard_address=None, scheduler_kwargs={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        with lepton_dask.deadline("1m"):
            assert client.compute(store.get_array("x").sum()).result() == x.sum()
        snap = monitor.snapshot()
        assert snap["tasks"] > 0 and snap["spend_usd"] > 0, snap
    assert "matplotlib" not in sys.modules
    print("OK", lepton_dask.__version__)
    """
)


def _copy_source(dest: Path) -> Path:
    """What a source distribution holds (the working tree's, not git's HEAD),
    so that the build writes nothing into the checkout."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "lepton_dask",
        src / "lepton_dask",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return src


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plain_install_brings_no_dev_package_and_works(tmp_path, mongo_server):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env.pop("PYTHONPATH", None)
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(_copy_source(tmp_path))],
        capture_output=True, text=True, timeout=540, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )  # fmt: skip
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "lepton-dask" in names and "scipy" in names
    assert not names & NOT_IN_A_PLAIN_INSTALL, sorted(names & NOT_IN_A_PLAIN_INSTALL)

    used = subprocess.run(
        [python, "-c", USE, mongo_server.uri, "plain_install"],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert used.returncode == 0, used.stdout[-3000:] + used.stderr[-3000:]
    assert used.stdout.startswith("OK")

    cli = str(env_dir / "bin" / "lepton-dask")
    shown = subprocess.run(
        [cli, "config", "show", "lepton.scaling.policy"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0 and "slo" in shown.stdout, shown.stderr
    # plotting says how to get what it needs
    plot = subprocess.run(
        [python, "-c", "from lepton_dask.experiments.report import pareto_figure;"
         "pareto_figure([], 't')"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert "pip install 'lepton-dask[plots]'" in plot.stderr, plot.stderr
    assert sys.executable != python


def test_extras_split_by_use_and_spdx_license():
    """``license`` as an SPDX string (setuptools >= 77 warns about the old
    table at every install); the extras by use; dev brings the others."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    with open(ROOT / "pyproject.toml", "rb") as f:
        meta = tomllib.load(f)
    assert meta["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in meta["build-system"]["requires"]
    extras = meta["project"]["optional-dependencies"]
    assert {"gpu", "k8s", "gateway", "plots", "dev"} <= set(extras)
    assert not any("matplotlib" in d for d in meta["project"]["dependencies"])
    assert "lepton-dask[plots,k8s,gateway]" in extras["dev"]


#: modules whose distribution is not installed here (GPU only)
NOT_INSTALLED_HERE = {"cupy": "cupy-cuda12x"}


def _imported_modules() -> set[str]:
    """The top-level modules that lepton_dask imports (at any depth)."""
    import ast

    found = set()
    for path in (ROOT / "lepton_dask").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"lepton_dask", "__future__"}


def _names(requirement: str) -> set[str]:
    """The distribution a requirement names, and its extras (``dask[distributed]``
    declares distributed)."""
    import re

    m = re.match(r"([\w.-]+)(?:\[([^\]]*)\])?", requirement)
    names = {m.group(1), *(m.group(2) or "").split(",")} - {""}
    return {n.strip().lower().replace("_", "-") for n in names}


def test_every_import_is_declared():
    """Each third-party module the package imports comes from a distribution
    that the base install or one of the user extras (not dev) declares."""
    import importlib.metadata

    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        meta = tomllib.load(f)["project"]
    declared = set().union(*map(_names, meta["dependencies"]))
    for extra, reqs in meta["optional-dependencies"].items():
        if extra != "dev":
            declared |= set().union(*map(_names, reqs))
    dists = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_modules()):
        names = dists.get(module) or [NOT_INSTALLED_HERE.get(module, module)]
        if not {n.lower().replace("_", "-") for n in names} & declared:
            undeclared[module] = names
    assert not undeclared, undeclared
