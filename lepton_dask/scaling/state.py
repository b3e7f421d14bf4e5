"""What a scaling policy sees and what it returns.

The :class:`~lepton_dask.cost.scaler_state.ScalerState` dict is the contract
between whatever observes a cluster and the policies: the CostMonitor's
``scaler_state`` (on a real scheduler) and the simulator both produce it, and
:class:`ViewBuilder` turns it into the
:class:`ClusterView` that a policy decides from. The policy's answer is a
:class:`Decision`. The dataclasses are plain data; ``ViewBuilder`` and
``ArrivalEstimator`` keep the little history a view needs (arrival rate, idle
gaps, busy periods).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import dask.config

from lepton_dask._protocol import ScalerState

EPS_WORK = 1e-9  # thread-seconds of outstanding work below which there is none


_CATALOGS: dict[tuple[str, float], Any] = {}


def _catalog(path: str | None) -> Any:
    """The price catalog at ``path`` (default: the configured one), parsed once
    per file version."""
    import os

    from lepton_dask.cost.catalog import DEFAULT_CATALOG, load_catalog

    path = path or dask.config.get("lepton.cost.catalog") or DEFAULT_CATALOG
    try:
        key = (path, os.stat(path).st_mtime)
    except OSError:
        return load_catalog(path)  # raises the catalog's own error
    if key not in _CATALOGS:
        _CATALOGS[key] = load_catalog(path)
    return _CATALOGS[key]


def catalog_price(pool: str, instance_type: str, pricing: str) -> float:
    """The catalog's hourly price of one ``instance_type`` worker at ``pricing``
    (what a :class:`PoolSpec` given no ``usd_per_hour`` costs).

    ``local`` (a LocalCluster worker) is priced from the shipped catalog when a
    configured catalog leaves it out. An unknown type is a ``ValueError`` that
    names the catalog's nearest types.

    >>> catalog_price("gpu", "g5.xlarge", "on-demand")
    1.006
    >>> catalog_price("gpu", "g5.xlarj", "on-demand")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: pool 'gpu': unknown instance type 'g5.xlarj' ...
    """
    from lepton_dask.cost.catalog import DEFAULT_CATALOG, CatalogError

    cat = _catalog(None)
    if instance_type not in cat and instance_type == "local":
        cat = _catalog(DEFAULT_CATALOG)
    try:
        return cat[instance_type].usd_per_hour(pricing)
    except CatalogError as e:
        raise ValueError(
            f"pool {pool!r}: {e}; give usd_per_hour= to price a type the "
            "catalog does not list"
        ) from None


@dataclass(frozen=True)
class PoolSpec:
    """A kind of worker one can ask for.

    Parameters
    ----------
    name : str
    instance_type, pricing : str
        As in the price catalog.
    usd_per_hour : float, optional
        Price of one worker. Default: the price catalog's price of
        ``instance_type`` at ``pricing`` (``lepton.cost.catalog``); an
        instance type the catalog does not know needs an explicit price.
    threads : int
        Task slots per worker.
    kind : str
        Work it runs: ``"cpu"`` or ``"gpu"`` (GPU-annotated tasks need a
        ``"gpu"`` pool).
    speed : float
        Work done per thread-second relative to a reference CPU thread.
    startup_s : float
        Expected seconds from a launch request to a working worker.
    min_workers, max_workers : int
    preemptions_per_hour : float
        Expected preemptions per worker-hour (spot).
    """

    name: str
    instance_type: str = "local"
    pricing: str = "on-demand"
    usd_per_hour: float | None = None
    threads: int = 1
    kind: str = "cpu"
    speed: float = 1.0
    startup_s: float = 0.0
    min_workers: int = 0
    max_workers: int = 16
    preemptions_per_hour: float = 0.0

    def __post_init__(self):
        if self.usd_per_hour is None:
            price = catalog_price(self.name, self.instance_type, self.pricing)
            object.__setattr__(self, "usd_per_hour", price)
        if self.min_workers < 0 or self.max_workers < self.min_workers:
            raise ValueError(
                f"pool {self.name!r}: need 0 <= min_workers <= max_workers, got "
                f"{self.min_workers} and {self.max_workers}"
            )
        if (
            self.threads < 1
            or self.speed <= 0
            or self.usd_per_hour < 0
            or self.startup_s < 0
        ):
            raise ValueError(
                f"pool {self.name!r}: threads, speed, price and startup must be positive"
            )
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(
                f"pool {self.name!r}: kind must be 'cpu' or 'gpu', got {self.kind!r}"
            )

    @classmethod
    def from_catalog(
        cls,
        name: str,
        instance_type: str,
        pricing: str = "on-demand",
        *,
        catalog: Any = None,
        **kwargs: Any,
    ) -> PoolSpec:
        """A pool priced from the price catalog (as the CostMonitor prices it).

        >>> PoolSpec.from_catalog("gpu", "g5.xlarge", kind="gpu").usd_per_hour
        1.006
        """
        from lepton_dask.cost.catalog import load_catalog

        t = (catalog or load_catalog())[instance_type]
        return cls(name, instance_type, pricing, t.usd_per_hour(pricing), **kwargs)

    @property
    def usd_per_work_second(self) -> float:
        """Price of one reference thread-second of work, counting expected
        losses to preemption (half a task and a restart per preemption)."""
        loss = min(0.5, self.preemptions_per_hour * (self.startup_s + 30.0) / 3600.0)
        return self.usd_per_hour / 3600.0 / (self.threads * self.speed * (1.0 - loss))


@dataclass
class WorkerView:
    """One worker as the policy sees it."""

    name: str
    pool: str
    billed_since: float
    busy: bool
    arrived: bool = True
    holds_data: bool = False

    def paid_until(self, minimum: float) -> float:
        """End of the minimum billing period already paid for."""
        return self.billed_since + minimum


@dataclass
class BatchView:
    """A submission batch with unfinished work (see :class:`BatchState`)."""

    id: str
    arrival: float
    work: dict[str, float]
    done: dict[str, float] = field(default_factory=dict)
    tasks: int = 0
    longest: float = 0.0
    critical: float = 0.0
    deadline_s: float | None = None
    #: part of ``work`` priced on a guess, and what is certain of it
    #: (:class:`~lepton_dask._protocol.BatchState`)
    unmeasured: dict[str, float] = field(default_factory=dict)
    unmeasured_floor: dict[str, float] = field(default_factory=dict)
    prior: dict[str, float] = field(default_factory=dict)
    #: ``work`` priced as ``backlog`` is (the scheduler's estimates)
    scheduler_work: dict[str, float] = field(default_factory=dict)
    #: part of ``unmeasured`` in stages that cannot start yet, and how many
    blocked: dict[str, float] = field(default_factory=dict)
    blocked_stages: int = 0
    #: part of ``work`` allowed for means of few finished tasks
    stderr: dict[str, float] = field(default_factory=dict)

    @property
    def remaining(self) -> float:
        return sum(self.work.values())


@dataclass
class ClusterView:
    """The state a policy decides from, at time ``now``.

    ``backlog`` is outstanding work (queued plus running) in reference
    thread-seconds per kind (``"cpu"``, ``"gpu"``); ``pending`` the work of
    tasks still waiting for their dependencies (``pending_tail``: the longest
    of those, which runs after the rest); ``arrival_rate`` the work
    arriving per second lately; ``idle_gaps`` the recent lengths of idle
    periods (no backlog) between busy ones, in seconds, newest last;
    ``busy_since`` when the current busy period (non-zero backlog) began;
    ``batches`` the submission batches with unfinished work, oldest first.
    """

    now: float
    pools: dict[str, PoolSpec]
    workers: list[WorkerView]
    backlog: dict[str, float]
    tasks_ready: dict[str, int] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)
    pending_tail: float = 0.0
    arrival_rate: dict[str, float] = field(default_factory=dict)
    minimum_billing: float = 60.0
    spend_usd: float = 0.0
    idle_since: float | None = None
    busy_since: float | None = None
    idle_gaps: list[float] = field(default_factory=list)
    throughput_factor: float = 1.0
    batches: list[BatchView] = field(default_factory=list)
    #: seconds since the previous view: how often the policy is asked, so
    #: about how far off its next chance to act is (0 for the first view)
    tick_s: float = 0.0
    #: per kind, the share of their nominal threads that the arrived workers
    #: turn into finished work while all are busy (1 until measured:
    #: :class:`~lepton_dask.scaling.model.Efficiency`)
    efficiency: dict[str, float] = field(default_factory=dict)

    def in_pool(self, pool: str) -> list[WorkerView]:
        return [w for w in self.workers if w.pool == pool]

    def count(self, pool: str) -> int:
        """Workers of ``pool``, arrived or starting."""
        counts = self.__dict__.get("_counts")
        if counts is None:
            counts = {}
            for w in self.workers:
                counts[w.pool] = counts.get(w.pool, 0) + 1
            self.__dict__["_counts"] = counts
        return counts.get(pool, 0)

    def spend_rate(self) -> float:
        return sum(
            self.pools[w.pool].usd_per_hour
            for w in self.workers
            if w.pool in self.pools
        )


@dataclass
class Decision:
    """A policy's answer: worker count per pool, and why."""

    targets: dict[str, int]
    reason: str
    predicted_finish_s: float = 0.0
    predicted_cost_usd: float = 0.0
    infeasible: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    #: Workers to release by name, per pool. ``None``: the applier chooses
    #: among :func:`releasable` workers (idle, paid minimum used up).
    release: dict[str, list[str]] | None = None

    def as_log(self, now: float) -> tuple[float, dict[str, Any]]:
        """An entry for the bounded decision log (Adaptive's format)."""
        return (
            now,
            {
                "status": "decision",
                "targets": dict(self.targets),
                "reason": self.reason,
                "predicted_finish_s": self.predicted_finish_s,
                "predicted_cost_usd": self.predicted_cost_usd,
                "infeasible": self.infeasible,
                **self.detail,  # time_left_s, keep_alive_s, batches, ...
            },
        )


