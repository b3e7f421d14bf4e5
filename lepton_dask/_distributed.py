"""The private parts of distributed that lepton-dask relies on, wrapped once.

Each wrapper names the distributed version it was read from. The test
``tests/test_distributed_private.py`` calls every one against a real
scheduler or cluster and fails with a message naming the wrapper when
distributed changes what it wraps.

Read from distributed 2026.8.0:

- ``Scheduler._get_prefix_duration(prefix)``: ``prefix.duration_average`` when
  it is >= 0 (a ``default-task-durations`` entry, then an exponentially
  weighted average of finished tasks with weight 1/2), else twice
  ``prefix.max_exec_time`` when a task of the prefix has been seen running
  (heartbeats), else ``Scheduler.UNKNOWN_TASK_DURATION``;
  ``TaskPrefix.add_exec_time`` resets the average to -1 when a running task
  exceeds twice it.
- ``SpecCluster._correct_state()``: starts the workers of ``worker_spec`` that
  are not running (what ``scale()`` calls).
- ``TaskPrefix.state_counts``: the prefix's tasks per scheduler state
  (``"waiting"``: waiting on dependencies; ``"queued"``, ``"no-worker"``,
  ``"processing"``: ready or running).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "correct_state",
    "install_priors",
    "prefix_blocked",
    "prefix_duration",
    "prefix_knowledge",
    "remove_priors",
    "unknown_duration",
]


def unknown_duration(scheduler: Any = None) -> float:
    """The duration the scheduler assumes for a task of an unseen prefix:
    ``Scheduler.UNKNOWN_TASK_DURATION`` (from
    ``distributed.scheduler.unknown-task-duration``), or the configured value
    when there is no scheduler at hand.

    >>> import dask
    >>> with dask.config.set({"distributed.scheduler.unknown-task-duration": "2s"}):
    ...     unknown_duration()
    2.0
    """
    if scheduler is not None:
        return float(scheduler.UNKNOWN_TASK_DURATION)
    import dask.config
    from dask.utils import parse_timedelta

    return float(
        parse_timedelta(dask.config.get("distributed.scheduler.unknown-task-duration"))
    )


def prefix_duration(scheduler: Any, prefix: Any) -> float:
    """The scheduler's estimate of one task of ``prefix`` (a ``TaskPrefix``)."""
    return float(scheduler._get_prefix_duration(prefix))


def prefix_knowledge(scheduler: Any, name: str) -> tuple[float, bool, float, bool]:
    """``(estimate, measured, ran, prior)`` for the task prefix ``name``: the
    scheduler's duration estimate; whether it rests on a finished task or a
    ``default-task-durations`` entry (``duration_average >= 0``) rather than
    a guess; the longest time a task of it has been seen running (0 when
    none has); and whether the estimate is still that configured prior (no
    task of the prefix has finished)."""
    tp = scheduler.task_prefixes.get(name)
    if tp is None:
        return unknown_duration(scheduler), False, 0.0, False
    measured = tp.duration_average >= 0
    return (
        prefix_duration(scheduler, tp),
        measured,
        max(0.0, float(tp.max_exec_time)),
        measured and not tp.all_durations.get("compute", 0.0),
    )


_STARTED = ("queued", "no-worker", "processing", "memory", "erred")


def prefix_blocked(scheduler: Any, name: str) -> bool:
    """Whether no task of the prefix ``name`` has started or can start yet:
    some wait on other tasks, and none is ready, running or done (a stage of
    the graph after another, such as a reduce after its maps)."""
    tp = scheduler.task_prefixes.get(name)
    if tp is None:
        return False
    counts = tp.state_counts
    return counts.get("waiting", 0) > 0 and not any(counts.get(s, 0) for s in _STARTED)


def correct_state(cluster: Any) -> Any:
    """Start the workers of ``cluster.worker_spec`` that are not running yet,
    as ``SpecCluster.scale`` does (``SpecCluster._correct_state``)."""
    return cluster._correct_state()


PRIORS_KEY = "distributed.scheduler.default-task-durations"


def install_priors(scheduler: Any, priors: dict[str, float]) -> dict[str, float]:
    """Make ``priors`` (seconds per task prefix) the scheduler's starting
    estimates: entries of ``distributed.scheduler.default-task-durations``
    (set in this process's config, which ``TaskPrefix`` reads when it first
    sees a prefix), and the average of a prefix already known but not yet
    measured. Entries the user configured win. Returns what was installed."""
    import dask.config

    current = dict(dask.config.get(PRIORS_KEY, {}) or {})
    new = {k: float(v) for k, v in priors.items() if k not in current and v > 0}
    if new:
        dask.config.set({PRIORS_KEY: {**current, **new}})
    for name, value in new.items():
        tp = scheduler.task_prefixes.get(name)
        if tp is not None and tp.duration_average < 0 and tp.max_exec_time < 0:
            tp.duration_average = value
    return new


def remove_priors(installed: dict[str, float]) -> None:
    """Take back what :func:`install_priors` installed (entries still as it
    left them)."""
    import dask.config

    if not installed:
        return
    current = dict(dask.config.get(PRIORS_KEY, {}) or {})
    kept = {k: v for k, v in current.items() if installed.get(k) != v}
    dask.config.set({PRIORS_KEY: kept})
