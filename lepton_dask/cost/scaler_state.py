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
from typing import Any, TypedDict

DONE_STATES = frozenset({"memory", "erred", "forgotten"})


class WorkerState(TypedDict, total=False):
    """One arrived worker in :class:`ScalerState`."""

    name: str
    pool: str
    billed_since: float  # when billing began (the launch request)
    busy: bool  # running a task now
    holds_data: bool  # holds the only copy of some result


class BatchState(TypedDict, total=False):
    """One submission batch (a ``compute``/``submit`` call, a burst) with
    unfinished work, in :class:`ScalerState`."""

    id: str
    arrival: float  # when its first task was submitted (state clock)
    work: dict[str, float]  # unfinished work per kind, reference thread-seconds
    done: dict[str, float]  # work already finished per kind
    tasks: int  # unfinished tasks
    longest: float  # longest unfinished task, seconds
    critical: float  # longest chain of unfinished tasks, seconds (>= longest)
    deadline_s: float | None  # seconds after arrival, as the user stated it


class ScalerState(TypedDict, total=False):
    """What a scaling policy needs from the cluster, per kind of work
    (``"cpu"``, ``"gpu"``): produced by ``CostMonitor.scaler_state`` and by the
    simulator, consumed by :meth:`ViewBuilder.build`."""

    now: float
    backlog: dict[str, float]  # running + queued work, thread-seconds
    tasks: dict[str, float]  # running + queued tasks
    pending: dict[str, float]  # work waiting for dependencies
    pending_tail: float  # longest task among those
    completed: dict[str, float]  # work finished so far
    workers: list[WorkerState]
    threads: float  # threads of the arrived workers
    minimum_billing: float
    spend_usd: float
    batches: list[BatchState]  # unfinished batches, oldest first


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

    def state(self, scheduler: Any) -> list[dict[str, Any]]:
        """The unfinished batches, oldest first (:class:`BatchState` dicts)."""
        out = []
        for batch in list(self.batches.values())[: self.max_batches]:
            work = {"cpu": 0.0, "gpu": 0.0}
            longest, chain = 0.0, 0.0
            for (prefix, kind), n in batch.left.items():
                tp = scheduler.task_prefixes.get(prefix)
                dur = scheduler._get_prefix_duration(tp) if tp is not None else 0.5
                work[kind] += n * dur
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
                }
            )
        return out
