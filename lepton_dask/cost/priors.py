"""Duration priors: how long each kind of task took in a workload's recorded
runs, given to the scheduler as its first guess.

Before a task prefix has finished once, Dask's scheduler assumes
``distributed.scheduler.unknown-task-duration`` for it, and so does every
scaling policy that reads the scheduler. For a known workload
(``lepton.workload``) the CostMonitor instead starts from the mean durations
its earlier runs measured (:func:`duration_priors` of the run recordings in
the ledger's store), installed as ``default-task-durations``
(:func:`install_recorded_priors`; ``lepton.cost.priors`` turns it off).
Durations the user configured win, and the monitor takes its priors back
when its scheduler closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dask.config

from lepton_dask._distributed import install_priors
from lepton_dask.cost.recording import recordings

__all__ = ["duration_priors", "install_recorded_priors"]

logger = logging.getLogger(__name__)


def duration_priors(docs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per task prefix over the recordings ``docs`` (their
    finished tasks, each run weighted by its task count): what the scheduler
    should assume for a prefix before it has seen one of its tasks finish.

    >>> duration_priors([{"groups": [
    ...     {"prefix": "load", "duration": {"count": 2, "sum": 4.0}},
    ...     {"prefix": "fit", "duration": {"count": 0, "sum": 0.0}}]},
    ...     {"groups": [{"prefix": "load", "duration": {"count": 2, "sum": 8.0}}]}])
    {'load': 3.0}
    """
    total: dict[str, list[float]] = {}
    for doc in docs:
        for g in doc.get("groups", ()):
            d = g.get("duration") or {}
            if d.get("count"):
                acc = total.setdefault(g["prefix"], [0.0, 0.0])
                acc[0] += float(d["sum"])
                acc[1] += float(d["count"])
    return {p: s / n for p, (s, n) in sorted(total.items()) if n > 0}


async def install_recorded_priors(scheduler: Any, spec: Any) -> dict[str, float]:
    """Install the duration priors of ``lepton.workload``'s runs recorded in
    the store ``spec`` on ``scheduler``; returns what was installed (nothing
    without a workload, with ``lepton.cost.priors`` off, or when the
    recordings cannot be read: then the scheduler starts from
    ``unknown-task-duration``)."""
    workload = dask.config.get("lepton.workload")
    if not workload:
        return {}
    if not dask.config.get("lepton.cost.priors"):
        return {}
    try:
        docs = await asyncio.to_thread(recordings, spec, workload)
    except (OSError, ValueError, RuntimeError) as e:
        logger.warning(
            "duration priors of workload %r not loaded (%s): the scheduler "
            "starts from unknown-task-duration",
            workload,
            e,
            exc_info=True,
        )
        return {}
    priors = install_priors(scheduler, duration_priors(docs))
    if priors:
        logger.info(
            "duration priors of workload %r from %d recorded runs: %s",
            workload,
            len(docs),
            ", ".join(f"{k} {v:.3g} s" for k, v in priors.items()),
        )
    return priors
