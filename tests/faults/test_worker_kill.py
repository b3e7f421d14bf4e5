"""A worker process killed with SIGKILL in the middle of a write, a read and
an estimator's fit: Dask reschedules, results equal a fault-free run, nothing
is duplicated or orphaned, and the previous version stays readable."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from lepton_dask import ops
from lepton_dask.store import FeatureStore
from lepton_dask.store.layout import BLOCKS_PREFIX, VERSIONS, parse_blocks_collection
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def proc_client():
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=50,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _slow(block, delay=0.25):
    time.sleep(delay)
    return block + 0.0


def kill_one_worker(client, when) -> int:
    """SIGKILL one worker process once ``when()`` is true; its pid."""
    wait_for(when, timeout=60, interval=0.02)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    return victim


def wait_for_workers(client, n=2):
    client.wait_for_workers(n, timeout=60)


def check_no_orphans(store: FeatureStore, name: str) -> None:
    store.gc(name, grace=0)
    live = {
        (d["name"], d["version"])
        for d in store.db[VERSIONS].find({"name": name, "state": "complete"})
    }
    colls = [
        c
        for c in store.db.list_collection_names()
        if c.startswith(BLOCKS_PREFIX) and parse_blocks_collection(c)[0] == name
    ]
    assert {parse_blocks_collection(c) for c in colls} <= live


def test_worker_killed_during_put_array(proc_client, store):
    import dask.array as da

    client = proc_client
    old = np.zeros((160, 4))
    store.put_array("k", old, chunks=(10, 4))
    x = np.arange(640.0).reshape(160, 4)
    xd = da.from_array(x, chunks=(10, 4)).map_blocks(_slow, dtype=float)
    reads, stop = [], threading.Event()

    def reader():  # the previous version stays readable throughout
        s = FeatureStore(store.uri, store.database)
        while not stop.is_set():
            reads.append(
                np.array_equal(s.get_array("k", 1).compute(scheduler="sync"), old)
            )

    t = threading.Thread(target=reader)
    t.start()
    result = {}
    w = threading.Thread(target=lambda: result.update(v=store.put_array("k", xd)))
    w.start()

    def some_blocks_written():
        return any(c.startswith(f"{BLOCKS_PREFIX}k:2") for c in store.db.list_collection_names()) and (
            sum(store.db[c].estimated_document_count() for c in store.db.list_collection_names()
                if c.startswith(f"{BLOCKS_PREFIX}k:2")) >= 2
        )  # fmt: skip

    kill_one_worker(client, some_blocks_written)
    w.join(180)
    stop.set()
    t.join(60)
    assert result["v"] == 2
    np.testing.assert_array_equal(store.get_array("k").compute(), x)
    assert reads and all(reads)
    # exactly one part per block: a rerun replaced, never duplicated
    parts = sum(
        store.db[c].count_documents({})
        for c in store.db.list_collection_names()
        if c.startswith(f"{BLOCKS_PREFIX}k:2")
    )
    assert parts == 16
    check_no_orphans(store, "k")
    wait_for_workers(client)


def test_worker_killed_during_read(proc_client, store):
    client = proc_client
    x = np.arange(800.0).reshape(200, 4)
    store.put_array("r", x, chunks=(10, 4))
    y = store.get_array("r").map_blocks(_slow, dtype=float)
    fut = client.compute(y.sum(axis=0))
    kill_one_worker(
        client, lambda: client.processing() and any(client.processing().values())
    )
    np.testing.assert_allclose(fut.result(timeout=180), x.sum(axis=0))
    wait_for_workers(client)


def test_worker_killed_during_a_fit(proc_client, store):
    client = proc_client
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 5))
    yv = (x @ np.arange(1.0, 6.0) + 0.3 * rng.standard_normal(4000) > 0).astype(float)
    store.put_array("fx", x, chunks=(500, 5))
    store.put_array("fy", yv, chunks=(500,))
    X, Y = store.get_array("fx"), store.get_array("fy")
    clean = ops.LogisticRegression(C=1.0).fit(X, Y)
    Xs = X.map_blocks(_slow, 0.05, dtype=float)
    out = {}
    t = threading.Thread(
        target=lambda: out.update(m=ops.LogisticRegression(C=1.0).fit(Xs, Y))
    )
    t.start()
    kill_one_worker(
        client, lambda: client.processing() and any(client.processing().values())
    )
    t.join(200)
    np.testing.assert_allclose(out["m"].coef_, clean.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        out["m"].intercept_, clean.intercept_, rtol=1e-7, atol=1e-9
    )
    wait_for_workers(client)
