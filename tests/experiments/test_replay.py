"""Replay recorded runs: record a real run into the ledger, rebuild its trace,
sweep it; partial recordings warn; unknown runs and workloads are named."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from distributed import Client

import lepton_dask
from lepton_dask.cost import CostMonitor, Ledger
from lepton_dask.cost.recording import recording, write_recording
from lepton_dask.experiments import replay
from lepton_dask.scaling import deadline
from lepton_dask.store._spec import StoreSpec
from tests.helpers import cluster_with, wait_for

pytestmark = pytest.mark.timeout(120)


def work(i):
    time.sleep(0.01 + 0.003 * (i % 10))
    return i


def total(xs):
    return sum(xs)


@pytest.fixture
def recorded(mongo_uri):
    """A real run of workload ``etl`` (map of 30, a reduction, then a second
    batch of 10) recorded in a fresh database; yields the store and run id."""
    spec = StoreSpec(mongo_uri, f"rep_{uuid.uuid4().hex[:8]}", 10.0)
    run = f"run-{uuid.uuid4().hex[:6]}"
    m = CostMonitor(ledger=Ledger(spec), run_id=run, flush_interval=0.1)
    with cluster_with(m) as cluster, Client(cluster) as client:
        with lepton_dask.workload("etl"), deadline(120):
            futs = client.map(work, range(30))
            client.submit(total, futs).result()
        with lepton_dask.workload("etl"):
            client.gather(client.map(work, range(100, 110)))
        wait_for(lambda: m.recorder.unfinished == 0, 10)
    return spec, run


def test_round_trip_keeps_shape_and_durations(recorded):
    spec, run = recorded
    doc = recording(spec, run)
    tr = replay.trace_from_run(run, spec)
    assert len(tr) == 41 and tr.deps is not None
    assert sorted(np.unique(tr.burst).tolist()) == [0, 1, 2]
    assert tr.deadline == {0: 120.0, 1: 120.0}
    # the reduction depends on all 30 maps of its batch
    (red,) = [i for i, d in enumerate(tr.deps) if d]
    assert sorted(tr.deps[red]) == list(range(30)) and tr.burst[red] == 1
    groups = {g["prefix"]: g for g in doc["groups"]}
    rec = groups["work"]["duration"]
    maps = np.array([i for i in range(len(tr)) if i != red])
    assert tr.duration[maps].mean() == pytest.approx(
        rec["sum"] / rec["count"], rel=0.05
    )
    assert (
        rec["min"] <= tr.duration[maps].min() and tr.duration[maps].max() <= rec["max"]
    )
    assert np.quantile(tr.duration[maps], 0.9) == pytest.approx(rec["p90"], rel=0.25)
    assert tr.submit[0] == 0.0 and tr.submit[-1] >= tr.submit[red] >= 0
    assert (tr.kind == 0).all()
    # deterministic: the same seed, the same trace; the workload's latest run
    again = replay.trace_from_workload("etl", spec)
    np.testing.assert_array_equal(again.duration, tr.duration)
    assert again.deps == tr.deps
    # from a notebook: the run as a scenario, simulated under a policy
    from lepton_dask.experiments.scenarios import scenario_from_run, slo_policy
    from lepton_dask.experiments.sweep import simulate

    sc = scenario_from_run(run, spec)
    np.testing.assert_array_equal(sc.trace.duration, tr.duration)
    assert [p.name for p in sc.pools] == ["cpu"]
    sim = simulate(sc, slo_policy(sc.trace))
    assert sim.tasks_done == len(tr) and sim.deadline_met == 1.0


def test_sweep_from_the_command_line(recorded, tmp_path):
    spec, run = recorded
    cli = [
        sys.executable,
        "-m",
        "lepton_dask.cli",
        "experiment",
        "--uri",
        spec.uri,
        "--database",
        spec.database,
        "--out",
        str(tmp_path),
        "--oracle-seconds",
        "5",
    ]
    done = subprocess.run(
        [*cli, "--workload", "etl"], capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"run:{run}" in done.stdout
    names = {p.name for p in tmp_path.iterdir()}
    assert {"runs.csv", "summary.md"} <= names
    assert any(n.startswith("pareto-") and n.endswith(".png") for n in names)
    assert any(n.startswith("timeline-") and n.endswith(".png") for n in names)
    bad = subprocess.run(
        [*cli, "--run", "nope"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "no recording of run 'nope'" in bad.stderr
    assert run in bad.stderr


def test_partial_replays_with_a_warning_and_unknown_names_error(recorded):
    spec, run = recorded
    doc = recording(spec, run)
    doc.update(
        _id="cut",
        run="cut",
        partial=True,
        complete=False,
        partial_reason="the scheduler closed with 5 tasks not done",
    )
    doc["groups"][0]["duration"].update(count=0, sum=0.0, bins=[], counts=[])
    write_recording(spec, doc)
    with pytest.warns(replay.PartialRecordingWarning, match="partial recording"):
        tr = replay.trace_from_run("cut", spec)
    assert len(tr) == 41 and (tr.duration > 0).all()
    # the workload's latest complete run is the real one, not the partial copy
    assert replay.trace_from_workload("etl", spec).name == f"run:{run}"
    with pytest.raises(replay.RecordingNotFoundError, match=f"recorded runs: .*{run}"):
        replay.trace_from_run("no-such-run", spec)
    with pytest.raises(replay.RecordingNotFoundError, match="recorded workloads: etl"):
        replay.trace_from_workload("no-such-job", spec)


def test_plan_from_history(recorded):
    from lepton_dask.experiments.plan import plan

    spec, run = recorded
    cli = [
        sys.executable,
        "-m",
        "lepton_dask.cli",
        "plan",
        "--uri",
        spec.uri,
        "--database",
        spec.database,
        "--workload",
        "etl",
    ]
    done = subprocess.run(
        [*cli, "--deadline", "2m"], capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert f"plan for run:{run} (deadline=120)" in out
    assert "100% of batches on time" in out and "Pareto front" in out
    assert "apply it:" in out and "CostAwareAdaptive, policy=" in out
    tr = replay.trace_from_workload("etl", spec)
    by_deadline = plan(tr, deadline=120, weights=(1.0,))
    rec = by_deadline["recommended"]
    on_time = [c for c in by_deadline["candidates"] if c["meets"]]
    assert rec["meets"] and rec["cost_usd"] <= min(c["cost_usd"] for c in on_time)
    budget = 2 * rec["cost_usd"]
    by_budget = plan(tr, budget=budget, weights=(1.0,))["recommended"]
    assert by_budget["meets"] and by_budget["cost_usd"] <= budget
    missing = subprocess.run(
        [*cli, "--deadline", "2m", "--run", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no recording of run 'nope'" in missing.stderr
