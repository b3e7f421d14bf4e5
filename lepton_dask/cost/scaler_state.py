"""Reading the scheduler for the scalers: the CostMonitor's answer when a
scaler asks what the cluster is doing (``SCALER_STATE``).

:func:`read_scaler_state` builds the :class:`~lepton_dask._protocol.ScalerState`
message from the scheduler (work queued, waiting and done, the workers) and
the monitor's billing (each worker's pool and billing start, the spend); its
``batches`` come from the :class:`~lepton_dask.cost.observer.WorkloadObserver`.
The scaling layer turns the message into the view a policy decides from
(:class:`lepton_dask.scaling.state.ViewBuilder`); the simulator produces the
same message. It lives here, below the scaling layer, because the monitor
serves it on every scheduler it runs on, including those where no scaling
code runs (a Kubernetes scaler asks over RPC).
"""

from __future__ import annotations

from typing import Any

from lepton_dask._distributed import prefix_duration
from lepton_dask._protocol import ScalerState

__all__ = ["read_scaler_state"]


def read_scaler_state(monitor: Any) -> ScalerState:
    """What a scaling policy needs from ``monitor``'s scheduler, per kind of work:
    outstanding work (running + queued, from per-prefix durations as Dask's
    Adaptive measures them), work waiting for dependencies and the longest
    such task, task counts, work completed, and the workers with their
    pools, billing starts and whether they are busy, and the threads they have."""
    s = monitor.scheduler
    backlog = {"cpu": 0.0, "gpu": 0.0}
    tasks = {"cpu": 0.0, "gpu": 0.0}
    threads = 0
    workers = []
    gpu_pools = set()
    for addr, ws in s.workers.items():
        kind = "gpu" if "GPU" in (ws.resources or {}) else "cpu"
        backlog[kind] += ws.occupancy
        tasks[kind] += len(ws.processing)
        threads += ws.nthreads
        life = monitor.lives.get(addr)
        if life is not None and kind == "gpu":
            gpu_pools.add(life.pool)
        unique = any(len(ts.who_has) == 1 for ts in ws.has_what)
        workers.append(
            {
                "name": str(ws.name),
                "pool": life.pool if life else "default",
                "billed_since": life.start if life else monitor.now(),
                "busy": bool(ws.processing),
                "holds_data": unique,
            }
        )
    sample = list(s.queued.peekn(200)) + list(s.unrunnable)[:200]
    n_ready = len(s.queued) + len(s.unrunnable)
    if sample:
        scale = max(1.0, n_ready / len(sample))
        for ts in sample:
            kind = (
                "gpu"
                if ts.resource_restrictions and "GPU" in ts.resource_restrictions
                else "cpu"
            )
            backlog[kind] += prefix_duration(s, ts.prefix) * scale
            tasks[kind] += scale
    pending = {"cpu": 0.0, "gpu": 0.0}
    tail = 0.0
    for tg in s.task_groups.values():
        n = tg.states.get("waiting", 0)
        if n:
            dur = prefix_duration(s, tg.prefix)
            pending["gpu" if tg.name in monitor.gpu_groups else "cpu"] += n * dur
            tail = max(tail, dur)
    completed = {"cpu": 0.0, "gpu": 0.0}
    for name, t in monitor.pools.items():
        completed["gpu" if name in gpu_pools else "cpu"] += t.compute_seconds
    return {
        "now": monitor.now(),
        "backlog": backlog,
        "tasks": tasks,
        "pending": pending,
        "pending_tail": tail,
        "completed": completed,
        "workers": workers,
        "threads": threads,
        "minimum_billing": monitor.minimum,
        "spend_usd": monitor.snapshot()["spend_usd"],
        "batches": monitor.observer.tracker.state(s),
    }
