"""Budgets: read from arguments or config, checked against snapshots."""

from __future__ import annotations

import logging

import dask.config
import pytest

from lepton_dask.cost.budgets import Budget


def snap(rate: float, spend: float) -> dict[str, float]:
    return {"spend_rate_usd_per_hour": rate, "spend_usd": spend}


def test_a_crossing_warns_once_until_spend_comes_back_under(caplog):
    caplog.set_level(logging.WARNING, logger="lepton_dask.cost.budgets")
    b = Budget(usd_per_hour=1.0, usd=10.0)
    assert b.check(snap(0.5, 1.0), now=0.0) == []
    events = b.check(snap(2.0, 11.0), now=1.0)
    assert [(t, e["kind"]) for t, e in events] == [(1.0, "rate"), (1.0, "total")]
    assert b.check(snap(2.0, 12.0), now=2.0) == []  # still over: no new event
    assert b.exceeded == {"rate": True, "total": True}
    assert b.check(snap(0.5, 12.0), now=3.0) == []
    assert b.exceeded == {"rate": False, "total": True}
    assert [e["kind"] for _, e in b.check(snap(3.0, 12.0), now=4.0)] == ["rate"]
    assert caplog.text.count("cost budget exceeded: rate") == 2
    assert caplog.text.count("cost budget exceeded: total") == 1


def test_arguments_win_over_config_and_bad_budgets_are_refused():
    with dask.config.set(
        {"lepton.cost.budget-usd-per-hour": 3, "lepton.cost.budget-usd": None}
    ):
        assert Budget.from_config().usd_per_hour == 3.0
        assert Budget.from_config(usd_per_hour=1).usd_per_hour == 1.0
        assert Budget.from_config().usd is None
    for bad in (0, -1.0, True, float("nan"), "5"):
        with pytest.raises(ValueError, match=r"lepton\.cost\.budget-usd must be"):
            Budget(usd=bad)
    assert Budget().check(snap(1e9, 1e9), now=0.0) == []  # no budget, no alarm
