"""Deadlines kept where users run them: late workers counted late, batches
that fall behind caught up on the tick, guesses hedged, stages that cannot
start yet given their share of the time, and workers that start in parallel
on a real LocalPoolCluster."""

from __future__ import annotations

import logging
import time

import dask
import numpy as np
import pytest
from distributed import Client, wait

from lepton_dask.cost import CostMonitor
from lepton_dask.experiments.real import parallel_start
from lepton_dask.scaling import (
    CostAwareAdaptive,
    LocalPoolCluster,
    PoolSpec,
    SLOPolicy,
    deadline,
)
from lepton_dask.scaling.slo import arrives_in
from lepton_dask.scaling.state import BatchView, ClusterView, WorkerView
from lepton_dask.sim import Simulator, Trace

POOL = PoolSpec("cpu", threads=2, startup_s=10, max_workers=20, usd_per_hour=0.096)


def _view(now, batches, workers=()):
    work = sum(b.work["cpu"] for b in batches)
    return ClusterView(
        now=now,
        pools={"cpu": POOL},
        workers=list(workers),
        backlog={"cpu": work, "gpu": 0.0},
        tasks_ready={"cpu": sum(b.tasks for b in batches), "gpu": 0},
        minimum_billing=60.0,
        batches=list(batches),
    )


def test_a_late_worker_is_late_and_the_batch_it_leaves_behind_gets_capacity_now():
    """A worker launched at 0 with a 10 s startup is 5 s overdue at 15 s: it
    is expected in 5 s more, not now. The batch (20 thread-seconds, due by
    28.5 s) cannot finish on it alone, so one more worker is bought on this
    tick, and the decision says which batch fell behind and what it got."""
    late = WorkerView("w0", "cpu", 0.0, busy=False, arrived=False)
    assert arrives_in(late, POOL, 15.0) == 5.0
    assert arrives_in(late, POOL, 4.0) == 6.0  # not due yet: its startup
    b = BatchView("b0", 0.0, {"cpu": 20.0}, tasks=40, longest=0.5, critical=0.5)
    d = SLOPolicy(deadline=30, margin=0.05).decide(_view(15.0, [b], [late]))
    assert d.targets == {"cpu": 2}
    assert d.detail["behind"] == {"b0": "+1 cpu"}
    # counted as arriving now (the old rule), it would have been enough
    on_time = WorkerView("w0", "cpu", 5.0, busy=False, arrived=False)
    d = SLOPolicy(deadline=30, margin=0.05).decide(_view(15.0, [b], [on_time]))
    assert d.targets == {"cpu": 1} and "behind" not in d.detail


def _burst(n: int, seconds: float, deadline_s: float, at: float = 0.0) -> Trace:
    return Trace(
        "burst",
        np.full(n, at),
        np.full(n, seconds),
        np.zeros(n, dtype=np.int8),
        np.zeros(n, dtype=np.int64),
        {0: deadline_s},
    )


def _simulate(trace, policy, startup=20.0):
    pool = PoolSpec("cpu", threads=2, startup_s=startup, max_workers=60)
    return Simulator(trace, [pool], policy, minimum_billing=60.0).run()


def test_a_first_burst_of_four_times_the_guess_meets_its_deadline_in_the_simulator():
    """120 tasks of 2 s (Dask guesses 0.5 s for an unseen prefix), due in
    40 s, with a 20 s startup: no time to measure first. Hedged, the policy
    buys for tasks up to 4x the guess and meets the deadline; sized on the
    guess exactly (hedge=1), it is late. Every tick on which a batch fell
    behind bought capacity on that tick."""
    tr = _burst(120, 2.0, 40.0)
    hedged = _simulate(tr, SLOPolicy(deadline=40))
    exact = _simulate(tr, SLOPolicy(deadline=40, hedge=1.0))
    assert hedged.deadline_met == 1.0
    assert exact.deadline_met == 0.0
    grew = [e for _, e in exact.decisions if e.get("behind")]
    assert grew, "the unhedged run fell behind and should have said so"
    for e in grew:
        assert all(v.startswith("+") for v in e["behind"].values())


def test_a_stage_that_cannot_start_yet_gets_its_share_of_the_time():
    """Maps of unknown duration, then a long reduce (unknown too): the maps
    are sized to end in half the time left, so the reduce still fits; the
    decision log names the batch whose later stage was held back."""
    n = 200
    tr = Trace(
        "map-reduce",
        np.zeros(n + 1),
        np.r_[np.full(n, 2.0), 100.0],
        np.zeros(n + 1, dtype=np.int8),
        np.zeros(n + 1, dtype=np.int64),
        {0: 300.0},
        [[] for _ in range(n)] + [list(range(n))],
    )
    r = _simulate(tr, SLOPolicy(deadline=300), startup=60.0)
    assert r.deadline_met == 1.0
    assert any(e.get("held_stages") for _, e in r.decisions)
    assert tr.blind_bursts(60.0) == {0}  # the reduce is learnt too late to size


