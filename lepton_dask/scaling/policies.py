"""Scaling policies: state in, decision out. No I/O, no clock of their own.

Cost-aware policies (``deadline``, ``budget``, ``balanced``) evaluate, per
kind of work, the effect of starting ``k`` more workers in the pools ordered by
price per unit of work: when the outstanding work would finish, and what the
new workers would cost (billed from the launch request, at least the minimum
billing period). They know the startup delay (a worker that would arrive after
the work is done is not started), the minimum billing period (a worker is not
released before its paid minimum is used) and idle gaps (an idle gap predicted
shorter than startup plus minimum billing is bridged rather than paid again).

:class:`StockAdaptivePolicy` reproduces Dask's own ``Adaptive``
(``ceil(occupancy / target_duration)`` workers, up at once, down after
``wait_count`` checks) so the simulator can compare the two on equal terms.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from lepton_dask.config import parse_duration
from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import (
    ClusterView,
    Decision,
    PoolSpec,
    drain_time_staged,
    releasable,
)

KINDS = ("cpu", "gpu")


@dataclass
class _Plan:
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


def _plans(view: ClusterView, kind: str, limit: int = 4096) -> list[_Plan]:
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
        plans.append(_Plan(dict(adds), t, rate * billed / 3600.0))

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
        self, view: ClusterView, kind: str, plans: list[_Plan]
    ) -> tuple[_Plan, str, bool]:
        raise NotImplementedError

    def decide(self, view: ClusterView) -> Decision:
        targets: dict[str, int] = {}
        reasons, finish, cost, infeasible = [], 0.0, 0.0, False
        for kind in KINDS:
            if not any(p.kind == kind for p in view.pools.values()):
                continue
            plans = _plans(view, kind)
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


class DeadlinePolicy(_CostAware):
    """Finish outstanding work by a deadline at minimal cost; when impossible,
    go as fast as allowed and say so (``infeasible``).

    Parameters
    ----------
    deadline : float, optional
        An absolute time on the view's clock.
    within : float, optional
        A rolling deadline for streams of bursts: work must be done within this
        many seconds of the start of the current busy period (the time the
        backlog last became non-empty).

    >>> from lepton_dask.scaling.state import ClusterView, PoolSpec
    >>> pool = PoolSpec("cpu", threads=2, max_workers=10, startup_s=10)
    >>> view = ClusterView(now=0.0, pools={"cpu": pool}, workers=[],
    ...                    backlog={"cpu": 400.0}, tasks_ready={"cpu": 400})
    >>> DeadlinePolicy(deadline=60).decide(view).targets  # 10 s startup + 400/(4x2) s
    {'cpu': 4}
    """

    def __init__(self, deadline: float | None = None, *, within: float | None = None):
        if (deadline is None) == (within is None):
            raise ValueError(
                "give exactly one of deadline= (absolute) or within= (rolling)"
            )
        if isinstance(within, str):  # a Dask duration string: "90s", "10m"
            within = parse_duration(within, "within")
        for name, v in (("deadline", deadline), ("within", within)):
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v!r}")
        if within is not None and within <= 0:
            raise ValueError(f"within must be positive, got {within!r}")
        self.deadline = None if deadline is None else float(deadline)
        self.within = None if within is None else float(within)

    def detail(self, view: ClusterView) -> dict[str, Any]:
        return {"time_left_s": self.time_left(view)}

    def time_left(self, view: ClusterView) -> float:
        if self.deadline is not None:
            return self.deadline - view.now
        start = view.busy_since if view.busy_since is not None else view.now
        return self.within - (view.now - start)

    def choose(self, view, kind, plans):
        left = self.time_left(view)
        ok = [p for p in plans if p.finish_s <= left]
        if ok:
            best = min(ok, key=lambda p: (p.cost_usd, p.finish_s))
            return (
                best,
                f"cheapest plan finishing {kind} work in {best.finish_s:.0f} s <= {left:.0f} s left",
                False,
            )
        fastest = min(plans, key=lambda p: p.finish_s)
        if not _has_work(view, kind):
            return plans[0], "", False
        return (
            fastest,
            f"deadline infeasible for {kind}: fastest plan needs {fastest.finish_s:.0f} s, {left:.0f} s left",
            True,
        )


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

            def threads(plan: _Plan) -> float:
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


class StockAdaptivePolicy:
    """Dask's ``Adaptive`` (distributed.deploy.adaptive_core +
    Scheduler.adaptive_target), as a policy for the simulator: per kind,
    ``ceil(occupancy / target_duration)`` threads (capped by the tasks that can
    run), up at once, down by idle workers after ``wait_count`` consecutive
    checks, with no regard for prices, startup or billing.
    """

    def __init__(
        self,
        target_duration: float = 5.0,
        wait_count: int = 3,
        minimum: int = 0,
        maximum: int | None = None,
    ):
        if target_duration <= 0:
            raise ValueError(
                f"target_duration must be positive, got {target_duration!r}"
            )
        self.target_duration = float(target_duration)
        self.wait_count = int(wait_count)
        self.minimum = minimum
        self.maximum = maximum
        self._close_counts: dict[str, int] = {}

    def decide(self, view: ClusterView) -> Decision:
        targets: dict[str, int] = {}
        release: dict[str, list[str]] = {}
        for kind in KINDS:
            pools = [p for p in view.pools.values() if p.kind == kind]
            if not pools:
                continue
            pool = pools[0]  # stock Adaptive knows one kind of worker
            occupancy = view.backlog.get(kind, 0.0)
            cpu = math.ceil(occupancy / self.target_duration)
            cpu = min(cpu, view.tasks_ready.get(kind, cpu))
            want = math.ceil(cpu / pool.threads)
            hi = (
                pool.max_workers
                if self.maximum is None
                else min(self.maximum, pool.max_workers)
            )
            want = min(max(want, self.minimum, pool.min_workers), hi)
            have = view.count(pool.name)
            if want >= have:
                self._close_counts = {
                    k: v
                    for k, v in self._close_counts.items()
                    if view.pools.get(k.split("|")[0]) is not pool
                }
                targets[pool.name] = want
                continue
            # adaptive_core.recommendations: launches that have not arrived
            # go first, then the scheduler's workers_to_close (idle ones)
            mine = view.in_pool(pool.name)
            candidates = [w for w in mine if not w.arrived][: have - want]
            arrived = [w for w in mine if w.arrived]
            if want < have - len(candidates):
                idle = [w for w in arrived if not w.busy]
                candidates += idle[: max(0, len(arrived) - want)]
            if len(candidates) >= len(arrived) and any(
                w.holds_data for w in candidates
            ):
                # Scheduler.workers_to_close keeps enough memory for the data
                # held on the cluster: the last worker holding results stays
                keep = next(w for w in candidates if w.holds_data)
                candidates = [w for w in candidates if w is not keep]
            seen = {f"{pool.name}|{w.name}" for w in candidates}
            firm = []
            for w in candidates:
                key = f"{pool.name}|{w.name}"
                self._close_counts[key] = self._close_counts.get(key, 0) + 1
                if self._close_counts[key] >= self.wait_count:
                    firm.append(w.name)
            self._close_counts = {
                k: v
                for k, v in self._close_counts.items()
                if (k in seen and k.split("|", 1)[1] not in firm)
                or view.pools.get(k.split("|")[0]) is not pool
            }
            targets[pool.name] = have - len(firm)
            if firm:
                release[pool.name] = firm
        return Decision(
            targets,
            f"stock Adaptive, target_duration={self.target_duration:g}s",
            release=release,
        )


POLICIES = {
    "slo": SLOPolicy,
    "budget": BudgetPolicy,
    "balanced": BalancedPolicy,
    "busy-period-deadline": DeadlinePolicy,
}


def make_policy(name: str, **kwargs) -> object:
    """Build a policy by name: ``slo`` (deadlines per batch, stream latency,
    budgets), ``balanced``, ``budget``, ``adaptive`` (Dask's own), or
    ``busy-period-deadline`` (the old rolling deadline). ``deadline`` is
    ``slo`` with ``deadline=``.

    >>> make_policy("balanced", weight=1.0).weight
    1.0
    >>> make_policy("deadline", deadline=60).label
    'slo deadline 60s'
    >>> make_policy("fastest")
    Traceback (most recent call last):
    ...
    ValueError: unknown policy 'fastest'; use one of adaptive, balanced, budget, busy-period-deadline, deadline, slo
    """
    table = {**POLICIES, "deadline": SLOPolicy, "adaptive": StockAdaptivePolicy}
    if name not in table:
        raise ValueError(
            f"unknown policy {name!r}; use one of {', '.join(sorted(table))}"
        )
    return table[name](**kwargs)


#: ``lepton.scaling`` keys -> keyword arguments, per policy
_CONFIG_KEYS = {
    "balanced": {"weight": "weight"},
    "slo": {
        "deadline": "deadline",
        "latency": "latency",
        "budget-usd-per-hour": "usd_per_hour",
        "budget-usd": "total_usd",
    },
    "budget": {"budget-usd-per-hour": "usd_per_hour", "budget-usd": "total_usd"},
}
_CONFIG_KEYS["deadline"] = _CONFIG_KEYS["predictive"] = _CONFIG_KEYS["slo"]


def policy_from_config(cfg: dict | None = None) -> object:
    """The policy ``lepton.scaling`` describes (the one factory every scaler
    uses: CostAwareAdaptive, the Kubernetes scaler, the CLI).

    >>> type(policy_from_config()).__name__
    'BalancedPolicy'
    >>> policy_from_config({"policy": "slo", "deadline": 600}).deadline
    600.0
    >>> type(policy_from_config({"policy": "predictive", "deadline": 600})).__name__
    'PredictivePolicy'
    >>> policy_from_config({"policy": "slo"})
    Traceback (most recent call last):
    ...
    ValueError: lepton.scaling.policy is 'slo': set lepton.scaling.deadline, latency, budget-usd-per-hour or budget-usd
    """
    import dask.config

    cfg = dict(dask.config.get("lepton.scaling") if cfg is None else cfg)
    name = cfg.get("policy", "balanced")
    if name not in _CONFIG_KEYS:
        raise ValueError(
            f"lepton.scaling.policy must be one of {', '.join(sorted(_CONFIG_KEYS))}, got {name!r}"
        )
    keys = _CONFIG_KEYS[name]
    kwargs = {
        arg: parse_duration(cfg[k], f"lepton.scaling.{k}")
        if k in ("deadline", "latency")
        else float(cfg[k])
        for k, arg in keys.items()
        if cfg.get(k) is not None
    }
    if (
        name in ("slo", "deadline")
        and cfg.get("within") is not None
        and "deadline" not in kwargs
    ):  # the old name of the deadline
        kwargs["deadline"] = parse_duration(cfg["within"], "lepton.scaling.within")
    if name in ("slo", "deadline", "predictive") and not kwargs:
        raise ValueError(
            f"lepton.scaling.policy is {name!r}: set lepton.scaling.deadline, latency, "
            "budget-usd-per-hour or budget-usd"
        )
    if name == "predictive":  # the SLO terms, pre-warmed for load that recurs
        from lepton_dask.scaling.predictive import PredictivePolicy

        workload = dask.config.get("lepton.workload")
        if workload:  # a restarted scheduler starts with the job's history
            return PredictivePolicy.from_ledger(SLOPolicy(**kwargs), str(workload))
        return PredictivePolicy(SLOPolicy(**kwargs))
    if name == "budget" and "usd_per_hour" not in kwargs:
        raise ValueError(
            "lepton.scaling.policy is 'budget' but lepton.scaling.budget-usd-per-hour is not set"
        )
    return make_policy(name, **kwargs)
