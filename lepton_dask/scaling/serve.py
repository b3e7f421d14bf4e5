"""The scheduler answers Dask's own scalers from the policy.

dask-gateway's scheduler preload and the dask-kubernetes operator's
``DaskAutoscaler`` ask the scheduler two questions: how many workers
(``Scheduler.adaptive_target``, also served at ``/api/v1/adaptive_target``)
and which may go (``Scheduler.workers_to_close``). With
``lepton.scaling.serve-adaptive-target: true`` the :class:`PolicyServer`
plugin answers both from the cost-aware policy, through the one apply step
(:func:`~lepton_dask.scaling.apply.plan_apply`): the total of the plan's
per-pool targets, and exactly the workers the plan retires. Both systems then
scale by cost, with no change on their side. The per-pool targets are served
as JSON at ``/api/v1/lepton/targets`` for scalers that know pools.

Each decision is reported to the CostMonitor like ``CostAwareAdaptive``'s
(:func:`~lepton_dask.scaling.report.decision_report`: decision log,
``lepton_scaler_*`` metrics). Workers the caller was told to add are counted
as starting (billed from the answer that asked for them) until they arrive,
since the scheduler cannot see a launch. The time from such an answer to the
arrival it asked for, which includes the caller's own loop period and its
launch queue, is the startup the policy plans with (the p90 of recent ones,
the configured startup counting as one).

Use it as a scheduler preload (it also installs the CostMonitor)::

    DASK_LEPTON__SCALING__SERVE_ADAPTIVE_TARGET=true \\
        dask scheduler --preload lepton_dask.scaling.serve

With the option off the scheduler is untouched: the preload installs only the
CostMonitor.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin

from lepton_dask.scaling.apply import Actions, ChurnCounter, plan_apply
from lepton_dask.scaling.managers import STARTUP_SAMPLES, startup_quantile
from lepton_dask.scaling.report import decision_report
from lepton_dask.scaling.state import ClusterView, Decision, PoolSpec, ViewBuilder
from lepton_dask.scaling.state import WorkerView as _WorkerView

if TYPE_CHECKING:
    from lepton_dask.scaling.registry import Policy

__all__ = ["TARGETS_ROUTE", "PolicyServer", "dask_setup"]

logger = logging.getLogger(__name__)

#: the per-pool targets, as JSON, on the scheduler's HTTP server
TARGETS_ROUTE = "/api/v1/lepton/targets"


class PolicyServer(SchedulerPlugin):
    """Serve ``adaptive_target`` and ``workers_to_close`` from ``policy``.

    Parameters
    ----------
    policy : Policy, optional
        A policy (``decide(ClusterView) -> Decision``); default from
        ``lepton.scaling`` (:func:`~lepton_dask.scaling.registry.policy_from_config`).
    pools : dict of str to PoolSpec, optional
        Default: ``lepton.scaling.pools``, else one pool of every worker
        priced from ``lepton.cost.default-instance-type``.
    min_interval : float
        Seconds within which one decision answers every question (a caller
        asks for the target, then which workers to close).
    """

    name = "lepton-policy-server"

    def __init__(
        self,
        policy: Policy | None = None,
        pools: dict[str, PoolSpec] | None = None,
        min_interval: float = 0.5,
    ):
        self.policy = policy
        self._given = dict(pools) if pools else None
        self._pools: dict[str, PoolSpec] | None = None
        self._pools_threads = 0
        self.min_interval = float(min_interval)
        self.views = ViewBuilder()
        self.churn = ChurnCounter()
        self.scheduler: Any = None
        self.monitor: Any = None
        self.last: tuple[float, ClusterView, Decision, Actions] | None = None
        self._requested: list[float] = []  # asked for, not arrived: when asked
        self._arrived = 0
        #: answer-to-arrival times of recent workers (seconds)
        self.startups: deque[float] = deque(maxlen=STARTUP_SAMPLES)

    async def start(self, scheduler: Any) -> None:
        from lepton_dask.cost.monitor import CostMonitor
        from lepton_dask.scaling.registry import policy_from_config

        self.scheduler = scheduler
        mine = [p for p in scheduler.plugins.values() if isinstance(p, CostMonitor)]
        if not mine:
            raise RuntimeError(
                "PolicyServer needs the CostMonitor on the scheduler: install it "
                "first (the preload lepton_dask.scaling.serve does)"
            )
        self.monitor = mine[0]
        if self.policy is None:
            self.policy = policy_from_config()
        scheduler.adaptive_target = self.adaptive_target
        scheduler.workers_to_close = self.workers_to_close
        scheduler.handlers["adaptive_target"] = self.adaptive_target
        scheduler.handlers["workers_to_close"] = self.workers_to_close
        _add_targets_route(scheduler, self)
        logger.info(
            "the scheduler's adaptive_target and workers_to_close answer from %s",
            getattr(self.policy, "label", type(self.policy).__name__),
        )

    # -- the pools ---------------------------------------------------------------
    def pools(self) -> dict[str, PoolSpec]:
        """The given pools, else ``lepton.scaling.pools``: rebuilt when the
        workers' thread count changes (before any worker arrives, a pool
        without ``threads`` has its instance type's vCPUs)."""
        if self._given is not None:
            pools = self._given
        else:
            threads = max(
                (ws.nthreads for ws in self.scheduler.workers.values()), default=0
            )
            if self._pools is None or threads != self._pools_threads:
                self._pools = _pools_from_config(threads or None)
                self._pools_threads = threads
            pools = self._pools
        if not self.startups:
            return pools
        return {
            name: dataclasses.replace(
                p, startup_s=startup_quantile([*self.startups, p.startup_s])
            )
            for name, p in pools.items()
        }

    # -- one decision ------------------------------------------------------------
    def decide(self) -> tuple[ClusterView, Decision, Actions]:
        """The policy's decision now (the last one, within ``min_interval``)
        and the plan that carries it out."""
        now = time.time()
        if self.last is not None and now - self.last[0] < self.min_interval:
            return self.last[1:]
        pools = self.pools()
        first = next(iter(pools))
        st = self.monitor.scaler_state()
        workers = [
            {**w, "pool": w["pool"] if w["pool"] in pools else first}
            for w in st["workers"]
        ]
        self._account_arrivals(len(workers))
        pending = [
            _WorkerView(f"requested-{i}", first, t, False, False)
            for i, t in enumerate(self._requested)
        ]
        view = self.views.build({**st, "workers": workers}, pools, pending)
        decision = self.policy.decide(view)
        plan = plan_apply(decision, view)
        self._account_requests(now, len(workers), plan)
        self.churn.record_actions(now, plan, view)
        self._report(now, view, decision, plan)
        self.last = (now, view, decision, plan)
        return view, decision, plan

    def _account_arrivals(self, arrived: int) -> None:
        """Workers that arrived since the last decision were asked for first."""
        new = max(0, arrived - self._arrived)
        now = time.time()
        self.startups.extend(now - t for t in self._requested[:new])
        del self._requested[:new]
        self._arrived = arrived

    def _account_requests(self, now: float, arrived: int, plan: Actions) -> None:
        """The workers this answer asks for start now; fewer asked for than
        starting: the newest requests are dropped."""
        total = sum(p.target for p in plan.pools.values())
        want = max(0, total - arrived)
        if want > len(self._requested):
            self._requested += [now] * (want - len(self._requested))
        else:
            del self._requested[want:]

    def _report(self, now: float, view, decision: Decision, plan: Actions) -> None:
        """Report the decision to the monitor: the plan's retirements; the
        launches are the caller's, who asks for workers by the target."""
        self.monitor.record_decision(
            decision_report(
                decision, now, self.churn, plan=plan, served="adaptive_target"
            )
        )

    # -- what the scalers ask ----------------------------------------------------
    def adaptive_target(self, target_duration: Any = None) -> int:
        """Workers the policy wants in all (``target_duration`` is ignored:
        the policy has its own terms)."""
        _, _, plan = self.decide()
        return int(sum(p.target for p in plan.pools.values()))

    def targets(self) -> dict[str, Any]:
        """Per pool: the target and the workers to retire; and the reason."""
        _, decision, plan = self.decide()
        return {
            "targets": {p.pool: p.target for p in plan.pools.values()},
            "retire": {p.pool: list(p.retire) for p in plan.pools.values()},
            "reason": decision.reason,
        }

    def workers_to_close(
        self,
        memory_ratio: Any = None,
        n: int | None = None,
        key: Any = None,
        minimum: int | None = None,
        target: int | None = None,
        attribute: str = "address",
    ) -> list[Any]:
        """The workers the policy retires (no others), at most as many as the
        caller's ``n`` or ``target`` allows; ``attribute`` of each (the
        address, or ``"name"`` as dask-gateway asks)."""
        _, _, plan = self.decide()
        by_name = {str(ws.name): ws for ws in self.scheduler.workers.values()}
        chosen = [by_name[n_] for n_ in plan.retire if n_ in by_name]
        limit = len(chosen)
        if n is not None:
            limit = min(limit, int(n))
        if target is not None:
            limit = min(limit, max(0, len(self.scheduler.workers) - int(target)))
        if minimum is not None:
            limit = min(limit, max(0, len(self.scheduler.workers) - int(minimum)))
        return [getattr(ws, attribute) for ws in chosen[:limit]]


