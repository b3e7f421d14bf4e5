"""k-means: k-means|| initialisation, then Lloyd iterations over row blocks."""

from __future__ import annotations

import operator
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning

from lepton_dask.ops._backend import aligned, array_module, sub_block_rows, to_numpy
from lepton_dask.ops._blocks import RowBlocks
from lepton_dask.ops._estimator import finish, fitted_input
from lepton_dask.ops._validation import check_block_output, check_finite, validate_X
from lepton_dask.ops.moments import _block_moments, _finish_moments, _merge_moments


def _partial_sq_dist(xs: Any, C: Any, c2: Any) -> Any:
    """``||c||^2 - 2 x.c``: the squared distance minus ``||x||^2``, which is the
    same for every center, so argmin and comparisons need no row norms."""
    d = xs @ C.T
    d *= -2.0
    d += c2
    return d


def _sq_dist(xs: Any, C: Any, c2: Any, xp) -> Any:
    """Squared distances of rows ``xs`` to centers ``C`` (clipped at 0)."""
    d = _partial_sq_dist(xs, C, c2)
    d += xp.einsum("ij,ij->i", xs, xs)[:, None]
    return xp.maximum(d, 0.0)


def _lloyd_block(b: Any, centers: np.ndarray) -> tuple:
    """One E-step over a block fused with the M-step sums, on cache-sized
    sub-blocks. Returns center sums, counts and ``sum(min ||c||^2 - 2 x.c)``;
    the inertia adds ``sum ||x||^2``, known from the column moments."""
    b = aligned(b)
    xp = array_module(b)
    C = xp.asarray(centers)
    k, d = C.shape
    c2 = (C * C).sum(axis=1)
    sums = xp.zeros((k, d))
    counts = xp.zeros(k, dtype=np.int64)
    partial = 0.0
    ks = xp.arange(k)
    step = sub_block_rows(b)
    # work buffers reused across sub-blocks (see _block_moments on why)
    m0 = min(step, b.shape[0])
    dist_buf = xp.empty((m0, k), dtype=b.dtype)
    oh_buf = xp.empty((m0, k), dtype=b.dtype)
    Ct = xp.ascontiguousarray(C.T)
    for s in range(0, b.shape[0], step):
        xs = b[s : s + step]
        m = xs.shape[0]
        dist = xp.matmul(xs, Ct, out=dist_buf[:m])
        dist *= -2.0
        dist += c2
        lab = dist.argmin(axis=1)
        partial += float(xp.take_along_axis(dist, lab[:, None], axis=1).sum())
        onehot = oh_buf[:m]
        onehot[...] = lab[:, None] == ks
        sums += onehot.T @ xs
        counts += xp.bincount(lab, minlength=k)
    return to_numpy(sums), to_numpy(counts), partial


def _labels_block(b: Any, centers: np.ndarray) -> Any:
    b = aligned(b)
    xp = array_module(b)
    C = xp.asarray(centers)
    c2 = (C * C).sum(axis=1)
    step = sub_block_rows(b)
    out = xp.empty(b.shape[0], dtype=np.int32)
    for s in range(0, b.shape[0], step):
        xs = b[s : s + step]
        dist = check_block_output(xs, _partial_sq_dist(xs, C, c2))
        out[s : s + step] = dist.argmin(axis=1)
    return out


def _distances_block(b: Any, centers: np.ndarray) -> Any:
    b = aligned(b)
    xp = array_module(b)
    C = xp.asarray(centers)
    return check_block_output(b, xp.sqrt(_sq_dist(b, C, (C * C).sum(axis=1), xp)))


# -- k-means|| (Bahmani et al. 2012) ----------------------------------------------------
def _init_state(b: Any, center: np.ndarray) -> tuple:
    """Per-block state: squared distance to, and index of, the nearest
    candidate, and the row norms (computed once)."""
    b = aligned(b)
    xp = array_module(b)
    C = xp.asarray(center[None, :])
    x2 = xp.einsum("ij,ij->i", b, b)
    d2 = xp.maximum(_partial_sq_dist(b, C, (C * C).sum(axis=1))[:, 0] + x2, 0.0)
    return d2, xp.zeros(b.shape[0], dtype=np.int32), x2, float(d2.sum())


