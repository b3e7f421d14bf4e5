"""Predictive scaling: the forecast, its modes and its failure cases, in the
real simulator (the same policy objects a scheduler runs)."""

from __future__ import annotations

import logging
import math
import re
import warnings

import dask
import numpy as np
import pytest

from lepton_dask.scaling import PredictivePolicy, SLOPolicy
from lepton_dask.scaling.forecast import (
    ArrivalForecast,
    ClockJumpWarning,
    history_from_recordings,
)
from lepton_dask.scaling.state import BatchView, ClusterView, PoolSpec
from lepton_dask.sim.simulator import Simulator
from lepton_dask.sim.trace import Trace, sawtooth_recurring

POOL = PoolSpec("cpu", threads=2, startup_s=60, max_workers=50)


def arrivals_trace(times, tasks=60, deadline=90.0, seed=0) -> Trace:
    """One batch of ``tasks`` ~1 s tasks at each of ``times``."""
    rng = np.random.default_rng(seed)
    submit, dur, burst = [], [], []
    for b, t in enumerate(times):
        submit += [t] * tasks
        dur += list(rng.gamma(4.0, 0.25, tasks))
        burst += [b] * tasks
    n = len(submit)
    return Trace(
        "planted",
        np.array(submit, float),
        np.array(dur),
        np.zeros(n, np.int8),
        np.array(burst),
        {b: deadline for b in range(len(times))},
    )


def simulate(trace, policy):
    return Simulator(trace, [POOL], policy, minimum_billing=60).run()


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


def test_forecast_only_changes_no_decision():
    trace = sawtooth_recurring(repeats=3)
    plain = simulate(trace, SLOPolicy(deadline=90))
    shadow = PredictivePolicy(SLOPolicy(deadline=90), forecast_only=True)
    logged = simulate(trace, shadow)
    assert [(t, d["targets"]) for t, d in plain.decisions] == [
        (t, d["targets"]) for t, d in logged.decisions
    ]
    assert logged.cost_usd == plain.cost_usd
    would = [
        d["forecast"] for _, d in logged.decisions if "would" in d.get("forecast", "")
    ]
    assert would and all(d["prewarmed_workers"] == 0 for _, d in logged.decisions)
    assert shadow.hits > 0


def test_prewarm_reasons_and_a_cheaper_run_on_recurring_load():
    trace = sawtooth_recurring(repeats=4)
    # a recurring workload has its recorded durations as the scheduler's
    # priors (default-task-durations); the simulator reads them from config
    priors = {"cpu-map": float(trace.duration.mean())}
    with dask.config.set({"distributed.scheduler.default-task-durations": priors}):
        plain = simulate(trace, SLOPolicy(deadline=90))
        policy = PredictivePolicy(SLOPolicy(deadline=90))
        r = simulate(trace, policy)
    pattern = re.compile(
        r"forecast: ~\d+ s of work at t=\d+ s \(in \d+-\d+ s\), "
        r"(seen in (\d+) of the last (\d+) cycles|5th-99th percentile of \d+ "
        r"idle gaps); pre-warm \d+ cpu"
    )
    reasons = [d["reason"] for _, d in r.decisions if "pre-warm" in d["reason"]]
    assert reasons and all(pattern.search(x) for x in reasons)
    assert any("cycles; pre-warm" in x for x in reasons)
    assert any(d["prewarmed_workers"] > 0 for _, d in r.decisions)
    assert r.deadline_met == 1.0 and r.cost_usd < plain.cost_usd
    assert policy.hits > policy.misses and not policy.off


