"""What the estimators share: input handling and output types."""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.utils.validation import check_is_fitted

from lepton_dask.ops._validation import as_dask_2d, check_n_features


def fitted_input(est: Any, X: Any) -> tuple[da.Array, bool]:
    """Check ``est`` is fitted and ``X`` has its number of features."""
    check_is_fitted(est)
    X, was_dask = as_dask_2d(X)
    check_n_features(est.n_features_in_, X)
    return X, was_dask


def map_rows(X: da.Array, fn, *args, **kwargs) -> da.Array:
    """``X.map_blocks(fn, *args, **kwargs)`` (row-wise results of estimators)."""
    return X.map_blocks(fn, *args, **kwargs)


def finish(result: da.Array, was_dask: bool) -> Any:
    """Lazy result for Dask input; a numpy array for numpy input.

    numpy input is computed with the threaded scheduler in this process: the
    data is already here, shipping it to a cluster would only cost time.
    """
    if was_dask:
        return result
    return np.asarray(dask.compute(result, scheduler="threads")[0])
