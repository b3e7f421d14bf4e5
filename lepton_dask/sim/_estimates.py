"""What a real scheduler knows of task durations, for the simulator.

The simulator hands a policy only what ``CostMonitor.scaler_state`` can read
on a real scheduler, and a real scheduler does not know how long a task
will take. It estimates per key prefix (distributed 2026.8.0,
``TaskPrefix`` and ``Scheduler._get_prefix_duration``):

1. ``distributed.scheduler.default-task-durations[prefix]`` when configured
   (the prefix starts with that as its average);
2. else ``distributed.scheduler.unknown-task-duration`` until a task of the
   prefix is seen running;
3. while its first tasks run, twice the longest running time seen (workers
   report running tasks at each heartbeat, as the simulated workers do);
4. once a task finishes, the prefix's average: the first duration, then
   ``(new + old) / 2`` for each next one (an exponentially weighted average
   with weight 1/2, as ``TaskPrefix.add_duration`` keeps it);
5. a running task that exceeds twice the average discards it (back to 3).

Both settings are read from ``dask.config`` when the model is built, as the
scheduler reads them when it starts.

That rule is what Dask's ``Adaptive`` prices work with, and it is noisy: the
weight-1/2 average follows the last few tasks, and rule 5 throws it away
whenever one task runs long (a gamma-distributed prefix does so every few
dozen tasks), so the estimate jumps to twice the longest running time. The
SLO policy prices batches with the mean of the prefix's finished tasks
instead, weighted to the latest few dozen and one standard error high
while few have finished (:meth:`DurationEstimates.policy_estimate`,
:class:`~lepton_dask.cost.observer.DurationRecord`): the workload observer on the
scheduler keeps it from the same ``task-finished`` transitions, so it too is
only what the scheduler knows.
Until a task of the prefix finishes, both use Dask's rule.
"""

from __future__ import annotations

import dask.config
from dask.utils import parse_timedelta

from lepton_dask.cost.observer import DurationRecord

__all__ = ["DurationEstimates"]


class DurationEstimates:
    """Per-prefix duration estimates, as a real scheduler keeps them.

    >>> import dask
    >>> with dask.config.set({"distributed.scheduler.unknown-task-duration": "500ms"}):
    ...     k = DurationEstimates(["load"])
    >>> k.estimate(0), k.measured(0)
    (0.5, False)
    >>> k.executing(0, 3.0); k.estimate(0)   # running 3 s: twice that
    6.0
    >>> k.finished(0, 4.0); k.finished(0, 2.0); k.estimate(0), k.measured(0)
    (3.0, True)
    >>> k.finished(0, 6.0); k.estimate(0), round(k.policy_estimate(0), 3)  # EWMA vs bound
    (4.5, 5.155)
    """

    def __init__(self, names: list[str]):
        defaults = dask.config.get("distributed.scheduler.default-task-durations")
        self.unknown = float(
            parse_timedelta(
                dask.config.get("distributed.scheduler.unknown-task-duration")
            )
        )
        self.names = list(names)
        self.average = [
            float(parse_timedelta(defaults[n])) if n in defaults else -1.0
            for n in self.names
        ]
        self.max_exec = [-1.0] * len(self.names)
        self.finishes = [0] * len(self.names)
        self.record = [DurationRecord() for _ in self.names]

    def estimate(self, p: int) -> float:
        """``Scheduler._get_prefix_duration``."""
        avg = self.average[p]
        if avg >= 0:
            return avg
        if self.max_exec[p] > 0:
            return 2.0 * self.max_exec[p]
        return self.unknown

    def policy_estimate(self, p: int) -> float:
        """The workload observer's estimate: the mean of the prefix's
        finished tasks, one standard error high while they are few
        (:class:`~lepton_dask.cost.observer.DurationRecord`), else
        :meth:`estimate`."""
        rec = self.record[p]
        return rec.estimate if rec.count else self.estimate(p)

    def stderr(self, p: int) -> float:
        """How far :meth:`policy_estimate` is above the mean of the prefix's
        finished tasks (:attr:`DurationRecord.estimate`; 0 before one has)."""
        rec = self.record[p]
        return rec.estimate - rec.mean if rec.count else 0.0

    def policy_measured(self, p: int) -> bool:
        """Whether :meth:`policy_estimate` rests on a finished task or a
        configured default rather than a guess."""
        return self.finishes[p] > 0 or self.average[p] >= 0

    def measured(self, p: int) -> bool:
        """Whether the estimate rests on a finished task or a configured
        default (``duration_average >= 0``), not on a guess."""
        return self.average[p] >= 0

    def prior(self, p: int) -> bool:
        """Whether the estimate is still the configured default (no task of
        ``p`` has finished)."""
        return self.average[p] >= 0 and self.finishes[p] == 0

    def ran(self, p: int) -> float:
        """The longest time a task of ``p`` has been seen running (0: none)."""
        return max(0.0, self.max_exec[p])

    def executing(self, p: int, elapsed: float) -> None:
        """A task of ``p`` has run ``elapsed`` seconds (``add_exec_time``)."""
        if elapsed > self.max_exec[p]:
            self.max_exec[p] = elapsed
        if elapsed > 2.0 * self.average[p]:
            self.average[p] = -1.0

    def finished(self, p: int, duration: float) -> None:
        """A task of ``p`` took ``duration`` (``add_duration("compute")``)."""
        old = self.average[p]
        self.average[p] = duration if old < 0 else 0.5 * duration + 0.5 * old
        self.finishes[p] += 1
        self.record[p].add(duration)
