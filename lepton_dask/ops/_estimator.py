"""What the estimators share: input handling and output types."""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from sklearn.utils.validation import check_is_fitted

from lepton_dask.ops._validation import validate_X


def fitted_input(est: Any, X: Any) -> tuple[da.Array, bool]:
    """Check ``est`` is fitted and ``X`` is valid input with its number of
    features (scikit-learn's messages); ``(Dask array, was_dask)``."""
    check_is_fitted(est)
    return validate_X(est, X, reset=False)


def finish(result: da.Array, was_dask: bool) -> Any:
    """Lazy result for Dask input; a numpy array for numpy input.

    numpy input is computed with the threaded scheduler in this process: the
    data is already here, shipping it to a cluster would only cost time.
    """
    if was_dask:
        return result
    return np.asarray(dask.compute(result, scheduler="threads")[0])
