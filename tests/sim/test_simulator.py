"""The simulator (conservation, billing), the oracle (between the busy-time
bound and every policy), traces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_dask.scaling import (
    BalancedPolicy,
    BudgetPolicy,
    PoolSpec,
    SLOPolicy,
)
from lepton_dask.sim import TRACES, Simulator, Trace, from_task_stream
from lepton_dask.sim.baselines import StockAdaptivePolicy
from lepton_dask.sim.oracle import oracle_cost

POOL = PoolSpec("cpu", threads=2, startup_s=20, max_workers=10, usd_per_hour=0.36)


@st.composite
def small_traces(draw):
    n = draw(st.integers(1, 40))
    submit = np.sort(
        np.array(draw(st.lists(st.floats(0, 300), min_size=n, max_size=n)))
    )
    duration = np.array(draw(st.lists(st.floats(0.01, 20), min_size=n, max_size=n)))
    burst = (submit // 60).astype(int)
    return Trace(
        "h",
        submit,
        duration,
        np.zeros(n, np.int8),
        burst,
        {int(b): 120.0 for b in set(burst)},
    )


@settings(max_examples=30, deadline=None)
@given(
    small_traces(),
    st.sampled_from(["balanced", "budget", "adaptive", "slo"]),
    st.floats(0, 5),
)
def test_conservation_all_work_done_and_spend_is_lifetimes_times_price(
    trace, which, preempt
):
    pool = PoolSpec(
        "cpu",
        threads=2,
        startup_s=20,
        max_workers=10,
        usd_per_hour=0.36,
        preemptions_per_hour=preempt,
    )
    policy = {
        "balanced": BalancedPolicy(1.0),
        "budget": BudgetPolicy(usd_per_hour=1.8),
        "adaptive": StockAdaptivePolicy(5.0),
        "slo": SLOPolicy(deadline=120.0),
    }[which]
    r = Simulator(trace, [pool], policy, minimum_billing=30, seed=1).run()
    assert r.tasks_done == len(trace)  # every task completed exactly once
    assert r.task_runs == len(trace) + (r.task_runs - len(trace))
    assert r.task_runs >= len(trace) and (
        r.preemptions > 0 or r.task_runs == len(trace)
    )
    spend = sum(
        max(stop - start, 30) * 0.36 / 3600 for _, start, stop, _ in r.lifetimes
    )
    assert r.cost_usd == pytest.approx(spend)
    assert all(stop >= start for _, start, stop, _ in r.lifetimes)
    assert r.makespan_s >= trace.duration.max() - 1e-9


def test_work_is_conserved_on_the_threads():
    """Busy thread-time equals the work when nothing is preempted."""
    trace = TRACES["etl"]()
    r = Simulator(trace, [POOL], BalancedPolicy(1.0), minimum_billing=60).run()
    paid = sum(r.worker_seconds.values()) * POOL.threads
    assert r.tasks_done == len(trace) and r.preemptions == 0 and r.lost_work_s == 0
    assert paid >= trace.duration.sum()  # paid thread-time covers all the work


def test_preempted_work_is_redone_and_billed():
    pool = PoolSpec(
        "cpu",
        pricing="spot",
        threads=1,
        startup_s=5,
        max_workers=4,
        usd_per_hour=0.04,
        preemptions_per_hour=600,
    )
    trace = Trace(
        "p", np.zeros(20), np.full(20, 30.0), np.zeros(20, np.int8), np.zeros(20, int)
    )
    r = Simulator(trace, [pool], BalancedPolicy(10.0), minimum_billing=10, seed=3).run()
    assert r.preemptions > 0 and r.lost_work_s > 0 and r.task_runs > 20
    assert r.tasks_done == 20


def test_task_graph_dependencies_are_respected():
    trace = TRACES["burst-reduce"](n_map=20, reduce_s=50.0)
    r = Simulator(trace, [POOL], BalancedPolicy(1.0), minimum_billing=10).run()
    maps_done = max(stop for _, _, stop, _ in r.lifetimes)
    assert r.makespan_s >= 50.0 and maps_done >= r.makespan_s


def test_gpu_tasks_run_only_on_gpu_pools():
    gpu = PoolSpec(
        "gpu", kind="gpu", threads=1, startup_s=10, max_workers=2, usd_per_hour=1.0
    )
    trace = TRACES["cpu-gpu-cpu"](n=20)
    r = Simulator(
        trace, [POOL, gpu], SLOPolicy(deadline=400.0), minimum_billing=10
    ).run()
    assert r.tasks_done == 60 and r.worker_seconds.get("gpu", 0) > 0
    with pytest.raises(ValueError, match="gpu work but no gpu pool"):
        oracle_cost(trace, [POOL], 10)


def test_simulates_a_thousand_workers_and_many_tasks():
    n = 100_000
    rng = np.random.default_rng(0)
    trace = Trace(
        "big",
        np.sort(rng.uniform(0, 600, n)),
        rng.gamma(2.0, 5.0, n),
        np.zeros(n, np.int8),
        np.zeros(n, int),
    )
    pool = PoolSpec("cpu", threads=1, startup_s=30, max_workers=1000)
    r = Simulator(
        trace, [pool], BalancedPolicy(50.0), minimum_billing=60, record_timeline=False
    ).run()
    assert r.tasks_done == n
    assert max(len(d["targets"]) for _, d in r.decisions) == 1


def test_oracle_is_between_the_lower_bound_and_every_policy():
    for name, make in TRACES.items():
        if name == "cpu-gpu-cpu":
            continue
        trace = make()
        o = oracle_cost(trace, [POOL], 60)
        assert 0 < o["lower_bound"] <= o["oracle"]
        for policy in (StockAdaptivePolicy(5.0), BalancedPolicy(1.0)):
            r = Simulator(trace, [POOL], policy, minimum_billing=60).run()
            if r.deadline_met == 1.0:
                assert r.cost_usd >= o["lower_bound"]


def test_trace_round_trip_and_recording():
    t = TRACES["sawtooth"]()
    t2 = Trace.from_json(t.to_json())
    assert np.array_equal(t.submit, t2.submit) and t.deadline == t2.deadline
    recs = [
        {"startstops": [{"action": "compute", "start": 100.0 + i, "stop": 100.5 + i}]}
        for i in range(5)
    ]
    rec = from_task_stream(recs)
    assert len(rec) == 5 and rec.duration.tolist() == [0.5] * 5
    with pytest.raises(ValueError, match="no compute records"):
        from_task_stream([])
    with pytest.raises(ValueError, match="duration must be a finite number >= 0"):
        Trace(
            "x", np.zeros(1), np.array([-1.0]), np.zeros(1, np.int8), np.zeros(1, int)
        )