def test_the_forecast_releases_before_a_long_gap_and_keeps_warm_through_a_short_one():
    """Short and long gaps alternate: the SLO policy's least-regret keep-alive
    keeps workers a little past every batch; the forecast releases them at
    once when the next batch is due long after that keep-alive would end,
    and keeps them warm through the short gaps."""
    times, t = [], 0.0
    for k in range(16):
        times.append(t)
        t += 100.0 if k % 2 == 0 else 2000.0
    trace = arrivals_trace(times)
    priors = {"cpu-map": float(trace.duration.mean())}
    with dask.config.set({"distributed.scheduler.default-task-durations": priors}):
        plain = simulate(trace, SLOPolicy(deadline=90))
        r = simulate(trace, PredictivePolicy(SLOPolicy(deadline=90)))
    early = [(at, d) for at, d in r.decisions if d["reason"].endswith("now")]
    assert early
    for at, d in early:
        assert re.match(
            r"forecast: next batch in \d+-\d+ s, after the keep-alive", d["reason"]
        )
        nxt = min((a for a in times if a > at), default=math.inf)
        assert nxt - at > 1000  # only before the long gaps (or after the last)
        assert d["targets"]["cpu"] == 0
    # through the short gaps of the later cycles, a worker stays warm
    for k in range(8, 16, 2):
        arrive = times[k + 1]
        assert any(
            start <= arrive - POOL.startup_s and stop >= arrive
            for _, start, stop, _ in r.lifetimes
        ), arrive
    assert r.deadline_met == 1.0 and r.cost_usd < plain.cost_usd


def test_a_forecast_that_keeps_missing_switches_off_and_says_so(caplog):
    rng = np.random.default_rng(3)
    times, t = [], 0.0
    for k in range(16):  # a cycle of two gaps, then no pattern, then a new one
        times.append(t)
        t += 300.0 if k % 2 == 0 else 900.0
    for _ in range(8):
        times.append(t)
        t += rng.uniform(200.0, 1500.0)
    for _ in range(10):
        times.append(t)
        t += 600.0
    policy = PredictivePolicy(SLOPolicy(deadline=90))
    with caplog.at_level(logging.WARNING, "lepton_dask.scaling"):
        r = simulate(arrivals_trace(times), policy)
    assert policy.misses >= 3
    assert "predictive scaling switched off: the forecast missed 3" in caplog.text
    # scored on while off: the new pattern is learnt and it comes back on
    assert "predictive scaling back on: the last 5 forecasts hit" in caplog.text
    assert not policy.off
    offs = [
        d["forecast"] for _, d in r.decisions if d.get("forecast", "").startswith("off")
    ]
    assert offs and "missed 3 of the last" in offs[0]
    assert r.deadline_met == 1.0


def test_learns_a_pattern_in_three_arrivals_and_relearns_after_a_change():
    """Bursts every 400 s, then every 700 s with twice the work: the
    forecast engages from the third arrival, re-learns within three arrivals
    of the change, and the decision log names both patterns and the change."""
    times, t = [], 0.0
    for _ in range(6):
        times.append(t)
        t += 400.0
    change = len(times)
    for _ in range(6):
        times.append(t)
        t += 700.0
    trace = arrivals_trace(times)
    big = trace.burst >= change
    trace.duration[big] *= 2.0
    f = ArrivalForecast()
    hits = []
    for k, at in enumerate(times):
        nxt = f.next()
        if nxt is not None:
            hits.append((k, nxt.earliest <= at <= nxt.latest))
        f.observe(at, 60.0 * (2.0 if k >= change else 1.0))
        if k == 2:  # three arrivals of a regular pattern
            assert f.pattern() == "every ~400 s (the last 3 arrivals)"
    assert next(k for k, hit in hits if hit) == 3  # the first forecast hits
    first = change + 1  # the first arrival after a 700 s gap
    relearn = next(k for k, hit in hits if k >= first and hit) - first + 1
    assert relearn <= 3
    assert all(hit for k, hit in hits if k >= first + relearn)
    assert f.next().work == pytest.approx(120.0)
    policy = PredictivePolicy(SLOPolicy(deadline=90))
    r = simulate(trace, policy)
    changes = [d["forecast_pattern"] for _, d in r.decisions if "forecast_pattern" in d]
    assert changes[0].startswith("none -> every ~400 s")
    assert any(c.startswith("every ~400 s (the last 3 arrivals) -> ") for c in changes)
    assert any(re.match(r"\S.* -> every ~700 s .* at t=\d+ s", c) for c in changes)
    assert r.deadline_met == 1.0 and not policy.off


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


def test_bad_base_is_refused():
    with pytest.raises(TypeError, match="base must be an SLOPolicy"):
        PredictivePolicy(object())


def _sleep(i):
    import time

    time.sleep(0.01)
    return i


