"""A discrete-event cluster simulator that drives the real policy objects.

Fake clock; tasks (independent or a graph) with durations and a resource kind;
pools of workers with startup delay, per-second billing with a minimum (from
the launch request, to release or death), spot preemptions (Poisson), and a
policy consulted every ``interval`` seconds exactly as ``CostAwareAdaptive``
consults it: each tick emits the same :class:`~lepton_dask.scaling.state.ScalerState`
as ``CostMonitor.scaler_state`` and turns it into a view with the production
:class:`~lepton_dask.scaling.state.ViewBuilder`. Submissions at time ``t`` come
before the tick at ``t`` (as in Dask, where ``update_graph`` runs before the
next adaptive callback sees the scheduler). Workers take ready tasks
first-in first-out.

It simulates 1,000 workers and 1,000,000 tasks in well under a minute (see
``benchmarks/bench_scaling.py``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_dask.scaling.state import (
    ClusterView,
    PoolSpec,
    ScalerState,
    ViewBuilder,
    WorkerView,
    releasable,
)
from lepton_dask.sim._batches import Batches, bottom_levels, ready_queue
from lepton_dask.sim.trace import KIND_NAMES, Trace

_ARRIVE, _FINISH, _TICK, _PREEMPT = 0, 1, 2, 3


@dataclass
class _Worker:
    wid: int
    pool: PoolSpec
    billed_since: float
    arrive_at: float
    free: int = 0
    running: set = field(default_factory=set)
    arrived: bool = False
    alive: bool = True
    ended: float | None = None


@dataclass
class SimResult:
    """What a simulated run cost and how long it took."""

    trace: str
    policy: str
    cost_usd: float
    makespan_s: float
    burst_latency_s: dict[int, float]
    deadline_met: float
    worker_seconds: dict[str, float]
    lost_work_s: float
    preemptions: int
    tasks_done: int
    task_runs: int
    timeline: list[tuple[float, dict[str, int], float]]
    decisions: list[tuple[float, dict[str, Any]]]
    lifetimes: list[tuple[str, float, float, float]]

    def summary(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "policy": self.policy,
            "cost_usd": self.cost_usd,
            "makespan_s": self.makespan_s,
            "deadline_met": self.deadline_met,
            "preemptions": self.preemptions,
            "lost_work_s": self.lost_work_s,
        }


class Simulator:
    """Simulate ``trace`` on ``pools`` under ``policy``.

    Parameters
    ----------
    trace : Trace
    pools : list of PoolSpec
    policy : object with ``decide(ClusterView) -> Decision``
    minimum_billing : float
        Seconds billed at least per worker lifetime.
    interval : float
        Seconds between policy decisions.
    initial : dict, optional
        Workers per pool present (arrived) at time 0, billed from time 0.
    seed : int
        Seeds the preemptions.
    hold_results : bool
        The client keeps every result until the end, so the cluster always
        holds data once a task has finished (both Dask's Adaptive and our
        policies then keep a worker to hold it).
    horizon : float, optional
        Stop after this long even if workers remain (default: when the last
        task is done and every worker has been released, or ten minutes later).
    stall_s : float
        End an unfinished run after this long with work left, no more
        arrivals and no worker running or starting (a policy that will not
        launch one); ``tasks_done`` then falls short of the trace.

    Examples
    --------
    >>> from lepton_dask.scaling import BalancedPolicy, PoolSpec
    >>> from lepton_dask.sim.trace import sawtooth
    >>> sim = Simulator(sawtooth(gaps=(30,)), [PoolSpec("cpu", threads=2, startup_s=20)],
    ...                 BalancedPolicy(1.0), minimum_billing=60)
    >>> r = sim.run()
    >>> r.tasks_done == len(sim.trace), r.cost_usd > 0
    (True, True)
    """

    def __init__(
        self,
        trace: Trace,
        pools: list[PoolSpec],
        policy: Any,
        *,
        minimum_billing: float = 60.0,
        interval: float = 1.0,
        initial: dict[str, int] | None = None,
        seed: int = 0,
        horizon: float | None = None,
        record_timeline: bool = True,
        hold_results: bool = False,
        stall_s: float = 3600.0,
    ):
        self.trace = trace
        self.pools = {p.name: p for p in pools}
        if len(self.pools) != len(pools):
            raise ValueError("pool names must be unique")
        self.policy = policy
        self.minimum = float(minimum_billing)
        self.interval = float(interval)
        self.initial = dict(initial or {})
        for name in self.initial:
            if name not in self.pools:
                raise ValueError(f"initial workers for unknown pool {name!r}")
        self.rng = np.random.default_rng(seed)
        self.horizon = horizon
        self.record_timeline = record_timeline
        # the client keeps every result until the end (as a script holding its
        # futures does): the cluster then always holds data, on its oldest worker
        self.hold_results = hold_results
        self.stall_s = float(stall_s)

    def run(self) -> SimResult:
        tr = self.trace
        n = len(tr)
        submit = tr.submit.tolist()
        duration = tr.duration.tolist()
        kind = tr.kind.tolist()
        batch_of = tr.burst.tolist()
        order = sorted(range(n), key=submit.__getitem__)
        deps_left = [len(d) for d in tr.deps] if tr.deps is not None else [0] * n
        dependents: list[list[int]] = [[] for _ in range(n)]
        if tr.deps is not None:
            for i, d in enumerate(tr.deps):
                for j in d:
                    dependents[j].append(i)
        level = bottom_levels(duration, dependents, tr.deps)
        burst_arrival = {b["burst"]: b["arrival"] for b in tr.bursts()}
        batches = Batches(tr, level)
        submitted = [False] * n
        ready = {0: ready_queue(tr, burst_arrival), 1: ready_queue(tr, burst_arrival)}
        queued_work = [0.0, 0.0]
        pending_work = [0.0, 0.0]
        pending_durations: list[float] = []  # max-heap (negated), lazily cleaned
        pending_live: dict[float, int] = {}
        completed_work = [0.0, 0.0]
        views = ViewBuilder()
        run_end_sum = [0.0, 0.0]
        run_count = [0, 0]
        running_at: dict[
            int, tuple[int, float, float, int]
        ] = {}  # task -> (wid, start, end, attempt)
        attempt = [0] * n
        workers: dict[int, _Worker] = {}
        free_workers = {0: {}, 1: {}}  # kind -> ordered set of wids with free threads
        events: list = []
        seq = 0
        now = 0.0
        pool_kind = {
            name: (1 if p.kind == "gpu" else 0) for name, p in self.pools.items()
        }
        burst_last = {}
        lifetimes: list[tuple[str, float, float, float]] = []
        timeline: list = []
        decisions: list = []
        lost = 0.0
        spent = 0.0
        preemptions = 0
        runs = 0
        tasks_done = 0
        next_wid = 0

        def push(t, typ, payload):
            nonlocal seq
            seq += 1
            heapq.heappush(events, (t, seq, typ, payload))

        def launch(pool: PoolSpec, at: float, arrived: bool = False):
            nonlocal next_wid
            w = _Worker(next_wid, pool, at, at if arrived else at + pool.startup_s)
            next_wid += 1
            workers[w.wid] = w
            if arrived:
                arrive(w, at)
            else:
                push(w.arrive_at, _ARRIVE, w.wid)
            return w

        def arrive(w: _Worker, t: float):
            w.arrived = True
            w.free = w.pool.threads
            free_workers[pool_kind[w.pool.name]][w.wid] = None
            if w.pool.preemptions_per_hour > 0:
                push(
                    t + self.rng.exponential(3600.0 / w.pool.preemptions_per_hour),
                    _PREEMPT,
                    w.wid,
                )

        def end(w: _Worker, t: float):
            nonlocal spent
            w.alive = False
            w.ended = t
            free_workers[pool_kind[w.pool.name]].pop(w.wid, None)
            del workers[w.wid]
            billed = max(t - w.billed_since, self.minimum)
            usd = billed * w.pool.usd_per_hour / 3600.0
            spent += usd
            lifetimes.append((w.pool.name, w.billed_since, t, usd))

        def make_ready(i: int):
            k = kind[i]
            ready[k].append(i)
            queued_work[k] += duration[i]

        def dispatch(k: int, t: float):
            nonlocal runs
            q = ready[k]
            fw = free_workers[k]
            while q and fw:
                wid = next(iter(fw))
                w = workers[wid]
                i = q.popleft()
                queued_work[k] -= duration[i]
                end_t = t + duration[i] / w.pool.speed
                attempt[i] += 1
                running_at[i] = (wid, t, end_t, attempt[i])
                run_end_sum[k] += end_t
                run_count[k] += 1
                batches.start(i, t, end_t)
                runs += 1
                w.running.add(i)
                w.free -= 1
                if w.free == 0:
                    del fw[wid]
                push(end_t, _FINISH, (i, attempt[i]))

        def unrun(i: int, end_t: float):
            k = kind[i]
            run_end_sum[k] -= end_t
            run_count[k] -= 1
            if run_count[k] == 0:
                run_end_sum[k] = 0.0  # no float residue when nothing runs

        for name, count in self.initial.items():
            for _ in range(count):
                launch(self.pools[name], 0.0, arrived=True)
        push(0.0, _TICK, None)
        ptr = 0
        last_finish = 0.0
        end_time = None
        stalled_since: float | None = None
        while events or ptr < n:
            next_submit = submit[order[ptr]] if ptr < n else math.inf
            if events and events[0][0] < next_submit:
                t, _, typ, payload = heapq.heappop(events)
            else:  # submissions come before events (and ticks) at the same time
                t, typ, payload = next_submit, None, None
            now = t
            if typ is None:  # submissions at this time
                while ptr < n and submit[order[ptr]] <= now:
                    i = order[ptr]
                    ptr += 1
                    submitted[i] = True
                    batches.submit(i, now)
                    if deps_left[i] == 0:
                        make_ready(i)
                    else:
                        pending_work[kind[i]] += duration[i]
                        heapq.heappush(pending_durations, -duration[i])
                        pending_live[duration[i]] = pending_live.get(duration[i], 0) + 1
                for k in (0, 1):
                    dispatch(k, now)
                continue
            if typ == _FINISH:
                i, att = payload
                info = running_at.get(i)
                if info is None or info[3] != att:
                    continue  # a run lost to a preemption
                wid, _, end_t, _ = info
                del running_at[i]
                k = kind[i]
                unrun(i, end_t)
                batches.finish(i, end_t)
                completed_work[k] += duration[i]
                tasks_done += 1
                last_finish = now
                burst_last[batch_of[i]] = now
                w = workers.get(wid)
                if w is not None:
                    w.running.discard(i)
                    w.free += 1
                    free_workers[k][wid] = None
                for j in dependents[i]:
                    deps_left[j] -= 1
                    if deps_left[j] == 0 and submitted[j]:
                        pending_work[kind[j]] -= duration[j]
                        pending_live[duration[j]] -= 1
                        make_ready(j)
                for kk in (0, 1):
                    dispatch(kk, now)
            elif typ == _ARRIVE:
                w = workers.get(payload)
                if w is not None and w.alive:
                    arrive(w, now)
                    dispatch(pool_kind[w.pool.name], now)
            elif typ == _PREEMPT:
                w = workers.get(payload)
                if w is None or not w.alive:
                    continue
                preemptions += 1
                for i in list(w.running):
                    _, start, end_t, _ = running_at.pop(i)
                    unrun(i, end_t)
                    batches.lose(i, end_t)
                    k = kind[i]
                    lost += now - start
                    ready[k].appendleft(i)
                    queued_work[k] += duration[i]
                w.running.clear()
                end(w, now)
                for kk in (0, 1):
                    dispatch(kk, now)
            elif typ == _TICK:
                st = self._state(
                    now,
                    workers,
                    queued_work,
                    pending_work,
                    run_end_sum,
                    run_count,
                    ready,
                    completed_work,
                    spent,
                    batches,
                    tasks_done,
                    self._tail(pending_durations, pending_live),
                )
                pending = [
                    WorkerView(str(w.wid), w.pool.name, w.billed_since, False, False)
                    for w in workers.values()
                    if not w.arrived
                ]
                view = views.build(st, self.pools, pending)
                decision = self.policy.decide(view)
                if len(decisions) < 100_000:
                    decisions.append(decision.as_log(now))
                self._apply(decision, view, workers, launch, end, now)
                if self.record_timeline:
                    counts: dict[str, int] = {}
                    rate = 0.0
                    for w in workers.values():
                        counts[w.pool.name] = counts.get(w.pool.name, 0) + 1
                        rate += w.pool.usd_per_hour
                    timeline.append((now, counts, rate))
                all_done = tasks_done == n
                if all_done and end_time is None:
                    end_time = now
                horizon = (
                    self.horizon
                    if self.horizon is not None
                    else (end_time or 0) + 600.0
                )
                if all_done and (not workers or now >= horizon):
                    break
                # work left, nothing more arriving, no worker up or starting:
                # a policy that never launches (a budget below one worker's
                # minimum, say) leaves the run unfinished rather than endless
                if workers or ptr < n or all_done:
                    stalled_since = None
                elif stalled_since is None:
                    stalled_since = now
                elif now - stalled_since >= self.stall_s:
                    break
                push(now + self.interval, _TICK, None)
        for w in list(workers.values()):
            end(w, now)
        cost = sum(x[3] for x in lifetimes)
        ws: dict[str, float] = {}
        for name, start, stop, _ in lifetimes:
            ws[name] = ws.get(name, 0.0) + max(stop - start, self.minimum)
        lat = {b: burst_last.get(b, math.inf) - a for b, a in burst_arrival.items()}
        met = [lat[b] <= d + 1e-9 for b, d in tr.deadline.items() if b in lat]
        t0 = float(tr.submit.min()) if n else 0.0
        return SimResult(
            tr.name,
            getattr(self.policy, "label", type(self.policy).__name__),
            cost,
            last_finish - t0,
            lat,
            (sum(met) / len(met)) if met else 1.0,
            ws,
            lost,
            preemptions,
            tasks_done,
            runs,
            timeline,
            decisions,
            lifetimes,
        )

    def _state(
        self,
        now,
        workers,
        queued_work,
        pending_work,
        run_end_sum,
        run_count,
        ready,
        completed_work,
        spent,
        batches,
        tasks_done,
        tail,
    ) -> ScalerState:
        """The tick's :class:`ScalerState`, as ``CostMonitor.scaler_state``
        reports it on a real scheduler."""
        backlog = [
            queued_work[k] + max(0.0, run_end_sum[k] - run_count[k] * now)
            for k in (0, 1)
        ]
        arrived = []
        threads = 0.0
        # billed so far, as the CostMonitor reports it: ended lives plus each
        # live worker's time (at least the minimum billing period)
        billed = 0.0
        for w in workers.values():
            billed += w.pool.usd_per_hour * max(now - w.billed_since, self.minimum)
            if w.arrived:
                arrived.append(
                    {
                        "name": str(w.wid),
                        "pool": w.pool.name,
                        "billed_since": w.billed_since,
                        "busy": bool(w.running),
                        "holds_data": False,
                    }
                )
                threads += w.pool.threads * w.pool.speed
        if self.hold_results and 0 < tasks_done < len(self.trace) and arrived:
            # the client holds results: they live on the oldest worker
            min(arrived, key=lambda d: d["billed_since"])["holds_data"] = True
        return {
            "now": now,
            "backlog": {"cpu": backlog[0], "gpu": backlog[1]},
            "tasks": {KIND_NAMES[k]: len(ready[k]) + run_count[k] for k in (0, 1)},
            "pending": {"cpu": pending_work[0], "gpu": pending_work[1]},
            "pending_tail": tail,
            "completed": {"cpu": completed_work[0], "gpu": completed_work[1]},
            "workers": arrived,
            "threads": threads,
            "minimum_billing": self.minimum,
            "spend_usd": spent + billed / 3600.0,
            "batches": batches.state(now),
        }

    @staticmethod
    def _tail(heap: list[float], live: dict[float, int]) -> float:
        """Longest duration among tasks still waiting for dependencies."""
        while heap and live.get(-heap[0], 0) <= 0:
            heapq.heappop(heap)
        return -heap[0] if heap else 0.0

    def _apply(
        self, decision, view: ClusterView, workers: dict, launch, end, now: float
    ) -> None:
        for name, target in decision.targets.items():
            pool = self.pools[name]
            target = min(max(int(target), pool.min_workers), pool.max_workers)
            mine = [w for w in workers.values() if w.pool.name == name]
            have = len(mine)
            if target > have:
                for _ in range(target - have):
                    launch(pool, now)
            elif target < have:
                drop = have - target
                if decision.release is not None:
                    # named releases (stock Adaptive): close launches that have
                    # not arrived first, then the idle workers it named
                    pending = [w for w in mine if not w.arrived]
                    for w in pending[:drop]:
                        end(w, now)
                    drop -= min(drop, len(pending))
                    names = set(decision.release.get(name, [])[:drop])
                    victims = [
                        w
                        for w in mine
                        if str(w.wid) in names and w.arrived and not w.running
                    ]
                else:
                    # cost-aware: only idle workers whose paid minimum is used up
                    ids = {w.name for w in releasable(view, name)[:drop]}
                    victims = [w for w in mine if str(w.wid) in ids and not w.running]
                for w in victims[:drop]:
                    end(w, now)
