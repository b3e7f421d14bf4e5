"""Every operation and estimator, run twice on the same arrays on one cluster,
never submits a key with another task behind it (distributed logs "Detected
different `run_spec`" when two computations share a key: dask/dask#9888)."""

from __future__ import annotations

import contextlib
import io
import logging

import dask
import dask.array as da
import numpy as np
import pytest

from lepton_dask import ops

pytestmark = pytest.mark.timeout(180)


def _steps(X, y, y3, Xd):
    """Each operation and estimator once; results (futures, arrays) kept."""
    Z = ops.StandardScaler().fit_transform(X).persist()
    clf = ops.LogisticRegression().fit(X, y)
    multi = ops.LogisticRegression().fit(X, y3)
    km = ops.KMeans(3, random_state=0).fit(X)
    pca = ops.PCA(2).fit(X)
    lin = ops.LinearRegression().fit(X, Xd[:, 0])
    ridge = ops.Ridge(alpha=1.0).fit(X, Xd[:, :2])
    return [
        ops.column_moments(X).compute(),
        ops.gram(X).compute(),
        ops.covariance(X).compute(),
        ops.correlation(X).compute(),
        ops.standardize(Xd).compute(),
        Z,
        ops.StandardScaler().fit(Xd).transform(Xd).compute(),
        pca.transform(X).compute(),
        pca.inverse_transform(pca.transform(X)).compute(),
        clf.predict(X).compute(),
        clf.predict_proba(X).compute(),
        clf.score(X, y),
        multi.predict(X).compute(),
        multi.score(X, y3),
        km.predict(X).compute(),
        km.labels_.compute(),
        km.transform(X).compute(),
        km.score(X),
        lin.predict(X).compute(),
        lin.score(X, Xd[:, 0]),
        ridge.predict(Xd).compute(),
        ridge.score(Xd, Xd[:, :2]),
    ]


@contextlib.contextmanager
def scheduler_log():
    """The scheduler's log (this process: LocalCluster's scheduler), at debug."""
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("distributed.scheduler")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # later collisions of a group log at debug
    try:
        yield log
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _inc(x):
    return x + 1


def _barrier(client):
    """Return once the scheduler has handled every graph this client sent:
    a fresh task's graph goes after them on the same stream. (A computation
    whose keys are already in memory returns before the scheduler has read
    its graph, and so before it logs a collision.)"""
    client.submit(_inc, 0, pure=False).result()


def test_the_log_capture_sees_a_collision(client):
    """The check below would fail: two tasks under one key are reported."""
    a = dask.delayed(_inc)(1, dask_key_name="input-a")
    b = dask.delayed(_inc)(2, dask_key_name="input-b")
    with scheduler_log() as log:
        first = client.compute(dask.delayed(_inc)(a, dask_key_name="same-key"))
        first.result()
        second = client.compute(dask.delayed(_inc)(b, dask_key_name="same-key"))
        second.result()
        _barrier(client)
    assert "Detected different `run_spec`" in log.getvalue()


def test_no_key_collisions_when_everything_runs_twice(client):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8000, 5))
    X = da.from_array(x, chunks=(1000, 5)).persist()
    # derived, not persisted: labels and a second array built from X's graph
    # (fused differently by each computation that uses them)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    y3 = (X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 0.5)
    Xd = X * 2.0 + 1.0
    with scheduler_log() as log:
        first = _steps(X, y, y3, Xd)
        second = _steps(X, y, y3, Xd)  # while the first results are alive
        _barrier(client)
    assert "Detected different `run_spec`" not in log.getvalue(), log.getvalue()[:4000]
    np.testing.assert_allclose(first[1], second[1])
