"""Load ``lepton.yaml`` into :mod:`dask.config` (imported first by the package).

Defaults live under the ``lepton:`` key, kebab-case, and are read with
``dask.config.get("lepton....")`` inside function bodies, never at import time,
so ``dask.config.set`` and ``DASK_LEPTON__...`` environment variables work.
"""

from __future__ import annotations

import os

import dask.config
import yaml

_HERE = os.path.dirname(__file__)
DEFAULTS_PATH = os.path.join(_HERE, "lepton.yaml")
SCHEMA_PATH = os.path.join(_HERE, "lepton-schema.yaml")

with open(DEFAULTS_PATH) as f:
    defaults = yaml.safe_load(f)

dask.config.update_defaults(defaults)


def get_timedelta(key: str) -> float:
    """Return the config value at ``key`` as seconds.

    >>> get_timedelta("lepton.store.timeout")
    10.0
    """
    from dask.utils import parse_timedelta

    value = dask.config.get(key)
    try:
        return float(parse_timedelta(value, default="seconds"))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{key} must be a duration (seconds or e.g. '5s', '10 minutes'), "
            f"got {value!r}"
        ) from e


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
