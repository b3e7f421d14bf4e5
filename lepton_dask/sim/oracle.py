"""The exact yardstick: what the cheapest plan that knows the future pays.

:func:`exact_oracle` solves an integer program (``scipy.optimize.milp``, HiGHS)
over a time grid of ``dt`` seconds: how many workers of each pool to launch in
each slot, how long to keep them, and which work they do in which slot. It
models what the simulator bills: workers are billed from the launch request,
at least ``minimum_billing`` seconds per life; a worker is unusable (and
billed) for its pool's ``startup_s``; a worker runs ``threads`` tasks at once
at ``speed``; CPU work runs only on ``cpu`` pools, GPU work on ``gpu`` pools;
no work is done before it is submitted, nor a task before its predecessors
could have finished, and every burst finishes by its deadline
(``Trace.deadline``: seconds after the burst's first submission, the
harness's ``deadline_met`` convention).

Two variants:

``clairvoyant``
    May launch whenever it likes (from time 0 on), e.g. before work arrives.
``online`` (online-feasible optimum, OFO)
    Knows the future, but may launch a worker only while submitted,
    unfinished work exists (as a policy reacting to the backlog can).

What the number is: a LOWER BOUND. No policy can pay less than ``usd`` on
this trace under this model (and, for ``online``, no policy that launches
only while work is outstanding). It is not always achievable, because the
work of a group of tasks is treated as divisible (fluid) inside the limits
below. Each relaxation only ever lowers the figure:

* work inside a group of tasks (same burst and kind, same latest finish) is
  divisible across workers; granularity is kept by a per-slot cap (a task
  runs on one thread, so it does at most ``speed * dt`` per slot; tasks long
  for their window get a group, and so a cap, of their own) and by each
  task's window: it cannot start before its submission, the first worker's
  startup, or the longest chain of predecessors (at the fastest speed), nor
  end later than its deadline minus the longest chain of successors (so a
  burst's finish is at least its critical path after its arrival);
* precedence between groups is kept only through those windows;
* preemptions are ignored (they only add cost) and so are ``max_workers``
  caps (dropping a constraint can only lower the optimum); a pool that is
  no cheaper, no faster and no quicker to start than another is dropped;
* workers that start from time 0 only (the simulator's ``initial`` workers
  are not modelled);
* the ``online`` rule allows a launch when some burst has arrived and is not
  finished, counting a burst as unfinished from its first submission to its
  last work (idle moments inside a burst count as outstanding).

Rounding to the grid, and why it keeps the bound valid: every real plan maps
to a grid plan that costs no more. A real life billed for ``l`` seconds
becomes ``floor(l / dt) + 1`` slots charged one slot less (so never more than
``l``); startup rounds DOWN to ``floor(startup / dt)`` slots and the minimum
life to ``floor(minimum / dt) + 1`` slots; the life is shifted to the grid
point at or before the moment its worker becomes usable, so work moves
EARLIER by less than ``dt``: each task's earliest slot is therefore one slot
before the one holding its earliest start (arrivals round DOWN, by up to
``2 * dt``), its latest slot the last one starting before its latest finish
(deadlines round UP), and released-work limits are taken a slot early. For
``online``, launch and work times move by less than ``dt`` each, so a launch
is allowed in a slot when a burst arrived by then has work two slots earlier
or later. Coarser grids are weaker (lower) bounds, never invalid ones: each
life is charged up to one slot less than it lasts, so with startup and
minimum billing both far below ``dt`` the program can fall towards busy time
(reported ``usd`` never falls below it).

:func:`exact_oracle` reports ``max(dual bound, busy-time bound, longest-task
bound)``: each is a lower bound, the solver's dual bound is the valid one when
the time limit stops it before optimality. The grid step is chosen so the
program stays small enough to solve in about a minute (:func:`choose_dt`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim import _milp
from lepton_dask.sim.trace import KIND_NAMES, Trace

DT_LADDER = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
INT_BUDGET = 6000  # integer variables the grid step is chosen to stay under
CONT_BUDGET = 60000  # continuous variables
LONG_TASK = 0.1  # a task this long for its window gets a group of its own
MAX_SINGLETONS = 64  # per burst


@dataclass
class OracleResult:
    """One trace's yardstick (all costs in USD unless named ``*_s``).

    ``usd`` is the valid lower bound: ``max(dual_bound_usd, busy_usd,
    longest_task_usd)``. ``plan_usd`` and ``worker_s`` describe the best plan
    the solver found (the incumbent): its cost and its billed worker-seconds
    (all pools; ``worker_s_by_pool`` per pool). ``gap`` is the solver's
    relative MIP gap, ``status`` ``"optimal"`` or ``"time_limit"``.
    """

    trace: str
    variant: str
    usd: float
    plan_usd: float
    dual_bound_usd: float
    worker_s: float
    worker_s_by_pool: dict[str, float]
    busy_usd: float
    busy_worker_s: float
    longest_task_usd: float
    gap: float
    status: str
    seconds: float
    dt: float
    deadlines: dict[int, float]
    deadlines_relaxed: dict[int, float]
    critical_path_s: dict[int, float]
    peak_workers: dict[str, int]
    n_int: int
    n_cont: int
    n_rows: int
    launches: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    #: the plan's billed workers per pool in each slot of ``dt`` seconds
    billed: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Flat fields for a table row."""
        return {
            "trace": self.trace,
            "variant": self.variant,
            "usd": self.usd,
            "plan_usd": self.plan_usd,
            "worker_s": self.worker_s,
            "busy_usd": self.busy_usd,
            "busy_worker_s": self.busy_worker_s,
            "gap": self.gap,
            "status": self.status,
            "seconds": self.seconds,
            "dt": self.dt,
            "deadlines_relaxed": len(self.deadlines_relaxed),
        }


