"""The one decision report every scaling loop sends the CostMonitor."""

from __future__ import annotations

from lepton_dask.scaling.apply import Actions, ChurnCounter, PoolActions
from lepton_dask.scaling.report import decision_report
from lepton_dask.scaling.state import Decision

DECISION = Decision(
    {"cpu": 3},
    "backlog",
    predicted_finish_s=40.0,
    predicted_cost_usd=0.02,
    detail={"batches": 1},
)


def _churned() -> ChurnCounter:
    churn = ChurnCounter()
    churn.record(0.0, "cpu", launched=2, retired=1, startup_s=60)
    churn.record(30.0, "cpu", launched=1, retired=0, startup_s=60)
    return churn


def test_a_loop_that_launches_reports_what_it_did_and_its_churn():
    report = decision_report(
        DECISION, 30.0, _churned(), launched=["w-3"], retired=("w-1",)
    )
    assert report == {
        "status": "decision",
        "targets": {"cpu": 3},
        "reason": "backlog",
        "predicted_finish_s": 40.0,
        "predicted_cost_usd": 0.02,
        "infeasible": False,
        "batches": 1,
        "changed": True,
        "launched": ["w-3"],
        "retired": ["w-1"],
        "launches_total": 3,
        "churn_total": 1,
        "time": 30.0,
    }
    quiet = decision_report(DECISION, 31.0, ChurnCounter(), launched=[], retired=[])
    assert quiet["changed"] is False and quiet["churn_total"] == 0


def test_a_loop_that_hands_launches_on_reports_the_plan():
    plan = Actions({"cpu": PoolActions("cpu", have=2, target=3, retire=("w-0",))})
    report = decision_report(
        DECISION, 5.0, _churned(), plan=plan, served="adaptive_target"
    )
    assert report["changed"] is True and report["launched"] == []
    assert report["retired"] == ["w-0"] and report["served"] == "adaptive_target"
    assert (report["launches_total"], report["churn_total"]) == (3, 1)
    same = Actions({"cpu": PoolActions("cpu", have=3, target=3)})
    assert decision_report(DECISION, 5.0, ChurnCounter(), plan=same)["changed"] is False


def test_changed_can_be_stated():
    """A loop that patches replica counts says itself whether it changed them."""
    report = decision_report(
        DECISION, 7.0, _churned(), launched=[], retired=["w-2"], changed=False
    )
    assert report["changed"] is False and report["retired"] == ["w-2"]
