"""The cupy path (run where a GPU is; skipped without cupy and a device)."""

from __future__ import annotations

import dask
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
    block moves once."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    x, _ = _data(n=12_000)
    store.put_array("mixed", x, chunks=(2000, 8))
    spec = {
        "cpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"CPU": 1}}},
        "gpu": {
            "cls": Nanny,
            "options": {"nthreads": 1, "resources": {"GPU": 1}, "memory_limit": 0},
        },
    }
    with (
        SpecCluster(
            workers=spec,
            scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
        ) as cluster,
        Client(cluster) as client,
    ):
        from distributed import get_task_stream, wait

        with get_task_stream(client) as ts:
            X = ops.persist_on(store.get_array("mixed"), {"CPU": 1})
            wait(X)
            Xg = ops.persist_on(ops.to_gpu(X), {"GPU": 1})
            wait(Xg)
            # submitted with the GPU resource: otherwise work stealing may move a
            # cupy block to the idle CPU worker
            with dask.annotate(resources={"GPU": 1}):
                g = client.compute(ops.gram(Xg), sync=True)
        np.testing.assert_allclose(g, x.T @ x, rtol=1e-10)
        from dask.utils import key_split

        workers = {
            w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()
        }
        ran: dict[str, set] = {}
        transfers = 0
        for rec in ts.data:
            ran.setdefault(key_split(rec["key"]), set()).add(rec["worker"])
            transfers += sum(1 for s in rec["startstops"] if s["action"] == "transfer")
        assert ran["lepton-read-mixed"] == {workers["cpu"]}
        assert ran["asarray"] == {workers["gpu"]}  # to_gpu
        assert ran["block_gram"] == {
            workers["gpu"]
        }  # (key_split drops the leading "_")
        assert transfers <= 6  # one per block (6 blocks), nothing moves twice