def _kind_pools(trace: Trace, pools: Sequence[PoolSpec]) -> dict[str, list[PoolSpec]]:
    out = {}
    for kind, work in trace.work.items():
        if work <= 0:
            continue
        mine = [p for p in pools if p.kind == kind]
        if not mine:
            raise ValueError(f"trace {trace.name!r} has {kind} work but no {kind} pool")
        # a pool no cheaper, slower to start and slower than another is never
        # needed (preemptions and max_workers are not modelled)
        out[kind] = [
            q
            for i, q in enumerate(mine)
            if not any(
                _dominates(p, q) and (not _dominates(q, p) or j < i)
                for j, p in enumerate(mine)
                if j != i
            )
        ]
    return out


def _dominates(p: PoolSpec, q: PoolSpec) -> bool:
    return (
        p.usd_per_hour <= q.usd_per_hour
        and p.startup_s <= q.startup_s
        and p.speed >= q.speed
        and p.threads * p.speed >= q.threads * q.speed
    )


def busy_time_bound(trace: Trace, pools: Sequence[PoolSpec]) -> dict[str, float]:
    """Busy time at the cheapest pool per kind: no idle time, no startup, no
    minimum billing, no preemption losses. A lower bound on any plan.

    ``{"usd": ..., "worker_s": ...}`` (worker-seconds at those pools).
    """
    usd = ws = 0.0
    for kind, mine in _kind_pools(trace, pools).items():
        p = min(mine, key=lambda q: q.usd_per_hour / (q.threads * q.speed))
        secs = trace.work[kind] / (p.threads * p.speed)
        ws += secs
        usd += secs * p.usd_per_hour / 3600.0
    return {"usd": usd, "worker_s": ws}


@dataclass
class _Tasks:
    """Per task (positive duration only): burst, kind, duration, windows."""

    burst: np.ndarray
    kind: np.ndarray
    dur: np.ndarray
    run: np.ndarray  # duration at the fastest pool of its kind (seconds)
    est: np.ndarray  # earliest start (s)
    lft: np.ndarray  # latest finish (s)
    arrival: dict[int, float]
    deadline: dict[int, float]  # absolute
    relaxed: dict[int, float]  # burst -> deadline (relative) used instead
    critical: dict[int, float]  # burst -> critical path from arrival (s)


def _earliest(trace, order, preds, run, floor_):
    est = np.array(floor_, float)
    for i in order:
        for j in preds[i]:
            est[i] = max(est[i], est[j] + run[j])
    return est


def _topo(trace: Trace) -> tuple[list[int], list[list[int]], list[list[int]]]:
    n = len(trace)
    if trace.deps is None:
        return list(range(n)), [[] for _ in range(n)], [[] for _ in range(n)]
    preds = [list(d) for d in trace.deps]
    succs: list[list[int]] = [[] for _ in range(n)]
    indeg = [len(d) for d in preds]
    for i, d in enumerate(preds):
        for j in d:
            succs[j].append(i)
    stack = [i for i in range(n) if indeg[i] == 0]
    order = []
    while stack:
        i = stack.pop()
        order.append(i)
        for s in succs[i]:
            indeg[s] -= 1
            if indeg[s] == 0:
                stack.append(s)
    if len(order) != n:
        raise ValueError(f"trace {trace.name!r}: the task graph has a cycle")
    return order, preds, succs


