"""The layers of the package, as import-linter contracts (``[tool.importlinter]``
in pyproject.toml): the suite fails when an import runs the wrong way."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lepton_dask

ROOT = Path(__file__).resolve().parents[1]

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    return {c["id"]: c for c in config["importlinter"]["contracts"]}


def test_contracts_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), "import-linter is not installed: pip install -e '.[dev]'"
    done = subprocess.run(
        [str(lint), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_module_has_a_layer():
    """A new package or top-level module must be placed in the layers."""
    layers = {
        name.strip()
        for layer in _contracts()["layers"]["layers"]
        for name in layer.replace(":", "|").split("|")
    }
    modules = {
        f"lepton_dask.{m.name}" for m in pkgutil.iter_modules(lepton_dask.__path__)
    }
    assert modules - layers == set()


def test_nothing_imports_cli():
    no_cli = _contracts()["no-cli"]
    layers = _contracts()["layers"]["layers"]
    below_cli = {
        name.strip()
        for layer in layers[1:]
        for name in layer.replace(":", "|").split("|")
        if not name.strip().startswith("lepton_dask._")
    }
    assert set(no_cli["source_modules"]) == below_cli
    assert no_cli["forbidden_modules"] == ["lepton_dask.cli"]


def test_every_experiments_module_is_in_a_room():
    """The experiments' rooms (scenarios, the sweep, the report) and their
    users: a new module there must be placed in the contract."""
    import lepton_dask.experiments as experiments

    rooms = {
        name.strip()
        for layer in _contracts()["experiments-rooms"]["layers"]
        for name in layer.split("|")
    }
    modules = {m.name for m in pkgutil.iter_modules(experiments.__path__)}
    assert modules == rooms
