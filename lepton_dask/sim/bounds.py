"""A yardstick that holds on long traces: a lower and an upper bound on the
cheapest plan, and the certified gap between them.

The exact program of :mod:`lepton_dask.sim.oracle` needs a coarse grid on a
long trace (three days at 120 s), and a grid coarser than the startup and the
minimum billing lets its bound fall towards busy time. :func:`bounds` cuts the
trace where every plan may as well be idle, and solves each window alone on a
fine grid.

**The cut, and why the sum of the windows is a lower bound.** Let ``D`` be
the latest deadline of the bursts so far and ``A`` the next burst's arrival
(deadlines as the oracle uses them, raised where they cannot be met). No work
can be done in ``[D, A)``. Cut there when ``A - D >= m + max(s, m)``, with
``m`` the minimum billing and ``s`` the longest startup. A worker of any plan
that works on both sides (``x`` seconds of life before ``D``, ``y`` after
``A``, billed ``max(x + g + y, m)`` with ``g = A - D``) can be replaced by one
life ending at ``D`` and a new one launched at ``A - s``, billed
``max(x, m) + max(s + y, m)``. Case by case this is never more: both long,
``x + s + y <= x + g + y`` as ``g >= s``; one short, the short one adds at most
``m`` and ``g >= s + m``; both short, ``2m <= g``. So the cheapest plan of the
whole trace costs at least the sum of the cheapest plans of its windows, each
of which may launch before its first arrival (clairvoyant): the sum of the
windows' lower bounds is a lower bound. The windows are shifted by whole
minutes, so a grid of a divisor of 60 s falls on the same instants.

**The upper bound is a simulated run.** Each window is simulated on its own
(the union of the runs is a run of the whole trace: its workers never meet)
under a :class:`PlanPolicy` that follows the window's plan (launched one to
three slots early, with up to four spare workers), and under the SLO policy;
the cheapest run that meets every deadline is the window's upper bound. A
window with no such run has none (``inf``).

**The online-feasible optimum** (a worker launched only while submitted work
is unfinished) does not split at gaps: a plan may carry workers across one to
have them warm. Its lower bound is the larger of the clairvoyant one above and
the whole trace's online program (:func:`~lepton_dask.sim.oracle.exact_oracle`,
``online=True``); its upper bound, the cheaper of the windows simulated under
policies that launch only while work is outstanding and a whole-trace run of
such a policy.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import ClusterView, Decision, PoolSpec
from lepton_dask.sim.oracle import (
    DT_LADDER,
    _kind_pools,
    _tasks,
    choose_dt,
    exact_oracle,
)
from lepton_dask.sim.simulator import Simulator
from lepton_dask.sim.trace import Trace

__all__ = ["Bounds", "PlanPolicy", "bounds", "idle_cut_s", "split"]

SHIFT_QUANTUM = 60.0  # windows move by whole minutes (grids of its divisors align)


def idle_cut_s(pools: Sequence[PoolSpec], minimum_billing: float) -> float:
    """The idle stretch at which a trace is cut: ``m + max(s, m)``."""
    s = max((p.startup_s for p in pools), default=0.0)
    return minimum_billing + max(s, minimum_billing)


def _fine_enough(pools: Sequence[PoolSpec], minimum_billing: float) -> float:
    """The coarsest grid a bound is called exact on: no coarser than the
    shortest positive startup and the minimum billing."""
    return min([minimum_billing] + [p.startup_s for p in pools if p.startup_s > 0])


def _first_arrival(trace: Trace, w: Trace) -> float:
    """When window ``w`` of ``trace`` starts, in the trace's own time."""
    return float(trace.submit[trace.burst == w.burst.min()].min())


