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
from typing import Any

import dask.config
from distributed.deploy.adaptive import Adaptive

from lepton_dask.scaling.policies import BalancedPolicy, BudgetPolicy, DeadlinePolicy
from lepton_dask.scaling.state import (
    ClusterView,
    Decision,
    ViewBuilder,
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
        self.views = ViewBuilder()
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
        arrived = {str(w["name"]) for w in st["workers"]}
        launched = self.cluster.launch_times()
        pending = [
            WorkerView(
                str(name),
                self.cluster.pool_of(name),
                launched.get(name, st["now"]),
                False,
                False,
            )
            for name in self.cluster.worker_spec
            if str(name) not in arrived
        ]
        return self.views.build(st, self.cluster.pools, pending)

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
