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
    Scheduler.adaptive_target, distributed 2026.8), as a policy for the
    simulator: per kind, ``ceil(occupancy / target_duration)`` threads
    (capped by the tasks queued or processing), as workers by the arrived
    workers' threads each (with no worker yet, one worker per thread); up at
    once; down only by idle arrived workers after ``wait_count`` consecutive
    checks (a worker still booting is never closed: it is neither one that
    SpecCluster has started nor one the scheduler knows); with no regard for
    prices, startup or billing.

    >>> from lepton_dask.scaling.state import ClusterView, PoolSpec, WorkerView
    >>> pool = PoolSpec("cpu", threads=2, max_workers=20)
    >>> view = ClusterView(now=0.0, pools={"cpu": pool}, workers=[],
    ...                    backlog={"cpu": 100.0}, tasks_ready={"cpu": 100})
    >>> StockAdaptivePolicy(5.0).decide(view).targets  # ceil(100 / 5) threads
    {'cpu': 20}
    >>> view.workers = [WorkerView("a", "cpu", 0.0, busy=True)]
    >>> StockAdaptivePolicy(5.0).decide(view).targets  # 2 threads a worker
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
            mine = view.in_pool(pool.name)
            # the scheduler knows only the workers that have arrived
            arrived = [w for w in mine if w.arrived]
            target = self._adaptive_target(view, kind, pool, arrived)
            # AdaptiveCore.safe_target (adaptive_core.py:127-136)
            hi = (
                pool.max_workers
                if self.maximum is None
                else min(self.maximum, pool.max_workers)
            )
            target = min(max(target, self.minimum, pool.min_workers), hi)
            plan = len(mine)  # SpecCluster.plan: every worker asked for
            if target >= plan:  # adaptive_core.py:152-158: same, or up
                self._close_counts = {
                    k: v
                    for k, v in self._close_counts.items()
                    if view.pools.get(k.split("|")[0]) is not pool
                }
                targets[pool.name] = target
                continue
            # adaptive_core.recommendations (adaptive_core.py:160-182). Its
            # "not yet arrived" workers are ``requested - observed``, and
            # ``requested`` is the workers SpecCluster has started
            # (spec.py:601-613): a worker still booting is in neither, so it
            # is never closed. Scheduler.workers_to_close(target=...) closes
            # idle arrived workers, fewest bytes first, down to ``target``
            # counted over the arrived ones (scheduler.py:7371-7376, 7405-7431).
            n = len(arrived) - target
            idle = [w for w in arrived if not w.busy]
            idle.sort(key=lambda w: w.holds_data)  # least data first
            candidates = idle[: max(0, n)]
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
            targets[pool.name] = plan - len(firm)
            if firm:
                release[pool.name] = firm
        return Decision(
            targets,
            f"stock Adaptive, target_duration={self.target_duration:g}s",
            release=release,
        )

    def _adaptive_target(self, view: ClusterView, kind: str, pool, arrived) -> int:
        """``Scheduler.adaptive_target`` (scheduler.py:8838-8898) for one
        kind of worker."""
        # occupancy of the processing and queued tasks, each priced with
        # _get_prefix_duration (scheduler.py:8858-8868, 1905-1932)
        occupancy = view.backlog.get(kind, 0.0)
        ready = view.tasks_ready.get(kind, 0)
        cpu = math.ceil(occupancy / self.target_duration)
        # "avoid a few long tasks from asking for many cores": at most one
        # thread per queued or processing task (scheduler.py:8870-8876)
        cpu = min(cpu, ready)
        if arrived:
            # threads to workers, by the arrived workers' average threads
            # (scheduler.py:8878-8881); with no worker the count of threads
            # is taken as the count of workers
            threads = len(arrived) * pool.threads
            cpu = math.ceil(cpu / threads * len(arrived))
        elif ready:
            cpu = max(1, cpu)  # scheduler.py:8883-8884
        if cpu >= len(arrived):
            return cpu
        # scale down: Scheduler.workers_to_close() with its defaults
        # (memory_ratio 2, scheduler.py:7378-7431) closes the idle workers,
        # but keeps enough memory for the data held on the cluster: the last
        # worker holding results stays
        idle = [w for w in arrived if not w.busy]
        if len(idle) == len(arrived) and any(w.holds_data for w in idle):
            keep = next(w for w in idle if w.holds_data)
            idle = [w for w in idle if w is not keep]
        return len(arrived) - len(idle)
