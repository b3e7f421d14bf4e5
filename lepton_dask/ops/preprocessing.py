"""StandardScaler over Dask arrays (numpy or cupy blocks)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from lepton_dask.ops._backend import array_module
from lepton_dask.ops._estimator import finish, fitted_input
from lepton_dask.ops._validation import check_block_output, check_finite, validate_X
from lepton_dask.ops.moments import _scale, column_moments, safe_scale


class StandardScaler(TransformerMixin, BaseEstimator):
    """Standardize features to zero mean and unit variance.

    Same parameters and fitted attributes as scikit-learn's ``StandardScaler``;
    ``fit`` is one pass over the data (a tree reduction of per-block moments),
    ``transform`` is lazy for Dask input.

    NaN or infinite values raise ``ValueError`` naming the columns (this
    scaler does not ignore them the way scikit-learn's does).

    Parameters
    ----------
    with_mean, with_std : bool
        Center, and scale to unit variance.

    Attributes
    ----------
    mean_, var_, scale_ : ndarray of shape (n_features,)
    n_features_in_ : int
    n_samples_seen_ : int

    Examples
    --------
    >>> X = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    >>> StandardScaler().fit_transform(X)
    array([[-1.22474487,  0.        ],
           [ 0.        ,  0.        ],
           [ 1.22474487,  0.        ]])
    """

    def __init__(self, *, with_mean: bool = True, with_std: bool = True):
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X: Any, y: Any = None) -> StandardScaler:
        """Compute the mean and standard deviation of each feature."""
        X, was_dask = validate_X(self, X, reset=True)
        lazy = column_moments(X)
        m = lazy.compute() if was_dask else lazy.compute(scheduler="threads")
        check_finite(m.nonfinite_count)
        self.n_samples_seen_ = m.count
        self.mean_ = m.mean if self.with_mean else None
        self.var_ = m.var if self.with_std else None
        self.scale_ = safe_scale(m.std) if self.with_std else None
        return self

    def _params(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        mean = self.mean_ if self.with_mean else np.zeros(n)
        scale = self.scale_ if self.with_std else np.ones(n)
        return mean, scale

    def transform(self, X: Any) -> Any:
        """Standardize ``X`` (lazy for Dask input)."""
        X, was_dask = fitted_input(self, X)
        mean, scale = self._params(X.shape[1])
        return finish(
            X.map_blocks(_checked_scale, mean, scale, dtype=X.dtype), was_dask
        )

    def inverse_transform(self, X: Any) -> Any:
        """Undo :meth:`transform`."""
        X, was_dask = fitted_input(self, X)
        mean, scale = self._params(X.shape[1])
        return finish(X.map_blocks(_unscale, mean, scale, dtype=X.dtype), was_dask)


def _checked_scale(b, mean, scale):
    return check_block_output(b, _scale(b, mean, scale))


def _unscale(b, mean, scale):
    xp = array_module(b)
    return b * xp.asarray(scale) + xp.asarray(mean)