@dataclass
class Bounds:
    """Lower and upper bounds (USD) on the cheapest plan of one variant."""

    variant: str  # "clairvoyant" or "online"
    lower: float
    upper: float
    windows: int
    #: every window solved to optimality on a grid no coarser than the
    #: shortest positive startup and the minimum billing
    exact: bool
    dt_max: float
    seconds: float
    upper_by: dict[str, int] = field(default_factory=dict)
    #: per window: (its first arrival in the trace's time, lower, upper);
    #: clairvoyant only (the online optimum does not split)
    parts: list[tuple[float, float, float]] = field(default_factory=list)

    def within(self, start: float, end: float) -> tuple[float, float]:
        """(lower, upper) of the windows whose first arrival is in
        ``[start, end)``: the bounds for that stretch of a trace cut there."""
        mine = [(lo, up) for a, lo, up in self.parts if start <= a < end]
        return sum(lo for lo, _ in mine), sum(up for _, up in mine)

    @property
    def certified_gap(self) -> float:
        if self.lower <= 0:
            return 0.0 if self.upper <= 0 else math.inf
        return (self.upper - self.lower) / self.lower

    def summary(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "certified_gap": self.certified_gap,
            "windows": self.windows,
            "exact": self.exact,
            "dt_max": self.dt_max,
            "seconds": self.seconds,
            "upper_by": dict(self.upper_by),
        }


def split(
    trace: Trace,
    pools: Sequence[PoolSpec],
    minimum_billing: float,
    default_deadline: float | None = None,
) -> list[Trace]:
    """``trace`` cut at every idle stretch of :func:`idle_cut_s` or more, each
    window with explicit deadlines (the oracle's, raised where they cannot be
    met) and shifted by whole minutes to start soon after time 0."""
    kp = _kind_pools(trace, pools)
    if not len(trace) or not kp:
        return [trace] if len(trace) else []
    tk = _tasks(trace, kp, minimum_billing, default_deadline, False)
    cut = idle_cut_s(pools, minimum_billing)
    lead = max(p.startup_s for p in pools) + SHIFT_QUANTUM
    groups: list[list[int]] = []
    latest = -math.inf
    for b in sorted(tk.arrival, key=lambda b: (tk.arrival[b], b)):
        if not groups or tk.arrival[b] - latest >= cut:
            groups.append([])
        groups[-1].append(b)
        latest = max(latest, tk.deadline[b])
    out = []
    for i, bs in enumerate(groups):
        start = min(tk.arrival[b] for b in bs)
        shift = max(0.0, math.floor((start - lead) / SHIFT_QUANTUM) * SHIFT_QUANTUM)
        rel = {b: tk.deadline[b] - tk.arrival[b] for b in bs}
        out.append(trace.select(bs, shift, rel, f"{trace.name}#{i}"))
    return out


