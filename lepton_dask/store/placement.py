"""Run a block read where the block is cached, and count cache use on
``/metrics``.

:class:`CachePlacement` is a scheduler plugin. It remembers which worker read
each block (the read task's key is the same every time a version is read) and,
when a graph reads that block again, restricts the read to the workers that
share that worker's cache (same host and cache directory), *loosely*
(``allow_other_workers``): if none of them is there, any worker runs it, and
work stealing moves a restricted read off a busy worker onto an idle one
(reads have no dependencies, so they are the cheapest tasks to steal). A read
never waits for a busy host while another is free.

:class:`CacheCollector` serves ``lepton_store_bytes_read_total{source}`` and
``lepton_store_cache_{hits,misses,corrupt}_total``: on a worker, that process's
counters; on a scheduler with the plugin, the sum over the workers' heartbeats
(each process counted once).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from prometheus_client.core import CounterMetricFamily

from lepton_dask.store.cache import CACHE_METRIC, READ_PREFIX, CacheCounts, counts

#: plugins of running schedulers in this process, oldest first
_live: list = []


def _is_read(key: Any) -> bool:
    name = key[0] if isinstance(key, tuple) and key else key
    return isinstance(name, str) and name.startswith(READ_PREFIX)


class CachePlacement(SchedulerPlugin):
    """Loose worker restrictions for block reads, from who read each block.

    ``max_keys`` bounds the map (oldest entries go first).
    """

    name = "lepton-cache-placement"
    idempotent = True  # registered by every get_array: the first one stays

    def __init__(self, max_keys: int = 1_000_000):
        self.max_keys = int(max_keys)
        self.holders: dict[Any, set[str]] = {}
        self.scheduler = None

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler
        _live.append(self)

    async def close(self) -> None:
        if self in _live:
            _live.remove(self)

    def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs):
        if finish != "memory" or not _is_read(key):
            return
        worker = kwargs.get("worker")
        if worker is None:
            return
        held = self.holders.pop(key, set())  # re-inserted: newest last
        held.add(worker)
        self.holders[key] = held
        while len(self.holders) > self.max_keys:
            self.holders.pop(next(iter(self.holders)))

    def update_graph(self, scheduler, *, tasks=(), **kwargs) -> None:
        candidates = [k for k in tasks if k in self.holders]
        if not candidates:
            return
        by_location: dict[str, set[str]] = {}
        loc_of: dict[str, str] = {}
        for addr, ws in scheduler.workers.items():
            loc = (ws.metrics or {}).get(CACHE_METRIC, {}).get("location") or addr
            loc_of[addr] = loc
            by_location.setdefault(loc, set()).add(addr)
        for key in candidates:
            ts = scheduler.tasks.get(key)
            if ts is None or ts.state != "released" or _restricted(ts):
                continue
            locs = {loc_of.get(a, a) for a in self.holders[key]}
            workers = set().union(*(by_location.get(loc, ()) for loc in locs))
            if workers:
                ts.worker_restrictions = workers
                ts.loose_restrictions = True


def _restricted(ts) -> bool:
    return bool(
        ts.worker_restrictions or ts.host_restrictions or ts.resource_restrictions
    )


def cluster_counts() -> CacheCounts | dict[str, int]:
    """On a scheduler with :class:`CachePlacement`, the sum of its workers'
    counters (from heartbeats; each process once, so that workers sharing the
    scheduler's process count once); elsewhere this process's counters.

    Like distributed's own collectors (and ``lepton_*`` cost metrics), a
    process with several schedulers reports on the most recently started one
    that is still running."""
    by_pid: dict[tuple, dict] = {}
    live = [p for p in _live if _running(p.scheduler)]
    if live:
        for ws in list(live[-1].scheduler.workers.values()):
            c = (ws.metrics or {}).get(CACHE_METRIC)
            if isinstance(c, dict) and "pid" in c:
                by_pid[(c.get("location", "").split(":")[0], c["pid"])] = c
    else:
        by_pid[("", os.getpid())] = dict(counts())
    fields = ("hits", "misses", "corrupt", "bytes_cache", "bytes_server")
    return {f: sum(int(c.get(f, 0)) for c in by_pid.values()) for f in fields}


def _running(scheduler) -> bool:
    from distributed.core import Status

    return getattr(scheduler, "status", None) == Status.running


class CacheCollector:
    """``lepton_store_*`` counters for ``prometheus_client``."""

    def describe(self):
        return []

    def collect(self):
        c = cluster_counts()
        read = CounterMetricFamily(
            "lepton_store_bytes_read",
            "Bytes of feature blocks read, by where they came from",
            labels=["source"],
        )
        read.add_metric(["cache"], c["bytes_cache"])
        read.add_metric(["server"], c["bytes_server"])
        yield read
        for name, doc in (
            ("hits", "Block reads served from the block cache"),
            ("misses", "Block reads the cache did not hold (read from the server)"),
            ("corrupt", "Damaged cache entries dropped and read again from the server"),
        ):
            yield CounterMetricFamily(f"lepton_store_cache_{name}", doc, value=c[name])


_registered = threading.Lock()
_done: list[bool] = []


def register_collector() -> None:
    """Register :class:`CacheCollector` on this process's default registry, once."""
    import prometheus_client

    with _registered:
        if not _done:
            prometheus_client.REGISTRY.register(CacheCollector())
            _done.append(True)


_installed: set[tuple[str, str]] = set()


def install_placement(client) -> None:
    """Add :class:`CachePlacement` to ``client``'s scheduler (once per client
    and scheduler; the scheduler keeps the first if several clients add it)."""
    which = (client.id, client.scheduler.address)
    if which not in _installed:
        client.register_plugin(CachePlacement(), name=CachePlacement.name)
        _installed.add(which)
