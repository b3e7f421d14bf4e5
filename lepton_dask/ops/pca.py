"""PCA of a tall-skinny matrix by TSQR and a small SVD."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from lepton_dask.ops._backend import aligned, array_module, to_numpy
from lepton_dask.ops._blocks import RowBlocks
from lepton_dask.ops._estimator import finish, fitted_input
from lepton_dask.ops._validation import (
    as_dask_2d,
    check_block_output,
    check_finite,
    validate_X,
)
from lepton_dask.ops.moments import _block_moments, _finish_moments, _merge_moments


def _block_r(b: Any, mean: np.ndarray) -> np.ndarray:
    """R of the QR decomposition of a centered block (Q is never formed)."""
    b = aligned(b)
    xp = array_module(b)
    c = b - xp.asarray(mean)
    if c.shape[0] == 0:
        return np.zeros((0, b.shape[1]))
    return to_numpy(xp.linalg.qr(c, mode="r"))


def svd_flip_rows(vt: np.ndarray) -> np.ndarray:
    """Sign-normalize singular vectors: each row's largest-|.| entry positive
    (scikit-learn's ``svd_flip(u_based_decision=False)``), for deterministic
    components.

    >>> svd_flip_rows(np.array([[0.1, -0.9], [0.8, 0.2]]))
    array([[-0.1,  0.9],
           [ 0.8,  0.2]])
    """
    idx = np.argmax(np.abs(vt), axis=1)
    signs = np.sign(vt[np.arange(vt.shape[0]), idx])
    signs[signs == 0] = 1.0
    return vt * signs[:, None]


def _transform_block(b: Any, mean: np.ndarray, components: np.ndarray, scale) -> Any:
    b = aligned(b)
    xp = array_module(b)
    out = (b - xp.asarray(mean)) @ xp.asarray(components).T
    if scale is not None:
        out = out / xp.asarray(scale)
    return check_block_output(b, out)


class PCA(TransformerMixin, BaseEstimator):
    """Principal component analysis of a tall-skinny Dask array.

    Fits by TSQR: one pass for the column means (and a NaN check), one pass
    computing the R factor of each centered row block in parallel, then the
    SVD of the stacked R factors, a (blocks x features) by (features) matrix.
    Components are sign-normalized like scikit-learn's, so they agree with
    ``sklearn.decomposition.PCA(svd_solver="full")`` entry by entry, not only
    up to sign. Needs one chunk along columns (rechunked if not).

    Parameters
    ----------
    n_components : int, float or None
        Number of components; a float in (0, 1) keeps enough components to
        explain that fraction of the variance; None keeps all.
    whiten : bool
        Scale the transformed components to unit variance.

    Attributes
    ----------
    components_, explained_variance_, explained_variance_ratio_,
    singular_values_, mean_, n_components_, n_samples_, n_features_in_,
    noise_variance_

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3)) @ np.array([[3, 0, 0], [1, 1, 0], [0, 0, 0.1]])
    >>> pca = PCA(n_components=2).fit(X)
    >>> pca.explained_variance_ratio_.round(3)
    array([0.923, 0.076])
    """

    def __init__(
        self, n_components: int | float | None = None, *, whiten: bool = False
    ):
        self.n_components = n_components
        self.whiten = whiten

    def fit(self, X: Any, y: Any = None) -> PCA:
        """Fit the model on ``X`` (samples x features)."""
        # (one sample has no variance: scikit-learn's message for too few rows)
        X, _ = validate_X(self, X, reset=True, min_samples=2)
        n, d = X.shape
        rb = RowBlocks(X)
        try:
            m = _finish_moments(rb.map_reduce(_block_moments, merge=_merge_moments))
            check_finite(m.nonfinite_count)
            rs = [r for r in rb.gather(rb.map(_block_r, m.mean)) if r.shape[0]]
        finally:
            rb.release()
        r = np.linalg.qr(np.vstack(rs), mode="r")
        _, s, vt = np.linalg.svd(r, full_matrices=False)
        vt = svd_flip_rows(vt)
        var = s**2 / (n - 1)
        total = var.sum()
        k = self._n_components(var, total, n, d)
        self.mean_ = m.mean
        self.components_ = vt[:k]
        self.explained_variance_ = var[:k]
        self.explained_variance_ratio_ = var[:k] / total if total > 0 else np.zeros(k)
        self.singular_values_ = s[:k]
        self.noise_variance_ = float(var[k:].mean()) if k < min(n, d) else 0.0
        self.n_components_ = k
        self.n_samples_ = n
        return self

    def _n_components(self, var: np.ndarray, total: float, n: int, d: int) -> int:
        nc = self.n_components
        limit = min(n, d)
        if nc is None:
            return limit
        if isinstance(nc, numbers.Integral) and not isinstance(nc, bool):
            if not 1 <= nc <= limit:
                raise ValueError(f"n_components={nc} must be between 1 and {limit}")
            return int(nc)
        if isinstance(nc, numbers.Real) and 0 < nc < 1:
            ratio = np.cumsum(var) / total
            return int(np.searchsorted(ratio, nc, side="right") + 1)
        raise ValueError(
            f"n_components must be None, an int in [1, {limit}] or a float in (0, 1); "
            f"got {nc!r}"
        )

    def transform(self, X: Any) -> Any:
        """Project ``X`` on the components (lazy for Dask input)."""
        X, was_dask = fitted_input(self, X)
        scale = np.sqrt(self.explained_variance_) if self.whiten else None
        out = X.map_blocks(
            _transform_block,
            self.mean_,
            self.components_,
            scale,
            chunks=(X.chunks[0], (self.n_components_,)),
            dtype=X.dtype,
        )
        return finish(out, was_dask)

    def inverse_transform(self, Z: Any) -> Any:
        """Map component scores back to feature space."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        Z, was_dask = as_dask_2d(Z, "Z")
        comps = self.components_
        if self.whiten:
            comps = comps * np.sqrt(self.explained_variance_)[:, None]
        out = Z.map_blocks(
            _inverse_block,
            comps,
            self.mean_,
            chunks=(Z.chunks[0], (self.n_features_in_,)),
            dtype=Z.dtype,
        )
        return finish(out, was_dask)


def _inverse_block(b: Any, components: np.ndarray, mean: np.ndarray) -> Any:
    xp = array_module(b)
    return b @ xp.asarray(components) + xp.asarray(mean)
