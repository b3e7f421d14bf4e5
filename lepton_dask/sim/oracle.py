"""The offline-optimal oracle: what a clairvoyant provisioner would pay.

Two numbers per trace:

``lower_bound``
    Busy thread-seconds at the cheapest feasible pool for each kind of work:
    no idle time, no startup, no minimum billing. Nothing can cost less.
``oracle``
    A clairvoyant plan under the real constraints. It knows each burst's
    arrival and deadline in advance, launches workers ``startup`` seconds
    early (startup is billed), gives each burst the fewest workers of the
    cheapest pool that finish its work by the deadline (work spread evenly:
    a relaxation for task graphs, so this is a lower bound of the true
    optimum there), and decides exactly which idle gaps to bridge: the
    demand is split into levels (level j busy when a burst uses >= j
    workers), and for each level a dynamic program over its busy intervals
    chooses worker lifetimes, each billed ``max(length, minimum)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim.trace import Trace


def best_lifetimes_cost(
    intervals: Sequence[tuple[float, float]],
    startup: float,
    minimum: float,
    usd_per_hour: float,
) -> float:
    """Cheapest cover of busy ``intervals`` (sorted, disjoint) by worker lives.

    A life serving intervals i..j starts ``startup`` before interval i (billed)
    and ends with interval j; it costs ``max(end_j - start_i + startup,
    minimum)`` seconds. Dynamic program over where lives begin; a life never
    bridges a gap longer than ``startup + 2 * minimum`` (splitting there costs at
    most a startup and two minimum paddings), which bounds the look-back.

    >>> best_lifetimes_cost([(0, 10), (15, 25)], startup=10, minimum=0, usd_per_hour=3600)
    35.0
    >>> best_lifetimes_cost([(0, 10), (100, 110)], startup=10, minimum=0, usd_per_hour=3600)
    40.0
    """
    n = len(intervals)
    if n == 0:
        return 0.0
    rate = usd_per_hour / 3600.0
    best = [0.0] * (n + 1)
    limit = startup + 2 * minimum
    for j in range(1, n + 1):
        end_j = intervals[j - 1][1]
        cand = math.inf
        i = j
        while i >= 1:
            start_i = intervals[i - 1][0]
            life = max(end_j - start_i + startup, minimum)
            cand = min(cand, best[i - 1] + life * rate)
            if i > 1 and intervals[i - 1][0] - intervals[i - 2][1] > limit:
                break
            i -= 1
        best[j] = cand
    return best[n]


def _cheapest(pools: Sequence[PoolSpec], kind: str) -> PoolSpec | None:
    cands = [p for p in pools if p.kind == kind]
    return min(cands, key=lambda p: p.usd_per_work_second) if cands else None


def oracle_cost(
    trace: Trace,
    pools: Sequence[PoolSpec],
    minimum_billing: float,
    default_deadline: float | None = None,
) -> dict[str, float]:
    """``{"oracle": usd, "lower_bound": usd}`` for ``trace`` on ``pools``.

    Bursts without a deadline get ``default_deadline`` (default: their work on
    one worker, i.e. no hurry).
    """
    lower = 0.0
    total = 0.0
    for kind in ("cpu", "gpu"):
        pool = _cheapest(pools, kind)
        work_kind = trace.work[kind]
        if work_kind <= 0:
            continue
        if pool is None:
            raise ValueError(f"trace {trace.name!r} has {kind} work but no {kind} pool")
        per_thread = pool.threads * pool.speed
        lower += work_kind * pool.usd_per_work_second
        demands = []  # (arrival, workers, busy seconds)
        for b in trace.bursts():
            w = b["work"][kind]
            if w <= 0:
                continue
            deadline = b["deadline"] if b["deadline"] is not None else default_deadline
            if deadline is None:
                deadline = w / per_thread
            usable = max(deadline, b["longest"] / pool.speed, 1e-9)
            n = max(1, math.ceil(w / (usable * per_thread) - 1e-9))
            n = min(n, pool.max_workers) if pool.max_workers else n
            demands.append((b["arrival"], n, w / (n * per_thread)))
        levels = max((d[1] for d in demands), default=0)
        for level in range(1, levels + 1):
            intervals = sorted((a, a + busy) for a, n, busy in demands if n >= level)
            merged: list[list[float]] = []
            for s, e in intervals:  # overlapping bursts on one level share a worker
                if merged and s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            total += best_lifetimes_cost(
                [tuple(m) for m in merged],
                pool.startup_s,
                minimum_billing,
                pool.usd_per_hour,
            )
    return {"oracle": total, "lower_bound": lower}
