"""Run recordings on real schedulers with a real ledger: graph shape, duration
distributions, workload keys, restarts, partial runs, no credentials, size."""

from __future__ import annotations

import json
import time
import uuid

import bson
import dask
import numpy as np
import pytest
from distributed import Client

import lepton_dask
from lepton_dask.cost import CostMonitor, Ledger, RunRecorder
from lepton_dask.cost.recording import RUNS, recording, recordings
from lepton_dask.store import EmbeddedServer
from lepton_dask.store._spec import StoreSpec
from lepton_dask.store._uri import close_clients
from tests.helpers import cluster_with, wait_for

pytestmark = pytest.mark.timeout(90)

PLANTED = "Pl4nted-rec0rd-7a1d"


def work(i):
    time.sleep(0.01 + 0.002 * (i % 10))
    return i


def total(xs):
    return sum(xs)


def run_job(monitor, n=40, name="nightly"):
    """A map over ``n`` tasks then a reduction of all of them, as workload
    ``name``; returns the result."""
    with cluster_with(monitor) as cluster, Client(cluster) as client:
        with lepton_dask.workload(name):
            futs = client.map(work, range(n))
            out = client.submit(total, futs).result()
        if monitor.recorder is not None:
            wait_for(lambda: monitor.recorder.unfinished == 0, 10)
    return out


def test_recording_keeps_graph_durations_and_survives_a_restart(mongo_uri):
    spec = StoreSpec(mongo_uri, f"rec_{uuid.uuid4().hex[:8]}", 10.0)
    ledger = Ledger(spec)
    m1 = CostMonitor(ledger=ledger, run_id="r1", minimum_billing=0, flush_interval=0.1)
    assert run_job(m1) == sum(range(40))
    doc = recording(spec, "r1")
    assert doc["workload"] == "nightly" and doc["workload_source"] == "annotation"
    assert doc["complete"] and not doc["partial"] and doc["unfinished"] == 0
    groups = {g["prefix"]: g for g in doc["groups"]}
    assert set(groups) == {"work", "total"}
    w, t = groups["work"], groups["total"]
    assert (w["tasks"], w["done"], t["tasks"], t["done"]) == (40, 40, 1, 1)
    assert t["deps"] == [doc["groups"].index(w)] and t["edges"] == [40]
    assert w["pools"] == ["default"] and w["pool_tasks"] == [40] and not w["gpu"]
    d = w["duration"]
    assert d["count"] == 40 and sum(d["counts"]) == 40
    assert d["min"] >= 0.01 and d["max"] >= 0.028 and d["min"] <= d["p50"] <= d["max"]
    # at least what the tasks slept (0.019 s on average); more on a busy machine
    assert 0.0185 <= d["sum"] / 40 < 0.1
    assert [b["tasks"] for b in doc["batches"]] == [[40], [1]]
    assert doc["batches"][0]["arrival"] == 0.0 <= doc["batches"][1]["arrival"]

    # a new scheduler on the same store sees the earlier run of the workload
    m2 = CostMonitor(ledger=ledger, run_id="r2", minimum_billing=0, flush_interval=0.1)
    with cluster_with(m2) as cluster, Client(cluster) as client:
        with lepton_dask.workload("nightly"):
            client.submit(work, 1).result()
        wait_for(lambda: len(m2.history()) == 2, 10)
        assert [h["_id"] for h in m2.history()] == ["r1", "r2"]
    assert [h["_id"] for h in recordings(spec, "nightly")] == ["r1", "r2"]


