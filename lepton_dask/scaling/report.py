"""The decision report: what a scaling loop tells the CostMonitor after each
decision, built in one place for every loop.

Each loop that drives a policy (:class:`~lepton_dask.scaling.adaptive.CostAwareAdaptive`,
the scheduler's :class:`~lepton_dask.scaling.serve.PolicyServer`, the
Kubernetes scaler) sends the monitor a
:class:`~lepton_dask._protocol.DecisionReport`: the decision (targets, reason,
predictions, the policy's detail), what was done with it (changed, launched,
retired) and the loop's launch and churn counts, which become the decision
log and the ``lepton_scaler_*`` metrics (``lepton_scaler_churn_total``
among them). :func:`decision_report` builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lepton_dask import _protocol as protocol

if TYPE_CHECKING:
    from lepton_dask.scaling.apply import Actions, ChurnCounter
    from lepton_dask.scaling.state import Decision

__all__ = ["decision_report"]


def decision_report(
    decision: Decision,
    now: float,
    churn: ChurnCounter,
    *,
    plan: Actions | None = None,
    launched: Sequence[str] | None = None,
    retired: Sequence[str] | None = None,
    changed: bool | None = None,
    **extra: Any,
) -> protocol.DecisionReport:
    """The report of ``decision``, taken at ``now``, for the CostMonitor.

    Parameters
    ----------
    decision : Decision
        What the policy decided (its log entry: targets, reason, predictions
        and detail).
    now : float
        When it was decided (the report's ``time``).
    churn : ChurnCounter
        The loop's launches and churn so far (the loop records each plan in
        it before reporting).
    plan : Actions, optional
        The apply step's plan, for a loop that hands the launches to another
        system (dask-gateway, the operator, the Kubernetes API): then the
        report names the plan's retirements and no launches, and it changed
        something when the plan does.
    launched, retired : sequence of str, optional
        The names of the workers the loop launched and retired; they override
        what ``plan`` says.
    changed : bool, optional
        Whether anything was done; by default, whether anything was launched
        or retired when those are given, else ``plan.changed``.
    **extra
        More entries (``served="adaptive_target"``).

    Returns
    -------
    DecisionReport
        The decision's log entry with ``changed``, ``launched``, ``retired``,
        ``launches_total``, ``churn_total``, ``time`` and ``extra``.

    Examples
    --------
    >>> from lepton_dask.scaling.apply import ChurnCounter
    >>> from lepton_dask.scaling.state import Decision
    >>> churn = ChurnCounter()
    >>> churn.record(10.0, "cpu", launched=2, retired=0, startup_s=60)
    >>> r = decision_report(Decision({"cpu": 2}, "backlog"), 10.0, churn,
    ...                     launched=["w-1", "w-2"], retired=[])
    >>> r["changed"], r["launches_total"], r["churn_total"], r["time"]
    (True, 2, 0, 10.0)
    """
    if launched is None and retired is None and changed is None and plan is not None:
        changed = plan.changed
    if retired is None:
        retired = plan.retire if plan is not None else []
    launched = [] if launched is None else launched
    if changed is None:
        changed = bool(launched or retired)
    report: dict[str, Any] = decision.as_log(now)[1]
    report.update(
        changed=changed,
        launched=list(launched),
        retired=list(retired),
        launches_total=churn.launches,
        churn_total=churn.churn,
        time=now,
        **extra,
    )
    return report  # type: ignore[return-value]
