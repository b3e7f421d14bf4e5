"""The balanced and budget policies: a trade of finish time against cost.

Both scan the same candidate scale-ups, per kind of work: starting ``k`` more
workers in the pools ordered by price per unit of work, each priced by when
the outstanding work would finish and what the new workers would cost (billed
from the launch request, at least the minimum billing period). The scan knows
the startup delay (a worker that would arrive after the work is done is not
started), the minimum billing period (a worker is not released before its
paid minimum is used) and idle gaps (an idle gap predicted shorter than
startup plus minimum billing is bridged rather than paid again).
:class:`BalancedPolicy` picks the scale-up of least cost + weight x delay,
:class:`BudgetPolicy` the fastest within a spend-rate cap.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from lepton_dask.scaling.state import (
    ClusterView,
    Decision,
    PoolSpec,
    drain_time_staged,
    releasable,
)

KINDS = ("cpu", "gpu")


@dataclass
class _ScaleUp:
    adds: dict[str, int]
    finish_s: float
    cost_usd: float


def _threads(
    view: ClusterView, pools: list[PoolSpec]
) -> tuple[float, list[tuple[float, float]]]:
    """(working threads now, [(seconds until arrival, threads)] of launched
    workers still starting), weighted by speed."""
    now_t = 0.0
    soon: dict[float, float] = {}  # workers launched together arrive together
    names = {p.name for p in pools}
    for w in view.workers:
        if w.pool not in names:
            continue
        p = view.pools[w.pool]
        if w.arrived:
            now_t += p.threads * p.speed
        else:
            at = max(0.0, w.billed_since + p.startup_s - view.now)
            soon[at] = soon.get(at, 0.0) + p.threads * p.speed
    return now_t, list(soon.items())


EPS = 1e-6  # seconds of work below which there is no work
ARRIVAL_HORIZON_S = 60.0  # how long an observed arrival rate is expected to last


def _has_work(view: ClusterView, kind: str) -> bool:
    return view.backlog.get(kind, 0.0) + view.pending.get(kind, 0.0) > EPS


def _scale_ups(view: ClusterView, kind: str, limit: int = 4096) -> list[_ScaleUp]:
    """Candidate scale-ups for one kind of work, cheapest capacity first:
    adding 0, 1, 2, ... workers, filling the cheapest pool before the next."""
    pools = sorted(
        (p for p in view.pools.values() if p.kind == kind),
        key=lambda p: p.usd_per_work_second,
    )
    # arrivals seen lately count as that much more work over the next window
    # (a stream will end; falling behind for a while can be the cheap choice)
    arriving = view.arrival_rate.get(kind, 0.0)
    work = (
        view.backlog.get(kind, 0.0)
        + view.pending.get(kind, 0.0)
        + arriving * ARRIVAL_HORIZON_S
    )
    work /= max(view.throughput_factor, 1e-9)
    if work <= EPS:
        work = 0.0
    ntasks = view.tasks_ready.get(kind, math.inf) + (
        math.inf if view.pending.get(kind, 0) > 0 or arriving > EPS else 0
    )
    now_t, soon = _threads(view, pools)
    soon.sort()
    base = now_t + sum(c for _, c in soon)
    plans = []
    tail = view.pending_tail if view.pending.get(kind, 0.0) > EPS else 0.0
    usable_now = min(now_t, ntasks)

    def evaluate(adds: dict[str, int]) -> None:
        # new workers of a pool all arrive after its startup; the backlog can
        # use at most one thread per task, so joining threads are capped
        groups = sorted(
            (view.pools[n].startup_s, k * view.pools[n].threads * view.pools[n].speed)
            for n, k in adds.items()
            if k
        )
        cap = ntasks - usable_now
        joining = []
        for at, c in _merge(soon, groups):
            c = min(c, cap)
            if c <= 0:
                break
            joining.append((at, c))
            cap -= c
        t = drain_time_staged(work, usable_now, joining) + tail
        rate = sum(view.pools[n].usd_per_hour * k for n, k in adds.items())
        billed = max(t, view.minimum_billing) if rate else 0.0
        plans.append(_ScaleUp(dict(adds), t, rate * billed / 3600.0))

    adds = dict.fromkeys((p.name for p in pools), 0)
    evaluate(adds)
    added_threads = 0.0
    for p in pools:
        room = max(0, p.max_workers - view.count(p.name))
        for k in _steps(room):
            if len(plans) > limit or (
                base + added_threads >= ntasks and math.isfinite(plans[-1].finish_s)
            ):
                return plans
            adds[p.name] = k
            added_threads = sum(
                view.pools[n].threads * view.pools[n].speed * j for n, j in adds.items()
            )
            evaluate(adds)
    return plans


def _steps(room: int) -> list[int]:
    """Worker counts to try: every count up to 16, then geometric steps
    (a few dozen plans per pool even when a pool may grow by thousands).

    >>> _steps(5), _steps(40)[-4:]
    ([1, 2, 3, 4, 5], [25, 31, 38, 40])
    """
    out = list(range(1, min(room, 16) + 1))
    k = 16
    while k < room:
        k = min(room, max(k + 1, int(k * 1.25)))
        out.append(k)
    return out


def _merge(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Merge two lists of (time, threads) sorted by time."""
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and a[i][0] <= b[j][0]):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