def _pools_from_config(threads: int | None) -> dict[str, PoolSpec]:
    """``lepton.scaling.pools`` (one pool priced from the default instance
    type if empty); an entry without ``threads`` gets ``threads``, else its
    instance type's vCPUs."""
    from lepton_dask.scaling.managers import pool_from_config

    entries = dask.config.get("lepton.scaling.pools") or []
    if not entries:
        entries = [{"name": "default"}]
    out = {}
    for entry in entries:
        spec, _ = pool_from_config({"max-workers": 10**6, **entry}, threads=threads)
        out[spec.name] = spec
    return out


def _add_targets_route(scheduler: Any, server: PolicyServer) -> None:
    app = getattr(scheduler, "http_application", None)
    if app is None or not hasattr(app, "add_application"):
        return  # no HTTP server: the RPC answers all the same
    from tornado.web import Application, RequestHandler

    class Targets(RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(server.targets()))

    # distributed's RoutingApplication asks its applications for what it
    # does not route itself (as the dashboard's pages are added)
    app.add_application(Application([(TARGETS_ROUTE, Targets)]))


def dask_setup(server: Any, serve_adaptive_target: bool | None = None) -> None:
    """``--preload lepton_dask.scaling.serve``: the CostMonitor (and on a
    worker its declaration), and with ``lepton.scaling.serve-adaptive-target``
    (``serve_adaptive_target`` when called directly) the
    :class:`PolicyServer`. A plain function, not a click command: distributed
    allows one click-configurable preload per process, and dask-gateway's
    scheduler preload is one."""
    from distributed import Scheduler

    from lepton_dask.cost import preload

    preload.dask_setup(server)
    if not isinstance(server, Scheduler):
        return
    if serve_adaptive_target is None:
        serve_adaptive_target = dask.config.get("lepton.scaling.serve-adaptive-target")
    if serve_adaptive_target and not any(
        isinstance(p, PolicyServer) for p in server.plugins.values()
    ):
        server.add_plugin(PolicyServer())
