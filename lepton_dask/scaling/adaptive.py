"""CostAwareAdaptive: Dask's Adaptive, driven by a cost-aware policy.

The thin loop around the pure policies (as ``distributed.deploy.adaptive``
is around ``adaptive_core``): every ``interval`` it asks the scheduler's
CostMonitor for the state of the work and the workers, adds the launches the
cluster has requested but that have not arrived, hands the resulting
:class:`~lepton_dask.scaling.state.ClusterView` to the policy, applies the
decision to the cluster's pools, and reports it to the monitor (bounded log,
``lepton_scaler_*`` metrics).

Use it as ``cluster.adapt(Adaptive=CostAwareAdaptive, policy=BalancedPolicy(1.0))``
on a :class:`~lepton_dask.scaling.pools.LocalPoolCluster` whose scheduler runs a
CostMonitor.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import dask.config
from distributed.deploy.adaptive import Adaptive

from lepton_dask.scaling.model import BusyPeriods, ErnestModel
from lepton_dask.scaling.policies import BalancedPolicy, BudgetPolicy, DeadlinePolicy
from lepton_dask.scaling.state import (
    ArrivalEstimator,
    ClusterView,
    Decision,
    WorkerView,
    releasable,
)

logger = logging.getLogger(__name__)


def policy_from_config() -> Any:
    """The policy ``lepton.scaling.*`` describes.

    >>> type(policy_from_config()).__name__
    'BalancedPolicy'
    """
    cfg = dask.config.get("lepton.scaling")
    kind = cfg.get("policy", "balanced")
    if kind == "balanced":
        return BalancedPolicy(float(cfg.get("weight", 1.0)))
    if kind == "deadline":
        if cfg.get("within") is None:
            raise ValueError(
                "lepton.scaling.policy is 'deadline' but lepton.scaling.within is not set"
            )
        return DeadlinePolicy(within=float(cfg["within"]))
    if kind == "budget":
        if cfg.get("budget-usd-per-hour") is None:
            raise ValueError(
                "lepton.scaling.policy is 'budget' but lepton.scaling.budget-usd-per-hour is not set"
            )
        return BudgetPolicy(float(cfg["budget-usd-per-hour"]), cfg.get("budget-usd"))
    raise ValueError(
        f"lepton.scaling.policy must be balanced, deadline or budget, got {kind!r}"
    )


class CostAwareAdaptive(Adaptive):
    """Adaptive scaling that trades speed for spend.

    Parameters
    ----------
    cluster : LocalPoolCluster
        A cluster with named pools (``pools``, ``scale_pool``, ``retire``,
        ``pool_counts``, ``launch_times``) and a CostMonitor on its scheduler.
    policy : object, optional
        A policy (``decide(ClusterView) -> Decision``); default from
        ``lepton.scaling``.
    interval : str or float, optional
        Seconds between decisions (``lepton.scaling.interval``).

    Attributes
    ----------
    log : deque of (time, dict)
        Every decision with its reason, predicted finish and predicted cost.
    """

    def __init__(
        self,
        cluster: Any = None,
        policy: Any = None,
        interval: Any = None,
        **kwargs: Any,
    ):
        self.policy = policy if policy is not None else policy_from_config()
        self.arrivals = ArrivalEstimator(60.0)
        self.model = ErnestModel()
        self._periods = BusyPeriods(self.model)
        self.idle_since: float | None = None
        self.busy_since: float | None = None
        self.idle_gaps: deque[float] = deque(maxlen=16)
        self.last: Decision | None = None
        if interval is None:
            interval = dask.config.get("lepton.scaling.interval")
        self.state = "inactive"  # (Adaptive.__del__ reads these even if we refuse)
        self.periodic_callback = None
        for name in ("pools", "scale_pool", "retire", "pool_counts", "launch_times"):
            if cluster is not None and not hasattr(cluster, name):
                raise TypeError(
                    f"CostAwareAdaptive needs a cluster with named pools (LocalPoolCluster); "
                    f"{type(cluster).__name__} has no {name!r}"
                )
        # SpecCluster.adapt passes minimum/maximum: the pools' own limits apply
        kwargs.pop("minimum", None)
        kwargs.pop("maximum", None)
        super().__init__(
            cluster,
            interval=interval,
            minimum=0,
            maximum=math.inf,
            wait_count=1,
            **kwargs,
        )

    async def view(self) -> ClusterView:
        """The state to decide from (scheduler state + pending launches)."""
        st = await self.scheduler.lepton_scaler_state()
        now = st["now"]
        workers = [
            WorkerView(
                w["name"],
                w["pool"],
                w["billed_since"],
                w["busy"],
                True,
                w.get("holds_data", False),
            )
            for w in st["workers"]
        ]
        arrived = {w.name for w in workers}
        launched = self.cluster.launch_times()
        for name in self.cluster.worker_spec:
            if str(name) not in arrived:
                workers.append(
                    WorkerView(
                        str(name),
                        self.cluster.pool_of(name),
                        launched.get(name, now),
                        False,
                        False,
                    )
                )
        backlog, pending = st["backlog"], st["pending"]
        total = sum(backlog.values()) + sum(pending.values())
        if total > 1e-9 and self.idle_since is not None:
            self.idle_gaps.append(now - self.idle_since)
            self.idle_since = None
            self.busy_since = now
        elif total <= 1e-9 and self.idle_since is None:
            self.idle_since = now
        if self.busy_since is None and total > 1e-9:
            self.busy_since = now
        self.arrivals.observe(
            now, {k: backlog[k] + pending[k] for k in backlog}, st["completed"]
        )
        threads = st.get("threads", 0.0)
        self._periods.tick(now, total > 1e-9, threads, sum(st["completed"].values()))
        return ClusterView(
            now=now, pools=self.cluster.pools, workers=workers, backlog=backlog,
            tasks_ready={k: math.ceil(v) for k, v in st["tasks"].items()}, pending=pending,
            pending_tail=st["pending_tail"], arrival_rate=self.arrivals.rate(),
            minimum_billing=st["minimum_billing"], spend_usd=st["spend_usd"],
            idle_since=self.idle_since, busy_since=self.busy_since, idle_gaps=list(self.idle_gaps),
            throughput_factor=self.model.throughput_factor(total, max(threads, 1.0)),
        )  # fmt: skip

    async def adapt(self) -> None:
        if self._adapting:
            return
        self._adapting = True
        try:
            view = await self.view()
            decision = self.policy.decide(view)
            changed = await self.apply(decision, view)
            entry = decision.as_log(view.now)
            entry[1]["changed"] = changed
            if changed or self.last is None or decision.reason != self.last.reason:
                self.log.append(entry)
            self.last = decision
            await self.scheduler.lepton_scaler_decision(
                decision={**entry[1], "time": view.now}
            )
        finally:
            self._adapting = False

    async def apply(self, decision: Decision, view: ClusterView) -> bool:
        """Grow pools to their targets; retire idle paid-out workers down to them."""
        changed = False
        counts = self.cluster.pool_counts()
        for pool, target in decision.targets.items():
            have = counts.get(pool, 0)
            if target > have:
                new = await self.cluster.scale_pool(pool, target)
                changed |= bool(new)
                if new:
                    logger.info(
                        "scaling %s up to %d: %s", pool, target, decision.reason
                    )
            elif target < have:
                names = [w.name for w in releasable(view, pool)][: have - target]
                if names:
                    logger.info("retiring %s: %s", names, decision.reason)
                    await self.cluster.retire(names)
                    changed = True
        return changed
