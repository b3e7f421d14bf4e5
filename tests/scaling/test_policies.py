"""The balanced and budget policies on hand-built views (like distributed's
test_adaptive_core)."""

from __future__ import annotations

import pytest

from lepton_dask.scaling import (
    BalancedPolicy,
    BudgetPolicy,
    ClusterView,
    PoolSpec,
    WorkerView,
    policy_from_config,
)
from lepton_dask.scaling.state import (
    ArrivalEstimator,
    drain_time_staged,
    releasable,
)

CPU = PoolSpec("cpu", threads=2, startup_s=60, max_workers=20, usd_per_hour=0.1)
SPOT = PoolSpec(
    "spot", pricing="spot", threads=2, startup_s=60, max_workers=20, usd_per_hour=0.04
)
GPU = PoolSpec(
    "gpu", kind="gpu", threads=1, startup_s=90, max_workers=4, usd_per_hour=1.0
)


def view(workers=(), backlog=None, tasks=None, now=1000.0, pools=(CPU,), **kw):
    return ClusterView(
        now=now,
        pools={p.name: p for p in pools},
        workers=list(workers),
        backlog=backlog or {},
        tasks_ready=tasks or {},
        minimum_billing=60.0,
        **kw,
    )


def busy(name, pool="cpu", since=0.0):
    return WorkerView(name, pool, since, busy=True)


def idle(name, pool="cpu", since=0.0):
    return WorkerView(name, pool, since, busy=False)


def test_does_not_start_workers_that_would_arrive_after_the_work_is_done():
    # 4 threads drain 100 s of work in 25 s; a new worker would arrive at 60 s
    v = view([busy("a"), busy("b")], {"cpu": 100.0}, {"cpu": 50})
    for policy in (BalancedPolicy(10.0), BudgetPolicy(usd_per_hour=10.0)):
        assert policy.decide(v).targets["cpu"] == 2


def test_scales_up_for_large_backlog_and_says_why():
    v = view([], {"cpu": 3600.0}, {"cpu": 3600})
    d = BalancedPolicy(10.0).decide(v)
    assert d.targets["cpu"] > 5 and "delay" in d.reason
    assert d.predicted_finish_s > 60 and d.predicted_cost_usd > 0


def test_does_not_release_before_paid_minimum_is_used():
    v = view([idle("a", since=980.0), idle("b", since=900.0)], {"cpu": 0.0}, {"cpu": 0})
    d = BalancedPolicy(1.0).decide(v)
    assert d.targets["cpu"] == 1  # b's minute is used up, a's is not
    assert [w.name for w in releasable(v, "cpu")] == ["b"]


def test_bridges_short_predicted_idle_gaps():
    workers = [idle("a", since=0.0), idle("b", since=0.0)]
    short = view(
        workers, {"cpu": 0.0}, {"cpu": 0}, idle_since=995.0, idle_gaps=[20, 30, 25]
    )
    assert BalancedPolicy(1.0).decide(short).targets["cpu"] == 2
    assert "bridge" in BalancedPolicy(1.0).decide(short).reason
    long = view(
        workers, {"cpu": 0.0}, {"cpu": 0}, idle_since=995.0, idle_gaps=[600, 900]
    )
    assert BalancedPolicy(1.0).decide(long).targets["cpu"] == 0


def test_keeps_a_worker_holding_unique_results():
    w = WorkerView("a", "cpu", 0.0, busy=False, holds_data=True)
    assert (
        BalancedPolicy(1.0).decide(view([w], {"cpu": 0.0}, {"cpu": 0})).targets["cpu"]
        == 1
    )


def test_grows_the_cheapest_pool_per_unit_of_work_first():
    v = view([], {"cpu": 3600.0}, {"cpu": 3600}, pools=(CPU, SPOT))
    d = BalancedPolicy(1.0).decide(v)
    assert d.targets["spot"] > 0 and d.targets["cpu"] == 0


def test_gpu_work_goes_to_the_gpu_pool_only():
    v = view([], {"gpu": 400.0, "cpu": 0.0}, {"gpu": 40, "cpu": 0}, pools=(CPU, GPU))
    d = BalancedPolicy(5.0).decide(v)
    assert d.targets["gpu"] >= 1 and d.targets["cpu"] == 0


def test_budget_caps_the_spend_rate_and_the_total():
    v = view([], {"cpu": 36000.0}, {"cpu": 36000})
    assert BudgetPolicy(usd_per_hour=0.5).decide(v).targets["cpu"] == 5
    spent = view([], {"cpu": 36000.0}, {"cpu": 36000}, spend_usd=10.0)
    d = BudgetPolicy(usd_per_hour=0.5, total_usd=10.0).decide(spent)
    assert d.targets["cpu"] == 0 and d.infeasible and "budget exhausted" in d.reason


def test_respects_pool_minimum_and_maximum():
    pool = PoolSpec("cpu", threads=1, min_workers=2, max_workers=3, startup_s=1)
    v = view([], {"cpu": 10_000.0}, {"cpu": 10_000}, pools=(pool,))
    assert BalancedPolicy(1000.0).decide(v).targets["cpu"] == 3
    assert (
        BalancedPolicy(0.0).decide(view([], {}, {}, pools=(pool,))).targets["cpu"] == 2
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: BalancedPolicy(-1), "weight"),
        (lambda: BudgetPolicy(0), "usd_per_hour"),
        (
            lambda: PoolSpec("p", min_workers=3, max_workers=2),
            "min_workers <= max_workers",
        ),
        (lambda: PoolSpec("p", kind="tpu"), "kind"),
        (lambda: policy_from_config({"policy": "nope"}), "must be one of"),
    ],
)
def test_invalid_settings_raise_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_drain_time_models():
    assert drain_time_staged(0.0, 0, []) == 0.0
    assert drain_time_staged(100.0, 0, []) == float("inf")
    assert drain_time_staged(100.0, 10, []) == 10.0
    assert drain_time_staged(100.0, 0, [(5.0, 20)]) == 10.0


def test_arrival_estimator_needs_history():
    est = ArrivalEstimator(60)
    est.observe(0.0, {"cpu": 0.0}, {"cpu": 0.0})
    est.observe(1.0, {"cpu": 100.0}, {"cpu": 0.0})
    assert est.rate() == {}  # one second is no stream


def test_ernest_model_fits_and_slows_plans():
    from lepton_dask.scaling.model import BusyPeriods, ErnestModel

    m = ErnestModel()
    assert m.throughput_factor(100, 10) == 1.0  # ideal until fitted
    for n in (1, 2, 4, 8, 16, 32):  # per-worker overhead 0.5 s per worker
        m.observe(200.0, n, 200.0 / n + 0.5 * n)
    assert m.predict(200.0, 20) == pytest.approx(200.0 / 20 + 10.0, rel=1e-6)
    assert m.throughput_factor(200.0, 20) == pytest.approx(10 / 20, rel=1e-6)
    periods = BusyPeriods(ErnestModel(min_points=1))
    for t, busy, c in ((0, True, 0.0), (5, True, 20.0), (10, False, 40.0)):
        periods.tick(float(t), busy, 4.0, c)
    assert periods.model.obs[-1] == (40.0, 4.0, 10.0)
    slow = view([], {"cpu": 1200.0}, {"cpu": 1200}, throughput_factor=0.5)
    fast = view([], {"cpu": 1200.0}, {"cpu": 1200})
    assert (
        BalancedPolicy(1.0).decide(slow).targets["cpu"]
        > BalancedPolicy(1.0).decide(fast).targets["cpu"]
    )