def _tasks(
    trace: Trace,
    kp: dict[str, list[PoolSpec]],
    minimum: float,
    default_deadline: float | None,
    online_floor: bool,
) -> _Tasks:
    n = len(trace)
    kind = np.array([KIND_NAMES[int(k)] for k in trace.kind]) if n else np.array([])
    dur = trace.duration.astype(float)
    sub = trace.submit.astype(float)
    smax = {k: max(p.speed for p in ps) for k, ps in kp.items()}
    s0 = {k: min(p.startup_s for p in ps) for k, ps in kp.items()}
    run = np.array(
        [d / smax[k] if d > 0 else 0.0 for d, k in zip(dur, kind, strict=True)]
    )
    arrival = {
        int(b): float(sub[trace.burst == b].min()) for b in np.unique(trace.burst)
    }
    if not n:
        return _Tasks(trace.burst, kind, dur, run, dur, dur, arrival, {}, {}, {})
    # the first worker of a kind is usable after its startup
    order, preds, succs = _topo(trace)
    est = _earliest(
        trace, order, preds, run, [max(sub[i], s0.get(kind[i], 0.0)) for i in range(n)]
    )
    # deadlines that cannot be met are raised to the earliest finish; for the
    # online retry, to the earliest finish with no worker warm at arrival
    est_need = est
    if online_floor:
        est_need = _earliest(
            trace,
            order,
            preds,
            run,
            [
                max(sub[i], s0.get(kind[i], 0.0) + arrival[int(trace.burst[i])])
                for i in range(n)
            ],
        )
    base = _earliest(trace, order, preds, run, sub)  # no startup: critical path
    deadline, relaxed, critical = {}, {}, {}
    horizon = None
    for b, r in arrival.items():
        m = trace.burst == b
        critical[b] = float((base[m] + run[m]).max() - r)
        rel = trace.deadline.get(b, default_deadline)
        if rel is None:
            if horizon is None:
                horizon = _no_hurry(sub, dur, kind, kp, s0, minimum)
            d_abs = horizon
        else:
            d_abs = r + float(rel)
        need = float((est_need[m] + run[m]).max())
        if need > d_abs + 1e-9:
            relaxed[b] = need - r
            d_abs = need
        deadline[b] = d_abs
    lft = np.array([deadline[int(b)] for b in trace.burst], float)
    for i in reversed(order):
        for s in succs[i]:
            lft[i] = min(lft[i], lft[s] - run[s])
    keep = dur > 0
    return _Tasks(
        trace.burst[keep].astype(int),
        kind[keep],
        dur[keep],
        run[keep],
        est[keep],
        lft[keep],
        arrival,
        deadline,
        relaxed,
        critical,
    )


def _no_hurry(sub, dur, kind, kp, s0, minimum: float) -> float:
    """The deadline of a burst that states none: one worker of the slowest
    pool doing everything after the last submission."""
    slow = {k: min(p.speed * p.threads for p in ps) for k, ps in kp.items()}
    work = sum(float(d) / slow[k] for d, k in zip(dur, kind, strict=True) if d > 0)
    return float(sub.max()) + max(s0.values()) + minimum + work


