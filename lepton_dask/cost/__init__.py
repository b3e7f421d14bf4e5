"""Price catalog, billing, the CostMonitor scheduler plugin, ledger and metrics."""

from lepton_dask.cost.billing import Lifetime, billed_seconds, total_spend
from lepton_dask.cost.catalog import Catalog, CatalogError, InstanceType, load_catalog
from lepton_dask.cost.ledger import Ledger
from lepton_dask.cost.metrics import METRICS, CostCollector
from lepton_dask.cost.monitor import CostMonitor
from lepton_dask.cost.pricing import worker_declaration
from lepton_dask.cost.recording import RunRecorder, workload
from lepton_dask.cost.report import Table

__all__ = [
    "METRICS",
    "Catalog",
    "CatalogError",
    "CostCollector",
    "CostMonitor",
    "InstanceType",
    "Ledger",
    "Lifetime",
    "RunRecorder",
    "Table",
    "billed_seconds",
    "load_catalog",
    "total_spend",
    "worker_declaration",
    "workload",
]
