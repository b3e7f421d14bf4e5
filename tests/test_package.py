"""Package hygiene: the public API, the config schema, lazy imports."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import jsonschema
import pytest
import yaml

import lepton_dask
from lepton_dask import config

PUBLIC_PACKAGES = ["lepton_dask", "lepton_dask.store"]


@pytest.mark.parametrize("modname", PUBLIC_PACKAGES)
def test_all_is_sorted_and_complete(modname):
    mod = importlib.import_module(modname)
    assert mod.__all__ == sorted(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), name
    public = {
        n
        for n, v in vars(mod).items()
        if not n.startswith("_")
        and not isinstance(v, type(os))
        and n not in ("annotations",)
    }
    assert public <= set(mod.__all__) | {"config"}, public - set(mod.__all__)


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
    assert lepton_dask.__version__
