"""lepton-dask: Dask-native, cost-optimizing compute over features in MongoDB."""

from lepton_dask import config  # noqa: F401  (loads lepton.yaml into dask.config)
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

__version__ = "0.1.0"

__all__ = [
    "CollectionChangedError",
    "CorruptBlockError",
    "EmbeddedServer",
    "FeatureStore",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailableError",
    "StoreWriteError",
    "VersionGoneError",
    "__version__",
    "redact_uri",
]
