"""The simulator knows what a real scheduler knows of task durations.

The same small graph (one prefix, four tasks run one after the other: 2.0,
0.4, 0.8 and 0.4 s) runs on a real scheduler and in the simulator; the
duration estimates are read tick by tick from both: the scheduler's own
(what stock Adaptive prices with) and the workload observer's (what the SLO
policy prices batches with).
"""

from __future__ import annotations

import time

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster

from lepton_dask._distributed import prefix_knowledge
from lepton_dask.scaling.state import Decision, PoolSpec
from lepton_dask.sim._estimates import DurationEstimates
from lepton_dask.sim.simulator import Simulator
from lepton_dask.sim.trace import Trace

DURATIONS = [2.0, 0.4, 0.8, 0.4]
UNKNOWN = 0.5
TICK = 0.25
HEARTBEAT = 0.5  # distributed's worker heartbeat on a cluster this small
CONFIG = {
    "distributed.scheduler.unknown-task-duration": f"{UNKNOWN}s",
    "distributed.scheduler.default-task-durations": {},
}


def _real() -> list[tuple[float, tuple, tuple]]:
    """(seconds since submission, the scheduler's (estimate, measured), the
    workload observer's (estimate, measured)) on a real scheduler."""
    from lepton_dask.cost.observer import WorkloadObserver

    def read(dask_scheduler):
        obs = dask_scheduler.plugins[WorkloadObserver.name]
        theirs = prefix_knowledge(dask_scheduler, "nap")
        ours = obs.tracker.knowledge(dask_scheduler, "nap")
        return theirs[:2], ours[:2]

    with (
        dask.config.set(CONFIG),
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run_on_scheduler(
            lambda dask_scheduler: WorkloadObserver().attach(dask_scheduler)
        )
        t0 = time.time()
        futures = [
            client.submit(time.sleep, d, key=f"nap-{i}", pure=False)
            for i, d in enumerate(DURATIONS)
        ]
        out = []
        while not all(f.done() for f in futures):
            theirs, ours = client.run_on_scheduler(read)
            out.append((time.time() - t0, tuple(theirs), tuple(ours)))
            time.sleep(TICK)
        return out


class _Recorder:
    """A policy that keeps one worker and notes the estimates it is shown:
    the scheduler's (``scheduler_work``) and the observer's (``work``)."""

    def __init__(self):
        self.seen: list[tuple[float, tuple, tuple]] = []

    def decide(self, view):
        for b in view.batches:
            if b.tasks:
                measured = not b.unmeasured.get("cpu")
                theirs = b.scheduler_work["cpu"] / b.tasks
                ours = b.work["cpu"] / b.tasks
                # measured: as the observer sees it (the scheduler agrees here:
                # no running task exceeds twice its average)
                self.seen.append((view.now, (theirs, None), (ours, measured)))
        return Decision({"cpu": 1}, "keep one")


def _simulated() -> list[tuple[float, tuple, tuple]]:
    n = len(DURATIONS)
    trace = Trace(
        "naps",
        np.zeros(n),
        np.array(DURATIONS),
        np.zeros(n, np.int8),
        np.zeros(n, int),
        prefix=["nap"] * n,
    )
    policy = _Recorder()
    with dask.config.set(CONFIG):
        Simulator(
            trace,
            [PoolSpec("cpu", threads=1, max_workers=1)],
            policy,
            initial={"cpu": 1},
            interval=TICK,
            minimum_billing=0.0,
        ).run()
    return policy.seen


def _at(samples, t):
    return min(samples, key=lambda s: abs(s[0] - t))


@pytest.fixture(scope="module")
def both():
    return _real(), _simulated()


def _pairs(both, which: int):
    """``(t, real estimate, measured, simulated estimate)`` at the ticks the
    two runs share, for the scheduler's estimate (``which`` 1) or the
    observer's (2); measured is the observer's on both sides. They may
    disagree on being measured only around the first finish (2.0 s),
    within a heartbeat."""
    real, sim = both
    for t, *estimates in real:
        ts, *sim_estimates = _at(sim, t)
        if abs(ts - t) > TICK:
            continue
        real_est, sim_est = estimates[which - 1][0], sim_estimates[which - 1][0]
        real_measured, sim_measured = estimates[1][1], sim_estimates[1][1]
        if real_measured != sim_measured:
            assert abs(t - DURATIONS[0]) <= HEARTBEAT + TICK, (t, real_est, sim_est)
            continue
        yield t, real_est, real_measured, sim_est


def _compare(both, which: int, expected: list[float]) -> list[tuple[float, float]]:
    """Real against simulated, tick by tick: a measured estimate is the
    same average of the same finished tasks on both (sleep overhead aside),
    one of ``expected``; a guess is within two heartbeats of the simulated
    one. Returns the guesses ``(t, real estimate)``."""
    guesses, compared = [], 0
    for t, real_est, measured, sim_est in _pairs(both, which):
        compared += 1
        if measured:
            assert real_est == pytest.approx(sim_est, abs=0.06), (t, real_est, sim_est)
            assert min(abs(real_est - e) for e in expected) < 0.06
        else:
            assert abs(real_est - sim_est) <= 2 * (HEARTBEAT + TICK), (t, real_est)
            guesses.append((t, real_est))
    assert compared >= 8
    return guesses


def test_estimates_follow_the_scheduler_tick_by_tick(both):
    """The scheduler's own estimate (what stock Adaptive prices occupancy
    with): unknown-task-duration, twice the longest running time, then the
    weight-1/2 average, in the simulator as on the real scheduler."""
    expected, avg = [], -1.0
    for d in DURATIONS[:-1]:
        avg = d if avg < 0 else 0.5 * d + 0.5 * avg
        expected.append(avg)
    for t, est in _compare(both, 1, expected):
        # unknown-task-duration, then twice the longest running time, as of
        # the last heartbeat (real) or tick (simulated)
        assert est == UNKNOWN or 2 * (t - HEARTBEAT - TICK) <= est
        assert est <= max(UNKNOWN, 2 * t) + 0.05


def test_the_policy_sees_the_mean_of_finished_tasks(both):
    """What the SLO policy prices batches with: the mean of the prefix's
    finished tasks, one standard error high (the workload observer keeps
    it), the same in the simulator as on the real scheduler; the scheduler's
    rule before."""
    from lepton_dask.cost.observer import DurationRecord

    bounds, rec = [], DurationRecord()
    for d in DURATIONS[:-1]:
        rec.add(d)
        bounds.append(rec.estimate)
    assert bounds[0] == 2 * DURATIONS[0]  # one task: up to twice it
    _compare(both, 2, bounds)


def test_prior_then_measurement_then_reset():
    """default-task-durations first; a running task longer than twice the
    average discards it (TaskPrefix.add_exec_time)."""
    with dask.config.set({"distributed.scheduler.default-task-durations": {"a": "1s"}}):
        k = DurationEstimates(["a", "b"])
    assert (k.estimate(0), k.measured(0)) == (1.0, True)
    assert not k.measured(1)
    k.executing(0, 2.5)  # more than twice the prior: back to a guess
    assert (k.estimate(0), k.measured(0)) == (5.0, False)
    k.finished(0, 3.0)
    assert (k.estimate(0), k.measured(0)) == (3.0, True)


def test_the_policy_says_when_it_sized_on_a_prior():
    """With the prefix's duration configured (default-task-durations), the
    SLO policy's first decisions say they sized on a prior; once a task has
    finished they no longer do."""
    from lepton_dask.scaling.slo import SLOPolicy

    n = 20
    trace = Trace(
        "p",
        np.zeros(n),
        np.full(n, 2.0),
        np.zeros(n, np.int8),
        np.zeros(n, int),
        {0: 60.0},
        prefix=["nap"] * n,
    )
    with dask.config.set(
        {"distributed.scheduler.default-task-durations": {"nap": 2.0}}
    ):
        r = Simulator(
            trace,
            [PoolSpec("cpu", threads=1, max_workers=8, startup_s=5.0)],
            SLOPolicy(deadline=60.0),
            minimum_billing=0.0,
        ).run()
    reasons = [d["reason"] for _, d in r.decisions if d.get("batches")]
    assert "sized on a prior" in reasons[0]
    assert not any("sized on a prior" in x for x in reasons[-3:])
    assert r.deadline_met == 1.0
