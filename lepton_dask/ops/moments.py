"""Column moments, standardization, Gram and covariance: tree reductions.

Every function here is lazy and works on numpy or cupy blocks alike. Moments
and covariance merge per-block *centered* statistics with Chan's pairwise
formulas, so they stay accurate when the mean is large against the spread
(unlike ``E[x^2] - E[x]^2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

from lepton_dask.ops._backend import (
    aligned,
    array_module,
    column_reduce,
    sub_block_rows,
    to_numpy,
)
from lepton_dask.ops._validation import as_dask_2d

SPLIT_EVERY = 8


@dataclass
class ColumnMoments:
    """Per-column statistics of a 2-D array (population variance, ddof=0).

    ``mean``, ``var``, ``min`` and ``max`` are computed over all values, so a
    column holding NaN has NaN there; ``nan_count`` and ``inf_count`` say which.
    """

    count: int
    mean: np.ndarray
    var: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan_count: np.ndarray
    inf_count: np.ndarray

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation."""
        return np.sqrt(self.var)

    @property
    def nonfinite_count(self) -> np.ndarray:
        """NaN plus infinite values per column."""
        return self.nan_count + self.inf_count


def _block_moments(b: Any) -> tuple:
    b = aligned(b)
    xp = array_module(b)
    n, d = b.shape
    if n == 0:
        z = np.zeros(d)
        inf = np.full(d, np.inf)
        return (0, z, z, inf, -inf, z.astype(np.int64), z.astype(np.int64))
    if xp is not np:
        return _whole_block_moments(b, xp)
    # One pass over memory: every statistic of a cache-sized sub-block, merged
    # into the block's with Chan's formula.
    # (A reused buffer, not fresh temporaries: dask workers run with
    # MALLOC_TRIM_THRESHOLD_=65536, so each freed MiB-sized temporary would be
    # returned to the OS and page-faulted back in, doubling the kernel's time.)
    step = sub_block_rows(b)
    buf = np.empty((min(step, n), d), dtype=b.dtype)
    parts = []
    finite = True
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN are counted
        for s in range(0, n, step):
            xs = b[s : s + step]
            mean = xs.mean(axis=0)
            c = np.subtract(xs, mean, out=buf[: xs.shape[0]])
            finite = finite and bool(np.isfinite(mean).all())
            parts.append(
                (
                    xs.shape[0],
                    mean,
                    np.einsum("ij,ij->j", c, c),
                    xs.min(axis=0),
                    xs.max(axis=0),
                )
            )
        nb, mean, m2, lo, hi = parts[0]
        for nb2, mean2, m22, lo2, hi2 in parts[1:]:
            tot = nb + nb2
            delta = mean2 - mean
            mean = mean + delta * (nb2 / tot)
            m2 = m2 + m22 + delta * delta * (nb * nb2 / tot)
            lo, hi, nb = np.minimum(lo, lo2), np.maximum(hi, hi2), tot
    if finite:  # a NaN or inf anywhere makes its sub-block's mean non-finite
        nan = inf = np.zeros(d, dtype=np.int64)
    else:
        nan, inf = np.isnan(b).sum(axis=0), np.isinf(b).sum(axis=0)
    return n, mean, m2, lo, hi, nan, inf


def _whole_block_moments(b: Any, xp, fold: bool | None = None) -> tuple:
    """All moments of a block in whole-block passes (the GPU path): column
    sums, min and max by :func:`column_reduce` (folded on the GPU), the NaN
    and inf counts only when a column's mean is not finite."""
    n, d = b.shape
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN are counted
        mean = column_reduce(b, xp.sum, fold=fold) / n
        c = b - mean
        c *= c
        m2 = column_reduce(c, xp.sum, fold=fold)
        del c
        lo = column_reduce(b, xp.min, fold=fold)
        hi = column_reduce(b, xp.max, fold=fold)
        mean_h = to_numpy(mean)
    if np.isfinite(mean_h).all():  # a NaN or inf in a column makes its mean so
        nan = inf = np.zeros(d, dtype=np.int64)
    else:
        nan = to_numpy(column_reduce(xp.isnan(b), xp.sum, fold=fold))
        inf = to_numpy(column_reduce(xp.isinf(b), xp.sum, fold=fold))
    return n, mean_h, to_numpy(m2), to_numpy(lo), to_numpy(hi), nan, inf


def _merge_moments(*parts: tuple) -> tuple:
    """Merge per-block moments (Chan's pairwise formulas; NaN and inf propagate)."""
    n, mean, m2, lo, hi, nan, inf = parts[0]
    for nb, meanb, m2b, lob, hib, nanb, infb in parts[1:]:
        if nb == 0:
            continue
        if n == 0:
            n, mean, m2, lo, hi, nan, inf = nb, meanb, m2b, lob, hib, nanb, infb
            continue
        tot = n + nb
        with np.errstate(invalid="ignore", over="ignore"):
            delta = meanb - mean
            mean = mean + delta * (nb / tot)
            m2 = m2 + m2b + delta * delta * (n * nb / tot)
        lo, hi = np.minimum(lo, lob), np.maximum(hi, hib)
        nan, inf, n = nan + nanb, inf + infb, tot
    return n, mean, m2, lo, hi, nan, inf


def _finish_moments(part: tuple) -> ColumnMoments:
    n, mean, m2, lo, hi, nan, inf = part
    var = m2 / n if n else np.full_like(mean, np.nan)
    return ColumnMoments(int(n), mean, var, lo, hi, nan, inf)


