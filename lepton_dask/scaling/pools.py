"""LocalPoolCluster: a SpecCluster with named pools of priced workers.

Each pool is a :class:`~lepton_dask.scaling.state.PoolSpec` (instance type,
pricing class, threads, kind, startup delay, size limits, spot preemption
rate). On one machine the startup delay is injected (the worker waits that
long before it starts) and spot preemptions are simulated by killing workers
at the pool's rate, so experiments see the behaviour of a cloud cluster.
Workers declare their type to the CostMonitor, and every launch request is
reported to it, so billing starts at the request.

It is one SpecCluster among others for
:class:`~lepton_dask.scaling.CostAwareAdaptive`: its pools are the named
templates the scaler grows (:meth:`LocalPoolCluster.new_pool_spec`), and its
launch times are the ones the scaler counts startup from.

Workers start in parallel, as a cloud provider boots VMs: the injected startup
runs outside ``SpecCluster``'s lock (``_correct_state_internal`` awaits every
starting worker while it holds the lock, so a delay inside a worker's start
would hold back every later ``scale()`` until that worker is up). A request
made while other workers are booting is never delayed by them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from typing import Any

from distributed import Nanny, Scheduler, SpecCluster, Worker
from distributed.core import Status

from lepton_dask import _protocol as protocol
from lepton_dask.cost.pricing import worker_declaration
from lepton_dask.scaling.apply import report_launches
from lepton_dask.scaling.state import PoolSpec

logger = logging.getLogger(__name__)


class _DelayedStart:
    """Mixin: wait ``startup_delay`` seconds before starting (a cloud VM boot).

    :class:`LocalPoolCluster` takes the delay out of the spec and waits it
    itself, outside SpecCluster's lock; the mixin keeps the delay for a
    worker started on its own."""

    def __init__(self, *args: Any, startup_delay: float = 0.0, **kwargs: Any):
        self._startup_delay = float(startup_delay)
        super().__init__(*args, **kwargs)

    async def start_unsafe(self):
        if self._startup_delay > 0:
            await asyncio.sleep(self._startup_delay)
        return await super().start_unsafe()


class DelayedNanny(_DelayedStart, Nanny):
    """A Nanny whose worker process starts after an injected delay."""


class DelayedWorker(_DelayedStart, Worker):
    """An in-process Worker that starts after an injected delay."""


class LocalPoolCluster(SpecCluster):
    """A local cluster with named pools, for cost-aware scaling on one machine.

    Parameters
    ----------
    pools : list of PoolSpec
    processes : bool
        Worker processes (Nanny) or in-process workers.
    minimum : dict, optional
        Workers per pool to start with (default: each pool's ``min_workers``).
    scheduler_options : dict, optional
        Passed to the Scheduler (e.g. ``{"plugins": [CostMonitor(...)]}``).
    preemption_seed : int
        Seed of the simulated spot preemptions.

    Examples
    --------
    >>> from lepton_dask.scaling import PoolSpec
    >>> with LocalPoolCluster([PoolSpec("cpu", max_workers=2)], processes=False,
    ...                       minimum={"cpu": 1}) as c:
    ...     sorted(c.pool_counts().items())
    [('cpu', 1)]
    """

    def __init__(
        self,
        pools: list[PoolSpec],
        *,
        processes: bool = False,
        minimum: dict[str, int] | None = None,
        scheduler_options: dict[str, Any] | None = None,
        preemption_seed: int = 0,
        host: str = "127.0.0.1",
        dashboard_address: str | None = None,
        silence_logs: int | bool = logging.WARNING,
        security: Any = None,
        **kwargs: Any,
    ):
        from distributed.security import Security

        if security is None:  # distributed.comm.tls.* and require-encryption
            security = Security()
        elif security is True:
            security = Security.temporary()
        self._security_opts = security
        self._silence_logs = silence_logs
        if not pools:
            raise ValueError("LocalPoolCluster needs at least one pool")
        self.pools = {p.name: p for p in pools}
        if len(self.pools) != len(pools):
            raise ValueError("pool names must be unique")
        minimum = (
            {p.name: p.min_workers for p in pools} if minimum is None else dict(minimum)
        )
        for name, n in minimum.items():
            if name not in self.pools:
                raise ValueError(
                    f"unknown pool {name!r}; pools: {', '.join(self.pools)}"
                )
            if not 0 <= n <= self.pools[name].max_workers:
                raise ValueError(
                    f"pool {name!r}: {n} workers is outside [0, {self.pools[name].max_workers}]"
                )
        self.processes = processes
        self._counters = dict.fromkeys(self.pools, 0)
        self._launched: dict[str, float] = {}
        self._rng = random.Random(preemption_seed)
        self.preempted: list[str] = []
        sched_opts = {
            "dashboard_address": dashboard_address,
            "host": host,
            **(scheduler_options or {}),
        }
        sched_opts.setdefault("security", security)
        if security.require_encryption:
            sched_opts["protocol"] = "tls"
        elif not processes:
            sched_opts.setdefault("protocol", "tcp")
        self._preempt_task = None
        #: workers booting outside the lock: name -> (task, still in its delay)
        self._booting: dict[str, list] = {}
        self._lags: list[float] = []
        workers = {}
        for name, n in minimum.items():
            for _ in range(n):
                wname, spec = self._worker(name, delay=False)
                workers[wname] = spec
        first = next(iter(self.pools.values()))
        super().__init__(
            workers=workers,
            scheduler={"cls": Scheduler, "options": sched_opts},
            worker=self._worker(first.name, delay=True, name_only=False)[1],
            silence_logs=silence_logs,
            security=security,
            **kwargs,
        )

    def _worker(
        self, pool: str, *, delay: bool, name_only: bool = True
    ) -> tuple[str, dict[str, Any]]:
        p = self.pools[pool]
        cls = DelayedNanny if self.processes else DelayedWorker
        opts: dict[str, Any] = {
            "nthreads": p.threads,
            "startup_information": worker_declaration(
                p.instance_type, p.pricing, p.name
            ),
            "startup_delay": p.startup_s if delay else 0.0,
            "security": self._security_opts,
        }
        # each worker offers its kind as a resource: work annotated with
        # ``resources={"CPU": 1}`` stays off the GPU workers
        opts["resources"] = {"GPU": 1} if p.kind == "gpu" else {"CPU": p.threads}
        if self.processes:
            opts["memory_limit"] = 0 if p.kind == "gpu" else "auto"
            # as LocalCluster does: the worker processes log at this level
            opts["silence_logs"] = self._silence_logs
        i = self._counters[pool]
        self._counters[pool] += 1
        return f"{pool}-{i}", {"cls": cls, "options": {**opts, "name": f"{pool}-{i}"}}

    def new_worker_spec(self) -> dict[str, Any]:
        """Used by ``scale(n)`` (Dask's own Adaptive): a worker of the first pool,
        named and billed like the ones :meth:`new_pool_spec` starts."""
        pool = next(iter(self.pools))
        name, spec = self._worker(pool, delay=True)
        self._launched[name] = time.time()
        # stock Adaptive's scale(n) launches outside the apply step: report
        # here, to a CostMonitor when the scheduler has one (no handler, no
        # report: a cluster without a monitor starts workers without noise)
        handlers = getattr(self.scheduler, "handlers", None)
        if handlers is None or protocol.COST_LAUNCH in handlers:
            self.loop.add_callback(
                report_launches, self.scheduler_comm, [name], self.pools[pool]
            )
        return {name: spec}

    async def _start(self):
        await super()._start()
        if any(p.preemptions_per_hour > 0 for p in self.pools.values()):
            self._preempt_task = asyncio.ensure_future(self._preemptions())

    async def _close(self):
        if self._preempt_task is not None:
            self._preempt_task.cancel()
        # booting workers: those still in their delay never start; those
        # starting finish and close themselves (the spec no longer has them)
        for task, delaying in list(self._booting.values()):
            if delaying[0]:
                task.cancel()
        self.worker_spec.clear()
        booting = [task for task, _ in self._booting.values()]
        await asyncio.gather(*booting, return_exceptions=True)
        await super()._close()

    # -- starting workers in parallel ------------------------------------------------
    async def _correct_state_internal(self) -> None:
        """SpecCluster's, except that a worker with a startup delay boots in a
        task of its own, outside the lock: its delay, then its start, then it
        joins ``self.workers`` (or closes, when it was retired meanwhile).
        Read from distributed 2026.8 ``SpecCluster._correct_state_internal``
        (tests/test_distributed_private.py checks the parts used)."""
        async with self._lock:
            self._correct_state_waiting = None
            to_close = set(self.workers) - set(self.worker_spec)
            if to_close:
                if self.scheduler.status == Status.running:
                    await self.scheduler_comm.retire_workers(workers=list(to_close))
                await asyncio.gather(
                    *(self.workers[w].close() for w in to_close if w in self.workers)
                )
            for name in to_close:
                self.workers.pop(name, None)
            to_open = set(self.worker_spec) - set(self.workers) - set(self._booting)
            now = []
            for name in sorted(to_open):
                opts = self.worker_spec[name].get("options", {})
                if opts.get("startup_delay", 0.0) > 0:
                    state = [True]
                    task = asyncio.ensure_future(self._boot(name, state))
                    self._booting[name] = [task, state]
                else:
                    now.append(name)
            if now:  # no delay: started here, as SpecCluster does
                workers = [self._new_worker(name) for name in now]
                futs = [asyncio.ensure_future(w) for w in workers]
                await asyncio.wait(futs)
                self.workers.update(dict(zip(now, workers, strict=True)))
                for w in workers:
                    w._cluster = weakref.ref(self)
                await asyncio.gather(*futs)

    def _new_worker(self, name: str, *, booted: bool = False) -> Any:
        spec = self.worker_spec[name]
        opts = {**spec.get("options", {}), "name": name}
        if booted:
            opts["startup_delay"] = 0.0  # waited already, outside the lock
        worker = spec["cls"](
            getattr(self.scheduler, "contact_address", None) or self.scheduler.address,
            **opts,
        )
        self._created.add(worker)
        return worker

    async def _boot(self, name: str, delaying: list) -> None:
        """One worker's boot: its injected startup, then its start."""
        try:
            delay = float(self.worker_spec[name]["options"]["startup_delay"])
            await asyncio.sleep(delay)
            delaying[0] = False
            if name not in self.worker_spec or self.status != Status.running:
                return
            worker = self._new_worker(name, booted=True)
            try:
                await worker
            except Exception:
                logger.error("worker %s failed to start", name, exc_info=True)
                self.worker_spec.pop(name, None)
                await worker.close()
                return
            worker._cluster = weakref.ref(self)
            if name in self.worker_spec and self.status == Status.running:
                self.workers[name] = worker
                if name in self._launched:
                    lag = time.time() - self._launched[name] - delay
                    self._lags.append(lag)
            else:  # retired (or the cluster closed) while it started
                await worker.close()
        finally:
            self._booting.pop(name, None)

    # -- pools ---------------------------------------------------------------------
    def pool_of(self, worker_name: str) -> str:
        """The pool a worker (by name) belongs to."""
        return str(worker_name).rsplit("-", 1)[0]

    def pool_counts(self) -> dict[str, int]:
        """Workers per pool, requested or running."""
        counts = dict.fromkeys(self.pools, 0)
        for name in self.worker_spec:
            counts[self.pool_of(name)] = counts.get(self.pool_of(name), 0) + 1
        return counts

    def launch_times(self) -> dict[str, float]:
        """When each worker was requested (scheduler-clock seconds)."""
        return dict(self._launched)

    def arrival_lags(self) -> list[float]:
        """Seconds each launched worker took to arrive beyond its injected
        startup delay (the cluster's own fixed start lag), in arrival order."""
        return list(self._lags)

    def new_pool_spec(self, pool: str) -> dict[str, Any]:
        """Name and spec of one more worker of ``pool`` (its startup delay
        injected): what :class:`~lepton_dask.scaling.CostAwareAdaptive` adds to
        grow the pool. The request time is kept (:meth:`launch_times`)."""
        if pool not in self.pools:
            raise ValueError(f"unknown pool {pool!r}; pools: {', '.join(self.pools)}")
        name, spec = self._worker(pool, delay=True)
        self._launched[name] = time.time()
        return {name: spec}

    async def _preemptions(self, tick: float = 1.0) -> None:
        """Kill spot workers at their pool's rate (a simulated reclaim)."""
        while True:
            await asyncio.sleep(tick)
            for name in list(self.workers):
                p = self.pools.get(self.pool_of(name))
                if p is None or p.preemptions_per_hour <= 0:
                    continue
                if self._rng.random() < p.preemptions_per_hour * tick / 3600.0:
                    await self.preempt(name)

    async def preempt(self, name: str) -> None:
        """Reclaim worker ``name`` now, as a spot provider would: no graceful
        retirement, its results are lost (Dask recomputes them), its billing
        ends, and the pool is one worker short until the scaler replaces it."""
        w = self.workers.get(name)
        if w is None:
            raise KeyError(f"no worker {name!r}")
        logger.info("simulated spot preemption of %s", name)
        self.preempted.append(str(name))
        self.worker_spec.pop(name, None)
        try:
            await w.kill() if hasattr(w, "kill") else await w.close()
        except Exception as e:  # pragma: no cover - best effort
            logger.debug("preempting %s, its close failed: %s", name, e, exc_info=True)
        self.workers.pop(name, None)
