"""Least squares and ridge regression in one pass: the normal equations.

Each row block gives its (weighted) size, column means and *centered* cross
products ``Xc^T W Xc`` and ``Xc^T W yc``; blocks merge with Chan's pairwise
formulas (as for the covariance), so one tree reduction over the data gives
the centered normal equations, whose solution is small and made here.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from lepton_dask.ops._backend import aligned, array_module, to_numpy
from lepton_dask.ops._estimator import finish, fitted_input
from lepton_dask.ops._validation import (
    as_dask_y,
    check_block_output,
    check_finite,
    validate_X,
)
from lepton_dask.ops.moments import _block_gram, tree_reduce


def _block_normal(b: Any, yb: Any, wb: Any, center: bool) -> tuple:
    """``(sw, mean_x, mean_y, Xc^T W Xc, Xc^T W yc, bad_x, bad_y)`` of a block
    (``yb``: rows x targets; ``wb``: weights or None; means 0 when not
    centering). NaN and inf counts are made only when the sums are not finite."""
    b, yb = aligned(b), aligned(yb)
    xp = array_module(b)
    n, d = b.shape
    t = yb.shape[1]
    zero = (0.0, np.zeros(d), np.zeros(t), np.zeros((d, d)), np.zeros((d, t)))
    bad = (np.zeros(d, dtype=np.int64), 0)
    sw = float(n) if wb is None else float(wb.sum())
    if n == 0 or sw == 0.0:
        return (*zero, *bad)
    with np.errstate(invalid="ignore", over="ignore"):
        if center:
            mx = (b.sum(axis=0) if wb is None else wb @ b) / sw
            my = (yb.sum(axis=0) if wb is None else wb @ yb) / sw
            a, r = b - mx, yb - my
        else:
            mx, my = xp.zeros(d), xp.zeros(t)
            a, r = b, yb
        if wb is not None:
            s = xp.sqrt(xp.asarray(wb))[:, None]
            a, r = a * s, r * s
        gxx = _block_gram(a)
        gxy = to_numpy(a.T @ r)
    if not (np.isfinite(gxx).all() and np.isfinite(gxy).all()):
        bad = (
            to_numpy((~xp.isfinite(b)).sum(axis=0)),
            int((~xp.isfinite(yb)).sum()),
        )
    return (sw, to_numpy(mx), to_numpy(my), gxx, gxy, *bad)


def _merge_normal(*parts: tuple) -> tuple:
    sw, mx, my, gxx, gxy, bx, by = parts[0]
    for swb, mxb, myb, gxxb, gxyb, bxb, byb in parts[1:]:
        bx, by = bx + bxb, by + byb
        if swb == 0.0:
            continue
        if sw == 0.0:
            sw, mx, my, gxx, gxy = swb, mxb, myb, gxxb, gxyb
            continue
        tot = sw + swb
        f = sw * swb / tot
        with np.errstate(invalid="ignore", over="ignore"):
            dx, dy = mxb - mx, myb - my
            gxx = gxx + gxxb + np.outer(dx, dx) * f
            gxy = gxy + gxyb + np.outer(dx, dy) * f
            mx, my = mx + dx * (swb / tot), my + dy * (swb / tot)
        sw = tot
    return sw, mx, my, gxx, gxy, bx, by


def pinv_solve(
    G: np.ndarray, B: np.ndarray, cond: float = 0.0
) -> tuple[np.ndarray, int]:
    """Minimum-norm solution of ``G x = B`` for a symmetric positive
    semi-definite ``G = A^T A``, and the rank: what ``scipy.linalg.lstsq(A,
    b, cond=cond)`` gives on the data, from its normal equations. Singular
    values of ``A`` below ``cond`` times the largest count as zero (in ``G``:
    eigenvalues below ``cond^2`` times the largest), and always eigenvalues
    below ``d * eps`` times the largest (numpy's ``pinv`` rule: rounding).

    >>> pinv_solve(np.array([[2.0, 2.0], [2.0, 2.0]]), np.array([[2.0], [2.0]]))[0]
    array([[0.5],
           [0.5]])
    """
    lam, V = np.linalg.eigh(G)
    rel = max(cond * cond, max(G.shape[0], 1) * np.finfo(float).eps)
    cut = rel * max(float(lam.max()), 0.0)
    keep = lam > cut
    inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
    return V @ (inv[:, None] * (V.T @ B)), int(keep.sum())


class _LinearModel(RegressorMixin, BaseEstimator):
    """Shared fit (one pass), predict and R^2 score."""

    def _check_y_w(self, X: da.Array, y: Any, sample_weight: Any, was_dask: bool):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                "is None."
            )
        if not isinstance(y, da.Array):
            from sklearn.utils import check_array

            y = check_array(
                y, ensure_2d=False, dtype=np.float64, ensure_all_finite=False
            )
            if y.ndim == 2 and y.shape[0] == X.shape[0]:
                y = da.from_array(y, chunks=(X.chunks[0], -1))
        elif y.ndim == 2:
            if y.chunks[0] != X.chunks[0]:
                raise ValueError(
                    f"y's chunks {y.chunks[0]} do not match X's row chunks "
                    f"{X.chunks[0]}; rechunk one of them"
                )
            y = y.rechunk({1: -1}).astype(np.float64)
        if y.ndim != 2:
            y = as_dask_y(y, X).astype(np.float64)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows, X has {X.shape[0]}")
        if sample_weight is None:
            return y, None
        if not isinstance(sample_weight, da.Array):
            from sklearn.utils.validation import _check_sample_weight

            xs = np.empty((X.shape[0], 0))
            sample_weight = _check_sample_weight(sample_weight, xs, dtype=np.float64)
        return y, as_dask_y(sample_weight, X, "sample_weight").astype(np.float64)

    def fit(self, X: Any, y: Any, sample_weight: Any = None):
        """Fit on ``X`` (samples x features) and ``y`` (samples, or samples x
        targets), optionally weighting the samples; one pass over the data."""
        X, was_dask = validate_X(self, X, reset=True)
        y, w = self._check_y_w(X, y, sample_weight, was_dask)
        ycol = y if y.ndim == 2 else y[:, None]
        ys = ycol.to_delayed().ravel()
        ws = [None] * len(ys) if w is None else list(w.to_delayed().ravel())
        parts = [
            dask.delayed(_block_normal, pure=True)(xb, yb, wb, self.fit_intercept)
            for xb, yb, wb in zip(X.to_delayed().ravel(), ys, ws, strict=True)
        ]
        total = tree_reduce(parts, _merge_normal)
        kw = {} if was_dask else {"scheduler": "threads"}
        _, mx, my, gxx, gxy, bad_x, bad_y = dask.compute(total, **kw)[0]
        check_finite(bad_x)
        if bad_y:
            check_finite(np.array([bad_y]), what="y")
        coef = self._solve(gxx, gxy).T  # targets x features
        intercept = my - coef @ mx if self.fit_intercept else np.zeros(coef.shape[0])
        one = y.ndim == 1  # a 1-D target: 1-D coef_ and a float intercept_
        self.coef_ = coef[0] if one else coef
        self.intercept_ = float(intercept[0]) if one else intercept
        if not self.fit_intercept:  # scikit-learn's: 0.0 for any number of targets
            self.intercept_ = 0.0
        return self

    def predict(self, X: Any) -> Any:
        """``X coef^T + intercept`` (lazy for Dask input)."""
        X, was_dask = fitted_input(self, X)
        coef = np.atleast_2d(self.coef_)
        intercept = np.atleast_1d(self.intercept_)
        kw = (
            {"drop_axis": 1}
            if np.ndim(self.coef_) == 1
            else {"chunks": (X.chunks[0], (coef.shape[0],))}
        )
        out = X.map_blocks(_predict_block, coef, intercept, dtype=X.dtype, **kw)
        return finish(out, was_dask)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R^2 of the predictions (scikit-learn's ``r2_score``: averaged over
        targets; a constant ``y`` scores 1 if predicted exactly, else 0)."""
        pred = self.predict(X)
        if not isinstance(pred, da.Array):
            from sklearn.metrics import r2_score

            return float(r2_score(y, pred, sample_weight=sample_weight))
        check_is_fitted(self)
        P = pred if pred.ndim == 2 else pred[:, None]
        Y, w = self._check_y_w(P, y, sample_weight, True)
        Y = Y if Y.ndim == 2 else Y[:, None]

        def weighted(E):
            # no array of ones when unweighted: its getitem, fused differently
            # by the two computations below, shared a key with two tasks
            # behind it (dask/dask#9888; tests/ops/test_graph_keys.py)
            return E if w is None else w[:, None] * E

        sw = P.shape[0] if w is None else w.sum()
        sw, swy = dask.compute(sw, weighted(Y).sum(axis=0))
        ybar = swy / sw
        res, tot = dask.compute(
            weighted((Y - P) ** 2).sum(axis=0),
            weighted((Y - ybar) ** 2).sum(axis=0),
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(tot > 0, 1.0 - res / tot, np.where(res > 0, 0.0, 1.0))
        return float(np.mean(r2))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _predict_block(b: Any, coef: np.ndarray, intercept: np.ndarray) -> Any:
    b = aligned(b)
    xp = array_module(b)
    z = b @ xp.asarray(coef).T + xp.asarray(intercept)
    return check_block_output(b, z[:, 0] if coef.shape[0] == 1 else z)


class LinearRegression(_LinearModel):
    """Ordinary least squares over Dask arrays, in one pass.

    Solves the centered normal equations ``Xc^T W Xc b = Xc^T W yc`` reduced
    over the row blocks; the minimum-norm solution (eigen-decomposition,
    directions with singular values below ``tol`` times the largest
    dropped) gives scikit-learn's ``lstsq(X, y, cond=tol)`` answer, also for
    rank-deficient or ill-conditioned ``X`` (duplicated or constant columns:
    never NaN). Working from ``X^T X`` squares the condition number:
    coefficients agree with scikit-learn's to about ``cond(X)^2 * 1e-16``
    relative (1e-9 in the tests, on well-conditioned data).

    Parameters
    ----------
    fit_intercept : bool
    tol : float
        Singular values of the centered ``X`` below ``tol`` times the
        largest are treated as zero (scikit-learn's ``tol``, the ``cond`` of
        ``scipy.linalg.lstsq``).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    rank_ : int
        Rank of the centered ``X`` (numerical, from its Gram matrix).
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2))
    >>> reg = LinearRegression().fit(X, X @ [1.5, -2.0] + 3.0)
    >>> reg.coef_.round(6).tolist(), round(reg.intercept_, 6)
    ([1.5, -2.0], 3.0)
    """

    def __init__(self, *, fit_intercept: bool = True, tol: float = 1e-6):
        self.fit_intercept = fit_intercept
        self.tol = tol

    def _solve(self, gxx: np.ndarray, gxy: np.ndarray) -> np.ndarray:
        coef, self.rank_ = pinv_solve(gxx, gxy, float(self.tol))
        return coef


class Ridge(_LinearModel):
    """Ridge regression (L2-penalized least squares) over Dask arrays, in one pass.

    Minimizes ``||W^(1/2) (y - X b - c)||^2 + alpha ||b||^2`` like
    ``sklearn.linear_model.Ridge``: the centered normal equations with
    ``alpha`` on the diagonal, solved by Cholesky (the minimum-norm
    least-squares solution if ``alpha`` is 0 and the matrix is singular).

    Parameters
    ----------
    alpha : float or array of shape (n_targets,)
    fit_intercept : bool

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2))
    >>> y = X @ [1.5, -2.0] + 3.0
    >>> from sklearn.linear_model import Ridge as SkRidge
    >>> bool(np.allclose(Ridge(alpha=10.0).fit(X, y).coef_, SkRidge(10.0).fit(X, y).coef_))
    True
    """

    def __init__(self, alpha: float = 1.0, *, fit_intercept: bool = True):
        self.alpha = alpha
        self.fit_intercept = fit_intercept

    def _solve(self, gxx: np.ndarray, gxy: np.ndarray) -> np.ndarray:
        alpha = np.asarray(self.alpha, dtype=float)
        if alpha.ndim > 1 or (alpha.ndim == 1 and alpha.size != gxy.shape[1]):
            raise ValueError(
                f"alpha must be a number or have one value per target "
                f"({gxy.shape[1]}), got shape {alpha.shape}"
            )
        if np.any(alpha < 0):
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        alphas = np.broadcast_to(alpha, (gxy.shape[1],))
        out = np.empty_like(gxy)
        eye = np.eye(gxx.shape[0])
        for a in np.unique(alphas):  # one factorization per distinct alpha
            cols = alphas == a
            try:
                factor = scipy.linalg.cho_factor(gxx + a * eye)
                out[:, cols] = scipy.linalg.cho_solve(factor, gxy[:, cols])
            except np.linalg.LinAlgError:  # not positive definite (alpha 0)
                out[:, cols] = pinv_solve(gxx + a * eye, gxy[:, cols])[0]
        return out
