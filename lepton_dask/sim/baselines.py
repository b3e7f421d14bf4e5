"""Baselines the simulator compares the cost-aware policies against.

:class:`StockAdaptivePolicy` is Dask's own ``Adaptive`` written as a policy
(``ceil(occupancy / target_duration)`` workers, up at once, down after
``wait_count`` checks), so the simulator can run stock Adaptive and the
cost-aware policies on equal terms.
"""

from __future__ import annotations

import math

from lepton_dask.scaling.policies import KINDS
from lepton_dask.scaling.state import ClusterView, Decision

__all__ = ["StockAdaptivePolicy"]


class StockAdaptivePolicy:
    """Dask's ``Adaptive`` (distributed.deploy.adaptive_core +
    Scheduler.adaptive_target), as a policy for the simulator: per kind,
    ``ceil(occupancy / target_duration)`` threads (capped by the tasks that can
    run), up at once, down by idle workers after ``wait_count`` consecutive
    checks, with no regard for prices, startup or billing.

    >>> from lepton_dask.scaling.state import ClusterView, PoolSpec
    >>> pool = PoolSpec("cpu", threads=2, max_workers=20)
    >>> view = ClusterView(now=0.0, pools={"cpu": pool}, workers=[],
    ...                    backlog={"cpu": 100.0}, tasks_ready={"cpu": 100})
    >>> StockAdaptivePolicy(5.0).decide(view).targets  # ceil(100 / 5) threads
    {'cpu': 10}
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
