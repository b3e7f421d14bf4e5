"""A discrete-event cluster simulator that drives the real policy objects.

Fake clock; tasks (independent or a graph) with durations and a resource kind;
pools of workers with startup delay, per-second billing with a minimum (from
the launch request, to release or death), spot preemptions (Poisson), and a
policy consulted every ``interval`` seconds exactly as ``CostAwareAdaptive``
consults it: each tick emits the same :class:`~lepton_dask._protocol.ScalerState`
as ``CostMonitor.scaler_state`` and turns it into a view with the production
:class:`~lepton_dask.scaling.state.ViewBuilder`, and the decision is carried
out by the one apply step (:func:`~lepton_dask.scaling.apply.plan_apply`).
The policy knows only what a real scheduler knows: work is priced with the
scheduler's per-prefix duration estimates (``unknown-task-duration``, twice
the longest running time, then the prefix's average;
:mod:`lepton_dask.sim._estimates`), read from ``dask.config`` as the scheduler
reads them, never with the trace's true durations. Submissions at time ``t`` come
before the tick at ``t`` (as in Dask, where ``update_graph`` runs before the
next adaptive callback sees the scheduler). Workers take ready tasks
first-in first-out.

It simulates 1,000 workers and 1,000,000 tasks in well under a minute (see
``benchmarks/bench_scaling.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim._event_loop import EventLoop
from lepton_dask.sim.trace import Trace

if TYPE_CHECKING:
    from lepton_dask.scaling.registry import Policy


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
    #: workers launched, and relaunches within one startup of a retirement
    launches: int = 0
    churn: int = 0

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
    policy : Policy
        Anything with ``decide(ClusterView) -> Decision``.
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
    start_lag : sequence of float, optional
        Measured seconds a worker takes to arrive beyond its pool's startup
        delay (``LocalPoolCluster.arrival_lags()`` of a real run): each
        launch draws one. Default: none, every worker arrives on the dot.
    serial_starts : bool
        Start semantics of a cluster manager that holds SpecCluster's lock
        through a worker's boot: the workers asked for while others are
        starting begin their startup only once those have arrived. Default:
        workers start in parallel (``LocalPoolCluster``, dask-jobqueue).

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
        policy: Policy,
        *,
        minimum_billing: float = 60.0,
        interval: float = 1.0,
        initial: dict[str, int] | None = None,
        seed: int = 0,
        horizon: float | None = None,
        record_timeline: bool = True,
        hold_results: bool = False,
        stall_s: float = 3600.0,
        start_lag: Sequence[float] | None = None,
        serial_starts: bool = False,
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
        self.start_lag = [max(0.0, float(x)) for x in start_lag or ()]
        self.serial_starts = bool(serial_starts)

    def run(self) -> SimResult:
        r = EventLoop(self)
        r.run()
        tr = self.trace
        ws: dict[str, float] = {}
        for name, start, stop, _ in r.lifetimes:
            ws[name] = ws.get(name, 0.0) + max(stop - start, self.minimum)
        lat = {b: r.burst_last.get(b, math.inf) - a for b, a in r.burst_arrival.items()}
        met = [lat[b] <= d + 1e-9 for b, d in tr.deadline.items() if b in lat]
        t0 = float(tr.submit.min()) if len(tr) else 0.0
        return SimResult(
            tr.name,
            getattr(self.policy, "label", type(self.policy).__name__),
            sum(x[3] for x in r.lifetimes),
            r.last_finish - t0,
            lat,
            (sum(met) / len(met)) if met else 1.0,
            ws,
            r.lost,
            r.preemptions,
            r.tasks_done,
            r.runs,
            r.timeline,
            r.decisions,
            r.lifetimes,
            r.churn.launches,
            r.churn.churn,
        )
