"""``lepton_*`` Prometheus metrics, computed from live state at scrape time.

The scheduler's ``/metrics`` serves ``prometheus_client.REGISTRY``. One
collector is registered there per process (idempotently: several schedulers in
one process cause no duplicate-registration errors); like distributed's own
collectors it reports on the most recently started scheduler that is still
running. :class:`CostCollector` reports on one given monitor, for a custom
``CollectorRegistry``.

Labels are bounded: pool, instance type and pricing class, never tasks or
workers.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: name, type, help: the metrics this module exports (README lists them)
METRICS = [
    (
        "lepton_spend_usd_total",
        "counter",
        "Cumulative spend of the run in USD, by pool",
    ),
    (
        "lepton_spend_rate_usd_per_hour",
        "gauge",
        "Current spend rate in USD per hour, by pool",
    ),
    (
        "lepton_workers",
        "gauge",
        "Running workers by pool, instance type and pricing class",
    ),
    (
        "lepton_unpriced_workers",
        "gauge",
        "Workers whose instance type is not in the catalog",
    ),
    ("lepton_tasks_completed_total", "counter", "Tasks completed, by pool"),
    (
        "lepton_task_compute_seconds_total",
        "counter",
        "Thread-seconds spent computing tasks, by pool",
    ),
    (
        "lepton_computed_bytes_total",
        "counter",
        "Bytes of task results produced, by pool",
    ),
    ("lepton_paid_thread_seconds_total", "counter", "Thread-seconds paid for, by pool"),
    (
        "lepton_utilization_ratio",
        "gauge",
        "Busy thread-seconds over paid thread-seconds, by pool",
    ),
    (
        "lepton_throughput_tasks_per_second",
        "gauge",
        "Tasks completed per second (last minute)",
    ),
    (
        "lepton_throughput_task_seconds_per_second",
        "gauge",
        "Task compute seconds per second (last minute)",
    ),
    (
        "lepton_throughput_bytes_per_second",
        "gauge",
        "Bytes of results per second (last minute)",
    ),
    ("lepton_cost_per_task_usd", "gauge", "Spend over tasks completed, in USD"),
    (
        "lepton_cost_per_gigabyte_usd",
        "gauge",
        "Spend over gigabytes of results, in USD",
    ),
    (
        "lepton_budget_usd_per_hour",
        "gauge",
        "Configured spend-rate budget in USD per hour",
    ),
    ("lepton_budget_usd", "gauge", "Configured total budget in USD"),
    (
        "lepton_budget_exceeded",
        "gauge",
        "1 when spend is over a budget, by kind (rate, total)",
    ),
    (
        "lepton_scaler_target_workers",
        "gauge",
        "Workers the scaler's last decision wants, by pool",
    ),
    (
        "lepton_scaler_predicted_finish_seconds",
        "gauge",
        "Predicted seconds to finish the outstanding work",
    ),
    (
        "lepton_scaler_predicted_spend_usd",
        "gauge",
        "Predicted spend in USD until the outstanding work is done",
    ),
    (
        "lepton_scaler_time_to_deadline_seconds",
        "gauge",
        "Seconds left until the deadline policy's deadline",
    ),
    (
        "lepton_scaler_infeasible",
        "gauge",
        "1 when the scaler's deadline or budget cannot be met",
    ),
    ("lepton_scaler_decisions_total", "counter", "Scaling decisions taken"),
    ("lepton_scaler_launches_total", "counter", "Workers the scaler launched"),
    (
        "lepton_scaler_churn_total",
        "counter",
        "Workers launched within one startup of a retirement in the same pool",
    ),
    (
        "lepton_forecast_workers",
        "gauge",
        "Workers the predictive policy wants warm for the forecast batch",
    ),
    (
        "lepton_prewarmed_workers",
        "gauge",
        "Workers the last decision added ahead of a forecast batch",
    ),
    (
        "lepton_forecast_hits_total",
        "counter",
        "Forecast batches that arrived in their window",
    ),
    (
        "lepton_forecast_misses_total",
        "counter",
        "Forecast batches that did not arrive in their window",
    ),
]


def _counter(name, doc, labels):
    # prometheus_client appends _total itself to counter family names
    return CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)


def families(snapshot: dict[str, Any]) -> Iterator:
    """Metric families for one :meth:`CostMonitor.snapshot`."""
    docs = {n: d for n, _, d in METRICS}
    yield from _pool_families(snapshot["pools"], docs)
    yield from _run_families(snapshot, docs)
    scaler = snapshot.get("scaler")
    if scaler:
        yield from _scaler_families(scaler, snapshot.get("scaler_decisions", 0), docs)


def _gauge(name: str, docs: dict[str, str], value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, docs[name], value=float(value or 0.0))


def _total(name: str, docs: dict[str, str], value: Any) -> CounterMetricFamily:
    c = _counter(name, docs[name], [])
    c.add_metric([], float(value or 0.0))
    return c


def _pool_families(pools: dict[str, Any], docs: dict[str, str]) -> Iterator:
    """Spend, work and workers per pool (and instance type, pricing)."""
    per_pool = [
        ("lepton_spend_usd_total", "spend_usd", True),
        ("lepton_spend_rate_usd_per_hour", "spend_rate_usd_per_hour", False),
        ("lepton_tasks_completed_total", "tasks", True),
        ("lepton_task_compute_seconds_total", "compute_seconds", True),
        ("lepton_computed_bytes_total", "bytes", True),
        ("lepton_paid_thread_seconds_total", "paid_thread_seconds", True),
        ("lepton_utilization_ratio", "utilization", False),
    ]
    for name, key, is_counter in per_pool:
        fam = (
            _counter(name, docs[name], ["pool"])
            if is_counter
            else GaugeMetricFamily(name, docs[name], labels=["pool"])
        )
        for pool, p in pools.items():
            fam.add_metric([pool], float(p[key]))
        yield fam
    workers = GaugeMetricFamily(
        "lepton_workers",
        docs["lepton_workers"],
        labels=["pool", "instance_type", "pricing"],
    )
    for pool, p in pools.items():
        for (itype, pricing), n in p["workers_by_type"].items():
            workers.add_metric([pool, itype, pricing], n)
    yield workers


def _run_families(snapshot: dict[str, Any], docs: dict[str, str]) -> Iterator:
    """The run's throughput, unit costs and budgets."""
    yield _gauge("lepton_unpriced_workers", docs, snapshot["unpriced_workers"])
    for key in ("tasks_per_second", "task_seconds_per_second", "bytes_per_second"):
        yield _gauge(f"lepton_throughput_{key}", docs, snapshot[key])
    yield _gauge("lepton_cost_per_task_usd", docs, snapshot["cost_per_task_usd"])
    yield _gauge(
        "lepton_cost_per_gigabyte_usd", docs, snapshot["cost_per_gigabyte_usd"]
    )
    for name, key in (
        ("lepton_budget_usd_per_hour", "budget_usd_per_hour"),
        ("lepton_budget_usd", "budget_usd"),
    ):
        if snapshot[key] is not None:
            yield _gauge(name, docs, snapshot[key])
    exceeded = GaugeMetricFamily(
        "lepton_budget_exceeded", docs["lepton_budget_exceeded"], labels=["kind"]
    )
    for kind, over in snapshot["budget_exceeded"].items():
        exceeded.add_metric([kind], 1.0 if over else 0.0)
    yield exceeded