def releasable(view: ClusterView, pool: str) -> list[WorkerView]:
    """Idle, arrived workers of ``pool`` whose paid minimum is used up, the
    ones paid-up longest first (those holding unique data last). Releasing a
    worker earlier than that would not save money, only capacity.

    >>> v = ClusterView(now=100.0, pools={}, backlog={}, minimum_billing=60,
    ...                 workers=[WorkerView("a", "p", 0.0, busy=False),
    ...                          WorkerView("b", "p", 80.0, busy=False),
    ...                          WorkerView("c", "p", 0.0, busy=True)])
    >>> [w.name for w in releasable(v, "p")]
    ['a']
    """
    out = [
        w
        for w in view.workers
        if w.pool == pool
        and w.arrived
        and not w.busy
        and view.now >= w.paid_until(view.minimum_billing)
    ]
    # workers holding the only copy of some result go last (their data moves
    # to the ones that stay)
    return sorted(out, key=lambda w: (w.holds_data, w.billed_since))


def drain_time_staged(
    work: float, threads_now: float, arrivals: list[tuple[float, float]]
) -> float:
    """Seconds to finish ``work`` with ``threads_now`` threads now and more
    threads joining at given times: ``arrivals`` = [(seconds from now, threads)].

    >>> drain_time_staged(100.0, 10, [(5.0, 10)])   # 50 done in 5 s, 50 on 20 threads
    7.5
    >>> drain_time_staged(10.0, 10, [(5.0, 10)])    # done before the others arrive
    1.0
    >>> drain_time_staged(100.0, 0, [(2.0, 10), (4.0, 30)])  # 20 done by t=4, 80 on 40 threads
    6.0
    """
    if work <= 0:
        return 0.0
    t, rate, left = 0.0, float(threads_now), float(work)
    for at, threads in sorted((max(0.0, a), c) for a, c in arrivals if c > 0):
        if rate > 0 and left <= rate * (at - t):
            return t + left / rate
        left -= rate * (at - t)
        t, rate = at, rate + threads
    return t + left / rate if rate > 0 else math.inf