def _problem(
    tk: _Tasks, kp: dict[str, list[PoolSpec]], minimum: float, dt: float
) -> _milp.Problem:
    lo = np.maximum(0, np.floor(tk.est / dt).astype(int) - 1)
    hi = np.maximum(lo, np.ceil(tk.lft / dt).astype(int) - 1)
    smax = {k: max(p.speed for p in ps) for k, ps in kp.items()}
    smin = {k: min(p.speed for p in ps) for k, ps in kp.items()}
    window = np.maximum(tk.lft - tk.est, 1e-9)
    single = np.full(len(tk.dur), -1)
    long_ = np.nonzero(tk.run >= LONG_TASK * window)[0]
    per_burst: dict[int, list[int]] = {}
    for i in long_[np.argsort(-tk.dur[long_])]:
        lst = per_burst.setdefault(int(tk.burst[i]), [])
        if len(lst) < MAX_SINGLETONS:
            lst.append(int(i))
            single[i] = i
    members: dict[tuple, list[int]] = {}
    for i in range(len(tk.dur)):
        key = (int(tk.burst[i]), str(tk.kind[i]), int(hi[i]), int(single[i]))
        members.setdefault(key, []).append(i)
    groups = []
    for (b, kind, h, _), idx in sorted(members.items()):
        idx = np.array(idx)
        g_lo = int(lo[idx].min())
        rel = np.bincount(lo[idx] - g_lo, weights=tk.dur[idx], minlength=h - g_lo + 1)
        work = float(tk.dur[idx].sum())
        cap = float(np.minimum(tk.dur[idx], smax[kind] * dt).sum())
        groups.append(
            _milp.Group(
                b,
                kind,
                g_lo,
                h,
                work,
                np.cumsum(rel)[: h - g_lo + 1],
                cap if cap < work * (1 - 1e-9) else math.inf,
            )
        )
    bursts = []
    for b in sorted({g.burst for g in groups}):
        mine = [g for g in groups if g.burst == b]
        m = tk.burst == b
        mu = min(
            min(d, smin[k] * dt) for d, k in zip(tk.dur[m], tk.kind[m], strict=True)
        )
        bursts.append(
            _milp.BurstGrid(
                b,
                math.floor(tk.arrival[b] / dt),
                min(g.lo for g in mine),
                max(g.hi for g in mine),
                sum(g.work for g in mine),
                float(mu),
            )
        )
    K = max(g.hi for g in groups) + 1
    work = {k: float(tk.dur[tk.kind == k].sum()) for k in kp}
    used = [p for ps in kp.values() for p in ps]
    ref = min((p.usd_per_hour for p in used if p.usd_per_hour > 0), default=1.0)
    grid = []
    for p in used:
        S = math.floor(p.startup_s / dt + 1e-9)
        M = max(math.floor(minimum / dt + 1e-9) + 1, S + 1)
        rate = p.threads * p.speed * dt
        grid.append(
            _milp.PoolGrid(
                p.name,
                p.kind,
                p.usd_per_hour / ref,
                rate,
                S,
                M,
                math.ceil(work[p.kind] / rate) + 1,
            )
        )
    return _milp.Problem(dt, K, grid, groups, bursts)


def choose_dt(
    trace: Trace,
    pools: Sequence[PoolSpec],
    minimum_billing: float,
    *,
    online: bool = False,
    default_deadline: float | None = None,
    ladder: Sequence[float] = DT_LADDER,
) -> float:
    """The finest step of ``ladder`` whose program stays under the size budget
    (:data:`INT_BUDGET` integer and :data:`CONT_BUDGET` continuous variables)."""
    kp = _kind_pools(trace, pools)
    tk = _tasks(trace, kp, minimum_billing, default_deadline, False)
    for dt in ladder:
        ints, cont = _problem(tk, kp, minimum_billing, dt).size(online)
        if ints <= INT_BUDGET and cont <= CONT_BUDGET:
            return float(dt)
    return float(ladder[-1])


def _longest_task_usd(tk: _Tasks, kp, minimum: float) -> float:
    """One worker must live through its startup and the longest task."""
    best = 0.0
    for kind, ps in kp.items():
        m = tk.kind == kind
        if not m.any():
            continue
        d = float(tk.dur[m].max())
        best = max(
            best,
            min(
                max(minimum, p.startup_s + d / p.speed) * p.usd_per_hour / 3600.0
                for p in ps
            ),
        )
    return best


def exact_oracle(
    trace: Trace,
    pools: Sequence[PoolSpec],
    minimum_billing: float = 60.0,
    *,
    online: bool = False,
    dt: float | None = None,
    time_limit: float = 60.0,
    mip_rel_gap: float = 1e-4,
    default_deadline: float | None = None,
) -> OracleResult:
    """The cheapest plan for ``trace`` on ``pools`` (a lower bound, see the
    module docstring), clairvoyant or, with ``online``, online-feasible.

    ``dt``: grid step in seconds (default :func:`choose_dt`); ``time_limit``:
    seconds for the solver (the dual bound is reported if it stops early);
    ``default_deadline``: seconds after arrival for bursts without a deadline
    (default: the time one worker of the slowest pool needs for all the work
    after the last submission, i.e. no hurry). A deadline shorter than the
    burst's earliest possible finish (critical path, startup) is raised to it
    and listed in ``deadlines_relaxed``.
    """
    t0 = time.perf_counter()
    kp = _kind_pools(trace, pools)
    busy = busy_time_bound(trace, pools)
    variant = "online" if online else "clairvoyant"
    if not kp:  # no work: nothing to pay
        zero = dict.fromkeys(("usd", "plan_usd", "dual_bound_usd", "worker_s"), 0.0)
        zero.update(busy_usd=0.0, busy_worker_s=0.0, longest_task_usd=0.0, gap=0.0)
        return OracleResult(
            **zero,
            trace=trace.name,
            variant=variant,
            worker_s_by_pool={},
            status="optimal",
            seconds=0.0,
            dt=dt or 1.0,
            deadlines={},
            deadlines_relaxed={},
            critical_path_s={},
            peak_workers={},
            n_int=0,
            n_cont=0,
            n_rows=0,
        )
    if dt is None:
        dt = choose_dt(
            trace,
            pools,
            minimum_billing,
            online=online,
            default_deadline=default_deadline,
        )
    sol = tk = None
    for floor_online in (False, True) if online else (False,):
        tk = _tasks(trace, kp, minimum_billing, default_deadline, floor_online)
        prob = _problem(tk, kp, minimum_billing, dt)
        left = max(1.0, time_limit - (time.perf_counter() - t0))
        sol = _milp.solve(prob, online=online, time_limit=left, mip_rel_gap=mip_rel_gap)
        if sol.status != "infeasible":
            break
    assert sol is not None and tk is not None
    if sol.status == "infeasible":
        raise RuntimeError(f"trace {trace.name!r}: the {variant} program is infeasible")
    return _result(trace.name, variant, sol, tk, kp, busy, minimum_billing, t0, dt)


