"""Chunked array operations and scikit-learn-style estimators (numpy or cupy blocks)."""

from lepton_dask.ops._backend import (
    array_module,
    gpu_available,
    persist_on,
    to_cpu,
    to_gpu,
    to_numpy,
)
from lepton_dask.ops.kmeans import KMeans
from lepton_dask.ops.linear import LinearRegression, Ridge
from lepton_dask.ops.logistic import LogisticRegression
from lepton_dask.ops.moments import (
    ColumnMoments,
    column_moments,
    correlation,
    covariance,
    gram,
    standardize,
)
from lepton_dask.ops.pca import PCA
from lepton_dask.ops.preprocessing import StandardScaler

__all__ = [
    "PCA",
    "ColumnMoments",
    "KMeans",
    "LinearRegression",
    "LogisticRegression",
    "Ridge",
    "StandardScaler",
    "array_module",
    "column_moments",
    "correlation",
    "covariance",
    "gpu_available",
    "gram",
    "persist_on",
    "standardize",
    "to_cpu",
    "to_gpu",
    "to_numpy",
]
