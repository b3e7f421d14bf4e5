"""lepton-dask: Dask-native, cost-optimizing compute over features in MongoDB.

The public names are re-exported lazily: ``import lepton_dask`` (for its
``__version__``, or to load the configuration) loads neither the store, nor the
scheduler plugin, nor scikit-learn; each name is imported on first use.

>>> import lepton_dask
>>> lepton_dask.deadline is lepton_dask.scaling.deadline
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lepton_dask import config  # noqa: F401  (loads lepton.yaml into dask.config)
from lepton_dask._version import __version__

if TYPE_CHECKING:
    from lepton_dask.cost.monitor import CostMonitor
    from lepton_dask.cost.recording import workload
    from lepton_dask.ops import KMeans, LinearRegression, Ridge
    from lepton_dask.scaling.adaptive import CostAwareAdaptive
    from lepton_dask.scaling.slo import SLOPolicy, deadline
    from lepton_dask.scaling.state import PoolSpec
    from lepton_dask.store import (
        CollectionChangedError,
        CorruptBlockError,
        EmbeddedServer,
        FeatureStore,
        StoreAuthError,
        StoreError,
        StoreUnavailableError,
        StoreWriteError,
        VersionGoneError,
        redact_uri,
    )

__all__ = [
    "CollectionChangedError",
    "CorruptBlockError",
    "CostAwareAdaptive",
    "CostMonitor",
    "EmbeddedServer",
    "FeatureStore",
    "KMeans",
    "LinearRegression",
    "PoolSpec",
    "Ridge",
    "SLOPolicy",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailableError",
    "StoreWriteError",
    "VersionGoneError",
    "__version__",
    "deadline",
    "redact_uri",
    "workload",
]

#: where each lazily exported name lives (the rest: lepton_dask.store)
_FROM = {
    "CostAwareAdaptive": "lepton_dask.scaling.adaptive",
    "CostMonitor": "lepton_dask.cost.monitor",
    "KMeans": "lepton_dask.ops",
    "LinearRegression": "lepton_dask.ops",
    "PoolSpec": "lepton_dask.scaling.state",
    "Ridge": "lepton_dask.ops",
    "SLOPolicy": "lepton_dask.scaling.slo",
    "deadline": "lepton_dask.scaling.slo",
    "workload": "lepton_dask.cost.recording",
}


def __getattr__(name: str) -> Any:
    if name in __all__:
        where = _FROM.get(name, "lepton_dask.store")
        value = getattr(importlib.import_module(where), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
