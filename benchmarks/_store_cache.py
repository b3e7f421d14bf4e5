"""bench_store's cache stage: cold, warm, after a restart, and cache off.

On one array (1 GiB; ``--quick`` 128 MiB) in blocks of the default size, on
a LocalCluster of 2 workers x 1 thread sharing one cache directory (one host),
three alternating repetitions of:

- a cold read (cache on, emptied first) and a read with the cache off, in
  alternating order;
- a warm read on the same cluster;
- a warm read on a new cluster with the same cache directory (a restart).

A read is ``client.persist(store.get_array(name))`` until every block is in
worker memory (what an estimator's first pass does), then released. Bytes
fetched from the server and from the cache come from the workers' own
counters. Then ``hit_rate_multiworker``: on 4 workers x 1 thread, each with a
cache directory of its own (standing in for 4 hosts), the share of the second
pass's blocks served from a cache (three repetitions, caches emptied before
each).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import dask
import numpy as np
from _common import local_cluster, table

from lepton_dask.store import FeatureStore
from lepton_dask.store.cache import counts

GOALS = {
    "warm_vs_cold": (">=", 10),
    "warm_mib_s": (">=", 600),
    "server_warm_over_cold": ("<=", 0.02),
    "hit_rate_multiworker": (">=", 0.9),
    "overhead_cold": ("<=", 1.05),
}


def _configure(directory: str, enabled: bool = True, dask_worker=None) -> None:
    if dask_worker is not None and directory.endswith("{name}"):
        directory = directory.replace("{name}", str(dask_worker.name))
    dask.config.set(
        {
            "lepton.store.cache.enabled": enabled,
            "lepton.store.cache.directory": directory,
            "lepton.store.cache.max-bytes": "4GiB",
        }
    )


def _totals(client) -> dict[str, int]:
    per = client.run(counts).values()
    keys = ("hits", "misses", "bytes_cache", "bytes_server")
    return {k: sum(c[k] for c in per) for k in keys}


def _read(client, store: FeatureStore, name: str) -> dict[str, float]:
    """One read into worker memory: seconds and what came from where."""
    from distributed import wait

    before = _totals(client)
    t0 = time.perf_counter()
    x = client.persist(store.get_array(name))
    wait(x)
    seconds = time.perf_counter() - t0
    del x
    after = _totals(client)
    time.sleep(0.3)  # the scheduler forgets the keys before the next read
    return {"seconds": seconds, **{k: after[k] - before[k] for k in before}}


def _one_repetition(store, name, cache_dir, off_first: bool) -> dict[str, dict]:
    """cold and off (in the given order, after an untimed read so that neither
    pays for the server's own warm-up), warm, then warm after a restart; the
    cache directory is new (empty) for each repetition."""
    out: dict[str, dict] = {}
    with local_cluster(2, 1) as client:
        client.run(_configure, cache_dir, False)
        _read(client, store, name)  # untimed: the server's caches warm for both
        for what in ["off", "cold"] if off_first else ["cold", "off"]:
            client.run(_configure, cache_dir, what != "off")
            out[what] = _read(client, store, name)
        client.run(_configure, cache_dir, True)
        out["warm"] = _read(client, store, name)
    with local_cluster(2, 1) as client:
        client.run(_configure, cache_dir, True)
        out["restart"] = _read(client, store, name)
    return out


def _hit_rate(store, name: str, base: str) -> float:
    with local_cluster(4, 1) as client:
        client.run(_configure, os.path.join(base, "{name}"), True)
        _read(client, store, name)
        second = _read(client, store, name)
    return second["hits"] / max(second["hits"] + second["misses"], 1)


def run_cache_stage(uri: str, quick: bool) -> dict:
    """Measure; print the table; return the RESULT keys."""
    mib = 128 if quick else 1024
    cols = 64
    rows = mib * 2**20 // (8 * cols)
    X = np.random.default_rng(1).random((rows, cols))
    store = FeatureStore(uri, f"bench_cache_{int(time.time())}")
    store.put_array("feat", X, progress=False)  # default ("auto") blocks
    info = store.info("feat")
    del X
    nbytes = info["nbytes"]
    nblocks = int(np.prod([len(c) for c in info["chunks"]]))
    work = tempfile.mkdtemp(prefix="lepton-bench-cache-")
    try:
        reps = [
            _one_repetition(
                store, "feat", os.path.join(work, f"host-{i}"), off_first=i % 2 == 1
            )
            for i in range(3)
        ]
        rates = [
            _hit_rate(store, "feat", os.path.join(work, f"hosts-{i}")) for i in range(3)
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        store.db.client.drop_database(store.database)
    med = {
        what: {k: statistics.median(r[what][k] for r in reps) for k in reps[0][what]}
        for what in reps[0]
    }
    return _report(med, rates, nbytes, nblocks, info)


def _report(med, rates, nbytes, nblocks, info) -> dict:
    mibs = lambda t: nbytes / 2**20 / t  # noqa: E731
    r = {
        "cache_array_mib": round(nbytes / 2**20, 1),
        "cache_blocks": nblocks,
        "cold_mib_s": round(mibs(med["cold"]["seconds"]), 1),
        "off_mib_s": round(mibs(med["off"]["seconds"]), 1),
        "warm_mib_s": round(mibs(med["warm"]["seconds"]), 1),
        "restart_mib_s": round(mibs(med["restart"]["seconds"]), 1),
        "warm_vs_cold": round(med["cold"]["seconds"] / med["warm"]["seconds"], 2),
        "restart_vs_cold": round(med["cold"]["seconds"] / med["restart"]["seconds"], 2),
        "server_bytes_cold": int(med["cold"]["bytes_server"]),
        "server_bytes_warm": int(med["warm"]["bytes_server"]),
        "server_bytes_restart": int(med["restart"]["bytes_server"]),
        "hit_rate_multiworker": round(statistics.median(rates), 3),
        "hit_rates_multiworker": [round(x, 3) for x in rates],
        "overhead_cold": round(med["cold"]["seconds"] / med["off"]["seconds"], 3),
    }
    r["server_warm_over_cold"] = round(
        r["server_bytes_warm"] / max(r["server_bytes_cold"], 1), 4
    )
    rows = [
        [
            what,
            med[what]["seconds"],
            mibs(med[what]["seconds"]),
            int(med[what]["bytes_server"]),
            int(med[what]["bytes_cache"]),
        ]
        for what in ("cold", "warm", "restart", "off")
    ]
    print(
        f"\nblock cache: {r['cache_array_mib']} MiB in {nblocks} blocks of "
        f"{info['chunks'][0][0]} rows; medians of 3 alternating repetitions"
    )
    print(table(rows, ["read", "seconds", "MiB/s", "server bytes", "cache bytes"]))
    print(f"hit rate, second pass on 4 workers with separate caches: {rates}")
    for k, (op, goal) in GOALS.items():
        ok = r[k] >= goal if op == ">=" else r[k] <= goal
        print(f"{k:>22} = {r[k]:<10} goal {op} {goal}: {'met' if ok else 'MISSED'}")
    return r