def _predicted_gap(view: ClusterView) -> float | None:
    gaps = view.idle_gaps[-8:]
    return statistics.median(gaps) if gaps else None


def _scale_down(
    view: ClusterView, kind: str, targets: dict[str, int], keep_gap: float
) -> str:
    """Targets for idle periods: release paid-out idle workers unless the
    predicted idle gap is short enough to bridge."""
    work = view.backlog.get(kind, 0.0) + view.pending.get(kind, 0.0)
    work = work if work > EPS else 0.0
    pools = [p for p in view.pools.values() if p.kind == kind]
    gap = _predicted_gap(view)
    idle_for = (view.now - view.idle_since) if view.idle_since is not None else 0.0
    bridging = (
        work <= 0 and gap is not None and gap <= keep_gap and idle_for < 1.5 * gap
    )
    reasons = []
    for p in pools:
        count = view.count(p.name)
        free = releasable(view, p.name)
        if bridging:
            targets[p.name] = max(count, p.min_workers)
            continue
        ready = view.tasks_ready.get(kind, 0)
        # keep enough workers for the tasks that can run and for the arrivals
        needed = math.ceil(ready / p.threads) if work > 0 else 0
        needed = max(
            needed, math.ceil(view.arrival_rate.get(kind, 0.0) / (p.threads * p.speed))
        )
        # results that exist only on these workers need somewhere to live
        if any(w.holds_data for w in view.in_pool(p.name)):
            needed = max(needed, 1)
        can_go = max(0, min(len(free), count - max(needed, p.min_workers)))
        targets[p.name] = max(count - can_go, p.min_workers)
        if can_go:
            reasons.append(f"release {can_go} idle paid-out {p.name}")
    if bridging and any(view.count(p.name) for p in pools):
        return f"bridge predicted idle gap {gap:.0f} s <= {keep_gap:.0f} s ({kind})"
    return "; ".join(reasons)


class _CostAware:
    """Shared decision structure of the cost-aware policies."""

    def keep_gap(self, view: ClusterView, kind: str) -> float:
        pools = [p for p in view.pools.values() if p.kind == kind]
        startup = max((p.startup_s for p in pools), default=0.0)
        return startup + view.minimum_billing

    def choose(
        self, view: ClusterView, kind: str, plans: list[_ScaleUp]
    ) -> tuple[_ScaleUp, str, bool]:
        raise NotImplementedError

    def decide(self, view: ClusterView) -> Decision:
        targets: dict[str, int] = {}
        reasons, finish, cost, infeasible = [], 0.0, 0.0, False
        for kind in KINDS:
            if not any(p.kind == kind for p in view.pools.values()):
                continue
            plans = _scale_ups(view, kind)
            plan, why, bad = self.choose(view, kind, plans)
            infeasible |= bad
            finish = max(finish, plan.finish_s)
            cost += plan.cost_usd
            if any(plan.adds.values()):
                for name, k in plan.adds.items():
                    targets[name] = view.count(name) + k
                reasons.append(why)
            else:
                down = _scale_down(view, kind, targets, self.keep_gap(view, kind))
                reasons.append(why if not down else f"{why}; {down}" if why else down)
        for p in view.pools.values():  # respect minimums even with no work
            targets[p.name] = min(
                max(targets.get(p.name, view.count(p.name)), p.min_workers),
                p.max_workers,
            )
        running_cost = (
            view.spend_rate() * finish / 3600.0 if math.isfinite(finish) else math.inf
        )
        return Decision(
            targets,
            "; ".join(r for r in reasons if r) or "steady",
            finish,
            cost + running_cost if finish > 0 else cost,
            infeasible,
            self.detail(view),
        )

    def detail(self, view: ClusterView) -> dict[str, Any]:
        """Extra facts a decision carries (logged, exported as metrics)."""
        return {}