def tree_reduce(parts: list[Delayed], merge, split_every: int = SPLIT_EVERY) -> Delayed:
    """Reduce delayed per-block results with ``merge`` in a tree of fan-in
    ``split_every`` (so no task receives more than ``split_every`` inputs)."""
    level = list(parts)
    depth = 0
    while len(level) > 1:
        depth += 1
        level = [
            dask.delayed(merge, pure=True)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def column_moments(X: Any) -> Delayed:
    """Lazy column moments of ``X`` (a :class:`ColumnMoments` once computed).

    One pass over the data.

    >>> m = column_moments(np.array([[1.0, 2.0], [3.0, np.nan]])).compute()
    >>> m.mean[0], m.var[0], m.nan_count.tolist()
    (np.float64(2.0), np.float64(1.0), [0, 1])
    """
    X, _ = as_dask_2d(X)
    parts = [dask.delayed(_block_moments, pure=True)(b) for b in X.to_delayed().ravel()]
    return dask.delayed(_finish_moments, pure=True)(tree_reduce(parts, _merge_moments))


def _scale(b: Any, mean: np.ndarray, scale: np.ndarray) -> Any:
    b = aligned(b)
    xp = array_module(b)
    return (b - xp.asarray(mean)) / xp.asarray(scale)


def standardize(X: Any, moments: ColumnMoments | None = None) -> da.Array:
    """``(X - mean) / std`` per column, lazily (constant columns: divided by 1).

    >>> standardize(np.array([[1.0], [3.0]])).compute()
    array([[-1.],
           [ 1.]])
    """
    X, _ = as_dask_2d(X)
    m = moments if moments is not None else column_moments(X).compute()
    scale = safe_scale(m.std)
    return X.map_blocks(_scale, m.mean, scale, dtype=X.dtype)


def safe_scale(std: np.ndarray) -> np.ndarray:
    """Standard deviations with zeros (and near-zeros) replaced by 1, as
    scikit-learn does for constant features.

    >>> safe_scale(np.array([2.0, 0.0]))
    array([2., 1.])
    """
    std = np.asarray(std, dtype=float)
    eps = 10 * np.finfo(std.dtype).eps
    return np.where(std < eps, 1.0, std)


def _block_gram(b: Any) -> Any:
    """``b^T b`` of a block: one BLAS ``syrk`` on numpy blocks (half the
    flops of a general product; the upper triangle is mirrored), a matrix
    product on cupy blocks."""
    b = aligned(b)
    if array_module(b) is not np or b.dtype not in (np.float64, np.float32):
        return to_numpy(b.T @ b)
    if b.shape[0] == 0:
        return np.zeros((b.shape[1], b.shape[1]), dtype=b.dtype)
    from scipy.linalg import blas

    syrk = blas.dsyrk if b.dtype == np.float64 else blas.ssyrk
    # b.T is Fortran-ordered for a C-ordered block: BLAS reads it in place
    a = b.T if b.flags.c_contiguous else np.asfortranarray(b).T
    upper = syrk(1.0, a, trans=0, lower=0)
    return np.triu(upper) + np.triu(upper, 1).T


def gram(X: Any) -> da.Array:
    """The Gram matrix ``X^T X`` as a lazy (d, d) Dask array (tree sum).

    >>> gram(np.array([[1.0, 2.0], [3.0, 4.0]])).compute()
    array([[10., 14.],
           [14., 20.]])
    """
    X, _ = as_dask_2d(X)
    d = X.shape[1]
    parts = [dask.delayed(_block_gram, pure=True)(b) for b in X.to_delayed().ravel()]
    total = tree_reduce(parts, _sum)
    return da.from_delayed(total, shape=(d, d), dtype=X.dtype)


def _sum(*parts):
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def _block_comoment(b: Any) -> tuple:
    b = aligned(b)
    n = b.shape[0]
    if n == 0:
        d = b.shape[1]
        return 0, np.zeros(d), np.zeros((d, d))
    xp = array_module(b)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = column_reduce(b, xp.sum) / n
        c = b - mean
        return n, to_numpy(mean), to_numpy(c.T @ c)


def _merge_comoment(*parts: tuple) -> tuple:
    n, mean, C = parts[0]
    for nb, meanb, Cb in parts[1:]:
        if nb == 0:
            continue
        if n == 0:
            n, mean, C = nb, meanb, Cb
            continue
        tot = n + nb
        delta = meanb - mean
        C = C + Cb + np.outer(delta, delta) * (n * nb / tot)
        mean = mean + delta * (nb / tot)
        n = tot
    return n, mean, C


def _finish_cov(part: tuple, ddof: int) -> np.ndarray:
    n, _, C = part
    return C / max(n - ddof, 1)


def covariance(X: Any, ddof: int = 1) -> da.Array:
    """Covariance matrix of the columns of ``X`` (lazy, one pass, stable).

    >>> x = np.random.default_rng(0).random((50, 3)) + 1e6
    >>> np.allclose(covariance(x).compute(), np.cov(x, rowvar=False))
    True
    """
    X, _ = as_dask_2d(X)
    d = X.shape[1]
    parts = [
        dask.delayed(_block_comoment, pure=True)(b) for b in X.to_delayed().ravel()
    ]
    cov = dask.delayed(_finish_cov, pure=True)(
        tree_reduce(parts, _merge_comoment), ddof
    )
    return da.from_delayed(cov, shape=(d, d), dtype=np.float64)


def _corr(cov: np.ndarray) -> np.ndarray:
    s = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cov / np.outer(s, s)
    np.fill_diagonal(out, np.where(s > 0, 1.0, np.nan))
    return np.clip(out, -1.0, 1.0)


def correlation(X: Any) -> da.Array:
    """Pearson correlation matrix of the columns (NaN for constant columns).

    >>> x = np.random.default_rng(0).random((50, 3))
    >>> np.allclose(correlation(x).compute(), np.corrcoef(x, rowvar=False))
    True
    """
    cov = covariance(X)
    return cov.map_blocks(_corr, dtype=np.float64)
