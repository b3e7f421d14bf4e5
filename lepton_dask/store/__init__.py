"""MongoDB feature store: versioned chunked arrays and row collections."""

from lepton_dask.store._spec import StoreSpec
from lepton_dask.store._uri import redact_uri
from lepton_dask.store.errors import (
    CollectionChangedError,
    CorruptBlockError,
    ServerStartError,
    StoreAuthError,
    StoreError,
    StoreUnavailableError,
    StoreWriteError,
    VersionGoneError,
)
from lepton_dask.store.features import FeatureStore
from lepton_dask.store.placement import register_collector as _register_collector
from lepton_dask.store.server import EmbeddedServer, resolve_uri

_register_collector()  # lepton_store_* on this process's /metrics

__all__ = [
    "CollectionChangedError",
    "CorruptBlockError",
    "EmbeddedServer",
    "FeatureStore",
    "ServerStartError",
    "StoreAuthError",
    "StoreError",
    "StoreSpec",
    "StoreUnavailableError",
    "StoreWriteError",
    "VersionGoneError",
    "redact_uri",
    "resolve_uri",
]