class BudgetPolicy(_CostAware):
    """Most throughput under a spend-rate cap (USD/hour) and an optional total
    cap (USD, against the monitor's spend so far).

    >>> from lepton_dask.scaling.state import ClusterView, PoolSpec
    >>> pool = PoolSpec("cpu", usd_per_hour=0.5, max_workers=100)
    >>> view = ClusterView(now=0.0, pools={"cpu": pool}, workers=[],
    ...                    backlog={"cpu": 1000.0}, tasks_ready={"cpu": 1000})
    >>> BudgetPolicy(usd_per_hour=2.0).decide(view).targets
    {'cpu': 4}
    """

    def __init__(self, usd_per_hour: float, total_usd: float | None = None):
        if not usd_per_hour > 0:
            raise ValueError(f"usd_per_hour must be positive, got {usd_per_hour!r}")
        if total_usd is not None and not total_usd > 0:
            raise ValueError(f"total_usd must be positive, got {total_usd!r}")
        self.usd_per_hour = float(usd_per_hour)
        self.total_usd = total_usd

    def choose(self, view, kind, plans):
        rate_now = view.spend_rate()
        left = None if self.total_usd is None else self.total_usd - view.spend_usd
        if left is not None and left <= 0:
            if not _has_work(view, kind):
                return plans[0], "", False
            return (
                plans[0],
                f"budget exhausted for {kind}: ${view.spend_usd:.4f} spent of ${self.total_usd:.4f}",
                True,
            )
        ok = []
        for p in plans:
            if not math.isfinite(p.finish_s) and _has_work(view, kind):
                continue
            rate = rate_now + sum(
                view.pools[n].usd_per_hour * k for n, k in p.adds.items()
            )
            if rate > self.usd_per_hour + 1e-12:
                continue
            if left is not None and p.cost_usd + rate_now * p.finish_s / 3600 > left:
                continue
            ok.append(p)
        if not ok:
            if not _has_work(view, kind):
                return plans[0], "", False
            return plans[0], f"budget exhausted for {kind}: no capacity added", True
        best = min(ok, key=lambda p: (p.finish_s, p.cost_usd))
        return (
            best,
            f"fastest plan within ${self.usd_per_hour:.2f}/hour: {kind} done in {best.finish_s:.0f} s",
            False,
        )


class BalancedPolicy(_CostAware):
    """Minimize cost + ``weight`` x delay: ``weight`` is the price, in USD, of
    one hour of waiting for the outstanding work (0: cheapest; large: fastest).

    >>> from lepton_dask.scaling.state import ClusterView, PoolSpec
    >>> pool = PoolSpec("cpu", max_workers=50, startup_s=30)
    >>> view = ClusterView(now=0.0, pools={"cpu": pool}, workers=[],
    ...                    backlog={"cpu": 600.0}, tasks_ready={"cpu": 600})
    >>> BalancedPolicy(0.0).decide(view).targets["cpu"], BalancedPolicy(50.0).decide(view).targets["cpu"]
    (1, 50)
    """

    def __init__(self, weight: float):
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        self.weight = float(weight)

    def choose(self, view, kind, plans):
        if not _has_work(view, kind):
            return plans[0], "", False
        finite = [p for p in plans if math.isfinite(p.finish_s)]
        if not finite:
            return plans[-1], f"no capacity can run the {kind} work", True
        # whatever the weight, capacity keeps up with the arrivals (a backlog
        # that grows without bound has no finite delay to trade for money)
        rate = view.arrival_rate.get(kind, 0.0)
        if rate > 0:
            pools = [p for p in view.pools.values() if p.kind == kind]
            now_t, soon = _threads(view, pools)
            base = now_t + sum(c for _, c in soon)

            def threads(plan: _ScaleUp) -> float:
                return base + sum(
                    view.pools[n].threads * view.pools[n].speed * k
                    for n, k in plan.adds.items()
                )

            keeping_up = [p for p in finite if threads(p) >= rate * (1 + 1e-9)]
            finite = keeping_up or [max(finite, key=threads)]
        best = min(finite, key=lambda p: p.cost_usd + self.weight * p.finish_s / 3600.0)
        return (
            best,
            (
                f"min cost + {self.weight:g} $/h x delay: {kind} done in {best.finish_s:.0f} s "
                f"for ${best.cost_usd:.4f} more"
            ),
            False,
        )
