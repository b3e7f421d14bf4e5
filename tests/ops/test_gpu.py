"""The cupy path (run where a GPU is; skipped without cupy and a device)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import sklearn.cluster
import sklearn.linear_model

from lepton_dask import ops

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]
cupy = pytest.importorskip("cupy")
if not ops.gpu_available():  # cupy installed but no device
    pytest.skip("no CUDA device", allow_module_level=True)


def _data(n=20_000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, size=(4, d))
    x = centers[rng.integers(4, size=n)] + rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def test_to_gpu_and_back_keeps_meta_and_values():
    x = np.arange(24.0).reshape(6, 4)
    X = ops.to_gpu(da.from_array(x, chunks=(2, 4)))
    assert type(X._meta).__module__.startswith("cupy")
    assert isinstance(X.blocks[0].compute(), cupy.ndarray)
    back = ops.to_cpu(X)
    assert isinstance(back._meta, np.ndarray)
    np.testing.assert_array_equal(back.compute(), x)


def test_moments_gram_covariance_on_gpu_match_numpy():
    x, _ = _data()
    X = ops.to_gpu(da.from_array(x, chunks=(3000, 8)))
    m = ops.column_moments(X).compute()
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(m.var, x.var(axis=0), rtol=1e-9)
    np.testing.assert_allclose(ops.gram(X).compute(), x.T @ x, rtol=1e-10)
    np.testing.assert_allclose(
        ops.covariance(X).compute(), np.cov(x, rowvar=False), rtol=1e-9
    )


def test_folded_column_reductions_on_the_device():
    """The two-stage column reductions (what makes moments fast on a GPU) on
    cupy blocks at their real width, against numpy and the CPU kernel."""
    from tests.ops.folding import check_folded_reductions, tall_block

    check_folded_reductions(cupy, tall_block())


def test_estimators_on_gpu_match_cpu():
    x, y = _data()
    X = da.from_array(x, chunks=(3000, 8))
    Y = da.from_array(y, chunks=(3000,))
    Xg, Yg = ops.to_gpu(X), ops.to_gpu(Y)
    Z = ops.StandardScaler().fit_transform(Xg)
    assert type(Z._meta).__module__.startswith("cupy")
    np.testing.assert_allclose(
        ops.to_cpu(Z).compute(), ops.StandardScaler().fit_transform(x), atol=1e-10
    )
    np.testing.assert_allclose(
        ops.PCA(3).fit(Xg).components_, ops.PCA(3).fit(X).components_, atol=1e-8
    )
    sk = sklearn.linear_model.LogisticRegression(tol=1e-10, max_iter=1000).fit(x, y)
    g = ops.LogisticRegression(tol=1e-10, max_iter=1000).fit(Xg, Yg)
    np.testing.assert_allclose(g.coef_, sk.coef_, rtol=1e-5, atol=1e-6)
    init = x[:4]
    km_g = ops.KMeans(4, init=init, tol=1e-8).fit(Xg)
    km_sk = sklearn.cluster.KMeans(4, init=init, n_init=1, tol=1e-8).fit(x)
    np.testing.assert_allclose(km_g.cluster_centers_, km_sk.cluster_centers_, atol=1e-8)
    labels = km_g.labels_.compute()
    np.testing.assert_array_equal(ops.to_numpy(labels), km_sk.labels_)


def test_mixed_cluster_cpu_reads_gpu_computes(store):
    """CPU workers read blocks from MongoDB, the GPU worker computes; each
    block moves once (the check is shared with a numpy test in test_ops.py)."""
    from tests.ops.placement import check_two_kind_placement

    x, _ = _data(n=12_000)
    # cupy data lives in device memory: no host-memory limit on the GPU worker
    check_two_kind_placement(store, x, ops.to_gpu, "asarray", memory_limit=0)
