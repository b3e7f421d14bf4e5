"""CostMonitor: a scheduler plugin that prices workers and accrues spend.

It tracks worker lifetimes (billed with :mod:`lepton_dask.cost.billing`),
counts the work done per pool from task transitions, keeps a spend ledger in
MongoDB that survives a scheduler restart, checks budgets
(:mod:`lepton_dask.cost.budgets`), starts the scheduler from a known
workload's recorded durations (:mod:`lepton_dask.cost.priors`), answers the
scalers' and cluster managers' calls, and exports all of it as ``lepton_*``
Prometheus metrics on the scheduler's ``/metrics``.

How a worker is priced is :mod:`lepton_dask.cost.pricing`; unpriceable workers
are exported as ``lepton_unpriced_workers``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin

from lepton_dask import _protocol as protocol
from lepton_dask._distributed import remove_priors
from lepton_dask._protocol import ScalerState
from lepton_dask.config import get_timedelta
from lepton_dask.cost.billing import (
    Lifetime,
    billed_seconds,
    paid_thread_seconds,
    spend_rate_usd_per_hour,
    total_spend,
)
from lepton_dask.cost.budgets import Budget
from lepton_dask.cost.catalog import Catalog, load_catalog
from lepton_dask.cost.observer import WorkloadObserver
from lepton_dask.cost.pricing import (
    Price,
    Pricing,
)
from lepton_dask.cost.priors import install_recorded_priors
from lepton_dask.cost.recording import (
    RunRecorder,
    recordings,
    write_recording,
)
from lepton_dask.cost.scaler_state import read_scaler_state

logger = logging.getLogger(__name__)

#: the module that serves the dashboard's Cost page (``install(scheduler)``
#: returns its path). Named, not imported: the page is a view one layer up
#: that finds the monitor in ``scheduler.plugins``, and the cost package does
#: not depend on it (as ``distributed.scheduler.http.routes`` names modules).
PAGE_MODULE = "lepton_dask.dashboard.cost_page"


@dataclass
class PoolTotals:
    """Work done and money spent by one pool (finished lives and counters)."""

    tasks: int = 0
    compute_seconds: float = 0.0
    nbytes: int = 0
    finished_usd: float = 0.0
    finished_thread_seconds: float = 0.0
    history_usd: float = 0.0


class CostMonitor(SchedulerPlugin):
    """Prices workers, accrues spend, keeps the ledger, exports metrics.

    Parameters
    ----------
    catalog : Catalog or str, optional
        A catalog or the path of one; default ``lepton.cost.catalog``.
    run_id : str, optional
        Run the spend belongs to (``lepton.cost.run-id``); a scheduler that
        restarts with the same run id continues its cumulative spend from the
        ledger. Default: a new id per monitor.
    ledger : Ledger, False or None
        None: the feature store's database (``lepton.cost.ledger``); False: none.
    minimum_billing, budget_usd_per_hour, budget_usd, flush_interval :
        Override ``lepton.cost.*``.

    Examples
    --------
    >>> from distributed import LocalCluster
    >>> monitor = CostMonitor(ledger=False)
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=None,
    ...                   scheduler_kwargs={"plugins": [monitor]}) as c:
    ...     snap = monitor.snapshot()
    >>> snap["workers"], snap["spend_rate_usd_per_hour"]
    (1, 0.096)
    """

    name = "lepton-cost"

    def __init__(
        self,
        catalog: Catalog | str | None = None,
        *,
        run_id: str | None = None,
        ledger: Any = None,
        minimum_billing: float | None = None,
        budget_usd_per_hour: float | None = None,
        budget_usd: float | None = None,
        flush_interval: float | None = None,
    ):
        self.catalog = (
            catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
        )
        self.run_id = (
            run_id
            or dask.config.get("lepton.cost.run-id")
            or (f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
        )
        self.minimum = (
            get_timedelta("lepton.cost.minimum-billing")
            if minimum_billing is None
            else float(minimum_billing)
        )
        if self.minimum < 0:
            raise ValueError(f"minimum billing must be >= 0, got {self.minimum}")
        cfg = dask.config.get("lepton.cost")
        self.budget = Budget.from_config(budget_usd_per_hour, budget_usd)
        self.flush_interval = (
            get_timedelta("lepton.cost.flush-interval")
            if flush_interval is None
            else float(flush_interval)
        )
        self.pricing = Pricing(self.catalog, cfg)
        if ledger is None and cfg["ledger"]:
            ledger = _default_ledger()
        self.ledger = ledger or None
        self.lives: dict[str, Lifetime] = {}
        self.pools: dict[str, PoolTotals] = defaultdict(PoolTotals)
        self.worker_pool: dict[str, str] = {}
        self.unpriced: set[str] = set()
        self.launches: dict[str, dict[str, Any]] = {}
        self.log: deque = deque(maxlen=1000)
        # (time, tasks, compute seconds, bytes) samples for windowed throughput
        self._samples: deque = deque(maxlen=64)
        self._unflushed: list[Lifetime] = []
        self.finished: deque[Lifetime] = deque(maxlen=100_000)
        self._flushing = False
        self._pc = None
        self.scheduler = None
        #: task groups that asked for a GPU (their pending work is GPU work)
        self.gpu_groups: set[str] = set()
        self.scaler_last: dict[str, Any] | None = None
        self.scaler_decisions = 0
        #: spend, spend rate and workers by pool, one sample per flush interval
        #: (six hours at the default 5 s), for the dashboard's Cost page
        self.timeline: deque[dict[str, Any]] = deque(maxlen=4320)
        self.page: str | None = None
        #: what this run did, per task group and batch (``lepton.cost.record``)
        self.recorder = RunRecorder(self.run_id) if cfg["record"] else None
        #: unfinished work per submission batch (the scaler state's
        #: ``batches``): a scheduler plugin of its own, added by :meth:`start`
        self.observer = WorkloadObserver(recorder=self.recorder, clock=self.now)
        #: duration priors this monitor installed (:mod:`~lepton_dask.cost.priors`)
        self.priors: dict[str, float] = {}

    # -- plugin hooks --------------------------------------------------------------
    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers[protocol.COST_LAUNCH] = self._handle_launch
        scheduler.handlers[protocol.COST_SNAPSHOT] = self._handle_snapshot
        scheduler.handlers[protocol.SCALER_STATE] = self.scaler_state
        scheduler.handlers[protocol.SCALER_DECISION] = self.record_decision
        self.observer.attach(scheduler)
        if self.ledger is not None:
            try:
                history = await asyncio.to_thread(self._resume)
                for pool, usd in history.items():
                    self.pools[pool].history_usd += usd
            except Exception as e:
                logger.error(
                    "cost ledger unavailable, spend history not loaded: %s",
                    e,
                    exc_info=True,
                )
        if self.ledger is not None:
            self.priors = await install_recorded_priors(scheduler, self.ledger.spec)
        for addr in list(scheduler.workers):
            self.add_worker(scheduler, addr)
        from tornado.ioloop import PeriodicCallback

        self._pc = PeriodicCallback(self._tick, self.flush_interval * 1000)
        self._pc.start()
        from lepton_dask.cost.metrics import register_monitor

        register_monitor(self)
        if dask.config.get("lepton.cost.dashboard-page"):
            try:
                self.page = importlib.import_module(PAGE_MODULE).install(scheduler)
            except Exception as e:  # the page is a view; spend is still counted
                logger.error(
                    "could not add the Cost page to the dashboard, skipped: %s",
                    e,
                    exc_info=True,
                )

    def _resume(self) -> dict[str, float]:
        self.ledger.resume(self.run_id)
        totals: dict[str, float] = defaultdict(float)
        for d in self.ledger.entries(self.run_id):
            totals[d.get("pool", "default")] += d["billed_usd"]
        return totals

    def now(self) -> float:
        """The scheduler's clock (seconds)."""
        return time.time()

    def add_worker(self, scheduler: Any, worker: str) -> None:
        if worker in self.lives:  # reported twice: one life, one bill
            return
        ws = scheduler.workers.get(worker)
        if ws is None:
            return
        now = self.now()
        priced = self.pricing.price(ws)
        if priced is None:
            self.unpriced.add(worker)
            priced = Price("unpriced", "unknown", self.pricing.default_pricing, 0.0)
        pool, itype, pricing, price = priced
        launch = self.launches.pop(str(ws.name), None)
        start = min(launch["time"], now) if launch else now
        self.lives[worker] = Lifetime(
            worker=str(ws.name),
            pool=pool,
            instance_type=itype,
            pricing=pricing,
            usd_per_hour=price,
            nthreads=int(ws.nthreads),
            start=start,
        )
        self.worker_pool[worker] = pool
        self.log.append(
            (
                now,
                {
                    "event": "add-worker",
                    "worker": str(ws.name),
                    "pool": pool,
                    "instance_type": itype,
                    "pricing": pricing,
                },
            )
        )

    def remove_worker(
        self,
        scheduler: Any,
        worker: str,
        *,
        stimulus_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        life = self.lives.pop(worker, None)
        self.unpriced.discard(worker)
        if life is None:
            return
        now = self.now()
        life.end = max(now, life.start)
        totals = self.pools[life.pool]
        secs = billed_seconds(life.start, life.end, life.end, self.minimum)
        totals.finished_usd += secs * life.usd_per_hour / 3600.0
        totals.finished_thread_seconds += secs * life.nthreads
        self._unflushed.append(life)
        self.finished.append(life)
        self.log.append(
            (
                now,
                {
                    "event": "remove-worker",
                    "worker": life.worker,
                    "pool": life.pool,
                    "billed_seconds": secs,
                },
            )
        )

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any
    ) -> None:
        if self.recorder is not None and finish in ("memory", "erred"):
            self.recorder.transition(
                self.scheduler, key, start, finish, kwargs, self.worker_pool
            )
        if finish != "memory" or start != "processing":
            if (
                finish == "waiting"
                and start == "released"
                and self.scheduler is not None
            ):
                ts = self.scheduler.tasks.get(key)
                if (
                    ts is not None
                    and ts.resource_restrictions
                    and "GPU" in ts.resource_restrictions
                ):
                    self.gpu_groups.add(ts.group.name)
            return
        totals = self.pools[self.worker_pool.get(kwargs.get("worker"), "default")]
        totals.tasks += 1
        nbytes = kwargs.get("nbytes")
        if nbytes:
            totals.nbytes += nbytes
        for ss in kwargs.get("startstops") or ():
            if ss.get("action") == "compute":
                totals.compute_seconds += ss["stop"] - ss["start"]

    async def before_close(self) -> None:
        if self._pc is not None:
            self._pc.stop()
        remove_priors(self.priors)
        for addr in list(self.lives):
            self.remove_worker(self.scheduler, addr)
        if self.recorder is not None:
            self.recorder.close(self.now())
        while self._flushing:  # a periodic flush in flight: the last one follows it
            await asyncio.sleep(0.01)
        await self._flush()

    # -- cluster-manager and client handlers -----------------------------------------
    def _handle_launch(
        self,
        name: str,
        instance_type: str | None = None,
        pricing: str | None = None,
        pool: str | None = None,
    ) -> None:
        """A cluster manager asked for worker ``name``: bill it from now."""
        self.launches[str(name)] = {
            "time": self.now(),
            "instance_type": instance_type,
            "pricing": pricing,
            "pool": pool,
        }

    def _handle_snapshot(self) -> dict[str, Any]:
        return self.snapshot()

    def record_decision(self, decision: dict[str, Any]) -> None:
        """A scaler's decision (a :class:`~lepton_dask._protocol.DecisionReport`):
        kept for ``lepton_scaler_*`` and, when it changed something, logged.
        Remote scalers send it through the ``SCALER_DECISION`` handler; a
        plugin on the scheduler (the PolicyServer) calls this."""
        self.scaler_last = dict(decision)
        self.scaler_decisions += 1
        if decision.get("changed"):
            self.log.append((self.now(), {"event": "scaler", **decision}))

    def scaler_state(self) -> ScalerState:
        """What a scaling policy needs from the scheduler
        (:func:`~lepton_dask.cost.scaler_state.read_scaler_state`)."""
        return read_scaler_state(self)

    # -- periodic work ---------------------------------------------------------------
    async def _tick(self) -> None:
        self._sample()
        snap = self.snapshot()
        self.timeline.append(
            {
                "time": snap["time"],
                "spend_usd": snap["spend_usd"],
                "spend_rate_usd_per_hour": snap["spend_rate_usd_per_hour"],
                "pools": {
                    p: {"workers": v["workers"]} for p, v in snap["pools"].items()
                },
            }
        )
        self.log.extend(self.budget.check(snap, self.now()))
        await self._flush()

    def _sample(self, now: float | None = None) -> None:
        now = self.now() if now is None else now
        t = self.pools.values()
        self._samples.append(
            (
                now,
                sum(p.tasks for p in t),
                sum(p.compute_seconds for p in t),
                sum(p.nbytes for p in t),
            )
        )

    def throughput(self, window: float = 60.0) -> dict[str, float]:
        """Tasks/s, task-seconds/s and bytes/s over the last ``window`` seconds
        (from samples taken every flush interval; zeros until there are two).

        >>> CostMonitor(ledger=False).throughput()
        {'tasks_per_second': 0.0, 'task_seconds_per_second': 0.0, 'bytes_per_second': 0.0}
        """
        zero = {
            "tasks_per_second": 0.0,
            "task_seconds_per_second": 0.0,
            "bytes_per_second": 0.0,
        }
        if len(self._samples) < 2:
            return zero
        last = self._samples[-1]
        first = next(
            (s for s in self._samples if s[0] >= last[0] - window), self._samples[0]
        )
        if first is last:
            first = self._samples[-2]
        dt = last[0] - first[0]
        if dt <= 0:
            return zero
        return {
            "tasks_per_second": (last[1] - first[1]) / dt,
            "task_seconds_per_second": (last[2] - first[2]) / dt,
            "bytes_per_second": (last[3] - first[3]) / dt,
        }

    async def _flush(self) -> None:
        if self.ledger is None or self._flushing:
            return
        from lepton_dask.cost.ledger import to_doc

        now = self.now()
        pending = list(self._unflushed)
        docs = [
            to_doc(self.run_id, life, now, self.minimum)
            for life in [*pending, *self.lives.values()]
        ]
        record = (
            self.recorder.to_doc(now)
            if self.recorder is not None and self.recorder.batches
            else None
        )
        self._flushing = True
        try:
            await asyncio.to_thread(self.ledger.write, docs)
            if record is not None:
                await asyncio.to_thread(write_recording, self.ledger.spec, record)
            self._unflushed = self._unflushed[len(pending) :]  # (only ever appended to)
        except Exception as e:
            logger.warning(
                "could not write the cost ledger (will retry): %s", e, exc_info=True
            )
        finally:
            self._flushing = False

    # -- what it knows ---------------------------------------------------------------
    @property
    def budget_usd_per_hour(self) -> float | None:
        """The spend-rate budget (:class:`~lepton_dask.cost.budgets.Budget`)."""
        return self.budget.usd_per_hour

    @property
    def budget_usd(self) -> float | None:
        """The total budget."""
        return self.budget.usd

    @property
    def budget_exceeded(self) -> dict[str, bool]:
        """Whether spend was over each budget (rate, total) at the last check."""
        return self.budget.exceeded

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Spend, rates, work and utilization, per pool and in total.

        Computed from live state: call it any time (metrics do, at scrape).
        """
        now = self.now() if now is None else now
        pools: dict[str, dict[str, Any]] = {}
        names = set(self.pools) | {life.pool for life in self.lives.values()}
        for pool in sorted(names):
            t = self.pools[pool]
            running = [life for life in self.lives.values() if life.pool == pool]
            spend = (
                t.history_usd + t.finished_usd + total_spend(running, now, self.minimum)
            )
            paid = t.finished_thread_seconds + paid_thread_seconds(
                running, now, self.minimum
            )
            by_type: dict[tuple[str, str], int] = defaultdict(int)
            for life in running:
                by_type[(life.instance_type, life.pricing)] += 1
            pools[pool] = {
                "workers": len(running),
                "workers_by_type": dict(by_type),
                "threads": sum(life.nthreads for life in running),
                "spend_usd": spend,
                "spend_rate_usd_per_hour": spend_rate_usd_per_hour(running),
                "tasks": t.tasks,
                "compute_seconds": t.compute_seconds,
                "bytes": t.nbytes,
                "paid_thread_seconds": paid,
                "utilization": (t.compute_seconds / paid) if paid > 0 else 0.0,
            }
        total = {
            k: sum(p[k] for p in pools.values())
            for k in (
                "workers",
                "threads",
                "spend_usd",
                "spend_rate_usd_per_hour",
                "tasks",
                "compute_seconds",
                "bytes",
                "paid_thread_seconds",
            )
        }
        total["utilization"] = (
            total["compute_seconds"] / total["paid_thread_seconds"]
            if total["paid_thread_seconds"] > 0
            else 0.0
        )
        total["cost_per_task_usd"] = (
            total["spend_usd"] / total["tasks"] if total["tasks"] else 0.0
        )
        gb = total["bytes"] / 1e9
        total["cost_per_gigabyte_usd"] = total["spend_usd"] / gb if gb > 0 else 0.0
        return {
            **total,
            **self.throughput(),
            "scaler": self.scaler_last,
            "scaler_decisions": self.scaler_decisions,
            "run_id": self.run_id,
            "pools": pools,
            "unpriced_workers": len(self.unpriced),
            "budget_usd_per_hour": self.budget_usd_per_hour,
            "budget_usd": self.budget_usd,
            "budget_exceeded": dict(self.budget_exceeded),
            "time": now,
        }

    def history(self) -> list[dict[str, Any]]:
        """Recordings of this run's workload in the ledger's store, oldest first:
        earlier runs of the same job, also those of earlier schedulers."""
        if self.ledger is None or self.recorder is None:
            return []
        return recordings(self.ledger.spec, self.recorder.workload_key()[0])

    def report(self, run_id: str | None = None):
        """Spend per worker lifetime of a run (default: this one) as a table.

        Reads the ledger when there is one (so lifetimes of an earlier
        scheduler of the same run are included), plus this monitor's own.
        """
        from lepton_dask.cost.ledger import to_doc
        from lepton_dask.cost.report import report_table

        run_id = run_id or self.run_id
        docs: dict[str, dict] = {}
        if self.ledger is not None:
            docs = {d["_id"]: d for d in self.ledger.entries(run_id)}
        if run_id == self.run_id:
            now = self.now()
            for life in [*self.finished, *self.lives.values()]:
                d = to_doc(self.run_id, life, now, self.minimum)
                docs[d["_id"]] = d
        return report_table(list(docs.values()), run_id)


def _default_ledger():
    from lepton_dask.cost.ledger import Ledger
    from lepton_dask.store import StoreSpec

    return Ledger(StoreSpec.from_config())