def _uniform(xp, seed: int, n: int) -> Any:
    """n uniform draws in [0, 1) on the block's device."""
    if xp is np:
        return np.random.default_rng(seed).random(n)
    return xp.random.RandomState(seed).random_sample(n)


def _oversample(b: Any, state: tuple, phi: float, ell: float, seed: int, first_id: int):
    """Sample rows with probability ``ell * d2 / phi`` (on the block's device);
    update the state with the sampled rows as new candidates. The input state
    is not modified (a retried task must see the same input)."""
    b = aligned(b)
    xp = array_module(b)
    d2, nearest, x2, _ = state
    u = _uniform(xp, seed, b.shape[0])
    picked = (
        xp.nonzero(u * phi < ell * d2)[0] if phi > 0 else xp.empty(0, dtype=np.int64)
    )
    if picked.shape[0] == 0:
        return state, np.empty((0, b.shape[1]))
    new = b[picked]
    c2 = (new * new).sum(axis=1)
    Ct = xp.ascontiguousarray(new.T)
    d2, nearest = d2.copy(), nearest.copy()
    step = sub_block_rows(b)
    buf = xp.empty((min(step, b.shape[0]), new.shape[0]), dtype=b.dtype)
    for s in range(0, b.shape[0], step):
        xs = b[s : s + step]
        dist = xp.matmul(xs, Ct, out=buf[: xs.shape[0]])
        dist *= -2.0
        dist += c2
        dist += x2[s : s + step, None]
        j = dist.argmin(axis=1)
        dmin = xp.maximum(xp.take_along_axis(dist, j[:, None], axis=1)[:, 0], 0.0)
        better = dmin < d2[s : s + step]
        d2[s : s + step] = xp.where(better, dmin, d2[s : s + step])
        nearest[s : s + step] = xp.where(
            better, j.astype(np.int32) + first_id, nearest[s : s + step]
        )
    return (d2, nearest, x2, float(d2.sum())), to_numpy(new)


def _candidate_weights(b: Any, state: tuple, n_candidates: int) -> np.ndarray:
    xp = array_module(state[1])
    return to_numpy(xp.bincount(state[1], minlength=n_candidates)).astype(float)