def test_hedge_and_margin_are_checked():
    with pytest.raises(ValueError, match="hedge"):
        SLOPolicy(deadline=10, hedge=0.5)


# -- a real LocalPoolCluster -------------------------------------------------------


def test_workers_asked_while_others_start_are_not_held_back_by_them():
    """2 s startup: 2 workers asked at t = 0 (``scale``, as stock Adaptive
    asks) and 2 at t = 0.5 (new pool specs, as CostAwareAdaptive asks) all
    arrive by t = 2.8: the startup runs outside SpecCluster's lock."""
    arrivals = parallel_start(2.0)
    assert len(arrivals) == 4, arrivals
    assert max(at for _, at in arrivals) <= 2.8, arrivals
    assert sorted(asked for asked, _ in arrivals) == [0.0, 0.0, 0.5, 0.5]


def test_a_cluster_without_a_cost_monitor_starts_workers_quietly(caplog):
    """``scale()`` on a LocalPoolCluster whose scheduler has no CostMonitor
    reports no launch, so no "No handler lepton_cost_launch" traceback."""
    with caplog.at_level(logging.WARNING):
        with (
            LocalPoolCluster(
                [PoolSpec("cpu", startup_s=0.2, max_workers=2)], processes=False
            ) as c,
            Client(c) as client,
        ):
            c.scale(2)
            client.wait_for_workers(2, timeout=20)
    assert not [r for r in caplog.records if "lepton_cost_launch" in r.getMessage()]


def _run_real(submit, policy, *, startup, threads=2, max_workers=12, unknown="0.1s"):
    monitor = CostMonitor(ledger=False, minimum_billing=2 * startup)
    pools = [
        PoolSpec.from_catalog(
            "cpu", "local", threads=threads, startup_s=startup, max_workers=max_workers
        )
    ]
    with (
        dask.config.set({"distributed.scheduler.unknown-task-duration": unknown}),
        LocalPoolCluster(
            pools, processes=False, scheduler_options={"plugins": [monitor]}
        ) as c,
        Client(c) as client,
    ):
        c.adapt(Adaptive=CostAwareAdaptive, policy=policy, interval=0.1)
        t0 = time.time()
        futs = submit(client)
        wait(futs, timeout=60)
        return time.time() - t0, c._adaptive.log


def test_a_first_burst_of_four_times_the_guess_meets_its_deadline_on_real_workers():
    """48 sleep tasks of 0.4 s, where the scheduler guesses 0.1 s, due in
    6 s with a 3 s startup (no time to measure first): sized on the guess it
    would take about 7 s."""

    def submit(client):
        with deadline(6.0):
            return client.map(time.sleep, [0.4] * 48, pure=False)

    took, log = _run_real(submit, SLOPolicy(deadline=6.0), startup=3.0)
    assert took <= 6.0, (took, [e["reason"] for _, e in log])
    assert any(e.get("sized_on") == "guess" for _, e in log)


def _sleep_then(seconds, *deps):
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("calls", ["one compute call", "a call per stage"])
def test_a_map_then_a_long_reduce_of_unknown_duration_meets_its_deadline_on_real_workers(
    calls,
):
    """40 maps of 0.3 s then one 2.5 s reduce, all of unknown duration, due in
    9 s (1 s startup): the maps are sized to leave the reduce its share,
    whether the job is one ``compute`` call or the reduce is submitted on
    the maps' futures by a call of its own (a batch of its own)."""

    def submit(client):
        maps = [
            dask.delayed(_sleep_then, pure=False)(0.3, dask_key_name=f"map-{i}")
            for i in range(40)
        ]
        if calls == "a call per stage":
            with deadline(9.0):
                maps = client.compute(maps)
            time.sleep(0.05)
        red = dask.delayed(_sleep_then, pure=False)(
            2.5, *maps, dask_key_name="reduce-0"
        )
        with deadline(9.0):
            return client.compute([red])

    took, log = _run_real(submit, SLOPolicy(deadline=9.0), startup=1.0)
    assert took <= 9.0, (took, [e["reason"] for _, e in log])
    assert any(e.get("held_stages") for _, e in log)


