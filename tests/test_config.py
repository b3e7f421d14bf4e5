"""The configuration is checked when the package loads: an unknown ``lepton.*``
key is one warning naming the nearest valid key, a value of the wrong type is
an error naming its key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from lepton_dask import config
from lepton_dask.config import ConfigError, validate

#: the JSON-schema keywords that lepton_dask.config's checker implements
SUPPORTED = {
    "$schema", "title", "description", "type", "enum", "properties",
    "additionalProperties", "required", "items", "oneOf", "minimum",
    "exclusiveMinimum", "minLength", "format",
}  # fmt: skip


def _keywords(schema, out):
    if isinstance(schema, dict):
        out |= set(schema) - {"properties"}
        for sub in schema.get("properties", {}).values():
            _keywords(sub, out)
        for key in ("items", "additionalProperties"):
            _keywords(schema.get(key), out)
        for sub in schema.get("oneOf", []):
            _keywords(sub, out)
    return out


def test_the_checker_implements_every_keyword_of_the_schema():
    with open(config.SCHEMA_PATH) as f:
        assert _keywords(yaml.safe_load(f), set()) <= SUPPORTED


def test_defaults_pass():
    with open(config.DEFAULTS_PATH) as f:
        assert validate(yaml.safe_load(f)) == []


def test_unknown_key_warns_once_with_the_nearest():
    with pytest.warns(UserWarning) as record:
        unknown = validate({"lepton": {"scaling": {"deadlin": 60, "polcy": "slo"}}})
    assert unknown == ["lepton.scaling.deadlin", "lepton.scaling.polcy"]
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert (
        "'lepton.scaling.deadlin'; did you mean 'lepton.scaling.deadline'"
        in (messages[0])
    )
    assert "did you mean 'lepton.scaling.policy'" in messages[1]


def test_a_key_in_the_wrong_section_is_found():
    with pytest.warns(UserWarning, match="did you mean 'lepton.store.gc-grace'"):
        validate({"lepton": {"cost": {"gc-grace": "1m"}}})


def test_snake_case_keys_are_the_same_keys():
    assert validate({"lepton": {"store": {"rows_per_chunk": 10}}}) == []


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"store": {"rows-per-chunk": "many"}}, "lepton.store.rows-per-chunk must be integer"),
        ({"store": {"cache": {"enabled": "yes"}}}, "lepton.store.cache.enabled must be boolean"),
        ({"store": {"row-read": "sideways"}}, "lepton.store.row-read must be one of"),
        ({"scaling": {"weight": -1}}, "lepton.scaling.weight must be >= 0"),
        ({"scaling": {"deadline": "soon"}}, "lepton.scaling.deadline must be a duration"),
        ({"scaling": {"pools": [{"max-workers": "3"}]}},
         r"lepton.scaling.pools\[0\].max-workers must be integer"),
        ({"cost": {"worker-types": [{"pattern": "x"}]}},
         r"lepton.cost.worker-types\[0\] needs 'instance-type'"),
    ],
)  # fmt: skip
def test_wrong_type_is_an_error_naming_the_key(cfg, message):
    with pytest.raises(ConfigError, match=message):
        validate({"lepton": cfg})


def test_checked_at_load():
    code = "import lepton_dask"
    env = {**os.environ, "DASK_LEPTON__SCALING__DEADLIN": "60"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0
    assert out.stderr.count("UserWarning") == 1
    assert "did you mean 'lepton.scaling.deadline'" in out.stderr
    env = {**os.environ, "DASK_LEPTON__STORE__DATABASE": "[1, 2]"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "lepton.store.database must be string" in out.stderr