def _kmeans_pp(
    X: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Weighted greedy k-means++ on the (small) candidate set."""
    n = X.shape[0]
    trials = 2 + int(np.log(k))
    centers = [X[rng.choice(n, p=w / w.sum())]]
    d2 = ((X - centers[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        pot = (w * d2).sum()
        if pot <= 0:
            idx = rng.choice(n, size=trials)
        else:
            idx = rng.choice(n, size=trials, p=w * d2 / pot)
        cand_d2 = np.minimum(d2, ((X[idx, None, :] - X[None, :, :]) ** 2).sum(axis=2))
        best = int(np.argmin((cand_d2 * w).sum(axis=1)))
        centers.append(X[idx[best]])
        d2 = cand_d2[best]
    return np.array(centers)


def _weighted_lloyd(X, w, C, iters=20):
    for _ in range(iters):
        lab = ((X[:, None, :] - C[None]) ** 2).sum(axis=2).argmin(axis=1)
        newC = C.copy()
        for j in range(C.shape[0]):
            m = lab == j
            if w[m].sum() > 0:
                newC[j] = (w[m, None] * X[m]).sum(axis=0) / w[m].sum()
        if np.allclose(newC, C):
            break
        C = newC
    return C


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means clustering with k-means|| initialisation and Lloyd iterations.

    Initialisation oversamples ``oversampling_factor * n_clusters`` candidates
    per round for ``init_rounds`` rounds (5) in parallel over
    the row blocks (one pass per round), weights
    them by the points nearest to each (tracked during the rounds, no extra
    pass), and picks ``n_clusters`` of them with weighted k-means++. Each Lloyd
    iteration is then one pass: distances by matrix product on cache-sized
    sub-blocks, fused with the sums for the new centers. Converges when the
    squared center shift falls below ``tol`` times the mean feature variance
    (scikit-learn's criterion). An empty cluster keeps its previous center.

    Parameters
    ----------
    n_clusters : int
    init : {"k-means||"} or ndarray of shape (n_clusters, n_features)
    max_iter : int
    tol : float
    oversampling_factor : float
    init_rounds : int
    random_state : int or None
    verbose : int
        With ``verbose >= 1``, one line per Lloyd iteration on stdout
        (inertia and center shift), like scikit-learn's ``verbose``.

    Attributes
    ----------
    cluster_centers_, labels_ (Dask array for Dask input), inertia_, n_iter_,
    n_features_in_

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(c, 0.1, size=(100, 2)) for c in (0, 5, 10)])
    >>> km = KMeans(n_clusters=3, random_state=0).fit(X)
    >>> np.sort(km.cluster_centers_[:, 0]).round(0).astype(int).tolist()
    [0, 5, 10]
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means||",
        max_iter: int = 300,
        tol: float = 1e-4,
        oversampling_factor: float = 2.0,
        init_rounds: int = 5,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X: Any, y: Any = None) -> KMeans:
        """Cluster ``X`` (samples x features)."""
        X, was_dask = validate_X(self, X, reset=True)
        k = self.n_clusters
        if not (isinstance(k, int | np.integer) and k >= 1):
            raise ValueError(f"n_clusters must be a positive int, got {k!r}")
        if X.shape[0] < k:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={k}")
        rng = np.random.default_rng(self.random_state)
        rb = RowBlocks(X)
        try:
            m = _finish_moments(rb.map_reduce(_block_moments, merge=_merge_moments))
            check_finite(m.nonfinite_count)
            tol = self.tol * float(np.mean(m.var))
            sq_norms = float(m.count * (m.var + m.mean**2).sum())  # sum of ||x||^2
            centers = self._init_centers(rb, X, rng)
            if self.verbose:
                print("Initialization complete", flush=True)
            n_iter = 0
            for it in range(1, self.max_iter + 1):
                n_iter = it
                sums, counts, partial = rb.map_reduce(_lloyd_block, centers)
                new = centers.copy()
                nz = counts > 0
                new[nz] = sums[nz] / counts[nz, None]
                shift = float(((new - centers) ** 2).sum())
                if self.verbose:  # the inertia of the centers this pass assigned to
                    inertia = max(partial + sq_norms, 0.0)
                    print(
                        f"Iteration {it - 1}, inertia {inertia:.10g}, "
                        f"center shift {shift:.3g} (tol {tol:.3g})",
                        flush=True,
                    )
                centers = new
                if shift <= tol:
                    break
            else:
                warnings.warn(
                    f"KMeans did not converge in max_iter={self.max_iter} iterations",
                    ConvergenceWarning,
                    stacklevel=2,
                )
            _, _, partial = rb.map_reduce(_lloyd_block, centers)
            inertia = max(partial + sq_norms, 0.0)
            labels = rb.map_blocks(_labels_block, centers, dtype=np.int32, ncols=None)
        finally:
            rb.release()
        self.cluster_centers_ = centers
        self.inertia_ = float(inertia)
        self.n_iter_ = n_iter
        self.labels_ = labels if was_dask else np.asarray(labels.compute())
        return self

    def _init_centers(self, rb: RowBlocks, X, rng: np.random.Generator) -> np.ndarray:
        k, d = self.n_clusters, X.shape[1]
        if not isinstance(self.init, str):
            init = np.asarray(self.init, dtype=float)
            if init.shape != (k, d):
                raise ValueError(f"init has shape {init.shape}, expected {(k, d)}")
            return init.copy()
        if self.init != "k-means||":
            raise ValueError(f"init must be 'k-means||' or an array, got {self.init!r}")
        # first center: a uniformly random row
        row = int(rng.integers(X.shape[0]))
        first = to_numpy(X[row].compute())
        state = rb.map(_init_state, first)
        phi = sum(rb.gather(_phi(rb, state)))
        candidates = [first[None, :]]
        n_cand = 1
        ell = self.oversampling_factor * k
        for _ in range(self.init_rounds):
            seeds = rng.integers(2**32, size=len(rb))
            out = _map_each(rb, _oversample, state, phi, ell, seeds, n_cand)
            state = _pick(rb, out, 0)
            small = rb.gather(_pick(rb, out, 1) + _phi(rb, state))  # one round trip
            new = np.vstack(small[: len(rb)])
            phi = sum(small[len(rb) :])
            if new.shape[0]:
                candidates.append(new)
                n_cand += new.shape[0]
            if phi == 0:
                break
        cands = np.vstack(candidates)
        weights = sum(rb.gather(_map_each(rb, _candidate_weights, state, n_cand)))
        if cands.shape[0] <= k:  # too few distinct candidates: pad with random rows
            extra = [
                to_numpy(X[int(i)].compute()) for i in rng.integers(X.shape[0], size=k)
            ]
            cands = np.vstack([cands, *extra])[: max(k, cands.shape[0])]
            weights = np.concatenate([weights, np.ones(cands.shape[0] - weights.size)])
        weights = np.maximum(weights, 1e-12)
        centers = _kmeans_pp(cands, weights, k, rng)
        return _weighted_lloyd(cands, weights, centers)

    def predict(self, X: Any) -> Any:
        """Index of the nearest center for each row."""
        X, was_dask = fitted_input(self, X)
        out = X.map_blocks(
            _labels_block, self.cluster_centers_, drop_axis=1, dtype=np.int32
        )
        return finish(out, was_dask)

    def transform(self, X: Any) -> Any:
        """Distances to every center."""
        X, was_dask = fitted_input(self, X)
        out = X.map_blocks(
            _distances_block,
            self.cluster_centers_,
            chunks=(X.chunks[0], (self.n_clusters,)),
            dtype=X.dtype,
        )
        return finish(out, was_dask)

    def score(self, X: Any, y: Any = None) -> float:
        """Opposite of the inertia of ``X`` against the fitted centers."""
        X, _was_dask = fitted_input(self, X)
        rb = RowBlocks(X)
        try:
            m = _finish_moments(rb.map_reduce(_block_moments, merge=_merge_moments))
            _, _, partial = rb.map_reduce(_lloyd_block, self.cluster_centers_)
        finally:
            rb.release()
        return -max(partial + float(m.count * (m.var + m.mean**2).sum()), 0.0)


# -- helpers to thread per-block state through RowBlocks ----------------------------------
def _map_each(rb: RowBlocks, fn, states: list, *args) -> list:
    """Like ``rb.map`` but with a per-block state and per-block seeds."""
    per_block = [
        a if isinstance(a, np.ndarray) and a.shape == (len(rb),) else None for a in args
    ]
    out = []
    for i, (blk, st) in enumerate(zip(rb.blocks, states, strict=False)):
        a = [
            pb[i] if pb is not None else arg
            for pb, arg in zip(per_block, args, strict=False)
        ]
        a = [int(v) if isinstance(v, np.integer) else v for v in a]
        if rb.client is None:
            out.append(fn(*blk, st, *a))
        else:
            out.append(
                rb.client.submit(
                    fn,
                    *blk,
                    st,
                    *a,
                    pure=False,
                    resources=rb._annotations.get("resources"),
                )
            )
    return out


def _pick(rb: RowBlocks, parts: list, i: int) -> list:
    if rb.client is None:
        return [p[i] for p in parts]
    return [rb.client.submit(operator.itemgetter(i), p, pure=False) for p in parts]


def _phi(rb: RowBlocks, states: list) -> list:
    return _pick(rb, states, 3)
