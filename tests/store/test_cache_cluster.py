"""The block cache on a real multi-worker cluster: reads run where their blocks
are cached (each worker has a cache directory of its own, standing in for a
host), never wait for a busy worker, and show on the workers' and the
scheduler's ``/metrics``."""

from __future__ import annotations

import os
import time
import urllib.request

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, wait

from lepton_dask.store.cache import counts


def _own_cache(base: str, dask_worker=None) -> str:
    d = os.path.join(base, str(dask_worker.name))
    dask.config.set({"lepton.store.cache.directory": d})
    return d


@pytest.fixture
def four(tmp_path, mongo_uri):
    with (
        LocalCluster(
            n_workers=4,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_own_cache, str(tmp_path / "hosts"))
        yield cluster, client


def _hits(client) -> tuple[int, int]:
    per = client.run(counts)
    return sum(c["hits"] for c in per.values()), sum(c["misses"] for c in per.values())


def _read(store, client):
    x = client.persist(store.get_array("feat"))
    wait(x)
    return x


def test_second_pass_runs_where_blocks_are_cached(store, four):
    _cluster, client = four
    data = np.random.default_rng(2).random((1600, 8))
    store.put_array("feat", data, chunks=(100, 8))
    first = _read(store, client)
    h0, m0 = _hits(client)
    assert (h0, m0) == (0, 16)
    del first
    time.sleep(0.5)  # let the scheduler forget the first pass's keys
    second = _read(store, client)
    np.testing.assert_array_equal(second.compute(), data)
    h1, m1 = _hits(client)
    assert (h1 - h0) / ((h1 - h0) + (m1 - m0)) >= 0.9


def _slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_read_does_not_wait_for_the_busy_worker_holding_its_blocks(store, four):
    cluster, client = four
    data = np.ones((400, 4))
    store.put_array("feat", data, chunks=(100, 4))
    a = next(iter(cluster.scheduler.workers))
    wait(client.persist(store.get_array("feat"), workers=[a]))  # all cached on a
    time.sleep(0.5)
    busy = client.submit(_slow, 20, workers=[a], pure=False)
    while not client.run(
        lambda dask_worker: len(dask_worker.state.executing), workers=[a]
    )[a]:
        time.sleep(0.05)
    t0 = time.monotonic()
    out = client.compute(store.get_array("feat").sum()).result(timeout=15)
    assert out == data.sum()
    assert time.monotonic() - t0 < 15 and not busy.done()
    busy.cancel()


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("lepton_store_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_cache_counters_on_worker_and_scheduler_metrics(store, four):
    cluster, client = four
    data = np.zeros((800, 4))
    store.put_array("feat", data, chunks=(100, 4))
    _read(store, client)  # 8 misses (dropped at once)
    time.sleep(0.5)
    _read(store, client)  # 8 hits
    ports = client.run(lambda dask_worker: dask_worker.http_server.port)
    workers = [_scrape(p) for p in ports.values()]
    hits = sum(w.get("lepton_store_cache_hits_total", 0) for w in workers)
    misses = sum(w.get("lepton_store_cache_misses_total", 0) for w in workers)
    # 16 block reads; the second pass mostly hits (placement is loose)
    assert hits + misses == 16 and hits >= 6
    cached = sum(w['lepton_store_bytes_read_total{source="cache"}'] for w in workers)
    server = sum(w['lepton_store_bytes_read_total{source="server"}'] for w in workers)
    assert cached == hits * data.nbytes // 8 and server == misses * data.nbytes // 8
    port = cluster.scheduler.http_server.port
    deadline = time.monotonic() + 20  # heartbeats bring the workers' counts
    while time.monotonic() < deadline:
        s = _scrape(port)
        if s.get("lepton_store_cache_hits_total") == hits:
            break
        time.sleep(0.25)
    assert s["lepton_store_cache_hits_total"] == hits  # each worker once
    assert s["lepton_store_cache_misses_total"] == misses
    assert s['lepton_store_bytes_read_total{source="cache"}'] == cached
    assert s['lepton_store_bytes_read_total{source="server"}'] == server