def _scaler_families(
    scaler: dict[str, Any], decisions: int, docs: dict[str, str]
) -> Iterator:
    """The scaler's last decision report (``DecisionReport``)."""
    target = GaugeMetricFamily(
        "lepton_scaler_target_workers",
        docs["lepton_scaler_target_workers"],
        labels=["pool"],
    )
    for pool, n in scaler.get("targets", {}).items():
        target.add_metric([pool], n)
    yield target
    yield _gauge(
        "lepton_scaler_predicted_finish_seconds", docs, scaler.get("predicted_finish_s")
    )
    yield _gauge(
        "lepton_scaler_predicted_spend_usd", docs, scaler.get("predicted_cost_usd")
    )
    if scaler.get("time_left_s") is not None:
        yield _gauge(
            "lepton_scaler_time_to_deadline_seconds", docs, scaler["time_left_s"]
        )
    yield _gauge(
        "lepton_scaler_infeasible", docs, 1.0 if scaler.get("infeasible") else 0.0
    )
    yield _total("lepton_scaler_decisions_total", docs, decisions)
    yield _total("lepton_scaler_launches_total", docs, scaler.get("launches_total"))
    yield _total("lepton_scaler_churn_total", docs, scaler.get("churn_total"))
    if "forecast_hits" in scaler:  # a predictive policy decides
        yield _gauge("lepton_forecast_workers", docs, scaler.get("forecast_workers"))
        yield _gauge("lepton_prewarmed_workers", docs, scaler.get("prewarmed_workers"))
        yield _total("lepton_forecast_hits_total", docs, scaler.get("forecast_hits"))
        yield _total(
            "lepton_forecast_misses_total", docs, scaler.get("forecast_misses")
        )


class CostCollector:
    """A prometheus_client collector for one monitor.

    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> from lepton_dask.cost.monitor import CostMonitor
    >>> reg = CollectorRegistry()
    >>> reg.register(CostCollector(CostMonitor(ledger=False)))
    >>> b"lepton_spend_usd_total" in generate_latest(reg)
    True
    """

    def __init__(self, monitor: Any):
        self.monitor = monitor

    def describe(self):
        return []  # nothing to check at registration; collect() is cheap anyway

    def collect(self):
        yield from families(self.monitor.snapshot())


_monitors: list[weakref.ref] = []
_lock = threading.Lock()
_registered = False


class _CurrentMonitorCollector:
    """Reports on the newest monitor whose scheduler is still running."""

    def describe(self):
        return []

    def collect(self):
        monitor = current_monitor()
        if monitor is not None:
            yield from families(monitor.snapshot())


def current_monitor():
    """The most recently started CostMonitor whose scheduler still runs."""
    with _lock:
        alive = [m for m in (r() for r in _monitors) if m is not None]
        _monitors[:] = [weakref.ref(m) for m in alive]
    for m in reversed(alive):
        sched = m.scheduler
        if sched is not None and getattr(sched.status, "name", "") not in (
            "closing",
            "closed",
            "failed",
        ):
            return m
    return None


def register_monitor(monitor: Any) -> None:
    """Make ``monitor`` the one reported on the process's ``/metrics``."""
    global _registered
    with _lock:
        _monitors.append(weakref.ref(monitor))
        if not _registered:
            prometheus_client.REGISTRY.register(_CurrentMonitorCollector())
            _registered = True