def test_workload_from_config_or_derived_and_recording_off(mongo_uri):
    spec = StoreSpec(mongo_uri, f"rec_{uuid.uuid4().hex[:8]}", 10.0)
    with dask.config.set({"lepton.workload": "from-config"}):
        m = CostMonitor(ledger=Ledger(spec), run_id="c1", flush_interval=0.1)
    run_job(m, n=5, name="annotated")  # config wins over the annotation
    assert recording(spec, "c1")["workload"] == "from-config"
    a, b, c = RunRecorder("a"), RunRecorder("b"), RunRecorder("c")
    for r, prefixes in ((a, ["load", "fit"]), (b, ["fit", "load"]), (c, ["load"])):
        for p in prefixes:
            r._group(p, [])
    assert a.workload_key() == b.workload_key() != c.workload_key()
    assert a.workload_key()[1] == "derived" and a.workload_key()[0].startswith("auto-")
    with dask.config.set({"lepton.cost.record": False}):
        off = CostMonitor(ledger=Ledger(spec), run_id="off", flush_interval=0.1)
    assert off.recorder is None
    run_job(off, n=3)
    assert recording(spec, "off") is None


def test_interrupted_run_is_recorded_as_partial(mongo_uri):
    spec = StoreSpec(mongo_uri, f"rec_{uuid.uuid4().hex[:8]}", 10.0)
    m = CostMonitor(ledger=Ledger(spec), run_id="p1", flush_interval=0.1)
    cluster = cluster_with(m)
    client = Client(cluster)
    with lepton_dask.workload("interrupted"):
        done = client.map(work, range(4))
        client.gather(done)
        slow = client.map(time.sleep, [5.0] * 2 + [0.0] * 4, pure=False)
    wait_for(
        lambda: (
            cluster.scheduler.tasks
            and any(ts.state == "processing" for ts in cluster.scheduler.tasks.values())
        ),
        10,
    )
    cluster.close()  # the scheduler closes with tasks not done
    client.close()
    doc = recording(spec, "p1")
    assert doc["partial"] and not doc["complete"] and doc["unfinished"] >= 2
    assert "not done" in doc["partial_reason"]
    assert {g["prefix"] for g in doc["groups"]} == {"work", "sleep"}
    assert len(slow) == 6


def test_planted_password_is_not_in_the_recording(tmp_path):
    srv = EmbeddedServer(str(tmp_path / "auth"), auth=("alice", PLANTED)).start()
    try:
        assert PLANTED in srv.uri
        spec = StoreSpec(srv.uri, "sec", 10.0)
        m = CostMonitor(ledger=Ledger(spec), run_id="s1", flush_interval=0.1)
        with dask.config.set({"lepton.store.uri": srv.uri}):
            run_job(m, n=5, name="secret-job")
        raw = list(spec.db()[RUNS].find())
        assert len(raw) == 1 and raw[0]["workload"] == "secret-job"
        text = json.dumps(raw, default=str)
        assert PLANTED not in text and "alice" not in text
        assert PLANTED.encode() not in bson.encode(raw[0])
    finally:
        close_clients()
        srv.stop()


def test_ledger_bytes_do_not_grow_with_tasks():
    """The recording's size is set by its groups and batches, not its tasks:
    1,000,000 tasks in 10 groups and 100 batches (the figure in the README)."""
    sizes = {}
    rng = np.random.default_rng(0)
    for n in (10_000, 1_000_000):
        r = RunRecorder("size", workload="w")
        for gi in range(10):
            r._group(f"stage{gi}", [gi - 1] if gi else [])
        per = n // 10 // 100
        for b in range(100):
            r.batches.append(
                {
                    "arrival": float(b),
                    "deadline_s": 600.0,
                    "groups": list(range(10)),
                    "tasks": [per] * 10,
                }
            )
        for g in r.groups:
            g.tasks = n // 10
            for s in rng.lognormal(0.0, 1.0, n // 10):
                g.done += 1
                g.dur.add(float(s))
        r.close(0.0)
        sizes[n] = len(bson.encode(r.to_doc(0.0)))
    assert sizes[1_000_000] < 40_000
    assert sizes[1_000_000] < 1.3 * sizes[10_000]
    print(f"RESULT ledger bytes per 1M tasks: {sizes[1_000_000]}")
