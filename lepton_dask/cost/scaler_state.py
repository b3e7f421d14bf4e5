"""The scaler state: what a scaling policy needs from a cluster.

:class:`ScalerState` is the contract between whatever observes a cluster (the
CostMonitor's ``scaler_state`` handler on a real scheduler, the simulator)
and :class:`lepton_dask.scaling.state.ViewBuilder`, which turns it into the
view a policy decides from.

Submission batches on a real scheduler: what each ``compute``/``submit``
call still has to do, for the ``batches`` entry of the scaler state.

A batch is one ``update_graph`` call: the tasks it brought that were not
already known or done. The tracker keeps, per batch, how many of its tasks of
each prefix and kind are unfinished (transitions to ``memory``, ``erred`` or
``forgotten`` finish them), the compute time already done, and the deadline
the client stated with :func:`lepton_dask.deadline` (the ``lepton_deadline``
annotation). Work left is priced at scrape time from the scheduler's own
per-prefix duration estimates, as Dask's ``Adaptive`` prices occupancy, so
the tracker costs O(1) per transition and O(prefixes) per batch per tick.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from lepton_dask._distributed import prefix_duration
from lepton_dask._protocol import BatchState, ScalerState, ScalerWorker

__all__ = [
    "DONE_STATES",
    "BatchState",
    "BatchTracker",
    "ScalerState",
    "ScalerWorker",
    "read_scaler_state",
]

DONE_STATES = frozenset({"memory", "erred", "forgotten"})


@dataclass
class _Batch:
    id: str
    arrival: float
    deadline_s: float | None
    left: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    done: dict[str, float] = field(default_factory=lambda: {"cpu": 0.0, "gpu": 0.0})
    tasks: int = 0


class BatchTracker:
    """Per-batch unfinished work, fed by a scheduler plugin's ``update_graph``
    and ``transition`` hooks.

    Parameters
    ----------
    max_batches : int
        Unfinished batches reported at most (the oldest; older ones beyond it
        are still tracked and counted as unattributed work by the policy).
    recorder : RunRecorder, optional
        Also given each batch's new tasks
        (:meth:`lepton_dask.cost.recording.RunRecorder.add_batch`).
    """

    def __init__(self, max_batches: int = 2000, recorder: Any = None):
        self.max_batches = max_batches
        self.recorder = recorder
        self.batches: OrderedDict[str, _Batch] = OrderedDict()
        self.key_batch: dict[Any, tuple[str, tuple[str, str]]] = {}
        self._seq = 0

    def update_graph(
        self,
        scheduler: Any,
        tasks: Any,
        annotations: dict[str, dict[Any, Any]],
        now: float,
        gpu: bool | None = None,
    ) -> str | None:
        """Record the tasks of one ``update_graph`` call as a batch; returns
        its id (None when it brought nothing new)."""
        deadlines = annotations.get("lepton_deadline") or {}
        self._seq += 1
        bid = f"b{self._seq}"
        batch = None
        added: list[Any] | None = [] if self.recorder is not None else None
        for key in tasks:
            if key in self.key_batch:
                continue
            ts = scheduler.tasks.get(key)
            if ts is None or ts.state in DONE_STATES:
                continue
            if batch is None:
                d = deadlines.get(key)
                if d is None and deadlines:
                    d = next(iter(deadlines.values()))
                batch = self.batches[bid] = _Batch(
                    bid, now, None if d is None else float(d)
                )
            restr = ts.resource_restrictions or {}
            kind = "gpu" if "GPU" in restr else "cpu"
            slot = (ts.prefix.name, kind)
            batch.left[slot] += 1
            batch.tasks += 1
            self.key_batch[key] = (bid, slot)
            if added is not None:
                added.append(ts)
        if batch is not None and added:
            self.recorder.add_batch(added, now, batch.deadline_s, annotations)
        return None if batch is None else bid

    def finished(self, key: Any, compute_seconds: float = 0.0) -> None:
        """A task reached a final state."""
        entry = self.key_batch.pop(key, None)
        if entry is None:
            return
        bid, slot = entry
        batch = self.batches.get(bid)
        if batch is None:
            return
        batch.left[slot] -= 1
        batch.tasks -= 1
        batch.done[slot[1]] += compute_seconds
        if batch.left[slot] <= 0:
            del batch.left[slot]
        if batch.tasks <= 0:
            del self.batches[bid]

    def state(self, scheduler: Any) -> list[BatchState]:
        """The unfinished batches, oldest first (:class:`BatchState` dicts)."""
        from lepton_dask._distributed import prefix_knowledge

        out = []
        for batch in list(self.batches.values())[: self.max_batches]:
            work = {"cpu": 0.0, "gpu": 0.0}
            unmeasured = {"cpu": 0.0, "gpu": 0.0}
            floor = {"cpu": 0.0, "gpu": 0.0}
            prior = {"cpu": 0.0, "gpu": 0.0}
            longest, chain = 0.0, 0.0
            for (prefix, kind), n in batch.left.items():
                dur, measured, ran, on_prior = prefix_knowledge(scheduler, prefix)
                work[kind] += n * dur
                if not measured:
                    unmeasured[kind] += n * dur
                    floor[kind] += n * ran
                elif on_prior:
                    prior[kind] += n * dur
                longest = max(longest, dur)
                chain += dur  # prefixes of one batch are mostly stages of a chain
            out.append(
                {
                    "id": batch.id,
                    "arrival": batch.arrival,
                    "work": work,
                    "done": dict(batch.done),
                    "tasks": batch.tasks,
                    "longest": longest,
                    "critical": chain,
                    "deadline_s": batch.deadline_s,
                    "unmeasured": unmeasured,
                    "unmeasured_floor": floor,
                    "prior": prior,
                }
            )
        return out


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
            pending["gpu" if tg.name in monitor._gpu_groups else "cpu"] += n * dur
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
        "batches": monitor.batches.state(s),
    }
