"""What crosses the seam between scaling and cost: names and types, once.

The CostMonitor (``lepton_dask.cost``) installs scheduler handlers that the
scalers (``lepton_dask.scaling``, ``lepton_dask.deploy``) call over the
scheduler's RPC. Their names are the constants below and the messages are the
``TypedDict`` s below; both sides import them from here, so a rename is one
edit and a mismatch fails at import time, not at run time.

``SCALER_STATE``
    The scaler asks; the monitor answers a :class:`ScalerState`.
``SCALER_DECISION``
    The scaler reports what it decided and did, a :class:`DecisionReport`.
``COST_LAUNCH``
    A worker was asked for: a :class:`LaunchReport` (billing starts now).
``COST_SNAPSHOT``
    A client asks for the monitor's cost snapshot.

>>> SCALER_STATE
'lepton_scaler_state'
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "COST_LAUNCH",
    "COST_SNAPSHOT",
    "HANDLERS",
    "SCALER_DECISION",
    "SCALER_STATE",
    "BatchState",
    "DecisionReport",
    "LaunchReport",
    "ScalerState",
    "ScalerWorker",
]

SCALER_STATE = "lepton_scaler_state"
SCALER_DECISION = "lepton_scaler_decision"
COST_LAUNCH = "lepton_cost_launch"
COST_SNAPSHOT = "lepton_cost_snapshot"
#: every handler the CostMonitor installs on the scheduler
HANDLERS = (SCALER_STATE, SCALER_DECISION, COST_LAUNCH, COST_SNAPSHOT)


class ScalerWorker(TypedDict, total=False):
    """One arrived worker in :class:`ScalerState` (not distributed's
    ``WorkerState``: what a scaler needs of it)."""

    name: str
    pool: str
    billed_since: float  # when billing began (the launch request)
    busy: bool  # running a task now
    holds_data: bool  # holds the only copy of some result


class BatchState(TypedDict, total=False):
    """One submission batch (a ``compute``/``submit`` call, a burst) with
    unfinished work, in :class:`ScalerState`. Work is priced per prefix with
    the mean duration of its finished tasks (the workload observer keeps
    them), else with the scheduler's own estimate."""

    id: str
    arrival: float  # when its first task was submitted (state clock)
    work: dict[str, float]  # unfinished work per kind, reference thread-seconds
    #: the same work priced with the scheduler's estimates, as ``backlog``
    #: and ``pending`` are (what the batch covers of them), per kind
    scheduler_work: dict[str, float]
    done: dict[str, float]  # work already finished per kind
    tasks: int  # unfinished tasks
    longest: float  # longest unfinished task, seconds
    critical: float  # longest chain of unfinished tasks, seconds (>= longest)
    deadline_s: float | None  # seconds after arrival, as the user stated it
    #: part of ``work`` priced on a guess: tasks of prefixes with no finished
    #: task and no prior (the scheduler's ``unknown-task-duration``, or twice
    #: the longest running time), per kind
    unmeasured: dict[str, float]
    #: what is known for certain of that part: its tasks times the longest
    #: time one of them has already run (0 when none has started), per kind
    unmeasured_floor: dict[str, float]
    #: part of ``work`` priced on a prior (``default-task-durations``) that no
    #: finished task of the prefix has replaced yet, per kind
    prior: dict[str, float]
    #: part of ``unmeasured`` in stages that have not started: prefixes none
    #: of whose tasks has run or can run yet (all wait on other tasks), per
    #: kind; ``blocked_stages`` counts those prefixes
    blocked: dict[str, float]
    blocked_stages: int
    #: part of ``work`` that is the allowance for a mean of few finished
    #: tasks (one standard error of it: ``DurationRecord.estimate`` less
    #: its mean), per kind; ``work - stderr`` is the work at the means
    stderr: dict[str, float]


class ScalerState(TypedDict, total=False):
    """What a scaling policy needs from the cluster, per kind of work
    (``"cpu"``, ``"gpu"``): produced by ``CostMonitor.scaler_state`` and by the
    simulator, consumed by ``ViewBuilder.build``."""

    now: float
    backlog: dict[str, float]  # running + queued work, thread-seconds
    tasks: dict[str, float]  # running + queued tasks
    pending: dict[str, float]  # work waiting for dependencies
    pending_tail: float  # longest task among those
    completed: dict[str, float]  # work finished so far
    workers: list[ScalerWorker]
    threads: float  # threads of the arrived workers
    minimum_billing: float
    spend_usd: float
    batches: list[BatchState]  # unfinished batches, oldest first


class LaunchReport(TypedDict, total=False):
    """A worker was asked for (``COST_LAUNCH``)."""

    name: str
    instance_type: str | None
    pricing: str | None
    pool: str | None


class DecisionReport(TypedDict, total=False):
    """A scaler's decision and what was done with it (``SCALER_DECISION``),
    the entries of its bounded log and of the ``lepton_scaler_*`` metrics."""

    status: str  # "decision"
    time: float
    targets: dict[str, int]
    reason: str
    predicted_finish_s: float
    predicted_cost_usd: float
    infeasible: bool
    changed: bool
    launched: list[str]
    retired: list[str]
    #: workers launched and relaunches within one startup of a retirement in
    #: the same pool, since the scaler started (``lepton_scaler_churn_total``)
    launches_total: int
    churn_total: int
    batches: int
    time_left_s: float
    keep_alive_s: dict[str, float]
    #: what the work was sized on: "measured", "prior", "probe" or "guess"
    sized_on: str
    # a predictive policy's forecast
    forecast_workers: int
    prewarmed_workers: int
    forecast_hits: int
    forecast_misses: int
    forecast: Any
