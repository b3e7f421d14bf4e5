"""The event loop of one simulated run, behind :class:`~lepton_dask.sim.Simulator`.

Events, in time order (submissions before events at the same time): a task
finishes, a worker arrives, a spot worker is preempted, the policy ticks. Each
kind is one method. The policy sees only what a real scheduler knows: work is
priced with per-prefix duration estimates (:mod:`lepton_dask.sim._estimates`),
never with the trace's true durations.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

from lepton_dask._protocol import ScalerState
from lepton_dask.scaling.apply import ChurnCounter, plan_apply
from lepton_dask.scaling.state import PoolSpec, ViewBuilder, WorkerView
from lepton_dask.sim._batches import Batches, ready_queue
from lepton_dask.sim._estimates import DurationEstimates

_ARRIVE, _FINISH, _TICK, _PREEMPT, _HEARTBEAT = 0, 1, 2, 3, 4
KINDS = ("cpu", "gpu")
#: a worker's first heartbeat, after it registers: ``Worker(heartbeat_interval=
#: "1s")`` (distributed worker.py:499, 778, 1154)
FIRST_HEARTBEAT_S = 1.0


def heartbeat_interval(n: int) -> float:
    """The heartbeat interval the scheduler asks of each of ``n`` workers
    (distributed scheduler.py:9203 ``heartbeat_interval``, sent back with
    each heartbeat, worker.py:1200).

    >>> [heartbeat_interval(n) for n in (1, 10, 11, 50, 400)]
    [0.5, 0.5, 1, 2, 3.0]
    """
    if n <= 10:
        return 0.5
    elif n < 50:
        return 1
    elif n < 200:
        return 2
    return n / 200 + 1


@dataclass
class _Worker:
    wid: int
    pool: PoolSpec
    billed_since: float
    arrive_at: float
    free: int = 0
    running: set = field(default_factory=set)
    arrived: bool = False


class EventLoop:
    """The event loop and state of one run of ``sim`` (a :class:`Simulator`)."""

    def __init__(self, sim: Any):
        self.sim = sim
        tr = sim.trace
        n = self.n = len(tr)
        self.submit = tr.submit.tolist()
        self.duration = tr.duration.tolist()
        self.kind = tr.kind.tolist()
        self.batch_of = tr.burst.tolist()
        self.order = sorted(range(n), key=self.submit.__getitem__)
        self.deps_left = [len(d) for d in tr.deps] if tr.deps is not None else [0] * n
        self.dependents: list[list[int]] = [[] for _ in range(n)]
        for i, d in enumerate(tr.deps or ()):
            for j in d:
                self.dependents[j].append(i)
        names = tr.prefixes()
        codes: dict[str, int] = {}
        self.prefix = [codes.setdefault(p, len(codes)) for p in names]
        self.know = DurationEstimates(list(codes))
        self.batches = Batches(tr, self.prefix, self.know)
        self.burst_arrival = {b["burst"]: b["arrival"] for b in tr.bursts()}
        self.ready = {k: ready_queue(tr, self.burst_arrival) for k in (0, 1)}
        P = len(codes)
        self.active = [[0] * P, [0] * P]  # ready + running, per kind and prefix
        self.waiting = [[0] * P, [0] * P]  # submitted, waiting for dependencies
        self.completed = [0.0, 0.0]
        self.submitted = [False] * n
        self.running_at: dict[int, tuple[int, float, float, int]] = {}
        self.attempt = [0] * n
        self.workers: dict[int, _Worker] = {}
        self.n_arrived = 0  # workers that have arrived (heartbeat_interval)
        self.free: dict[int, dict[int, None]] = {0: {}, 1: {}}
        self.pool_kind = {p: int(s.kind == "gpu") for p, s in sim.pools.items()}
        self.events: list = []
        self.seq = 0
        self.now = 0.0
        self.ptr = 0
        self.next_wid = 0
        self.views = ViewBuilder()
        self.churn = ChurnCounter()
        self.burst_last: dict[int, float] = {}
        self.lifetimes: list[tuple[str, float, float, float]] = []
        self.timeline: list = []
        self.decisions: list = []
        self.lost = self.spent = 0.0
        self.preemptions = self.runs = self.tasks_done = 0
        self.last_finish = 0.0
        self.end_time: float | None = None
        self.stalled_since: float | None = None
        # serial starts: the request being started and when the lock frees
        self._group_at = -math.inf
        self._group_begin = 0.0
        self._lock_free = 0.0

    # -- workers -------------------------------------------------------------------
    def push(self, t: float, typ: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, typ, payload))

    def _arrival(self, pool: PoolSpec, at: float) -> float:
        """When a worker launched at ``at`` arrives: its pool's startup, a
        drawn start lag, after the workers starting before it when starts
        are serial (SpecCluster's lock held through a boot)."""
        sim = self.sim
        begin = at
        if sim.serial_starts:
            if at != self._group_at:  # a new request: waits for the lock
                self._group_at = at
                self._group_begin = max(at, self._lock_free)
            begin = self._group_begin
        lag = 0.0
        if sim.start_lag:
            lag = sim.start_lag[int(sim.rng.integers(len(sim.start_lag)))]
        arrive = begin + pool.startup_s + lag
        self._lock_free = max(self._lock_free, arrive)
        return arrive

    def launch(self, pool: PoolSpec, at: float, arrived: bool = False) -> _Worker:
        arrive = at if arrived else self._arrival(pool, at)
        w = _Worker(self.next_wid, pool, at, arrive)
        self.next_wid += 1
        self.workers[w.wid] = w
        if arrived:
            self.arrive(w, at)
        else:
            self.push(w.arrive_at, _ARRIVE, w.wid)
        return w

    def arrive(self, w: _Worker, t: float) -> None:
        w.arrived = True
        self.n_arrived += 1
        w.free = w.pool.threads
        self.free[self.pool_kind[w.pool.name]][w.wid] = None
        if w.pool.preemptions_per_hour > 0:
            gap = self.sim.rng.exponential(3600.0 / w.pool.preemptions_per_hour)
            self.push(t + gap, _PREEMPT, w.wid)
        self.push(t + FIRST_HEARTBEAT_S, _HEARTBEAT, w.wid)

    def end(self, w: _Worker, t: float) -> None:
        """Billing of ``w`` ends at ``t``; a task it was running is run again."""
        for i in list(w.running):
            _, start, _, _ = self.running_at.pop(i)
            self.lost += t - start
            self.ready[self.kind[i]].appendleft(i)
        w.running.clear()
        self.free[self.pool_kind[w.pool.name]].pop(w.wid, None)
        del self.workers[w.wid]
        self.n_arrived -= w.arrived
        billed = max(t - w.billed_since, self.sim.minimum)
        usd = billed * w.pool.usd_per_hour / 3600.0
        self.spent += usd
        self.lifetimes.append((w.pool.name, w.billed_since, t, usd))

    # -- tasks ---------------------------------------------------------------------
    def make_ready(self, i: int) -> None:
        self.ready[self.kind[i]].append(i)
        self.active[self.kind[i]][self.prefix[i]] += 1

    def dispatch(self, t: float) -> None:
        for k in (0, 1):
            q, fw = self.ready[k], self.free[k]
            while q and fw:
                wid = next(iter(fw))
                w = self.workers[wid]
                i = q.popleft()
                end_t = t + self.duration[i] / w.pool.speed
                self.attempt[i] += 1
                self.running_at[i] = (wid, t, end_t, self.attempt[i])
                self.runs += 1
                w.running.add(i)
                w.free -= 1
                if w.free == 0:
                    del fw[wid]
                self.push(end_t, _FINISH, (i, self.attempt[i]))

    def blocked(self, p: int) -> bool:
        """No task of prefix ``p`` is ready or running, and some wait on
        other tasks (as :func:`lepton_dask._distributed.prefix_blocked`)."""
        return any(w[p] > 0 for w in self.waiting) and not any(
            a[p] > 0 for a in self.active
        )

    def on_submit(self) -> None:
        """Every task submitted at ``now``."""
        submit, order = self.submit, self.order
        while self.ptr < self.n and submit[order[self.ptr]] <= self.now:
            i = order[self.ptr]
            self.ptr += 1
            self.submitted[i] = True
            self.batches.submit(i, self.now)
            if self.deps_left[i] == 0:
                self.make_ready(i)
            else:
                self.waiting[self.kind[i]][self.prefix[i]] += 1
        self.dispatch(self.now)

    def on_finish(self, payload: tuple[int, int]) -> None:
        i, att = payload
        info = self.running_at.get(i)
        if info is None or info[3] != att:
            return  # a run lost to a preemption or a forced retirement
        wid, start, end_t, _ = info
        del self.running_at[i]
        k, p = self.kind[i], self.prefix[i]
        self.active[k][p] -= 1
        self.know.finished(p, end_t - start)
        self.batches.finish(i)
        self.completed[k] += self.duration[i]
        self.tasks_done += 1
        self.last_finish = self.now
        self.burst_last[self.batch_of[i]] = self.now
        w = self.workers.get(wid)
        if w is not None:
            w.running.discard(i)
            w.free += 1
            self.free[k][wid] = None
        for j in self.dependents[i]:
            self.deps_left[j] -= 1
            if self.deps_left[j] == 0 and self.submitted[j]:
                self.waiting[self.kind[j]][self.prefix[j]] -= 1
                self.make_ready(j)
        self.dispatch(self.now)

    def on_arrive(self, wid: int) -> None:
        w = self.workers.get(wid)
        if w is not None:
            self.arrive(w, self.now)
            self.dispatch(self.now)

    def on_preempt(self, wid: int) -> None:
        w = self.workers.get(wid)
        if w is None:
            return
        self.preemptions += 1
        self.end(w, self.now)
        self.dispatch(self.now)

    # -- the policy ----------------------------------------------------------------
    def on_heartbeat(self, wid: int) -> None:
        """A worker's heartbeat: each task it is running reported to the
        scheduler with its time so far (worker.py:1170-1174, ``add_exec_time``
        at scheduler.py:4602-4608); the next one after the interval the
        scheduler asks for its count of workers."""
        w = self.workers.get(wid)
        if w is None:
            return
        for i in w.running:
            self.know.executing(self.prefix[i], self.now - self.running_at[i][1])
        self.push(self.now + heartbeat_interval(self.n_arrived), _HEARTBEAT, wid)

    def state(self) -> ScalerState:
        """The tick's scaler state, as ``CostMonitor.scaler_state`` reports it
        on a real scheduler."""
        now, know, sim = self.now, self.know, self.sim
        est = [know.estimate(p) for p in range(len(know.names))]
        backlog = [sum(c * e for c, e in zip(a, est, strict=True)) for a in self.active]
        pending = [
            sum(c * e for c, e in zip(a, est, strict=True)) for a in self.waiting
        ]
        tail = max(
            (e for a in self.waiting for c, e in zip(a, est, strict=True) if c > 0),
            default=0.0,
        )
        arrived, threads, billed = [], 0.0, 0.0
        for w in self.workers.values():
            # billed so far as the CostMonitor reports it: each live worker's
            # time, at least the minimum billing period
            billed += w.pool.usd_per_hour * max(now - w.billed_since, sim.minimum)
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
        if sim.hold_results and 0 < self.tasks_done < self.n and arrived:
            # the client holds results: they live on the oldest worker
            min(arrived, key=lambda d: d["billed_since"])["holds_data"] = True
        return {
            "now": now,
            "backlog": dict(zip(KINDS, backlog, strict=True)),
            "tasks": {KINDS[k]: float(sum(self.active[k])) for k in (0, 1)},
            "pending": dict(zip(KINDS, pending, strict=True)),
            "pending_tail": tail,
            "completed": dict(zip(KINDS, self.completed, strict=True)),
            "workers": arrived,
            "threads": threads,
            "minimum_billing": sim.minimum,
            "spend_usd": self.spent + billed / 3600.0,
            "batches": self.batches.state(est, self.blocked),
        }

    def on_tick(self) -> bool:
        """Decide and apply; False when the run is over."""
        sim, now = self.sim, self.now
        pending = [
            WorkerView(str(w.wid), w.pool.name, w.billed_since, False, False)
            for w in self.workers.values()
            if not w.arrived
        ]
        view = self.views.build(self.state(), sim.pools, pending)
        decision = sim.policy.decide(view)
        if len(self.decisions) < 100_000:
            self.decisions.append(decision.as_log(now))
        self.apply(decision, view)
        if sim.record_timeline:
            counts: dict[str, int] = {}
            rate = 0.0
            for w in self.workers.values():
                counts[w.pool.name] = counts.get(w.pool.name, 0) + 1
                rate += w.pool.usd_per_hour
            self.timeline.append((now, counts, rate))
        return not self._over()

    def apply(self, decision: Any, view: Any) -> tuple[list[str], list[str]]:
        """Carry out :func:`~lepton_dask.scaling.apply.plan_apply`'s plan at
        ``now``; returns (launched, retired) worker names."""
        now = self.now
        plan = plan_apply(decision, view)
        launched: list[str] = []
        for p in plan.pools.values():
            for _ in range(p.launch):
                launched.append(str(self.launch(self.sim.pools[p.pool], now).wid))
            for name in p.retire:
                w = self.workers.get(int(name))
                if w is not None:
                    self.end(w, now)
        self.churn.record_actions(now, plan, view)
        if plan.retire:
            self.dispatch(now)  # work of a forced retirement goes elsewhere
        return launched, list(plan.retire)

    def _over(self) -> bool:
        sim, now = self.sim, self.now
        all_done = self.tasks_done == self.n
        if all_done and self.end_time is None:
            self.end_time = now
        horizon = sim.horizon if sim.horizon is not None else (self.end_time or 0) + 600
        if all_done and (not self.workers or now >= horizon):
            return True
        # work left, nothing more arriving, no worker up or starting: a policy
        # that never launches leaves the run unfinished rather than endless
        if self.workers or self.ptr < self.n or all_done:
            self.stalled_since = None
        elif self.stalled_since is None:
            self.stalled_since = now
        elif now - self.stalled_since >= sim.stall_s:
            return True
        return False

    # -- the loop ------------------------------------------------------------------
    def run(self) -> None:
        for name, count in self.sim.initial.items():
            for _ in range(count):
                self.launch(self.sim.pools[name], 0.0, arrived=True)
        self.push(0.0, _TICK, None)
        events, submit, order = self.events, self.submit, self.order
        handlers = {
            _FINISH: self.on_finish,
            _ARRIVE: self.on_arrive,
            _PREEMPT: self.on_preempt,
            _HEARTBEAT: self.on_heartbeat,
        }
        while events or self.ptr < self.n:
            nxt = submit[order[self.ptr]] if self.ptr < self.n else math.inf
            if not events or events[0][0] >= nxt:
                self.now = nxt  # submissions come before events at the same time
                self.on_submit()
                continue
            t, _, typ, payload = heapq.heappop(events)
            self.now = t
            if typ != _TICK:
                handlers[typ](payload)
            elif self.on_tick():
                self.push(t + self.sim.interval, _TICK, None)
            else:
                break
        for w in list(self.workers.values()):
            self.end(w, self.now)
