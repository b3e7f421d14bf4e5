"""How a worker is priced: what it declares, name patterns, defaults.

First match wins:

1. what the worker declares: ``Worker(startup_information={"lepton": fn})``
   with ``fn(worker) -> {"instance_type": ..., "pricing": ..., "pool": ...}``
   (:func:`worker_declaration`, or ``dask worker --preload
   lepton_dask.cost.preload`` reading ``LEPTON_INSTANCE_TYPE``,
   ``LEPTON_PRICING`` and ``LEPTON_POOL``);
2. the first ``lepton.cost.worker-types`` entry whose ``pattern`` matches the
   worker's name (``fnmatch``);
3. ``lepton.cost.default-instance-type`` / ``default-pricing``.

An unknown instance type is logged as an error naming the type and listing
the known ones; the worker is then priced as ``lepton.cost.fallback-instance-type``
when one is configured, else counted as unpriced.

This module is what a cluster manager needs to declare its workers
(:func:`worker_declaration`), without the scheduler plugin.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any, NamedTuple

import dask.config

from lepton_dask.cost.catalog import PRICING_CLASSES, Catalog, CatalogError

logger = logging.getLogger(__name__)


class Declaration:
    """A picklable ``startup_information`` callable returning a worker's
    instance type, pricing class and pool (it travels to Nanny processes).

    >>> Declaration(instance_type="m6i.large")(None)
    {'instance_type': 'm6i.large'}
    """

    def __init__(self, **info: Any):
        self.info = info

    def __call__(self, worker: Any) -> dict[str, Any]:
        return dict(self.info)

    def __repr__(self) -> str:
        return f"Declaration({self.info})"


def worker_declaration(
    instance_type: str, pricing: str = "on-demand", pool: str | None = None
) -> dict[str, Declaration]:
    """A ``startup_information`` entry declaring a worker's type to CostMonitor.

    Pass it as ``Worker(..., startup_information=worker_declaration("g5.xlarge",
    "spot", "gpu"))`` (``LocalPoolCluster`` does this for its pools).

    >>> worker_declaration("m6i.large")["lepton"](None)["instance_type"]
    'm6i.large'
    """
    return {
        "lepton": Declaration(
            instance_type=instance_type, pricing=pricing, pool=pool or instance_type
        )
    }


def declared(ws: Any) -> dict[str, Any]:
    """What a scheduler's ``WorkerState`` declared (``startup_information``)."""
    extra = getattr(ws, "extra", None) or {}
    decl = extra.get("lepton")
    return decl if isinstance(decl, dict) else {}


class Price(NamedTuple):
    """A worker's pool, instance type, pricing class and price."""

    pool: str
    instance_type: str
    pricing: str
    usd_per_hour: float


class Pricing:
    """Prices workers by the rules above (``lepton.cost.*`` by default).

    Bad rules and unknown default or fallback types raise
    :class:`~lepton_dask.cost.CatalogError` at construction.

    >>> from lepton_dask.cost import load_catalog
    >>> Pricing(load_catalog()).default_type
    'local'
    """

    def __init__(self, catalog: Catalog, cfg: dict[str, Any] | None = None):
        cfg = dask.config.get("lepton.cost") if cfg is None else cfg
        self.catalog = catalog
        self.rules = self._validate_rules(cfg.get("worker-types") or [])
        self.default_type = cfg.get("default-instance-type") or "local"
        self.default_pricing = cfg.get("default-pricing") or "on-demand"
        self.fallback_type = cfg.get("fallback-instance-type")
        self.catalog[self.default_type]  # unknown default: CatalogError now
        if self.fallback_type is not None:
            self.catalog[self.fallback_type]

    def _validate_rules(self, rules: list) -> list[dict[str, Any]]:
        out = []
        for i, rule in enumerate(rules):
            where = f"lepton.cost.worker-types[{i}]"
            if (
                not isinstance(rule, dict)
                or "pattern" not in rule
                or "instance-type" not in rule
            ):
                raise CatalogError(
                    f"{where} needs 'pattern' and 'instance-type', got {rule!r}"
                )
            self.catalog[rule["instance-type"]]
            pricing = rule.get("pricing", "on-demand")
            if pricing not in PRICING_CLASSES:
                raise CatalogError(
                    f"{where}: pricing must be one of {PRICING_CLASSES}, got {pricing!r}"
                )
            out.append({**rule, "pricing": pricing})
        return out

    def lookup(self, ws: Any) -> Price:
        """The price of a worker by the rules; CatalogError for an unknown type."""
        decl = declared(ws)
        name = str(ws.name)
        if decl.get("instance_type"):
            itype = decl["instance_type"]
            pricing = decl.get("pricing") or self.default_pricing
            pool = decl.get("pool") or itype
        else:
            rule = next(
                (r for r in self.rules if fnmatch.fnmatch(name, r["pattern"])), None
            )
            if rule is not None:
                itype, pricing = rule["instance-type"], rule["pricing"]
                pool = rule.get("pool") or itype
            else:
                itype, pricing, pool = (
                    self.default_type,
                    self.default_pricing,
                    "default",
                )
        if pricing not in PRICING_CLASSES:
            raise CatalogError(
                f"worker {name!r}: pricing must be one of {PRICING_CLASSES}, got {pricing!r}"
            )
        return Price(
            str(pool), itype, pricing, self.catalog[itype].usd_per_hour(pricing)
        )

    def price(self, ws: Any) -> Price | None:
        """The price of a worker, falling back as configured on an unknown type
        (logged); None when it cannot be priced (no fallback type)."""
        try:
            return self.lookup(ws)
        except CatalogError as e:
            if self.fallback_type is None:
                logger.error("%s; worker %s is not priced", e, ws.name)
                return None
            logger.error("%s; pricing worker %s as %s", e, ws.name, self.fallback_type)
            return Price(
                "default",
                self.fallback_type,
                self.default_pricing,
                self.catalog[self.fallback_type].usd_per_hour(self.default_pricing),
            )
