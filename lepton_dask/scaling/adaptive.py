"""CostAwareAdaptive: Dask's Adaptive, driven by a cost-aware policy.

The thin loop around the pure policies (as ``distributed.deploy.adaptive``
is around ``adaptive_core``): every ``interval`` it asks the scheduler's
CostMonitor for the state of the work and the workers, adds the launches the
cluster has requested but that have not arrived, hands the resulting
:class:`~lepton_dask.scaling.state.ClusterView` to the policy, applies the
decision to the cluster's pools (:class:`~lepton_dask.scaling.managers.ManagedPools`),
and reports it to the monitor (bounded log, ``lepton_scaler_*`` metrics).

Use it on the cluster you have, any ``SpecCluster``::

    cluster.adapt(Adaptive=CostAwareAdaptive, policy=BalancedPolicy(1.0),
                  minimum=0, maximum=4)

A scheduler without a CostMonitor gets one, once.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import dask.config
from distributed.deploy.adaptive import Adaptive

from lepton_dask import _protocol as protocol
from lepton_dask.scaling.apply import ChurnCounter, plan_apply, report_launches
from lepton_dask.scaling.managers import ManagedPools
from lepton_dask.scaling.registry import Policy, policy_from_config
from lepton_dask.scaling.report import decision_report
from lepton_dask.scaling.state import (
    ClusterView,
    Decision,
    PoolSpec,
    ViewBuilder,
    WorkerView,
)

logger = logging.getLogger(__name__)


class CostAwareAdaptive(Adaptive):
    """Adaptive scaling that trades speed for spend, on any SpecCluster.

    Parameters
    ----------
    cluster : SpecCluster
        ``distributed.LocalCluster``, a dask-jobqueue, dask-cloudprovider or
        classic dask-kubernetes cluster, a ``LocalPoolCluster``, ...
    policy : Policy, optional
        A policy (``decide(ClusterView) -> Decision``); default from
        ``lepton.scaling``.
    interval : str or float, optional
        Seconds between decisions (``lepton.scaling.interval``).
    minimum, maximum : int, optional
        Total workers, honoured as stock ``Adaptive`` honours them.
    pool : PoolSpec, optional
        The whole cluster as this one pool (price, startup, threads, pricing).
    pools : dict of str to PoolSpec, or list of PoolSpec, optional
        Several pools, by worker-spec key or name prefix.
    templates : dict of str to worker spec, optional
        The spec each pool grows by.
    instance_type, pricing : str, optional
        Price the one pool from the catalog as this instance type.
    monitor : CostMonitor, optional
        Installed on the scheduler when it has none (default: ``CostMonitor()``).

    Attributes
    ----------
    log : deque of (time, dict)
        Every decision with its reason, predicted finish and predicted cost,
        and the workers it launched and retired.
    managed : ManagedPools
        The pools, their workers, launches and learned startup delays.

    Examples
    --------
    >>> import dask
    >>> from distributed import LocalCluster
    >>> from lepton_dask.scaling import BalancedPolicy
    >>> with dask.config.set({"lepton.cost.ledger": False}), LocalCluster(
    ...         n_workers=0, processes=False, dashboard_address=None) as c:
    ...     ad = c.adapt(Adaptive=CostAwareAdaptive, policy=BalancedPolicy(1.0),
    ...                  minimum=0, maximum=4)
    ...     ad.managed.pools["default"].max_workers
    4
    """

    def __init__(
        self,
        cluster: Any = None,
        policy: Policy | None = None,
        interval: Any = None,
        minimum: int | None = None,
        maximum: int | float | None = None,
        *,
        pool: PoolSpec | None = None,
        pools: Any = None,
        templates: dict[str, Any] | None = None,
        instance_type: str | None = None,
        pricing: str | None = None,
        monitor: Any = None,
        **kwargs: Any,
    ):
        self.state = "inactive"  # (Adaptive.__del__ reads these even if we refuse)
        self.periodic_callback = None
        self.policy = policy if policy is not None else policy_from_config()
        self.views = ViewBuilder()
        self.churn = ChurnCounter()
        self.last: Decision | None = None
        self.monitor = monitor
        self._monitor_checked = False
        if interval is None:
            interval = dask.config.get("lepton.scaling.interval")
        minimum = (
            dask.config.get("distributed.adaptive.minimum")
            if minimum is None
            else minimum
        )
        maximum = (
            dask.config.get("distributed.adaptive.maximum")
            if maximum is None
            else maximum
        )
        if isinstance(maximum, float) and math.isfinite(maximum):
            maximum = int(maximum)
        self.managed = None
        if cluster is not None:
            self.managed = ManagedPools(
                cluster,
                pool=pool,
                pools=pools,
                templates=templates,
                instance_type=instance_type,
                pricing=pricing,
                minimum=int(minimum),
                maximum=maximum,
            )
        elif minimum > maximum:
            raise ValueError(f"minimum ({minimum}) > maximum ({maximum})")
        super().__init__(
            cluster, interval=interval, minimum=int(minimum), maximum=maximum, **kwargs
        )

    # -- the monitor -----------------------------------------------------------------------
    async def ensure_monitor(self) -> bool:
        """Install a CostMonitor on the scheduler unless it has one; True when
        this call installed it. In-process schedulers get it through
        ``register_scheduler_plugin`` (start, then ``add_plugin``); remote ones
        over RPC. Idempotent by the plugin's name."""
        if self._monitor_checked:
            return False
        from distributed import Scheduler

        from lepton_dask.cost.monitor import CostMonitor

        sched = getattr(self.cluster, "scheduler", None)
        installed = False
        if isinstance(sched, Scheduler):
            have = [p for p in sched.plugins.values() if isinstance(p, CostMonitor)]
            if have:
                self.monitor = have[0]
            else:
                self.monitor = self.monitor or CostMonitor()
                await sched.register_scheduler_plugin(
                    self.monitor, name=self.monitor.name, idempotent=True
                )
                installed = True
        else:
            from distributed.protocol import pickle

            monitor = self.monitor or CostMonitor()
            await self.scheduler.register_scheduler_plugin(
                plugin=pickle.dumps(monitor), name=monitor.name, idempotent=True
            )
            installed = True  # (or found one of that name: idempotent)
        if installed:
            logger.info("installed a CostMonitor on the scheduler")
        self._monitor_checked = True
        return installed

    # -- the loop -------------------------------------------------------------------------
    async def view(self) -> ClusterView:
        """The state to decide from: the scheduler's, with each worker in its
        pool and the launched workers that have not arrived yet."""
        st = await getattr(self.scheduler, protocol.SCALER_STATE)()
        plan = self.managed.requested()
        arrived = {str(w["name"]) for w in st["workers"]}
        self.managed.observe(st["now"], arrived)
        launched = self.managed.launch_times()
        # only workers the cluster still asks for count (retiring ones are going)
        workers = [
            {**w, "pool": plan[str(w["name"])][0]}
            for w in st["workers"]
            if str(w["name"]) in plan
        ]
        pending = [
            WorkerView(name, pool, launched.get(name, st["now"]), False, False)
            for name, (pool, _) in plan.items()
            if name not in arrived
        ]
        return self.views.build({**st, "workers": workers}, self.managed.pools, pending)

    async def adapt(self) -> None:
        if self._adapting:
            return
        self._adapting = True
        try:
            await self.ensure_monitor()
            view = await self.view()
            decision = self.policy.decide(view)
            launched, retired = await self.apply(decision, view)
            report = decision_report(
                decision, view.now, self.churn, launched=launched, retired=retired
            )
            changed = report["changed"]
            if changed or self.last is None or decision.reason != self.last.reason:
                self.log.append(
                    (view.now, {k: v for k, v in report.items() if k != "time"})
                )
            self.last = decision
            await getattr(self.scheduler, protocol.SCALER_DECISION)(decision=report)
        finally:
            self._adapting = False

    async def apply(
        self, decision: Decision, view: ClusterView
    ) -> tuple[list[str], list[str]]:
        """Carry out :func:`~lepton_dask.scaling.apply.plan_apply`'s plan:
        grow pools to their targets, retire exactly the planned workers.
        Returns (launched, retired) worker names."""
        plan = plan_apply(
            decision,
            view,
            minimum=self.minimum,
            maximum=self.maximum,
            counts=self.managed.counts(),
        )
        launched: list[str] = []
        # every pool's launches in one request: a worker group waiting on
        # another's start would arrive late (see LocalPoolCluster)
        grown = await self.managed.grow_all(
            {p.pool: p.launch for p in plan.pools.values() if p.launch}
        )
        for pool, new in grown.items():
            launched += new
            logger.info(
                "scaling %s up to %d: %s",
                pool,
                plan.pools[pool].target,
                decision.reason,
            )
        for pool, new in grown.items():
            await report_launches(self.scheduler, new, self.managed.pools[pool])
        retire = plan.retire
        if retire:
            names = self.managed.requested()
            logger.info("retiring %s: %s", retire, decision.reason)
            await self.scale_down([names[n][1] for n in retire if n in names])
        self.churn.record_actions(view.now, plan, view)
        return launched, retire
