"""Model-predictive control on the forecast: plan the next batches with the
oracle's optimiser, follow the plan, re-plan as the load comes.

:class:`ForecastMPC` wraps a
:class:`~lepton_dask.scaling.predictive.PredictivePolicy`. When the forecast is
confident (a period, or a regular pattern of the last arrivals; switched on,
not off for misses), it plans the next :data:`HORIZON` forecast batches with
the integer program of :mod:`lepton_dask.sim.oracle` (HiGHS), starting from the
workers the cluster has now (``warm``), and follows that plan's billed count
per pool:

- while no work is outstanding the plan decides alone: it keeps workers warm
  exactly through a gap it judges short, releases them at once before a long
  one, and launches ahead of the next forecast batch (one startup ahead);
- while work is outstanding, the larger of the plan's count and the SLO
  policy's (the plan's work is divisible, the real tasks are not);
- the plan is re-solved at each arrival and each missed forecast; until the
  forecast batch arrives the plan's clock waits at the batch's slot, and when
  it arrives early or late the plan is shifted to it;
- a forecast that misses switches itself off (the predictive policy's rule)
  and the SLO policy decides, as without a plan.

The solve runs off the caller's thread (``executor="thread"``, the default: a
single background thread, HiGHS releases the GIL) so a scheduler's event loop
waits only for a snapshot of the forecast (lists of floats); the plan is
adopted at the first decision after it is ready. ``executor="inline"`` solves
in the call (the simulator's choice, so a run does not depend on wall time);
the plan is still adopted at the next decision. Plans are cached by their
inputs, rounded to the grid: an exactly recurring load is solved once.

It lives beside the oracle because it uses the oracle's program. It is not
a policy offered to users (not in :data:`lepton_dask.scaling.registry.POLICIES`,
not exported): measured, it costs 1.00-1.03x the predictive policy it wraps
on every trace, and is kept for ``benchmarks/bench_learning.py``'s comparison.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lepton_dask.scaling.forecast import ArrivalForecast, Forecast
from lepton_dask.scaling.predictive import PredictivePolicy
from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import ClusterView, Decision, PoolSpec, releasable
from lepton_dask.sim import _milp
from lepton_dask.sim.bounds import idle_cut_s
from lepton_dask.sim.oracle import DT_LADDER, _kind_pools, _problem, _tasks
from lepton_dask.sim.trace import Trace

HORIZON = 3  # forecast batches a plan covers
MAX_SLOTS = 300  # the grid step is the finest that keeps the plan under this
TASKS_PER_BATCH = 64  # a forecast batch is planned as at most this many tasks
TIME_LIMIT = 5.0  # seconds per solve (the incumbent is used when it stops)
CACHE = 64  # plans kept by their inputs

logger = logging.getLogger("lepton_dask.scaling")


@dataclass
class BilledSchedule:
    """Billed workers per pool per slot of ``dt`` seconds from ``start``
    (clock time), for the forecast ``batches`` [(arrival, work), ...]."""

    start: float
    dt: float
    billed: dict[str, list[int]]
    batches: list[tuple[float, float]]
    status: str = "optimal"
    seconds: float = 0.0
    #: where the first batch really arrived (the plan's clock follows it)
    arrived: float | None = None
    lead: dict[str, float] = field(default_factory=dict)

    def count(self, pool: str, t: float) -> int | None:
        """The plan's workers of ``pool`` at ``t`` (None past its end)."""
        if pool not in self.billed:
            return None
        if self.batches:
            first = self.batches[0][0]
            if self.arrived is None:
                t = min(t, first)  # waiting for the batch: the clock waits too
            else:
                t -= self.arrived - first
        t += self.lead.get(pool, 0.0)
        if t < self.start:
            return 0  # before the plan: released (see plan_window)
        k = int((t - self.start) // self.dt)
        plan = self.billed[pool]
        if k >= len(plan):
            return None
        return plan[max(0, k)]

    def over(self, t: float) -> bool:
        """Whether ``t`` is past the plan's end (for every pool it plans)."""
        return all(self.count(pool, t) is None for pool in self.billed)


def forecast_ahead(
    arrivals: list[float], works: list[float], horizon: int = HORIZON
) -> list[Forecast]:
    """The next ``horizon`` batches, each forecast from the history plus the
    ones before it (at the middle of their windows); stops at the first that
    has no period or regular pattern behind it."""
    f = ArrivalForecast()
    f.arrivals, f.works = list(arrivals), list(works)
    out: list[Forecast] = []
    for _ in range(horizon):
        nxt = f.next()
        if nxt is None or nxt.source == "histogram" or nxt.work <= 0:
            break
        out.append(nxt)
        f.observe(0.5 * (nxt.earliest + nxt.latest), nxt.work)
    return out


def plan_window(
    now: float,
    forecasts: list[Forecast],
    pools: list[PoolSpec],
    deadline: float,
    minimum_billing: float,
    busy_until: float | None = None,
) -> tuple[float, list[tuple[float, float]]]:
    """``(start, [(arrival, work), ...])``: the forecast batches a plan covers
    and when it starts.

    It stops before a gap of ``cut = m + max(s, m)`` seconds between one
    batch's deadline and the next batch (``m`` the minimum billing, ``s`` the
    longest startup): releasing everything before such a gap and starting
    afresh after it is never dearer (the replacement argument of
    :mod:`lepton_dask.sim.bounds`), so the plan after it is made later. For
    the same reason a plan whose first batch is more than ``cut`` away starts
    ``cut`` before it, with nothing warm. It also stops before a batch whose
    arrival window is wider than ``cut``: holding workers through it could
    cost more than the cold start it saves (the forecast's policy decides).
    ``busy_until``: the latest deadline of the work under way (the plan then
    starts now, with it)."""
    cut = idle_cut_s(pools, minimum_billing)
    out: list[tuple[float, float]] = []
    for f in forecasts:
        if f.latest - f.earliest > cut:
            break
        ref = out[-1][0] + deadline if out else busy_until
        if ref is not None and f.earliest - ref >= cut:
            break
        out.append((f.earliest, f.work))
    if busy_until is not None or not out:
        return now, out
    return max(now, out[0][0] - cut), out


def plan_trace(
    now: float,
    batches: list[tuple[float, float]],
    deadline: float,
    critical: float,
    current: list[tuple[float, float]] = (),
) -> Trace:
    """The forecast batches as a trace that starts at ``now``: each batch's
    work split into tasks no shorter than its critical path. ``current``:
    [(deadline, remaining work)] of the batches under way, due at ``now``."""
    sub, dur, burst, due = [], [], [], {}
    todo = [(now, w, d - now) for d, w in current] + [
        (a, w, deadline) for a, w in batches
    ]
    for b, (arrival, work, d) in enumerate(todo):
        n = max(1, min(TASKS_PER_BATCH, math.ceil(work / max(critical, 1e-3))))
        sub += [max(0.0, arrival - now)] * n
        dur += [work / n] * n
        burst += [b] * n
        due[b] = max(float(d), 1.0)  # an overdue batch: as soon as it can
    return Trace(
        "plan",
        np.array(sub, float),
        np.array(dur, float),
        np.zeros(len(sub), np.int8),
        np.array(burst, int),
        due,
    )


def solve_plan(
    now: float,
    batches: list[tuple[float, float]],
    pools: list[PoolSpec],
    warm: dict[str, int],
    deadline: float,
    critical: float,
    minimum_billing: float,
    time_limit: float = TIME_LIMIT,
    current: list[tuple[float, float]] = (),
) -> BilledSchedule | None:
    """The cheapest plan for ``batches`` from ``now`` with ``warm`` workers
    running (the oracle's program, clairvoyant, on a grid of at most
    :data:`MAX_SLOTS` slots); None when the solver found none."""
    trace = plan_trace(now, batches, deadline, critical, current)
    kp = _kind_pools(trace, pools)
    # warm workers can start at once: no startup before the first task
    floor = {
        k: [replace(p, startup_s=0.0) if warm.get(p.name) else p for p in ps]
        for k, ps in kp.items()
    }
    tk = _tasks(trace, floor, minimum_billing, None, False)
    span = max(tk.deadline.values())
    dt = next((x for x in DT_LADDER if span / x <= MAX_SLOTS), DT_LADDER[-1])
    prob = _problem(tk, kp, minimum_billing, dt)
    prob.warm = {p.name: warm.get(p.name, 0) for p in prob.pools}
    sol = _milp.solve(prob, online=False, time_limit=time_limit, mip_rel_gap=1e-3)
    if not sol.billed:
        return None
    # a startup the grid rounded off is made up by launching that much early
    lead = {
        p.name: p.startup_s - math.floor(p.startup_s / dt + 1e-9) * dt for p in pools
    }
    return BilledSchedule(
        now,
        dt,
        {n: [int(x) for x in B] for n, B in sol.billed.items()},
        list(batches),
        sol.status,
        sol.seconds,
        lead={n: v for n, v in lead.items() if n in sol.billed},
    )


def _key(now, batches, warm, deadline, critical) -> tuple:
    """A plan's inputs, rounded, relative to ``now`` (the cache key)."""
    rel = tuple((round(a - now), float(f"{w:.3g}")) for a, w in batches)
    return rel, tuple(sorted(warm.items())), round(deadline, 1), round(critical, 1)


class ForecastMPC:
    """A :class:`PredictivePolicy` that plans the next forecast batches and
    follows the plan; see the module docstring.

    Parameters
    ----------
    base : PredictivePolicy or SLOPolicy
        Learns the forecast, scores it and decides when there is no plan (an
        SLOPolicy is wrapped in a PredictivePolicy).
    horizon : int
        Forecast batches each plan covers.
    executor : {"thread", "inline"}
        Where the solve runs: a background thread, or in the call.
    time_limit : float
        Seconds per solve.
    """

    def __init__(
        self,
        base: PredictivePolicy | SLOPolicy,
        *,
        horizon: int = HORIZON,
        executor: str = "thread",
        time_limit: float = TIME_LIMIT,
    ):
        if isinstance(base, SLOPolicy):
            base = PredictivePolicy(base)
        if not isinstance(base, PredictivePolicy):
            raise TypeError(
                f"base must be a PredictivePolicy or an SLOPolicy, got {type(base).__name__}"
            )
        if executor not in ("thread", "inline"):
            raise ValueError(f"executor must be 'thread' or 'inline', got {executor!r}")
        if not (isinstance(horizon, int) and horizon >= 1):
            raise ValueError(
                f"horizon must be a whole number of batches >= 1, got {horizon!r}"
            )
        self.predictive = base
        self.deadline = base.deadline
        self.horizon, self.executor, self.time_limit = horizon, executor, time_limit
        self.label = "planning " + base.base.label
        self.plans = 0  # solves started
        self.cache_hits = 0
        self.solve_seconds: list[float] = []
        self._plan: BilledSchedule | None = None
        self._future: Future | None = None
        self._for: tuple | None = None
        self._cache: OrderedDict[tuple, BilledSchedule] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="lepton-plan")
            if executor == "thread"
            else None
        )

    def close(self) -> None:
        """Stop the planning thread (a solve under way is left to finish)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def detail(self) -> dict[str, Any]:
        return {
            **self.predictive.detail(),
            "plans": self.plans,
            "plan_cache_hits": self.cache_hits,
        }

    # -- deciding -------------------------------------------------------------------
    def decide(self, view: ClusterView) -> Decision:
        d = self.predictive.decide(view)
        self._adopt()
        p = self.predictive
        nxt = p.forecast.next()
        if p.off or nxt is None or nxt.source == "histogram":
            self._plan = None
            d.detail["plan"] = "none: " + (
                "the forecast is off" if p.off else "no period or regular pattern yet"
            )
            return d
        spent = self._plan is None or self._plan.over(view.now)
        key = (len(p.forecast.arrivals), p.misses, spent)
        if key != self._for and self._future is None:
            self._for = key
            self._request(view)
        if self._plan is not None:
            last = p.forecast.arrivals[-1]
            if self._plan.arrived is None and last > self._plan.start:
                self._plan.arrived = last
            self._apply(view, d)
        return d

    def _request(self, view: ClusterView) -> None:
        """Snapshot what the plan needs and start its solve."""
        p = self.predictive
        pools = [q for q in view.pools.values() if q.kind == "cpu"]
        deadline = p.base._typical("deadline") or p.base.deadline
        if not pools or deadline is None:
            return
        args = (
            view.now,
            list(p.forecast.arrivals),
            list(p.forecast.works),
            pools,
            {q.name: view.count(q.name) for q in pools},
            [
                (b.arrival + (b.deadline_s or deadline), b.work.get("cpu", 0.0))
                for b in view.batches
                if b.remaining > 0 and b.work.get("cpu", 0.0) > 0
            ],
            float(deadline),
            float(p.base._typical("critical") or 0.0),
            view.minimum_billing,
        )
        self.plans += 1
        if self._pool is None:
            f: Future = Future()
            f.set_result(self._solve(*args))
            self._future = f
        else:
            self._future = self._pool.submit(self._solve, *args)

    def _solve(
        self, now, arrivals, works, pools, warm, current, deadline, critical, minimum
    ):
        busy = max((d for d, _ in current), default=None)
        fc = forecast_ahead(arrivals, works, self.horizon)
        start, batches = plan_window(now, fc, pools, deadline, minimum, busy)
        if not batches and not current:
            return None
        if start > now:
            warm = {}  # released before the gap: the plan starts from none
        key = _key(start, [*current, *batches], warm, deadline, critical)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            return BilledSchedule(
                start, hit.dt, hit.billed, batches, hit.status, 0.0, lead=hit.lead
            )
        plan = solve_plan(
            start,
            batches,
            pools,
            warm,
            deadline,
            critical,
            minimum,
            self.time_limit,
            current,
        )
        if plan is not None:
            with self._lock:
                self._cache[key] = plan
                while len(self._cache) > CACHE:
                    self._cache.popitem(last=False)
            self.solve_seconds.append(plan.seconds)
        return plan

    def _adopt(self) -> None:
        f = self._future
        if f is None or not f.done():
            return
        self._future = None
        try:
            plan = f.result()
        except Exception as e:  # a failed solve leaves the SLO policy in charge
            logger.warning(
                "plan failed, the forecast's policy decides: %r", e, exc_info=True
            )
            plan = None
        if plan is not None:
            self._plan = plan

    def _apply(self, view: ClusterView, d: Decision) -> None:
        """Follow the plan: alone while idle, at least the SLO policy's count
        while work is outstanding."""
        plan = self._plan
        assert plan is not None
        outstanding = any(b.remaining > 0 for b in view.batches)
        said = []
        for name, pool in view.pools.items():
            n = plan.count(name, view.now)
            if n is None:
                continue
            n = min(pool.max_workers, max(pool.min_workers, n))
            have = view.count(name)
            was = d.targets.get(name, have)
            if outstanding:
                t = max(was, n)
            else:
                t = n if n >= have else max(n, have - len(releasable(view, name)))
            if self.predictive.forecast_only:
                said.append(f"would hold {n} {name}")
                continue
            if t != was:
                said.append(f"{name} {was} -> {t}")
            d.targets[name] = t
        first = (
            f", the first at {plan.batches[0][0] - view.now:+.0f} s"
            if plan.batches
            else ""
        )
        d.detail["plan"] = (
            f"plan of {len(plan.batches)} forecast batch(es){first} "
            f"({plan.status}, {plan.dt:g} s grid)"
        )
        if said:
            why = "plan: " + ", ".join(said)
            d.reason = f"{d.reason}; {why}" if d.reason != "steady" else why
