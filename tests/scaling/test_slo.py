"""The SLO policy: deadlines per batch, stream latency, keep-alive, budgets,
spot by Uniform Progress, bad input; the batches a real scheduler reports;
the loop on a real LocalPoolCluster."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from distributed import Client, wait

from lepton_dask import _protocol as protocol
from lepton_dask._protocol import ScalerState
from lepton_dask.cost import CostMonitor
from lepton_dask.scaling import (
    CostAwareAdaptive,
    LocalPoolCluster,
    PoolSpec,
    SLOPolicy,
    deadline,
    policy_from_config,
)
from lepton_dask.scaling.registry import DEFAULT_DEADLINE_S
from lepton_dask.scaling.state import BatchView, ClusterView, ViewBuilder, WorkerView
from lepton_dask.sim import Simulator, Trace
from lepton_dask.sim.baselines import StockAdaptivePolicy
from lepton_dask.sim.trace import stream

POOL = PoolSpec("cpu", threads=2, startup_s=60, max_workers=50, usd_per_hour=0.096)


def view(now, batches, workers=(), pools=(POOL,), **kw):
    work = {"cpu": sum(b.work.get("cpu", 0.0) for b in batches), "gpu": 0.0}
    tasks = {"cpu": sum(b.tasks for b in batches), "gpu": 0}
    return ClusterView(
        now=now,
        pools={p.name: p for p in pools},
        workers=list(workers),
        backlog=work,
        tasks_ready=tasks,
        minimum_billing=60.0,
        batches=list(batches),
        **kw,
    )


def batch(bid, arrival, work, tasks=None, longest=1.0, **kw):
    return BatchView(
        bid,
        arrival,
        {"cpu": work},
        tasks=tasks or int(work),
        longest=longest,
        critical=longest,
        **kw,
    )


def test_a_stream_is_sized_per_batch_not_per_busy_period():
    """Two hours into a busy stream, each batch's deadline counts from its own
    arrival, not from the start of the busy period (7,080 s ago): the SLO
    policy sizes for what the young batches need."""
    batches = [batch(str(i), 7200.0 - 10 * i, 20.0) for i in range(5)]
    workers = [WorkerView("w0", "cpu", 0.0, True)]
    v = view(7200.0, batches, workers, busy_since=0.0)
    d = SLOPolicy(deadline=120.0).decide(v)
    assert not d.infeasible and d.targets["cpu"] == 1  # 100 s of work, 2 threads
    # the oldest batch is due in 120 - 40 = 80 s: one warm worker does its
    # share (and the ones before it) in time; more work needs more workers
    heavy = [batch(str(i), 7200.0 - 10 * i, 120.0) for i in range(5)]
    d2 = SLOPolicy(deadline=120.0).decide(view(7200.0, heavy, workers, busy_since=0.0))
    assert not d2.infeasible and d2.targets["cpu"] > 1


def test_each_batch_meets_its_own_deadline_earliest_first():
    """A tight batch behind a loose one decides the size (EDF)."""
    loose = batch("a", 0.0, 600.0, deadline_s=3600.0)
    tight = batch("b", 0.0, 120.0, deadline_s=120.0)
    only_loose = SLOPolicy(deadline=3600.0).decide(view(0.0, [loose]))
    both = SLOPolicy(deadline=3600.0).decide(view(0.0, [loose, tight]))
    assert only_loose.targets["cpu"] == 1
    # 120 s of tight work in the 60 s left after startup: 2 threads a worker
    assert both.targets["cpu"] >= 1 + math.ceil(120.0 / 60.0 / 2)
    assert "due in 120 s" in both.reason


def test_an_infeasible_slo_says_so_and_runs_only_as_fast_as_the_work_can_use():
    b = batch("0", 0.0, 40.0, tasks=8)  # 8 tasks, due before any worker starts
    d = SLOPolicy(deadline=30.0).decide(view(0.0, [b]))
    assert d.infeasible and "infeasible" in d.reason
    assert d.targets["cpu"] == 4  # 8 tasks on 2-thread workers, not the cap of 50
    entry = d.as_log(0.0)[1]
    assert entry["infeasible"] and entry["time_left_s"] == pytest.approx(30.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deadline": 0},
        {"deadline": -5},
        {"deadline": math.nan},
        {"deadline": math.inf},
        {"latency": 0},
        {"deadline": 10, "latency": 10},
        {},
        {"usd_per_hour": 0},
        {"total_usd": -1},
        {"deadline": 60, "keep_alive": "forever"},
    ],
)
def test_bad_service_levels_are_refused_at_construction(kwargs):
    with pytest.raises(ValueError):
        SLOPolicy(**kwargs)


def test_deadline_annotation_validates_and_sets_priority():
    import dask

    with deadline(60) as _, dask.config.set({}):
        ann = dask.get_annotations()
        assert ann["lepton_deadline"] == 60.0 and ann["priority"] > 0
    with deadline(30):
        later = dask.get_annotations()["priority"]
    assert later > ann["priority"]  # an earlier due time runs first
    for bad in (0, -1, math.nan, "soon"):
        with pytest.raises(ValueError), deadline(bad):
            pass


def test_config_builds_the_slo_policy():
    p = policy_from_config({"policy": "slo", "latency": 30})
    assert isinstance(p, SLOPolicy) and p.stream and p.deadline == 30.0
    p = policy_from_config({"policy": "slo"})  # no term: the default deadline
    assert isinstance(p, SLOPolicy) and p.deadline == DEFAULT_DEADLINE_S
    for name in ("deadline", "busy-period-deadline", "fastest"):
        with pytest.raises(ValueError, match="must be one of"):
            policy_from_config({"policy": name})


def _sim(trace, policy, pools=(POOL,), **kw):
    return Simulator(trace, list(pools), policy, minimum_billing=60.0, **kw).run()


def test_stream_latency_is_met_in_the_simulator_and_cheaper_than_default_adaptive():
    tr = stream(minutes=20, rate=1.0, spikes=((600, 60, 4.0),), latency=120.0)
    r = _sim(tr, SLOPolicy(latency=120.0))
    assert r.tasks_done == len(tr) and r.deadline_met >= 0.99
    ada = _sim(tr, StockAdaptivePolicy(5.0))
    assert r.cost_usd < ada.cost_usd


def test_a_budget_is_never_exceeded_and_the_work_still_finishes():
    rng = np.random.default_rng(0)
    n = 300
    tr = Trace(
        "b", np.zeros(n), rng.gamma(2.0, 2.0, n), np.zeros(n, np.int8), np.zeros(n, int)
    )
    cap = 5 * POOL.usd_per_hour
    r = _sim(tr, SLOPolicy(usd_per_hour=cap), record_timeline=True)
    assert r.tasks_done == n
    assert max(rate for _, _, rate in r.timeline) <= cap + 1e-9
    # and with a deadline too: the budget caps the capacity bought for it
    r2 = _sim(tr, SLOPolicy(deadline=100.0, usd_per_hour=cap), record_timeline=True)
    assert max(rate for _, _, rate in r2.timeline) <= cap + 1e-9
    assert any(e["infeasible"] for _, e in r2.decisions)  # 5 workers cannot make it


def _bursts(gaps, n=120):
    rng = np.random.default_rng(1)
    submit, burst, t = [], [], 0.0
    for b, g in enumerate([*gaps, None]):
        submit += [t] * n
        burst += [b] * n
        t += 60.0 + (g or 0)
    m = len(submit)
    return Trace(
        "g",
        np.array(submit),
        rng.gamma(4.0, 0.25, m),
        np.zeros(m, np.int8),
        np.array(burst),
        dict.fromkeys(range(len(gaps) + 1), 90.0),
    )


def test_keep_alive_is_rent_or_buy():
    """One burst and nothing after: nothing is kept past the paid minimum.
    Bursts that recur after short gaps: a warm worker bridges them, which
    costs less than starting cold each time; gaps far longer than the
    break-even point are not bridged."""
    one = _sim(_bursts([]), SLOPolicy(deadline=90.0))
    # each worker goes at the end of its own paid minimum (billed from its
    # launch), or when the work is done, whichever is later, within a tick
    assert all(
        stop <= max(start + 60.0, one.makespan_s) + 1.0
        for _, start, stop, _ in one.lifetimes
    )
    short = _bursts([30.0] * 6)
    r = _sim(short, SLOPolicy(deadline=90.0))
    cold = _sim(short, SLOPolicy(deadline=90.0, keep_alive="none"))
    assert r.deadline_met == cold.deadline_met == 1.0
    assert r.cost_usd < 0.75 * cold.cost_usd
    long = _bursts([1500.0] * 6)
    r = _sim(long, SLOPolicy(deadline=90.0))
    cold = _sim(long, SLOPolicy(deadline=90.0, keep_alive="none"))
    # break-even is 2-competitive; once four long gaps are seen, none is bridged
    assert r.cost_usd <= 2.0 * cold.cost_usd
    kept = [e["keep_alive_s"]["cpu"] for _, e in r.decisions if "keep_alive_s" in e]
    assert kept[0] > 60.0 and kept[-1] == 0.0
    kept = [e["keep_alive_s"] for _, e in r.decisions if "keep_alive_s" in e]
    assert kept  # the decision log says how long it keeps workers warm


def test_spot_while_ahead_on_demand_when_behind():
    spot = PoolSpec(
        "spot",
        pricing="spot",
        threads=2,
        startup_s=60,
        max_workers=50,
        usd_per_hour=0.03,
    )
    pools = (POOL, spot)
    ahead = batch("0", 0.0, 600.0, deadline_s=400.0)
    d = SLOPolicy(deadline=400.0).decide(view(0.0, [ahead], pools=pools))
    assert d.targets["spot"] > 0 and d.targets["cpu"] == 0
    # 300 s in, 10% done: behind the line to the deadline -> on-demand only
    behind = BatchView(
        "0", 0.0, {"cpu": 540.0}, {"cpu": 60.0}, tasks=540, longest=1.0, critical=1.0
    )
    # (a 5% reserve: with the default 10%, nothing could arrive in time)
    d = SLOPolicy(deadline=400.0, margin=0.05).decide(
        view(300.0, [behind], pools=pools)
    )
    assert (
        d.targets["cpu"] > 0
        and d.targets["spot"] == 0
        and "uniform progress" in d.reason
    )


def test_idle_gaps_are_between_work_not_the_wait_for_the_first():
    """The wait from the scaler's start to the first work is no gap between
    batches: counting it made one job look recurrent (its workers then
    waited for a next batch that no history predicted)."""

    def state(now, work):
        zero = {"cpu": 0.0, "gpu": 0.0}
        return {
            "now": now,
            "backlog": {**zero, "cpu": work},
            "tasks": {**zero, "cpu": work},
            "pending": zero,
            "pending_tail": 0.0,
            "completed": zero,
            "workers": [],
            "threads": 0.0,
            "minimum_billing": 60.0,
            "spend_usd": 0.0,
            "batches": [],
        }

    vb, pools = ViewBuilder(), {POOL.name: POOL}
    gaps = [
        vb.build(state(t, w), pools).idle_gaps
        for t, w in [(0.0, 0.0), (5.0, 10.0), (10.0, 0.0), (30.0, 10.0)]
    ]
    assert gaps == [[], [], [], [20.0]]


def test_the_simulator_and_a_real_scheduler_emit_the_same_state(tmp_path):
    keys = set(ScalerState.__annotations__)
    tr = _bursts([30.0], n=10)
    states = []

    class Spy(SLOPolicy):
        def decide(self, v):
            states.append(v)
            return super().decide(v)

    _sim(tr, Spy(deadline=90.0))
    assert states and all(isinstance(b, BatchView) for s in states for b in s.batches)
    monitor = CostMonitor(ledger=False)
    pools = [PoolSpec("cpu", threads=1, max_workers=2)]
    with (
        LocalPoolCluster(
            pools,
            processes=False,
            minimum={"cpu": 1},
            scheduler_options={"plugins": [monitor]},
        ) as c,
        Client(c) as client,
    ):
        with deadline(45):
            futs = client.map(time.sleep, [0.5] * 4, pure=False)
        time.sleep(0.2)
        st = client.sync(getattr(client.scheduler, protocol.SCALER_STATE))
        assert set(st) == keys
        (b,) = st["batches"]
        assert b["deadline_s"] == 45.0 and b["tasks"] >= 1
        v = ViewBuilder().build(st, {p.name: p for p in pools})
        assert v.batches[0].deadline_s == 45.0 and v.batches[0].remaining > 0
        wait(futs)
        time.sleep(0.2)
        assert not client.sync(getattr(client.scheduler, protocol.SCALER_STATE))[
            "batches"
        ]


def test_the_loop_meets_deadlines_on_a_small_real_stream():
    """A real LocalPoolCluster (2 s startup, 4 s minimum billing) under the
    SLO policy: bursts of sleep tasks submitted under ``deadline(6)`` every
    few seconds all finish within 6 s of submission."""
    monitor = CostMonitor(ledger=False, minimum_billing=4.0)
    pools = [
        PoolSpec.from_catalog("cpu", "local", threads=2, startup_s=1.0, max_workers=6)
    ]
    with (
        LocalPoolCluster(
            pools, processes=False, scheduler_options={"plugins": [monitor]}
        ) as c,
        Client(c) as client,
    ):
        c.adapt(
            Adaptive=CostAwareAdaptive, policy=SLOPolicy(deadline=6.0), interval=0.2
        )
        late = []
        for _ in range(5):
            t0 = time.time()
            with deadline(6.0):
                futs = client.map(time.sleep, [0.4] * 8, pure=False)
            wait(futs)
            late.append(time.time() - t0)
            time.sleep(1.0)
        assert max(late) <= 6.0, late
        assert monitor.snapshot()["spend_usd"] > 0
