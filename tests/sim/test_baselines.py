"""The simulator's baselines: stock Adaptive's model against Dask's rules."""

from __future__ import annotations

import pytest

from lepton_dask.scaling.state import ClusterView, PoolSpec, WorkerView
from lepton_dask.sim.baselines import StockAdaptivePolicy
from tests.scaling.test_policies import busy, idle, view


def test_stock_adaptive_model_matches_dasks_rules():
    p = StockAdaptivePolicy(target_duration=5.0, wait_count=3)
    up = view([], {"cpu": 100.0}, {"cpu": 100})
    # ceil(100 / 5) threads; with no worker yet, one worker per thread
    # (Scheduler.adaptive_target divides by threads per worker only when
    # there are workers)
    assert p.decide(up).targets["cpu"] == 20
    few = view([], {"cpu": 100.0}, {"cpu": 3})
    assert p.decide(few).targets["cpu"] == 3  # capped by runnable tasks
    two = view([busy("a"), busy("b")], {"cpu": 100.0}, {"cpu": 100})
    assert p.decide(two).targets["cpu"] == 10  # 20 threads / 2 per worker
    workers = [idle("a"), idle("b")]
    down = view(workers, {"cpu": 0.0}, {"cpu": 0})
    assert [p.decide(down).targets["cpu"] for _ in range(3)] == [
        2,
        2,
        0,
    ]  # after wait_count


def test_stock_adaptive_never_closes_a_booting_worker():
    """Adaptive's not-yet-arrived workers are ``requested - observed``, and a
    SpecCluster's ``requested`` are the workers it has started: one still
    booting is in neither, and the scheduler's workers_to_close knows only
    arrived workers, so Adaptive leaves it to arrive."""
    p = StockAdaptivePolicy(target_duration=5.0, wait_count=1)
    booting = WorkerView("c", "cpu", 990.0, False, arrived=False)
    v = view([busy("a"), idle("b"), booting], {"cpu": 5.0}, {"cpu": 1})
    d = p.decide(v)  # one thread wanted: only the idle arrived worker goes
    assert d.targets["cpu"] == 2 and d.release["cpu"] == ["b"]


def test_invalid_target_duration_is_refused():
    with pytest.raises(ValueError, match="target_duration"):
        StockAdaptivePolicy(0)


def test_stock_adaptive_keeps_the_last_worker_holding_data():
    """As Scheduler.workers_to_close: the cluster keeps memory for its data."""

    pool = PoolSpec("cpu", max_workers=4)
    ws = [
        WorkerView("a", "cpu", 0.0, False, True, True),
        WorkerView("b", "cpu", 0.0, False, True),
    ]
    view = ClusterView(now=100.0, pools={"cpu": pool}, workers=ws, backlog={"cpu": 0.0})
    policy = StockAdaptivePolicy(5.0, wait_count=1)
    d = policy.decide(view)
    assert d.targets["cpu"] == 1 and d.release["cpu"] == ["b"]
    ws[0].holds_data = False  # the client let go of its results
    assert policy.decide(view).targets["cpu"] == 0


def test_simulated_held_results_keep_a_worker_until_the_end():
    from lepton_dask.sim import Simulator
    from lepton_dask.sim.trace import sawtooth

    trace = sawtooth(gaps=(30.0,), tasks_per_burst=8, task_s=1.0, deadline=10.0, seed=1)
    pools = [PoolSpec("cpu", max_workers=4, startup_s=1.0)]
    free = Simulator(trace, pools, StockAdaptivePolicy(1.0), minimum_billing=1.0).run()
    held = Simulator(
        trace, pools, StockAdaptivePolicy(1.0), minimum_billing=1.0, hold_results=True
    ).run()
    assert held.cost_usd > free.cost_usd  # one worker bridged the 30 s gap
    assert held.tasks_done == free.tasks_done == len(trace)
    # and nothing is billed past the end of the work (the results are released)
    assert max(life[2] for life in held.lifetimes) <= held.makespan_s + 10