def _result(name, variant, sol, tk, kp, busy, minimum_billing, t0, dt) -> OracleResult:
    """The solved program as an :class:`OracleResult` in USD: the valid lower
    bound (the dual bound, busy time or the longest task, whichever is
    highest) and the incumbent plan."""
    used = {p.name: p for ps in kp.values() for p in ps}
    ref = min(
        (p.usd_per_hour for p in used.values() if p.usd_per_hour > 0), default=1.0
    )
    to_usd = ref / 3600.0
    dual = sol.dual_bound * to_usd if math.isfinite(sol.dual_bound) else 0.0
    longest = _longest_task_usd(tk, kp, minimum_billing)
    plan = sum(s * used[n].usd_per_hour / 3600.0 for n, s in sol.slot_seconds.items())
    return OracleResult(
        trace=name,
        variant=variant,
        usd=max(dual, busy["usd"], longest),
        plan_usd=plan if sol.slot_seconds else math.nan,
        dual_bound_usd=dual,
        worker_s=sum(sol.slot_seconds.values()) if sol.slot_seconds else math.nan,
        worker_s_by_pool=dict(sol.slot_seconds),
        busy_usd=busy["usd"],
        busy_worker_s=busy["worker_s"],
        longest_task_usd=longest,
        gap=sol.gap,
        status=sol.status,
        seconds=time.perf_counter() - t0,
        dt=float(dt),
        deadlines={b: d - tk.arrival[b] for b, d in tk.deadline.items()},
        deadlines_relaxed=dict(tk.relaxed),
        critical_path_s=dict(tk.critical),
        peak_workers={n: int(B.max(initial=0)) for n, B in sol.billed.items()},
        n_int=sol.n_int,
        n_cont=sol.n_cont,
        n_rows=sol.n_rows,
        launches={
            n: [(float(k * dt), int(c)) for k, c in enumerate(L) if c]
            for n, L in sol.launched.items()
        },
        billed={n: [int(c) for c in B] for n, B in sol.billed.items()},
    )


def oracle_cost(
    trace: Trace,
    pools: Sequence[PoolSpec],
    minimum_billing: float,
    default_deadline: float | None = None,
    *,
    online: bool = False,
    dt: float | None = None,
    time_limit: float = 30.0,
) -> dict[str, Any]:
    """The yardstick as the harness reads it.

    ``oracle``: clairvoyant lower bound (USD); ``online``: the online-feasible
    one (only with ``online=True``; ``oracle <= online``); ``lower_bound``:
    the busy-time bound (USD); ``results``: the :class:`OracleResult` objects.
    ``time_limit`` is per solve (the bounds stay valid when it stops a solve).
    """
    clair = exact_oracle(
        trace,
        pools,
        minimum_billing,
        dt=dt,
        time_limit=time_limit,
        default_deadline=default_deadline,
    )
    out: dict[str, Any] = {
        "oracle": clair.usd,
        "lower_bound": clair.busy_usd,
        "results": {"clairvoyant": clair},
    }
    if online:
        ofo = exact_oracle(
            trace,
            pools,
            minimum_billing,
            online=True,
            dt=dt,
            time_limit=time_limit,
            default_deadline=default_deadline,
        )
        out["online"] = max(ofo.usd, clair.usd)
        out["results"]["online"] = ofo
    return out


__all__ = [
    "OracleResult",
    "busy_time_bound",
    "choose_dt",
    "exact_oracle",
    "oracle_cost",
]
