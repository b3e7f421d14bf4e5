"""The one apply step, and its three consumers carrying out the same plan.

A table of (decision, view, bounds) cases: the plan of
:func:`lepton_dask.scaling.apply.plan_apply`, then what the simulator,
the Kubernetes scaler and ``CostAwareAdaptive`` (on a real LocalPoolCluster)
each do with the same case. All three must launch the plan's count and
retire exactly the plan's workers.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from lepton_dask.deploy.k8s_scaler import GroupRef, replica_patches
from lepton_dask.scaling import CostAwareAdaptive
from lepton_dask.scaling.apply import ChurnCounter, plan_apply
from lepton_dask.scaling.pools import LocalPoolCluster
from lepton_dask.scaling.state import ClusterView, Decision, PoolSpec, WorkerView
from lepton_dask.sim._event_loop import EventLoop
from lepton_dask.sim.simulator import Simulator
from lepton_dask.sim.trace import Trace

POOL = PoolSpec("cpu", max_workers=6)
NOW = 100.0
MINIMUM_BILLING = 60.0

# (label, workers as (busy, billed_since, arrived), targets, release (indices), bounds)
CASES = [
    ("grow", [(True, 0.0, True)], 3, None, (0, math.inf)),
    (
        "shrink to releasable",
        [
            (False, 0.0, True),
            (True, 0.0, True),
            (False, 90.0, True),
            (False, 10.0, True),
        ],
        1,
        None,
        (0, math.inf),
    ),
    (
        "named first",
        [(False, 0.0, True), (False, 10.0, True), (False, 20.0, True)],
        1,
        [2],
        (0, math.inf),
    ),
    (
        "named, then releasable",
        [(False, 0.0, True), (False, 10.0, True), (False, 20.0, True)],
        0,
        [1],
        (0, math.inf),
    ),
    ("minimum holds", [(False, 0.0, True), (False, 0.0, True)], 0, None, (1, math.inf)),
    (
        "maximum forces a busy one",
        [(True, 0.0, True), (True, 5.0, True), (True, 50.0, True)],
        3,
        None,
        (0, 2),
    ),
    (
        "nothing releasable",
        [(True, 0.0, True), (False, 95.0, True)],
        0,
        None,
        (0, math.inf),
    ),
]


def _case(workers, names, target, release):
    view = ClusterView(
        now=NOW,
        pools={"cpu": POOL},
        backlog={},
        minimum_billing=MINIMUM_BILLING,
        workers=[
            WorkerView(n, "cpu", since, busy, arrived)
            for n, (busy, since, arrived) in zip(names, workers, strict=True)
        ],
    )
    rel = None if release is None else {"cpu": [names[i] for i in release]}
    return view, Decision({"cpu": target}, "case", release=rel)


def _expected(view, decision, bounds):
    p = plan_apply(decision, view, minimum=bounds[0], maximum=bounds[1]).pools["cpu"]
    return p


def test_plan_rules():
    view, d = _case(*_args(CASES[2]))
    assert _expected(view, d, CASES[2][4]).retire == ("w2", "w0")  # named, then oldest
    view, d = _case(*_args(CASES[5]))
    p = _expected(view, d, CASES[5][4])
    assert p.target == 2 and len(p.retire) == 1  # forced by the maximum
    view, d = _case(*_args(CASES[6]))
    p = _expected(view, d, CASES[6][4])
    assert p.target == 2 and p.retire == ()  # busy / unpaid ones are not released


def _args(case, names=None):
    _, workers, target, release, _ = case
    names = names or [f"w{i}" for i in range(len(workers))]
    return workers, names, target, release


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_simulator_carries_out_the_plan(case):
    workers, _, target, release = _args(case)
    sim = Simulator(
        Trace("none", np.zeros(0), np.zeros(0), np.zeros(0, np.int8), np.zeros(0, int)),
        [POOL],
        None,
        minimum_billing=MINIMUM_BILLING,
    )
    run = EventLoop(sim)
    run.now = NOW
    for busy, since, arrived in workers:
        w = run.launch(POOL, since, arrived=arrived)
        if busy:
            w.running.add(-1)  # a task of someone else's
    names = [str(w) for w in run.workers]
    view, decision = _case(workers, names, target, release)
    # the simulator has no scaler bounds of its own: its pools' limits only
    plan = _expected(view, decision, (0, math.inf))
    launched, retired = run.apply(decision, view)
    assert retired == list(plan.retire)
    assert len(launched) == plan.launch
    assert len(run.workers) == plan.target


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_k8s_scaler_carries_out_the_plan(case):
    workers, names, target, release = _args(case)
    view, decision = _case(workers, names, target, release)
    # the Kubernetes scaler's bounds are its groups' pool limits
    plan = _expected(view, decision, (0, math.inf))
    group = GroupRef("cpu", "DaskCluster", "lepton", POOL)
    patches = replica_patches(decision, view, [group], {"cpu": len(workers)})
    if plan.target == plan.have:
        assert patches == []
    else:
        (p,) = patches
        assert (p["to"], tuple(p["retire"])) == (plan.target, plan.retire)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cost_aware_adaptive_carries_out_the_plan(case):
    """On a real LocalPoolCluster with the case's workers: the workers it
    launches and exactly the ones it retires are the plan's."""
    workers, _, target, release = _args(case)
    lo, hi = case[4]

    async def main():
        async with LocalPoolCluster(
            [POOL], processes=False, minimum={"cpu": len(workers)}, asynchronous=True
        ) as cluster:
            ad = CostAwareAdaptive(
                cluster,
                policy=None,
                interval="1h",
                minimum=lo,
                maximum=hi if math.isfinite(hi) else len(workers) + 10,
                pool=POOL,
            )
            ad.stop()  # apply by hand, no loop
            names = sorted(cluster.worker_spec)
            view, decision = _case(workers, names, target, release)
            plan = plan_apply(
                decision, view, minimum=ad.minimum, maximum=ad.maximum
            ).pools["cpu"]
            launched, retired = await ad.apply(decision, view)
            assert retired == list(plan.retire)
            assert len(launched) == plan.launch
            assert sorted(cluster.worker_spec) == sorted(
                (set(names) - set(retired)) | set(launched)
            )

    asyncio.run(asyncio.wait_for(main(), 60))


def test_churn_counts_relaunches_within_one_startup():
    c = ChurnCounter()
    c.record(0.0, "cpu", launched=3, retired=0, startup_s=60.0)
    c.record(100.0, "cpu", launched=0, retired=2, startup_s=60.0)
    c.record(150.0, "cpu", launched=1, retired=0, startup_s=60.0)  # within 60 s
    c.record(300.0, "cpu", launched=1, retired=0, startup_s=60.0)  # long after
    assert (c.launches, c.churn) == (5, 1)
    assert c.ratio == pytest.approx(0.2)
