"""The workload observer: submission batches on a real scheduler.

A scheduler plugin of its own, apart from the CostMonitor's billing: what each
``compute``/``submit`` call still has to do, for the ``batches`` entry of the
scaler state (:func:`~lepton_dask.cost.scaler_state.read_scaler_state`).

A batch is one ``update_graph`` call: the tasks it brought that were not
already known or done. The tracker keeps, per batch, how many of its tasks of
each prefix and kind are unfinished (transitions to ``memory``, ``erred`` or
``forgotten`` finish them), the compute time already done, and the deadline
the client stated with :func:`lepton_dask.deadline` (the ``lepton_deadline``
annotation). Work left is priced at scrape time per prefix: with the mean
compute time of the prefix's finished tasks (weighted to its latest few
dozen, and one standard error high while they are few:
:class:`DurationRecord`), which the tracker
keeps from the same transitions; until one has finished, with the
scheduler's own estimate (``default-task-durations``, else
``unknown-task-duration``, else twice the longest running time), as Dask's
``Adaptive`` prices occupancy. The scheduler's finished-task average is a
weight-1/2 moving average that it also discards whenever one task runs past
twice it, so it swings by 2x on ordinary task-time noise; a policy that
sized on it bought for the swings. The tracker costs O(1) per transition
and O(prefixes) per batch per tick.

The CostMonitor creates one and adds it to its scheduler
(:meth:`WorkloadObserver.attach`); the recorder hears each batch from it.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from lepton_dask._distributed import prefix_blocked
from lepton_dask._protocol import BatchState

__all__ = [
    "DONE_STATES",
    "RECENT_TASKS",
    "BatchTracker",
    "DurationRecord",
    "WorkloadObserver",
]

DONE_STATES = frozenset({"memory", "erred", "forgotten"})
MAX_PREFIXES = 10_000  # per-prefix duration records kept (the oldest go)

#: a prefix's duration estimate follows about this many of its latest tasks
RECENT_TASKS = 32


#: the spread assumed of a prefix's task times until three have finished
#: (the coefficient of variation of an exponential distribution)
PRIOR_CV = 1.0


class DurationRecord:
    """The duration a prefix's unfinished tasks are priced with, kept from its
    finished ones: the plain mean of the first :data:`RECENT_TASKS`, then an
    exponentially weighted mean with weight ``1 / RECENT_TASKS``, so that it
    follows a change of the tasks without the scheduler's weight-1/2 swings;
    and the spread about it, weighted alike. The workload observer and the
    simulator both keep one per prefix.

    :attr:`estimate` is the mean's upper bound, one standard error above it
    (``mean * (1 + cv / sqrt(count))``, with :data:`PRIOR_CV` until three
    tasks have finished): a mean of a handful of tasks is a guess too, and
    a policy that sized a stage on its first task bought too little when
    that task was short.

    >>> r = DurationRecord()
    >>> r.add(1.0); r.count, r.mean, r.estimate   # one task: up to twice it
    (1, 1.0, 2.0)
    >>> for d in (3.0, 2.0, 2.0): r.add(d)
    >>> r.mean, round(r.estimate, 3)
    (2.0, 2.408)
    """

    __slots__ = ("count", "mean", "var")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.var = 0.0

    def add(self, duration: float) -> None:
        """One more finished task that took ``duration`` seconds."""
        self.count += 1
        a = 1.0 / min(self.count, RECENT_TASKS)
        d = duration - self.mean
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)

    @property
    def estimate(self) -> float:
        if self.count == 0:
            return 0.0
        n = self.count
        cv = (
            PRIOR_CV
            if n < 3 or self.mean <= 0
            else (self.var * n / (n - 1)) ** 0.5 / self.mean
        )
        return self.mean * (1.0 + cv / n**0.5)


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
        #: per prefix: its finished tasks' durations (newest last)
        self.durations: OrderedDict[str, DurationRecord] = OrderedDict()
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
        if compute_seconds > 0:
            rec = self.durations.get(slot[0])
            if rec is None:
                rec = self.durations[slot[0]] = DurationRecord()
                if len(self.durations) > MAX_PREFIXES:
                    self.durations.popitem(last=False)
            rec.add(compute_seconds)
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

    def knowledge(
        self, scheduler: Any, prefix: str
    ) -> tuple[float, bool, float, bool, float, float]:
        """``(estimate, measured, ran, prior, scheduler's estimate, mean)`` of
        one task of ``prefix`` (see
        :func:`lepton_dask._distributed.prefix_knowledge`): once one has
        finished, the upper bound of its finished tasks' mean, and the mean."""
        from lepton_dask._distributed import prefix_knowledge

        dur, measured, ran, on_prior = prefix_knowledge(scheduler, prefix)
        rec = self.durations.get(prefix)
        if rec is not None and rec.count:
            return rec.estimate, True, ran, False, dur, rec.mean
        return dur, measured, ran, on_prior, dur, dur

    def state(self, scheduler: Any) -> list[BatchState]:
        """The unfinished batches, oldest first (:class:`BatchState` dicts)."""
        out = []
        for batch in list(self.batches.values())[: self.max_batches]:
            work = {"cpu": 0.0, "gpu": 0.0}
            sched = {"cpu": 0.0, "gpu": 0.0}
            unmeasured = {"cpu": 0.0, "gpu": 0.0}
            floor = {"cpu": 0.0, "gpu": 0.0}
            prior = {"cpu": 0.0, "gpu": 0.0}
            blocked = {"cpu": 0.0, "gpu": 0.0}
            stderr = {"cpu": 0.0, "gpu": 0.0}
            stages = 0
            longest, chain = 0.0, 0.0
            for (prefix, kind), n in batch.left.items():
                dur, measured, ran, on_prior, theirs, mean = self.knowledge(
                    scheduler, prefix
                )
                work[kind] += n * dur
                stderr[kind] += n * (dur - mean)
                sched[kind] += n * theirs
                if not measured:
                    unmeasured[kind] += n * dur
                    floor[kind] += n * ran
                    if ran <= 0 and prefix_blocked(scheduler, prefix):
                        blocked[kind] += n * dur
                        stages += 1
                elif on_prior:
                    prior[kind] += n * dur
                longest = max(longest, dur)
                chain += dur  # prefixes of one batch are mostly stages of a chain
            out.append(
                {
                    "id": batch.id,
                    "arrival": batch.arrival,
                    "work": work,
                    "scheduler_work": sched,
                    "done": dict(batch.done),
                    "tasks": batch.tasks,
                    "longest": longest,
                    "critical": chain,
                    "deadline_s": batch.deadline_s,
                    "unmeasured": unmeasured,
                    "unmeasured_floor": floor,
                    "prior": prior,
                    "blocked": blocked,
                    "blocked_stages": stages,
                    "stderr": stderr,
                }
            )
        return out


class WorkloadObserver(SchedulerPlugin):
    """Observes the workload for the scaler: each batch and what is left of it.

    Parameters
    ----------
    recorder : RunRecorder, optional
        Told each batch's new tasks.
    clock : callable, optional
        The time a batch arrives (the CostMonitor's clock; default
        ``time.time``).
    """

    name = "lepton-workload-observer"

    def __init__(self, recorder: Any = None, clock: Callable[[], float] | None = None):
        self.tracker = BatchTracker(recorder=recorder)
        self.clock = clock or time.time

    def attach(self, scheduler: Any) -> None:
        """Add this observer to ``scheduler`` (once)."""
        if scheduler.plugins.get(self.name) is not self:
            scheduler.add_plugin(self, name=self.name)

    def update_graph(
        self,
        scheduler: Any,
        *,
        tasks: Any = (),
        annotations: dict | None = None,
        **kwargs: Any,
    ) -> None:
        """Each ``compute``/``submit`` call is a batch for the scaler."""
        self.tracker.update_graph(scheduler, tasks, annotations or {}, self.clock())

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any
    ) -> None:
        if finish in DONE_STATES:
            self.tracker.finished(
                key,
                sum(
                    ss["stop"] - ss["start"]
                    for ss in kwargs.get("startstops") or ()
                    if ss.get("action") == "compute"
                ),
            )
