"""Load ``lepton.yaml`` into :mod:`dask.config` (imported first by the package).

Defaults live under the ``lepton:`` key, kebab-case, and are read with
``dask.config.get("lepton....")`` inside function bodies, never at import time,
so ``dask.config.set`` and ``DASK_LEPTON__...`` environment variables work.
"""

from __future__ import annotations

import math
import os
from typing import Any

import dask.config
import yaml

_HERE = os.path.dirname(__file__)
DEFAULTS_PATH = os.path.join(_HERE, "lepton.yaml")
SCHEMA_PATH = os.path.join(_HERE, "lepton-schema.yaml")

with open(DEFAULTS_PATH) as f:
    defaults = yaml.safe_load(f)

dask.config.update_defaults(defaults)


class ConfigError(ValueError):
    """A ``lepton.*`` setting of the wrong type or out of range."""


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list | tuple),
}


def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _paths(schema: dict, prefix: str) -> list[str]:
    """Every dotted key the schema knows under ``prefix``."""
    out = []
    for key, sub in schema.get("properties", {}).items():
        out.append(f"{prefix}.{key}")
        out += _paths(sub, f"{prefix}.{key}")
    return out


def _problems(
    value: Any, schema: dict, path: str
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(errors, unknown keys with the valid keys beside them) of ``value`` at ``path``
    against a JSON-schema subset: type, enum, properties,
    additionalProperties, required, items, oneOf, minimum, exclusiveMinimum,
    minLength, and ``format: duration`` (what :func:`parse_duration` takes)."""
    errors: list[str] = []
    unknown: list[tuple[str, list[str]]] = []
    if "oneOf" in schema:
        if not any(not _problems(value, s, path)[0] for s in schema["oneOf"]):
            errors.append(f"{path}: {value!r} is not a valid value")
        return errors, unknown
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            want = " or ".join(types)
            return [f"{path} must be {want}, got {value!r}"], unknown
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(c) for c in schema["enum"])
        errors.append(f"{path} must be one of {choices}, got {value!r}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path} must be >= {schema['minimum']}, got {value!r}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(
                f"{path} must be > {schema['exclusiveMinimum']}, got {value!r}"
            )
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path} must not be empty")
        if schema.get("format") == "duration":
            try:
                parse_duration(value, path)
            except ValueError as e:
                errors.append(str(e))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in value.items():
            name = str(key).replace("_", "-")  # dask.config treats them alike
            if name in props:
                e, u = _problems(sub, props[name], f"{path}.{name}")
                errors += e
                unknown += u
            elif schema.get("additionalProperties") is False:
                unknown.append((f"{path}.{key}", [f"{path}.{k}" for k in props]))
        for key in schema.get("required", []):
            if key not in value and key.replace("-", "_") not in value:
                errors.append(f"{path} needs {key!r}")
    if isinstance(value, list | tuple) and "items" in schema:
        for i, item in enumerate(value):
            e, u = _problems(item, schema["items"], f"{path}[{i}]")
            errors += e
            unknown += u
    return errors, unknown


def validate(config: dict | None = None, *, warn: bool = True) -> list[str]:
    """Check the ``lepton`` settings against ``lepton-schema.yaml``.

    A value of the wrong type (or out of range) is a :class:`ConfigError`
    naming its key. An unknown key is a warning naming the nearest valid one
    (``warn=False``: only returned). Run when the package loads, on the
    configuration that dask read from its YAML files and ``DASK_*`` variables.

    Returns
    -------
    list of str
        The unknown keys (dotted).

    Examples
    --------
    >>> validate({"lepton": {"store": {"timout": "5s"}}}, warn=False)
    ['lepton.store.timout']
    >>> validate({"lepton": {"scaling": {"deadline": "10m"}}})
    []
    >>> validate({"lepton": {"store": {"rows-per-chunk": "many"}}})
    Traceback (most recent call last):
    ...
    lepton_dask.config.ConfigError: lepton.store.rows-per-chunk must be integer, got 'many'
    """
    import warnings

    cfg = dask.config.config if config is None else config
    schema = _schema()
    lepton = cfg.get("lepton", {})
    errors, unknown = _problems(lepton, schema["properties"]["lepton"], "lepton")
    if errors:
        raise ConfigError("; ".join(errors))
    if warn:
        import difflib

        known = _paths(schema["properties"]["lepton"], "lepton")
        for key, siblings in unknown:
            leaf = key.rpartition(".")[2].replace("_", "-")
            near = [k for k in known if k.rpartition(".")[2] == leaf]  # elsewhere
            near = near or difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
            near = near or difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            warnings.warn(
                f"unknown lepton-dask setting {key!r}{hint} (it is ignored)",
                UserWarning,
                stacklevel=2,
            )
    return [key for key, _ in unknown]


def parse_duration(value: Any, name: str = "duration") -> float:
    """Seconds from a number or one of Dask's duration strings (``"90s"``,
    ``"10m"``, ``"1.5 hours"``), parsed by :func:`dask.utils.parse_timedelta`
    (a bare number is seconds). ``name`` says what the value is in the error.

    >>> parse_duration("10m", "deadline"), parse_duration(90, "deadline")
    (600.0, 90.0)
    >>> parse_duration("soon", "deadline")
    Traceback (most recent call last):
    ...
    ValueError: deadline must be a duration (seconds, or e.g. '90s', '10m'), got 'soon'
    """
    from dask.utils import parse_timedelta

    try:
        if isinstance(value, bool):
            raise TypeError(value)
        seconds = float(parse_timedelta(value, default="seconds"))
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(value)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(
            f"{name} must be a duration (seconds, or e.g. '90s', '10m'), got {value!r}"
        ) from e
    return seconds


def get_timedelta(key: str) -> float:
    """Return the config value at ``key`` as seconds.

    >>> get_timedelta("lepton.store.timeout")
    10.0
    """
    return parse_duration(dask.config.get(key), key)


def get_bytes(key: str) -> int:
    """Return the config value at ``key`` as a number of bytes.

    >>> get_bytes("lepton.store.part-bytes")
    12582912
    """
    from dask.utils import parse_bytes

    value = dask.config.get(key)
    try:
        return int(value) if isinstance(value, int) else int(parse_bytes(value))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{key} must be a size (bytes or e.g. '12 MiB'), got {value!r}"
        ) from e


validate()  # the settings dask loaded: checked once, when the package loads
