"""Package hygiene: the public API, the config schema, lazy imports."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

import lepton_dask
from lepton_dask import config

#: every package: the root and each subpackage (a new one is covered by itself)
PACKAGES = [
    "lepton_dask",
    *sorted(
        f"lepton_dask.{m.name}"
        for m in pkgutil.iter_modules(lepton_dask.__path__)
        if m.ispkg
    ),
]


def _isort_style(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    if len(name) > 1 and name.isupper():
        return (0, name)
    return (1 if name[0].isupper() else 2, name)


def test_packages_found():
    assert {"lepton_dask.cost", "lepton_dask.ops", "lepton_dask.store"} <= set(PACKAGES)


@pytest.mark.parametrize("modname", PACKAGES)
def test_all_is_sorted_and_complete(modname):
    """``__all__`` sorted, every name in it defined, every public name in it
    (a package that exports nothing may leave ``__all__`` out)."""
    mod = importlib.import_module(modname)
    exported = getattr(mod, "__all__", [])
    assert exported == sorted(exported, key=_isort_style)
    for name in exported:
        assert hasattr(mod, name), name
    public = {
        n
        for n, v in vars(mod).items()
        if not n.startswith("_")
        and not isinstance(v, type(os))
        and n not in ("annotations", "TYPE_CHECKING", "Any")
    }
    assert public <= set(exported) | {"config"}, public - set(exported)


def test_root_exports_are_lazy():
    """``import lepton_dask`` (e.g. for ``__version__``) does not load the store."""
    code = (
        "import sys, lepton_dask;"
        "assert lepton_dask.__version__;"
        "assert 'lepton_dask.store' not in sys.modules, sorted(sys.modules);"
        "from lepton_dask import FeatureStore;"
        "assert FeatureStore.__module__ == 'lepton_dask.store.features'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_defaults_validate_against_schema():
    with open(config.DEFAULTS_PATH) as f:
        defaults = yaml.safe_load(f)
    with open(config.SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    jsonschema.validate(defaults, schema)


def test_schema_rejects_unknown_and_bad_keys():
    with open(config.SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"lepton": {"store": {"no-such-key": 1}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"lepton": {"store": {"row-read": "sideways"}}}, schema)


def test_config_is_read_at_call_time():
    import dask

    from lepton_dask.config import get_timedelta

    with dask.config.set({"lepton.store.timeout": "3s"}):
        assert get_timedelta("lepton.store.timeout") == 3.0


def test_import_does_not_import_cupy_or_start_servers():
    code = (
        "import sys, lepton_dask, lepton_dask.store;"
        "assert 'cupy' not in sys.modules;"
        "from lepton_dask.store import server; assert not server._owned"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_version():
    from lepton_dask._version import __version__

    assert lepton_dask.__version__ == __version__
    with open(
        os.path.join(os.path.dirname(config.__file__), "..", "pyproject.toml")
    ) as f:
        assert f'version = "{__version__}"' in f.read()
