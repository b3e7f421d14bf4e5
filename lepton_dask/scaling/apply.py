"""Applying a decision: one pure step that every scaler carries out.

A policy answers a :class:`~lepton_dask.scaling.state.Decision` (a target
per pool, and optionally the workers to release by name). :func:`plan_apply`
turns it, the view it was made from and the scaler's bounds into an
:class:`Actions`: per pool, the count to reach and exactly which workers to
retire. :class:`~lepton_dask.scaling.CostAwareAdaptive`, the Kubernetes
scaler (``lepton_dask.deploy.k8s_scaler``) and the simulator only carry the
actions out, so the three cannot disagree.

The rules, in order:

1. Each pool's target is clipped to the pool's ``min_workers`` /
   ``max_workers``; then the total to the scaler's ``minimum`` / ``maximum``:
   growth of the dearest pools (per unit of work) is cut first, and a
   shortfall is made up in the cheapest.
2. A pool above its target retires, in this order: the workers the decision
   names (``Decision.release``), then :func:`~lepton_dask.scaling.state.releasable`
   ones (idle, paid minimum used up, paid-up longest first), then, only to
   honour a bound the policy's target broke, *forced* ones (not yet arrived,
   then idle, then busy). A pool that cannot retire enough by these rules
   stays larger than its target: the actions' ``target`` is what it will have.

:func:`report_launches` is the one place a launch is reported to the
CostMonitor; :class:`ChurnCounter` counts relaunches within one startup of a
retirement (``lepton_scaler_churn_total``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lepton_dask import _protocol as protocol
from lepton_dask._protocol import LaunchReport
from lepton_dask.scaling.state import ClusterView, Decision, PoolSpec, releasable

__all__ = ["Actions", "ChurnCounter", "PoolActions", "plan_apply", "report_launches"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolActions:
    """One pool's part of an :class:`Actions`: from ``have`` workers to
    ``target``, launching ``launch`` and retiring exactly ``retire``."""

    pool: str
    have: int
    target: int
    retire: tuple[str, ...] = ()

    @property
    def launch(self) -> int:
        return max(0, self.target - self.have)


@dataclass(frozen=True)
class Actions:
    """What to do to the cluster, per pool (see :func:`plan_apply`)."""

    pools: dict[str, PoolActions] = field(default_factory=dict)

    @property
    def retire(self) -> list[str]:
        return [n for p in self.pools.values() for n in p.retire]

    @property
    def changed(self) -> bool:
        return any(p.target != p.have for p in self.pools.values())


def _bounded(
    wanted: dict[str, int],
    counts: dict[str, int],
    pools: dict[str, PoolSpec],
    minimum: int,
    maximum: float,
) -> dict[str, int]:
    """Per-pool targets within each pool's limits and the total within
    ``minimum`` / ``maximum`` (rule 1)."""
    out = {
        p: min(max(int(wanted.get(p, counts.get(p, 0))), s.min_workers), s.max_workers)
        for p, s in pools.items()
    }
    order = sorted(pools, key=lambda n: pools[n].usd_per_work_second)
    for over_current in (True, False):
        for p in reversed(order):
            floor = pools[p].min_workers
            if over_current:
                floor = max(counts.get(p, 0), floor)
            while sum(out.values()) > maximum and out[p] > floor:
                out[p] -= 1
    for p in order:
        while sum(out.values()) < minimum and out[p] < pools[p].max_workers:
            out[p] += 1
    return out


def _retirees(
    pool: str, n: int, forced: int, decision: Decision, view: ClusterView
) -> list[str]:
    """Which ``n`` workers of ``pool`` go (rule 2)."""
    present = {w.name: w for w in view.in_pool(pool)}
    named = (decision.release or {}).get(pool) or []
    chosen = [name for name in dict.fromkeys(map(str, named)) if name in present]
    chosen += [w.name for w in releasable(view, pool) if w.name not in chosen]
    chosen = chosen[:n]
    if forced > 0 and len(chosen) < n:
        rest = sorted(
            (w for w in present.values() if w.name not in chosen),
            key=lambda w: (w.arrived, w.busy, w.holds_data, -w.billed_since),
        )
        chosen += [w.name for w in rest][: min(forced, n - len(chosen))]
    return chosen


def plan_apply(
    decision: Decision,
    view: ClusterView,
    *,
    minimum: int = 0,
    maximum: float = math.inf,
    counts: dict[str, int] | None = None,
) -> Actions:
    """The actions that carry ``decision`` out on the cluster ``view`` shows.

    Parameters
    ----------
    decision, view
        The policy's answer and what it saw.
    minimum, maximum
        Total workers the scaler keeps at least / at most.
    counts
        Workers per pool as the cluster manager counts them (requested or
        running), when it knows better than the view (default: the view's).

    >>> from lepton_dask.scaling.state import PoolSpec, WorkerView
    >>> pool = PoolSpec("cpu", max_workers=8)
    >>> v = ClusterView(now=100.0, pools={"cpu": pool}, backlog={}, workers=[
    ...     WorkerView("a", "cpu", 0.0, busy=False), WorkerView("b", "cpu", 0.0, busy=True),
    ...     WorkerView("c", "cpu", 90.0, busy=False)])
    >>> plan_apply(Decision({"cpu": 1}, "shrink"), v).pools["cpu"]
    PoolActions(pool='cpu', have=3, target=2, retire=('a',))
    >>> plan_apply(Decision({"cpu": 5}, "grow"), v, maximum=4).pools["cpu"].launch
    1
    """
    pools = view.pools
    if counts is None:
        counts = {p: view.count(p) for p in pools}
    wanted = {p: int(t) for p, t in decision.targets.items() if p in pools}
    targets = _bounded(wanted, counts, pools, int(minimum), maximum)
    out = {}
    for pool, target in targets.items():
        have = int(counts.get(pool, 0))
        retire: list[str] = []
        if target < have:
            forced = max(0, wanted.get(pool, have) - target)
            retire = _retirees(pool, have - target, forced, decision, view)
            target = have - len(retire)
        out[pool] = PoolActions(pool, have, target, tuple(retire))
    return Actions(out)


class ChurnCounter:
    """Launches, and relaunches within one startup of a retirement in the same
    pool: capacity given back and bought again before a new worker could
    even have arrived, paying its startup (and minimum billing) for nothing.

    >>> c = ChurnCounter()
    >>> c.record(0.0, "cpu", launched=2, retired=0, startup_s=60)
    >>> c.record(100.0, "cpu", launched=0, retired=1, startup_s=60)
    >>> c.record(130.0, "cpu", launched=1, retired=0, startup_s=60)
    >>> c.launches, c.churn
    (3, 1)
    """

    def __init__(self) -> None:
        self.launches = 0
        self.churn = 0
        self._retired: dict[str, deque[float]] = {}

    def record(
        self, now: float, pool: str, *, launched: int, retired: int, startup_s: float
    ) -> None:
        gone = self._retired.setdefault(pool, deque())
        while gone and gone[0] < now - startup_s:
            gone.popleft()
        for _ in range(launched):
            self.launches += 1
            if gone:
                gone.popleft()
                self.churn += 1
        gone.extend([now] * retired)

    def record_actions(self, now: float, actions: Actions, view: ClusterView) -> None:
        """Count what ``actions`` launch and retire at ``now``."""
        for p in actions.pools.values():
            self.record(
                now,
                p.pool,
                launched=p.launch,
                retired=len(p.retire),
                startup_s=view.pools[p.pool].startup_s,
            )

    @property
    def ratio(self) -> float:
        """Relaunches within one startup per launch."""
        return self.churn / self.launches if self.launches else 0.0


async def report_launches(
    scheduler: Any, names: list[str], spec: PoolSpec | None = None
) -> None:
    """Tell the scheduler's CostMonitor that ``names`` were asked for, so their
    billing starts at the request (``protocol.COST_LAUNCH``). The only place
    launches are reported; a scheduler without a monitor is not an error."""
    handler = getattr(scheduler, protocol.COST_LAUNCH)
    for name in names:
        report: LaunchReport = {"name": str(name)}
        if spec is not None:
            report.update(
                instance_type=spec.instance_type, pricing=spec.pricing, pool=spec.name
            )
        try:
            await handler(**report)
        except (OSError, ValueError, KeyError, AttributeError) as e:
            # the scaler still works; billing then starts on arrival
            logger.debug("launch of %s not reported to a CostMonitor: %s", name, e)
