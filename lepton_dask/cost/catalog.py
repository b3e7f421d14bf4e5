"""The price catalog: instance types, their prices, and where each came from."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask.config
import yaml

DEFAULT_CATALOG = os.path.join(os.path.dirname(__file__), "catalog.yaml")
PRICING_CLASSES = ("on-demand", "spot")


class CatalogError(ValueError):
    """A malformed catalog, or an instance type it does not know."""


@dataclass(frozen=True)
class InstanceType:
    """One machine type with its prices (USD per hour) and their provenance."""

    name: str
    vcpus: int
    memory_gib: float
    gpus: int
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float
    source: str
    date: str
    gpu_model: str | None = None

    def usd_per_hour(self, pricing: str) -> float:
        """Price for a pricing class, ``on-demand`` or ``spot``.

        >>> load_catalog()["m6i.large"].usd_per_hour("on-demand")
        0.096
        """
        if pricing == "on-demand":
            return self.on_demand_usd_per_hour
        if pricing == "spot":
            return self.spot_usd_per_hour
        raise CatalogError(
            f"unknown pricing class {pricing!r}; use one of {PRICING_CLASSES}"
        )


class Catalog(Mapping):
    """Instance types by name, loaded from a YAML file.

    >>> cat = load_catalog()
    >>> "g5.xlarge" in cat, cat["g5.xlarge"].gpus
    (True, 1)
    """

    def __init__(self, types: dict[str, InstanceType], path: str):
        self._types = dict(types)
        self.path = path

    def __getitem__(self, name: str) -> InstanceType:
        try:
            return self._types[name]
        except KeyError:
            near = difflib.get_close_matches(str(name), list(self._types), n=3)
            hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
            raise CatalogError(
                f"unknown instance type {name!r} (catalog {self.path}); {hint}"
                f"known types: {', '.join(sorted(self._types))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self):
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"<Catalog {self.path}: {len(self)} instance types>"


def _price(path: str, name: str, entry: dict, key: str) -> float:
    if key not in entry:
        raise CatalogError(f"{path}: instance type {name!r} has no {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(
            f"{path}: instance type {name!r}: {key} must be a number, got {value!r}"
        )
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise CatalogError(
            f"{path}: instance type {name!r}: {key} must be >= 0, got {value!r}"
        )
    return float(value)


def parse_catalog(data: Any, path: str = "<catalog>") -> Catalog:
    """Validate parsed YAML and build a :class:`Catalog`.

    Errors name the file and the entry.

    >>> parse_catalog({"instance-types": {"x": {"vcpus": 1, "memory-gib": 1,
    ...     "on-demand-usd-per-hour": -1, "spot-usd-per-hour": 0,
    ...     "source": "s", "date": "d"}}}, "my.yaml")
    Traceback (most recent call last):
    ...
    lepton_dask.cost.catalog.CatalogError: my.yaml: instance type 'x': on-demand-usd-per-hour must be >= 0, got -1
    """
    if not isinstance(data, dict) or not isinstance(data.get("instance-types"), dict):
        raise CatalogError(
            f"{path}: expected a mapping with an 'instance-types' mapping"
        )
    if data.get("currency", "USD") != "USD":
        raise CatalogError(
            f"{path}: only USD prices are supported, got {data.get('currency')!r}"
        )
    types = {}
    for name, entry in data["instance-types"].items():
        if not isinstance(entry, dict):
            raise CatalogError(f"{path}: instance type {name!r} must be a mapping")
        for key in ("vcpus", "memory-gib", "source", "date"):
            if key not in entry:
                raise CatalogError(f"{path}: instance type {name!r} has no {key!r}")
        vcpus = entry["vcpus"]
        if not isinstance(vcpus, int) or vcpus < 1:
            raise CatalogError(
                f"{path}: instance type {name!r}: vcpus must be a positive int"
            )
        gpus = entry.get("gpus", 0)
        if not isinstance(gpus, int) or gpus < 0:
            raise CatalogError(
                f"{path}: instance type {name!r}: gpus must be an int >= 0"
            )
        types[str(name)] = InstanceType(
            name=str(name),
            vcpus=vcpus,
            memory_gib=float(entry["memory-gib"]),
            gpus=gpus,
            on_demand_usd_per_hour=_price(path, name, entry, "on-demand-usd-per-hour"),
            spot_usd_per_hour=_price(path, name, entry, "spot-usd-per-hour"),
            source=str(entry["source"]),
            date=str(entry["date"]),
            gpu_model=entry.get("gpu-model"),
        )
    if not types:
        raise CatalogError(f"{path}: no instance types")
    return Catalog(types, path)


def load_catalog(path: str | None = None) -> Catalog:
    """Load the catalog at ``path`` (default ``lepton.cost.catalog``, else the
    one shipped with the package).

    >>> len(load_catalog()) >= 5
    True
    """
    path = path or dask.config.get("lepton.cost.catalog") or DEFAULT_CATALOG
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise CatalogError(f"cannot read price catalog {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise CatalogError(f"{path}: not valid YAML: {e}") from None
    return parse_catalog(data, path)