def test_a_mean_of_few_tasks_is_sized_high_only_when_it_is_the_last_chance():
    """Work priced on a mean of few finished tasks (``stderr``: the part of
    it that is one standard error of that mean) is sized at the mean while
    the rest could still be bought once more tasks have finished; when
    waiting one task's time would leave the high side infeasible on a
    capped pool, it is sized high now."""
    gpu = PoolSpec("gpu", kind="gpu", threads=1, max_workers=8, startup_s=10)

    def decide(deadline_s, longest):
        b = BatchView(
            "0",
            0.0,
            {"gpu": 80.0},
            tasks=40,
            longest=longest,
            critical=longest,
            deadline_s=deadline_s,
            stderr={"gpu": 40.0},
        )
        view = ClusterView(
            now=0.0,
            pools={"gpu": gpu},
            workers=[],
            backlog={"gpu": 80.0},
            tasks_ready={"gpu": 40},
            batches=[b],
        )
        return SLOPolicy(deadline=600).decide(view)

    roomy = decide(30.0, 0.5)  # 40 s of work by 27 s, workers from 10 s
    assert roomy.targets["gpu"] == 3 and roomy.detail["sized_on"] == "measured"
    last = decide(25.0, 2.0)  # the high side needs all 8 bought now
    assert last.targets["gpu"] == 8 and last.detail["sized_on"] == "few"
    assert "few tasks" in last.reason


def test_idle_workers_go_when_no_capacity_can_help():
    """A batch left with one long task (a reduce past its deadline: no
    worker can make it sooner) keeps the worker running it; the idle ones,
    paid out, go, as they would on time (before, they stayed until it
    finished: burst-reduce's real run billed 14 idle workers for 18 s)."""
    b = BatchView("b0", 0.0, {"cpu": 40.0}, tasks=1, longest=40.0, critical=40.0)
    workers = [WorkerView("w0", "cpu", 0.0, busy=True)] + [
        WorkerView(f"w{i}", "cpu", 0.0, busy=False) for i in range(1, 8)
    ]
    d = SLOPolicy(deadline=30).decide(_view(100.0, [b], workers))
    assert d.infeasible and "no capacity can help" in d.reason
    assert d.targets == {"cpu": 1} and "release 7 idle" in d.reason


@pytest.mark.parametrize("recurring", [False, True])
def test_a_maps_idle_workers_go_once_only_its_reduce_is_left(recurring):
    """Workers needed within one startup are kept (a need that comes back
    would relaunch them). But once only the reduce is left, the map's idle
    workers wait for a next batch; when no batch has ever come after
    another (the reduce was submitted with its maps), they go, as when the
    kind is idle. burst-reduce's real run billed 14 of them for a startup."""
    maps = BatchView("m", 0.0, {"cpu": 300.0}, tasks=300, longest=1.0, critical=1.0)
    reduce = BatchView("r", 0.0, {"cpu": 5.0}, tasks=1, longest=5.0, critical=5.0)
    earlier = [BatchView("e", -50.0, {"cpu": 1.0}, tasks=1)] if recurring else []
    busy = [WorkerView(f"w{i}", "cpu", 0.0, busy=True) for i in range(8)]
    policy = SLOPolicy(deadline=120)
    policy.decide(_view(100.0, [*earlier, maps, reduce], busy))
    # 5 s later (half a startup), only the reduce runs, on one worker
    workers = busy[:1] + [
        WorkerView(f"w{i}", "cpu", 0.0, busy=False) for i in range(1, 8)
    ]
    d = policy.decide(_view(105.0, [reduce], workers))
    if recurring:
        assert d.targets == {"cpu": 8} and "release" not in d.reason
    else:
        assert d.targets == {"cpu": 1} and "release 7 idle" in d.reason


def test_workers_that_deliver_less_than_their_threads_are_sized_on_what_they_deliver():
    """The closed loop on what workers deliver: measured over ticks while
    every thread is busy, two 2-thread workers that finish 2 s of work a
    second (half their threads: dispatch gaps on a loaded machine) count as
    half; the batch they were enough for nominally gets more workers."""
    from lepton_dask.scaling.model import Efficiency

    e = Efficiency(min_thread_s=4.0)
    for t in range(8):
        e.observe(float(t), {"cpu": 2.0 * t}, {"cpu": 4.0}, {"cpu": 40}, {"cpu": 0.1})
    assert e.factor("cpu") == pytest.approx(0.5)

    b = BatchView("b0", 0.0, {"cpu": 80.0}, tasks=400, longest=0.1, critical=0.1)
    workers = [WorkerView(f"w{i}", "cpu", 0.0, busy=True) for i in range(2)]
    nominal = SLOPolicy(deadline=30).decide(_view(0.0, [b], workers))
    view = _view(0.0, [b], workers)
    view.efficiency = {"cpu": e.factor("cpu")}
    measured = SLOPolicy(deadline=30).decide(view)
    assert nominal.targets["cpu"] < measured.targets["cpu"]