@pytest.mark.timeout(90)
def test_history_survives_a_new_scheduler(mongo_uri):
    import time
    import uuid

    from distributed import Client

    import lepton_dask
    from lepton_dask.cost import CostMonitor, Ledger
    from lepton_dask.store._spec import StoreSpec
    from tests.helpers import cluster_with, wait_for

    spec = StoreSpec(mongo_uri, f"fc_{uuid.uuid4().hex[:8]}", 10.0)
    ledger = Ledger(spec)
    m1 = CostMonitor(ledger=ledger, run_id="f1", minimum_billing=0, flush_interval=0.1)
    with cluster_with(m1) as cluster, Client(cluster) as client:
        for k in range(4):  # four batches of the workload, 0.3 s apart
            with lepton_dask.workload("hourly"):
                client.gather(client.map(_sleep, range(10 * k, 10 * k + 10)))
            time.sleep(0.3)
        wait_for(lambda: m1.recorder.unfinished == 0, 10)
    arrivals = [m1.recorder.started + b["arrival"] for b in m1.recorder.batches]
    assert len(arrivals) == 4

    # a second scheduler on the same store: the forecast starts with that history
    m2 = CostMonitor(ledger=ledger, run_id="f2", minimum_billing=0, flush_interval=0.1)
    with cluster_with(m2) as cluster, Client(cluster) as client:
        policy = PredictivePolicy.from_ledger(SLOPolicy(deadline=60), "hourly", ledger)
        assert policy.forecast.runs == 1
        assert policy.forecast.arrivals == pytest.approx(arrivals, abs=1e-3)
        assert all(w == pytest.approx(0.1, rel=0.5) for w in policy.forecast.works)
        assert "not enough history: 4 batches from 1 run(s)" in (
            policy.forecast.status()
        )
        with lepton_dask.workload("hourly"):
            client.submit(_sleep, 1).result()
        wait_for(lambda: len(m2.history()) == 2, 10)
        again = PredictivePolicy.from_ledger(SLOPolicy(deadline=60), "hourly", spec)
        assert again.forecast.runs == 2 and len(again.forecast.arrivals) == 5
    with pytest.warns(
        UserWarning, match="no recorded run of workload 'nightly'.*hourly"
    ):
        none = PredictivePolicy.from_ledger(SLOPolicy(deadline=60), "nightly", spec)
    assert none.forecast.arrivals == [] and none.forecast.runs == 0
    with pytest.raises(TypeError, match="store must be a StoreSpec"):
        PredictivePolicy.from_ledger(SLOPolicy(deadline=60), "hourly", 42)
    # from config, as CostAwareAdaptive and the k8s scaler build it
    import dask

    from lepton_dask.scaling.policies import policy_from_config

    with dask.config.set(
        {
            "lepton.workload": "hourly",
            "lepton.store.uri": spec.uri,
            "lepton.store.database": spec.database,
        }
    ):
        cfg = policy_from_config({"policy": "predictive", "deadline": 60})
    assert isinstance(cfg, PredictivePolicy) and cfg.forecast.runs == 2
    assert cfg.base.deadline == 60.0


def test_forecast_metrics_from_the_decision_detail():
    from prometheus_client import CollectorRegistry, generate_latest

    from lepton_dask.cost.metrics import CostCollector
    from lepton_dask.cost.monitor import CostMonitor

    policy = PredictivePolicy(SLOPolicy(deadline=90))
    r = simulate(sawtooth_recurring(repeats=3), policy)
    prewarm = next(d for _, d in r.decisions if d["prewarmed_workers"] > 0)
    monitor = CostMonitor(ledger=False)
    reg = CollectorRegistry()
    reg.register(CostCollector(monitor))
    assert b"lepton_forecast_workers" not in generate_latest(reg)  # no scaler yet
    monitor.record_decision(prewarm)
    text = generate_latest(reg).decode()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("lepton_forecast") or line.startswith("lepton_prewarmed")
    }
    assert values == {
        "lepton_forecast_workers": prewarm["forecast_workers"],
        "lepton_prewarmed_workers": prewarm["prewarmed_workers"],
        "lepton_forecast_hits_total": prewarm["forecast_hits"],
        "lepton_forecast_misses_total": prewarm["forecast_misses"],
    }
    assert values["lepton_prewarmed_workers"] >= 1