class PlanPolicy:
    """Follows a plan: each pool holds the plan's billed count of the slot
    ``advance`` seconds ahead (plus ``extra`` while the plan holds any).
    With ``online`` it grows a pool only while work is outstanding."""

    def __init__(
        self,
        billed: dict[str, Sequence[int]],
        dt: float,
        *,
        advance: float = 0.0,
        extra: int = 0,
        online: bool = False,
    ):
        self.billed = {p: list(b) for p, b in billed.items()}
        self.dt, self.advance, self.extra, self.online = dt, advance, extra, online
        #: how often it need be asked: the plan changes once a slot
        self.interval = max(1.0, dt / 2)
        self.label = f"plan+{advance:g}s+{extra}" + (" online" if online else "")

    def decide(self, view: ClusterView) -> Decision:
        k = int((view.now + self.advance) // self.dt)
        outstanding = bool(view.batches) or any(w.busy for w in view.workers)
        targets = {}
        for pool in view.pools:
            plan = self.billed.get(pool, [])
            n = plan[k] if 0 <= k < len(plan) else 0
            n = n + self.extra if n else 0
            if self.online and not outstanding:
                n = min(n, view.count(pool))
            targets[pool] = n
        return Decision(targets, "plan")


def _key(w: Trace) -> str:
    """Windows of the same shape (a recurring load) are solved once."""
    h = hashlib.sha256()
    for a in (w.submit, w.duration, w.kind, w.burst - w.burst.min()):
        h.update(np.ascontiguousarray(a).tobytes())
    first = int(w.burst.min())
    h.update(repr(sorted((b - first, d) for b, d in w.deadline.items())).encode())
    h.update(repr(w.deps).encode())
    return h.hexdigest()


def _cheapest_run(
    w: Trace, pools: list[PoolSpec], minimum: float, tiers: list[list[Any]]
) -> tuple[float, str]:
    """The cheapest simulated run of ``w`` that meets every deadline, from
    the first tier of candidate policies that has one."""
    best, by = math.inf, "none"
    for candidates in tiers:
        for policy in candidates:
            r = Simulator(
                w,
                pools,
                policy,
                minimum_billing=minimum,
                interval=getattr(policy, "interval", 1.0),
                record_timeline=False,
            ).run()
            ok = r.tasks_done == len(w) and r.deadline_met >= 1.0
            if ok and r.cost_usd < best:
                best, by = r.cost_usd, getattr(policy, "label", type(policy).__name__)
        if math.isfinite(best):
            break
    return best, by


def _solve(
    w: Trace, pools: list[PoolSpec], minimum: float, time_limit: float, dt: float | None
) -> dict[str, Any]:
    """A window's lower bound and plan, and its cheapest clairvoyant run.

    Grids from coarse to fine (each program's bound is valid, so the best of
    them is): a fine grid the solver cannot finish in time gives a weaker
    bound than a coarser one it solves, so this stops at the first that runs
    out of time, and spends ``time_limit`` seconds in all."""
    t0 = time.perf_counter()
    finest = dt or choose_dt(w, pools, minimum)
    grids = (
        [dt] if dt else [x for x in DT_LADDER if finest <= x <= max(2 * finest, 10.0)]
    )
    tight = _fine_enough(pools, minimum)
    out: dict[str, Any] = {"lower": 0.0, "dt": grids[-1], "plan": {}, "exact": False}
    for g in reversed(grids):
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0.5 and out["plan"]:
            break
        res = exact_oracle(w, pools, minimum, dt=g, time_limit=max(left, 1.0))
        out["lower"] = max(out["lower"], res.usd)
        if math.isfinite(res.plan_usd):
            out["plan"], out["dt"] = res.billed, res.dt
        out["exact"] |= res.status == "optimal" and g <= tight + 1e-9
        if res.status != "optimal":
            break
    out["run"] = _cheapest_run(w, pools, minimum, _candidates(w, out, online=False))
    return out


def _candidates(w: Trace, solved: dict[str, Any], online: bool) -> list[list[Any]]:
    """The policies to simulate: the plan launched a slot or two early, with
    spare workers or none (discrete tasks need more than the program's
    divisible work), and the SLO policy (a plan the solver found in time may
    be a poor one). One tier: the cheapest of them all counts."""
    slo = min(w.deadline.values()) if w.deadline else None
    dt = solved["dt"]

    def plan(a: int, e: int) -> PlanPolicy:
        return PlanPolicy(solved["plan"], dt, advance=a * dt, extra=e, online=online)

    plans = [plan(a, e) for a in (1, 2) for e in (0, 1)] + [plan(2, 2), plan(3, 4)]
    return [[*plans, SLOPolicy(deadline=slo)]]


def bounds(
    trace: Trace,
    pools: Sequence[PoolSpec],
    minimum_billing: float = 60.0,
    *,
    default_deadline: float | None = None,
    time_limit: float = 20.0,
    online_time_limit: float = 60.0,
    dt: float | None = None,
    progress: Any = None,
    online_known: Sequence[tuple[float, str]] = (),
) -> dict[str, Bounds]:
    """Both variants' :class:`Bounds` for ``trace`` (see the module
    docstring): ``{"clairvoyant": ..., "online": ...}``. ``time_limit`` is per
    window solve, ``online_time_limit`` for the whole trace's online program;
    ``dt`` fixes every window's grid (default: the finest that keeps each
    program small); ``progress(done, total)`` is called after each window;
    ``online_known``: (USD, label) of runs of the whole trace already
    simulated that met every deadline under a policy that launches only while
    work is outstanding (candidates for the online upper bound; without
    them the SLO policy is simulated)."""
    pools = list(pools)
    wins = split(trace, pools, minimum_billing, default_deadline)
    clair, mine = _clairvoyant(trace, wins, pools, minimum_billing, time_limit, dt,
                               progress)  # fmt: skip
    online = _online(
        trace,
        wins,
        mine,
        pools,
        minimum_billing,
        clair.lower,
        exact_oracle(
            trace,
            pools,
            minimum_billing,
            online=True,
            time_limit=online_time_limit,
            default_deadline=default_deadline,
        ),
        online_known,
        progress,
    )
    return {"clairvoyant": clair, "online": online}


def _clairvoyant(trace, wins, pools, minimum, time_limit, dt, progress):
    """The sum of the windows' bounds; and each window's solve."""
    t0 = time.perf_counter()
    solved: dict[str, dict[str, Any]] = {}
    mine = []
    for i, w in enumerate(wins):
        key = _key(w)
        if key not in solved:
            solved[key] = _solve(w, pools, minimum, time_limit, dt)
        mine.append(solved[key])
        if progress is not None:
            progress(i + 1, 2 * len(wins))
    first = [_first_arrival(trace, w) for w in wins]
    return Bounds(
        "clairvoyant",
        sum(r["lower"] for r in mine),
        sum(r["run"][0] for r in mine),
        len(wins),
        all(r["exact"] for r in mine),
        max((r["dt"] for r in mine), default=0.0),
        time.perf_counter() - t0,
        dict(Counter(r["run"][1] for r in mine)),
        [(a, r["lower"], r["run"][0]) for a, r in zip(first, mine, strict=True)],
    ), mine


def _online(trace, wins, mine, pools, minimum, clair_lower, whole, known, progress):
    """The online bounds: the whole trace's online program (and the
    clairvoyant sum, when the deadlines are the same) below; the cheaper of
    the windows' online runs and a whole-trace online run above."""
    t0 = time.perf_counter() - whole.seconds
    runs: dict[str, tuple[float, str]] = {}
    online_runs = []
    for i, (w, r) in enumerate(zip(wins, mine, strict=True)):
        w_on = w.select(w.deadline, 0.0, {b: whole.deadlines[b] for b in w.deadline})
        k_on = _key(w_on)
        if k_on not in runs:
            cands = _candidates(w_on, r, online=True)
            runs[k_on] = _cheapest_run(w_on, pools, minimum, cands)
        online_runs.append(runs[k_on])
        if progress is not None:
            progress(len(wins) + i + 1, 2 * len(wins))
    whole_run = min(known, default=(math.inf, "none"))
    if not known:
        slo = min(whole.deadlines.values()) if whole.deadlines else None
        stitched = _stitch(trace, wins, [r["plan"] for r in mine],
                           [r["dt"] for r in mine])  # fmt: skip
        whole_run = _cheapest_run(
            trace.select(whole.deadlines, 0.0, whole.deadlines),
            pools,
            minimum,
            [
                [SLOPolicy(deadline=slo)],
                [PlanPolicy(stitched, 1.0, advance=3, extra=2, online=True)],
            ],
        )
    if whole_run[0] < sum(u for u, _ in online_runs):
        online_runs = [(whole_run[0], f"{whole_run[1]} (whole trace)")]
    same = all(
        abs(whole.deadlines[b] - d) <= 1e-9 for w in wins for b, d in w.deadline.items()
    )
    return Bounds(
        "online",
        max(whole.usd, clair_lower if same else 0.0),
        sum(u for u, _ in online_runs),
        len(wins),
        whole.status == "optimal" and whole.dt <= _fine_enough(pools, minimum) + 1e-9,
        whole.dt,
        time.perf_counter() - t0,
        dict(Counter(label for _, label in online_runs)),
    )


def _stitch(
    trace: Trace, wins: list[Trace], plans: list[dict[str, list[int]]], dts: list[float]
) -> dict[str, list[int]]:
    """The windows' plans laid out on the whole trace's time, per second."""
    out: dict[str, list[int]] = {}
    for w, plan, dt in zip(wins, plans, dts, strict=True):
        shift = _first_arrival(trace, w) - float(w.submit.min())
        for pool, billed in plan.items():
            row = out.setdefault(pool, [])
            for k, n in enumerate(billed):
                if not n:
                    continue
                for sec in range(int(shift + k * dt), int(shift + (k + 1) * dt)):
                    if sec >= len(row):
                        row.extend([0] * (sec + 1 - len(row)))
                    row[sec] = max(row[sec], n)
    return out
