"""Model-predictive control on the forecast (lepton_dask.sim.mpc): the plan's
window, the program started from warm workers, the policy in the simulator,
and a solve that never blocks the caller."""

from __future__ import annotations

import threading

import dask
import numpy as np
import pytest

from lepton_dask.scaling import PredictivePolicy, SLOPolicy
from lepton_dask.scaling.forecast import Forecast
from lepton_dask.scaling.state import BatchView, ClusterView, PoolSpec, WorkerView
from lepton_dask.sim import mpc
from lepton_dask.sim.mpc import BilledSchedule, ForecastMPC, plan_window, solve_plan
from lepton_dask.sim.simulator import Simulator
from tests.scaling.test_predictive import arrivals_trace

POOL = PoolSpec("cpu", threads=2, startup_s=60, max_workers=50)


def fc(at: float, work: float = 120.0, width: float = 4.0) -> Forecast:
    return Forecast(at, at + width, work, 1, 2, 2, "recent")


def test_the_window_stops_at_a_gap_where_releasing_is_never_dearer():
    # cut = m + max(s, m) = 120 s between one batch's deadline and the next
    batches = [fc(100), fc(250), fc(2000)]
    start, out = plan_window(0.0, batches, [POOL], 90.0, 60.0)
    assert [a for a, _ in out] == [100, 250]  # 2000 - (250 + 90) >= 120
    assert start == 0.0  # the first batch is within the cut: plan from now
    # a first batch far away: the plan starts one cut before it, from none
    start, out = plan_window(0.0, [fc(1000)], [POOL], 90.0, 60.0)
    assert start == 1000 - 120 and [a for a, _ in out] == [1000]
    # work under way: the plan starts now and counts the gap from its deadline
    start, out = plan_window(0.0, [fc(1000)], [POOL], 90.0, 60.0, busy_until=80.0)
    assert start == 0.0 and out == []
    # a batch whose window is wider than the cut is left to the forecast's policy
    assert plan_window(0.0, [fc(100, width=500)], [POOL], 90.0, 60.0)[1] == []


def test_warm_workers_are_kept_through_a_short_gap_and_not_relaunched():
    """Two batches 40 s apart, 2 workers warm: the cheapest plan keeps them
    (a relaunch would pay a 60 s startup) and launches nothing."""
    now = 0.0
    batches = [(30.0, 120.0), (70.0, 120.0)]
    warm = solve_plan(now, batches, [POOL], {"cpu": 2}, 90.0, 1.0, 60.0)
    cold = solve_plan(now, batches, [POOL], {}, 90.0, 1.0, 60.0)
    assert warm is not None and cold is not None
    assert warm.status == cold.status == "optimal"
    b = warm.billed["cpu"]
    k_first, k_second = int(30 // warm.dt), int(70 // warm.dt)
    assert min(b[: k_second + 1]) >= 1  # never all released between them
    assert max(b) <= 2 + 1  # (the warm ones do the work)
    # the cold plan must launch ahead of the first batch: dearer
    assert sum(cold.billed["cpu"]) * cold.dt > sum(b) * warm.dt
    assert cold.billed["cpu"][k_first] >= 1


def test_plan_clock_waits_for_its_batch_and_follows_it_when_it_comes():
    plan = BilledSchedule(0.0, 10.0, {"cpu": [0, 2, 2, 2, 1, 0]}, [(20.0, 100.0)])
    assert plan.count("cpu", 5.0) == 0
    assert plan.count("cpu", 25.0) == 2
    # the batch is late: the plan holds its count at the batch's slot
    assert plan.count("cpu", 500.0) == 2
    plan.arrived = 30.0  # it came 10 s late: the plan shifts by 10 s
    assert plan.count("cpu", 45.0) == 2 and plan.count("cpu", 55.0) == 1
    assert plan.count("cpu", 75.0) is None  # past its end
    assert plan.count("gpu", 25.0) is None


def _recurring(repeats: int = 4):
    times, t = [], 0.0
    cycle = [40.0, 40.0, 1500.0]
    for k in range(3 * repeats):
        times.append(t)
        t += cycle[k % 3]
    return arrivals_trace(times), times


def test_the_planning_policy_follows_its_plan_and_meets_the_deadlines():
    trace, _ = _recurring()
    priors = {"cpu-map": float(trace.duration.mean())}
    with dask.config.set({"distributed.scheduler.default-task-durations": priors}):
        plain = Simulator(trace, [POOL], SLOPolicy(deadline=90)).run()
        policy = ForecastMPC(SLOPolicy(deadline=90), executor="inline")
        r = Simulator(trace, [POOL], policy).run()
    assert r.deadline_met == 1.0 and r.tasks_done == len(trace)
    assert r.cost_usd < plain.cost_usd
    assert policy.plans > 0
    planned = [d for _, d in r.decisions if d.get("plan", "").startswith("plan of")]
    assert planned
    # no plan before the forecast has a pattern, and the log says why
    assert r.decisions[0][1]["plan"] == "none: no period or regular pattern yet"
    assert any("plan: cpu" in d["reason"] for _, d in r.decisions)


def test_a_plan_solve_never_blocks_the_decision():
    """The solve runs on the planning thread: decide() returns while it is
    held, and the plan is adopted at the first decision after it is done."""
    release, entered = threading.Event(), threading.Event()
    where: list[str] = []
    real = mpc.solve_plan

    def held(*args, **kwargs):
        where.append(threading.current_thread().name)
        entered.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    policy = ForecastMPC(PredictivePolicy(SLOPolicy(deadline=90)))
    try:
        t = 0.0
        for _ in range(4):  # a regular pattern: the forecast engages
            policy.predictive.forecast.observe(t, 120.0)
            t += 300.0
        view = _idle_view(t - 300.0 + 100.0)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(mpc, "solve_plan", held)
            d = policy.decide(view)  # returns although the solve is held
            assert entered.wait(30)
            assert where and where[0].startswith("lepton-plan")
            assert where[0] != threading.current_thread().name
            assert "plan of" not in d.detail.get("plan", "")
            assert policy._plan is None
            release.set()
            policy._future.result(timeout=60)
            d = policy.decide(_idle_view(view.now + 1.0))
        assert policy._plan is not None
        assert d.detail["plan"].startswith("plan of 1 forecast batch")
    finally:
        release.set()
        policy.close()


def _idle_view(now: float) -> ClusterView:
    workers = [WorkerView(f"w{i}", "cpu", now - 500.0, busy=False) for i in range(2)]
    b = BatchView("b", now - 100.0, {"cpu": 0.0}, {"cpu": 120.0}, deadline_s=90.0)
    return ClusterView(
        now=now, pools={"cpu": POOL}, workers=workers, backlog={}, batches=[b]
    )


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="PredictivePolicy or an SLOPolicy"):
        ForecastMPC(object())
    with pytest.raises(ValueError, match="executor must be"):
        ForecastMPC(SLOPolicy(deadline=90), executor="process")
    with pytest.raises(ValueError, match="horizon must be"):
        ForecastMPC(SLOPolicy(deadline=90), horizon=0)


def test_warm_rows_in_the_program_start_from_the_given_workers():
    """B[0] <= warm + L[0]: with 3 warm and work due at once, no launch is
    needed (a launch would be billed its startup for nothing)."""
    p = solve_plan(0.0, [(0.0, 300.0)], [POOL], {"cpu": 3}, 60.0, 1.0, 60.0)
    assert p is not None
    assert np.asarray(p.billed["cpu"]).max() <= 3
