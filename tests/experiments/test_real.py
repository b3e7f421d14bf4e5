"""Real runs: a policy that does not buy on a guess, and priors from history."""

from __future__ import annotations

import time
import uuid

import dask
import numpy as np
import pytest
from distributed import Client

from lepton_dask.experiments.real import run_trace_real
from lepton_dask.experiments.scenarios import Scenario
from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim.trace import Trace


@pytest.mark.timeout(120)
def test_unseen_prefix_ten_times_the_guess_meets_its_deadline():
    """24 tasks of 0.5 s whose prefix the scheduler has never seen, with
    unknown-task-duration at 0.05 s (a 10x underestimate): the SLO policy
    learns the duration on a probe worker before sizing, and the batch is
    done within its 8 s deadline on a real LocalPoolCluster (1 s startups)."""
    n = 24
    trace = Trace(
        "unseen",
        np.zeros(n),
        np.full(n, 0.5),
        np.zeros(n, np.int8),
        np.zeros(n, int),
        {0: 8.0},
        prefix=["unseen-work"] * n,
    )
    pool = PoolSpec("cpu", threads=1, startup_s=1.0, max_workers=12)
    scenario = Scenario("unseen", trace, [pool], minimum_billing=1.0)
    with dask.config.set({"distributed.scheduler.unknown-task-duration": "50ms"}):
        out = run_trace_real(
            scenario, lambda: SLOPolicy(deadline=8.0), interval=0.2, settle=5.0
        )
    assert out["deadline_met"] == 1.0
    assert any("sized on a probe" in r for r in out["reasons"]), out["reasons"]
    assert out["launches"] >= 2  # the probe, then the batch's workers


def _nap(x):
    time.sleep(0.2)
    return x


@pytest.mark.timeout(120)
def test_a_recorded_workloads_priors_reach_the_scheduler(mongo_uri):
    """A run of workload "daily" is recorded; a new scheduler of the same
    workload starts with its measured durations as
    ``distributed.scheduler.default-task-durations``, the scheduler's estimate
    of that prefix is the prior before any of its tasks ran, and closing the
    scheduler takes the priors back."""
    from lepton_dask.cost import CostMonitor, Ledger
    from lepton_dask.store._spec import StoreSpec
    from tests.helpers import cluster_with, wait_for

    spec = StoreSpec(mongo_uri, f"pr_{uuid.uuid4().hex[:8]}", 10.0)
    ledger = Ledger(spec)
    key = "distributed.scheduler.default-task-durations"
    with dask.config.set({"lepton.workload": "daily", key: {}}):
        m1 = CostMonitor(ledger=ledger, run_id="p1", minimum_billing=0)
        with cluster_with(m1) as cluster, Client(cluster) as client:
            client.gather(client.map(_nap, range(6)))
            wait_for(lambda: m1.recorder.unfinished == 0, 10)
        m2 = CostMonitor(ledger=ledger, run_id="p2", minimum_billing=0)
        with cluster_with(m2) as cluster, Client(cluster) as client:
            assert m2.priors["nap"] == pytest.approx(0.2, abs=0.05)
            assert dask.config.get(key)["nap"] == m2.priors["nap"]
            # a new prefix object starts from the prior, as TaskPrefix reads it
            est = client.run_on_scheduler(_estimate_of_a_new_prefix)
            assert est == pytest.approx(m2.priors["nap"])
        assert "nap" not in dask.config.get(key)  # taken back on close
    # without a workload key: nothing is installed
    m3 = CostMonitor(ledger=ledger, run_id="p3", minimum_billing=0)
    with cluster_with(m3):
        assert m3.priors == {}


def _estimate_of_a_new_prefix(dask_scheduler):
    from distributed.scheduler import TaskPrefix

    from lepton_dask._distributed import prefix_duration

    return prefix_duration(dask_scheduler, TaskPrefix("nap"))


@pytest.mark.parametrize("name", ["stream", "etl", "sawtooth", "cpu-gpu-cpu"])
def test_a_time_scaled_run_keeps_the_methods_floors(name):
    """The factor scale_for_real picks keeps fixed latencies small against
    the scaled world: the startup at least LAG_TIMES the start lag, the
    shortest 10% of tasks timeable, and no second of the run submitting more
    than MAX_SUBMITS_PER_S compute calls (the stream's spike at 332 a second
    starved the in-process workers of a 2-core machine)."""
    from lepton_dask.experiments import real
    from lepton_dask.experiments.scenarios import scenarios

    small, _ = real.scale_for_real(scenarios()[name], 45)
    tr = small.trace
    assert min(p.startup_s for p in small.pools) >= real.LAG_TIMES * real.START_LAG_S
    assert np.quantile(tr.duration, 0.1) >= real.MIN_SHORT_TASK_S * 0.999
    at = np.array([t for t, _, _ in real._groups(tr)])
    per_s = np.searchsorted(at, at + 1.0) - np.arange(len(at))
    assert per_s.max() <= real.MAX_SUBMITS_PER_S