class ArrivalEstimator:
    """Work arriving per second lately, from the backlog and the work completed.

    Arrivals in an interval = backlog growth + work completed meanwhile. The
    rate is the median over six sub-windows of ``window``, so that a single
    burst (already visible as backlog) does not read as a sustained stream.
    The loop and the simulator feed it the same quantities.

    >>> est = ArrivalEstimator(window=60)
    >>> for t in range(0, 61, 10):   # 5 s of work arriving per second
    ...     est.observe(float(t), {"cpu": 0.0}, {"cpu": 5.0 * t})
    >>> est.rate()
    {'cpu': 5.0}
    >>> est2 = ArrivalEstimator(window=60)
    >>> for t in range(0, 61, 10):   # one burst of 600 s of work at t=10
    ...     est2.observe(float(t), {"cpu": 600.0 if t >= 10 else 0.0}, {"cpu": 0.0})
    >>> est2.rate()
    {'cpu': 0.0}
    """

    def __init__(self, window: float = 60.0, parts: int = 6):
        self.window = float(window)
        self.parts = int(parts)
        self._hist: list[tuple[float, dict[str, float], dict[str, float]]] = []

    def observe(
        self, now: float, backlog: dict[str, float], completed: dict[str, float]
    ) -> None:
        self._hist.append((now, dict(backlog), dict(completed)))
        while len(self._hist) > 2 and self._hist[1][0] <= now - self.window:
            self._hist.pop(0)

    def _at(self, t: float):
        """Latest observation at or before ``t``."""
        best = self._hist[0]
        for h in self._hist:
            if h[0] <= t:
                best = h
            else:
                break
        return best

    def rate(self) -> dict[str, float]:
        if len(self._hist) < 2:
            return {}
        t_end = self._hist[-1][0]
        span = min(self.window, t_end - self._hist[0][0])
        if span < self.window / 2:  # too little history to tell a stream from a burst
            return {}
        step = span / self.parts
        kinds = set(self._hist[-1][1]) | set(self._hist[-1][2])
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        for i in range(self.parts):
            a = self._at(t_end - span + i * step)
            b = self._at(t_end - span + (i + 1) * step)
            dt = b[0] - a[0]
            if dt <= 0:
                continue
            for k in kinds:
                arrived = (
                    b[1].get(k, 0) - a[1].get(k, 0) + b[2].get(k, 0) - a[2].get(k, 0)
                )
                rates[k].append(max(0.0, arrived / dt))
        if any(len(v) < self.parts for v in rates.values()):
            return {}
        return {k: statistics.median(v) for k, v in rates.items()}


