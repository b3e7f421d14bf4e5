"""A mixed-cluster placement check shared by the numpy test (test_ops.py)
and the device test (test_gpu.py): a ``CPU`` worker reads from the store, a
``GPU`` worker computes, each block moves once."""

from __future__ import annotations

import time

import dask
import numpy as np
from dask.utils import key_split
from distributed import get_task_stream, wait

from lepton_dask import ops
from tests.helpers import nanny_cluster


def _slow_colsum(b):
    time.sleep(0.5)  # long enough for work stealing to move tasks off a busy worker
    return b.sum(axis=0, keepdims=True)


def check_two_kind_placement(store, x: np.ndarray, move, move_key: str, **gpu_opts):
    """Store ``x`` in 6 blocks, read them on the CPU worker, ``move`` them to
    the GPU worker (``move_key``: its tasks' key prefix), compute there.

    Without the ``dask.annotate`` at compute, work stealing moves slow block
    tasks (``_slow_colsum`` here; the first cupy kernels, which compile, on a
    GPU) to the idle CPU worker: seen on an H100, and on numpy here when the
    annotation is removed."""
    name = "two-kind"
    store.put_array(name, x, chunks=(x.shape[0] // 6, x.shape[1]))
    with nanny_cluster(
        cpu={"resources": {"CPU": 1}}, gpu={"resources": {"GPU": 1}, **gpu_opts}
    ) as (client, names):
        with get_task_stream(client) as ts:
            X = ops.persist_on(store.get_array(name), {"CPU": 1})
            wait(X)
            Xg = ops.persist_on(move(X), {"GPU": 1})
            wait(Xg)
            with dask.annotate(resources={"GPU": 1}):
                g = client.compute(ops.gram(Xg), sync=True)
                colsums = Xg.map_blocks(_slow_colsum, chunks=(1, x.shape[1]))
                s = ops.to_cpu(colsums).compute()
    np.testing.assert_allclose(g, x.T @ x, rtol=1e-10)
    np.testing.assert_allclose(s.sum(axis=0), x.sum(axis=0), rtol=1e-10)
    ran: dict[str, set] = {}
    transfers = 0
    for rec in ts.data:
        ran.setdefault(key_split(rec["key"]), set()).add(names[rec["worker"]])
        transfers += sum(1 for s in rec["startstops"] if s["action"] == "transfer")
    assert ran[f"lepton-read-{name}"] == {"cpu"}
    assert ran[move_key] == {"gpu"}
    assert ran["block_gram"] == {"gpu"}  # (key_split drops the leading "_")
    assert ran["slow_colsum"] == {"gpu"}
    assert transfers <= 6  # one per block, nothing moves twice
