"""The arrival forecast: a planted period, an exact repeat, the idle-gap
histogram, and a clock that goes back (the forecast and the policy on it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lepton_dask.cost.recording import history_from_recordings
from lepton_dask.scaling import PredictivePolicy, SLOPolicy
from lepton_dask.scaling.forecast import ArrivalForecast, ClockJumpWarning
from lepton_dask.scaling.state import BatchView, ClusterView, PoolSpec

POOL = PoolSpec("cpu", threads=2, startup_s=60, max_workers=50)


def test_forecast_finds_a_planted_period_and_says_when_history_is_short():
    rng = np.random.default_rng(1)
    cycle = [40.0, 300.0, 120.0, 900.0, 60.0]  # a period of five batches
    f, t = ArrivalForecast(), 0.0
    for k in range(5 * len(cycle)):
        f.observe(t, 100.0 + 10 * (k % len(cycle)))
        t += cycle[k % len(cycle)] * rng.uniform(0.95, 1.05)
    lag, err = f.period()
    assert lag == 5 and err < 0.1
    nxt = f.next()
    gap = cycle[(5 * len(cycle) - 1) % len(cycle)]  # the gap that comes next
    assert nxt.earliest - f.arrivals[-1] <= gap <= nxt.latest - f.arrivals[-1]
    assert nxt.work == pytest.approx(100.0) and nxt.cycles == 4  # batch k % 5 == 0
    assert f.status().startswith("period of 5 batches")

    # one recorded run of a workload: not enough history, and it says so
    doc = {
        "started": 1.7e9,
        "groups": [{"duration": {"count": 10, "sum": 20.0}, "gpu": False}],
        "batches": [
            {"arrival": a, "groups": [0], "tasks": [10]} for a in (0, 40, 340, 460)
        ],
    }
    hist = history_from_recordings([doc])
    assert hist[1] == (1.7e9 + 40, 20.0)
    policy = PredictivePolicy(SLOPolicy(deadline=90), history=hist, runs=1)
    assert policy.forecast.next() is None
    assert policy.forecast.status().startswith(
        "not enough history: 4 batches from 1 run(s)"
    )
    view = ClusterView(now=1.7e9 + 500, pools={"cpu": POOL}, workers=[], backlog={})
    assert "not enough history" in policy.decide(view).detail["forecast"]


def test_an_exact_repeat_is_known_before_its_second_cycle_ends():
    """Eight gaps of the second cycle that match the first closely give the
    period (a load that repeats exactly); gaps at random never do."""
    rng = np.random.default_rng(2)
    cycle = list(rng.uniform(20.0, 600.0, 13))
    f, t = ArrivalForecast(), 0.0
    for k in range(13 + 8):
        f.observe(t, 100.0)
        t += cycle[k % 13] * rng.uniform(0.99, 1.01)
    f.observe(t, 100.0)  # 21 gaps: a cycle and 8 of the next
    lag, err = f.period()
    assert lag == 13 and err < 0.05
    nxt = f.next()
    assert nxt.earliest - f.arrivals[-1] <= cycle[8] <= nxt.latest - f.arrivals[-1]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        g, t = ArrivalForecast(), 0.0
        for _ in range(60):
            g.observe(t, 100.0)
            t += 5.0 + rng.exponential(600.0)
        assert g.period() is None, seed


def test_histogram_windows_when_gaps_have_no_order():
    rng = np.random.default_rng(2)
    f, t = ArrivalForecast(), 0.0
    for _ in range(60):
        f.observe(t, 50.0)
        t += rng.uniform(100.0, 1000.0)
    assert f.period() is None and f.status().startswith("no recurring pattern")
    nxt = f.next()
    p5, _, p99 = f.histogram()
    assert nxt.source == "histogram" and 100 <= p5 < p99 <= 1000
    assert nxt.earliest == f.arrivals[-1] + p5 and nxt.latest == f.arrivals[-1] + p99


def test_clock_jumps_warn_and_rebase():
    f = ArrivalForecast()
    for t in (0, 100, 200, 300):
        f.observe(float(t), 10.0)
    with pytest.warns(ClockJumpWarning, match="clock jump: a batch arrived at 50"):
        f.observe(50.0, 10.0)
    assert all(b > a for a, b in zip(f.arrivals, f.arrivals[1:], strict=False))
    assert f.arrivals[-1] - f.arrivals[-2] == pytest.approx(100.0)

    policy = PredictivePolicy(SLOPolicy(deadline=90))

    def view(now):
        batch = BatchView(str(now), now, {"cpu": 0.0}, {"cpu": 10.0}, tasks=1)
        return ClusterView(
            now=now, pools={"cpu": POOL}, workers=[], backlog={}, batches=[batch]
        )

    policy.decide(view(1000.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.decide(view(1001.0))  # forward: no warning
    with pytest.warns(ClockJumpWarning) as caught:
        policy.decide(view(500.0))
    said = " | ".join(str(w.message) for w in caught)
    assert "now is 501.0 s before the last decision's" in said
    assert "a batch arrived at 500.000, 501.0 s before the last arrival" in said