class ViewBuilder:
    """Turns the scheduler's scaler state (``protocol.SCALER_STATE``) into a :class:`ClusterView`,
    keeping what a view needs from earlier ones: the arrival rate, idle gaps,
    the start of the busy period and the online Ernest model.

    Used by :class:`~lepton_dask.scaling.adaptive.CostAwareAdaptive` and by the
    Kubernetes scaler (``lepton_dask.deploy.k8s_scaler``): one way to see a
    cluster, whatever applies the decision.
    """

    def __init__(self) -> None:
        from lepton_dask.scaling.model import BusyPeriods, Efficiency, ErnestModel

        self.arrivals = ArrivalEstimator(60.0)
        self.model = ErnestModel()
        self.efficiency = Efficiency()
        self._periods = BusyPeriods(self.model)
        self.idle_since: float | None = None
        self.busy_since: float | None = None
        self.idle_gaps: list[float] = []
        self._last: float | None = None

    def _observe_efficiency(self, st: ScalerState, pools: dict[str, PoolSpec]) -> None:
        """Per kind: the arrived threads, the work they finished, the tasks
        for them and a typical task's length, for :class:`~lepton_dask.scaling.model.Efficiency`."""
        by_kind: dict[str, float] = {}
        for w in st["workers"]:
            p = pools.get(w["pool"])
            if p is not None:
                by_kind[p.kind] = by_kind.get(p.kind, 0.0) + p.threads * p.speed
        task_s: dict[str, float] = {}
        for b in st.get("batches", ()):
            for k, w in b["work"].items():
                if w > EPS_WORK:
                    task_s[k] = max(task_s.get(k, 0.0), float(b.get("longest", 0.0)))
        self.efficiency.observe(
            st["now"], st["completed"], by_kind, st["tasks"], task_s
        )

    def build(
        self,
        st: ScalerState,
        pools: dict[str, PoolSpec],
        pending_workers: list[WorkerView] = (),
    ) -> ClusterView:
        """``st``: the scheduler's state; ``pending_workers``: launched but not
        arrived yet (billed from their launch)."""
        now = st["now"]
        tick = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        workers = [
            WorkerView(
                str(w["name"]),
                w["pool"],
                w["billed_since"],
                w["busy"],
                True,
                w.get("holds_data", False),
            )
            for w in st["workers"]
        ] + list(pending_workers)
        backlog, pending = st["backlog"], st["pending"]
        total = sum(backlog.values()) + sum(pending.values())
        if total > EPS_WORK and self.idle_since is not None:
            # a gap between work, not the wait for the first work
            if self.busy_since is not None:
                self.idle_gaps = [*self.idle_gaps, now - self.idle_since][-16:]
            self.idle_since = None
            self.busy_since = now
        elif total <= EPS_WORK and self.idle_since is None:
            self.idle_since = now
        if self.busy_since is None and total > EPS_WORK:
            self.busy_since = now
        self.arrivals.observe(
            now, {k: backlog[k] + pending[k] for k in backlog}, st["completed"]
        )
        self._observe_efficiency(st, pools)
        threads = st.get("threads", 0.0)
        self._periods.tick(
            now, total > EPS_WORK, threads, sum(st["completed"].values())
        )
        batches = [
            BatchView(
                str(b["id"]),
                float(b["arrival"]),
                dict(b["work"]),
                dict(b.get("done", {})),
                int(b.get("tasks", 0)),
                float(b.get("longest", 0.0)),
                float(b.get("critical", b.get("longest", 0.0))),
                b.get("deadline_s"),
                dict(b.get("unmeasured") or {}),
                dict(b.get("unmeasured_floor") or {}),
                dict(b.get("prior") or {}),
                dict(b.get("scheduler_work") or b["work"]),
                dict(b.get("blocked") or {}),
                int(b.get("blocked_stages", 0)),
                dict(b.get("stderr") or {}),
            )
            for b in st.get("batches", ())
        ]
        return ClusterView(
            now=now,
            pools=pools,
            workers=workers,
            backlog=backlog,
            tasks_ready={k: math.ceil(v) for k, v in st["tasks"].items()},
            pending=pending,
            pending_tail=st["pending_tail"],
            arrival_rate=self.arrivals.rate(),
            minimum_billing=st["minimum_billing"],
            spend_usd=st["spend_usd"],
            idle_since=self.idle_since,
            busy_since=self.busy_since,
            idle_gaps=list(self.idle_gaps),
            throughput_factor=self.model.throughput_factor(total, max(threads, 1.0)),
            batches=batches,
            tick_s=tick,
            efficiency={k: self.efficiency.factor(k) for k in st["completed"]},
        )
