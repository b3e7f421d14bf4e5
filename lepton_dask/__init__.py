"""lepton-dask: Dask-native, cost-optimizing compute over features in MongoDB.

The store's names (and the ops' linear models) are re-exported lazily: ``import lepton_dask`` (for its
``__version__``, or to load the configuration) does not load the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lepton_dask import config  # noqa: F401  (loads lepton.yaml into dask.config)
from lepton_dask._version import __version__

if TYPE_CHECKING:
    from lepton_dask.cost.recording import workload
    from lepton_dask.ops import LinearRegression, Ridge
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
    "EmbeddedServer",
    "FeatureStore",
    "LinearRegression",
    "Ridge",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailableError",
    "StoreWriteError",
    "VersionGoneError",
    "__version__",
    "redact_uri",
    "workload",
]


_FROM_OPS = frozenset({"LinearRegression", "Ridge"})
_FROM = {"workload": "lepton_dask.cost.recording"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        where = _FROM.get(name) or (
            "lepton_dask.ops" if name in _FROM_OPS else "lepton_dask.store"
        )
        value = getattr(importlib.import_module(where), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
