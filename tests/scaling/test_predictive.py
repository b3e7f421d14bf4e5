"""Predictive scaling: the pre-warm and the early release, their reasons,
a forecast that keeps missing, history from the ledger and the metrics, in
the real simulator (the same policy objects a scheduler runs)."""

from __future__ import annotations

import logging
import math
import re

import dask
import numpy as np
import pytest

from lepton_dask.scaling import PredictivePolicy, SLOPolicy
from lepton_dask.scaling.forecast import ArrivalForecast
from lepton_dask.scaling.state import PoolSpec
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

    from lepton_dask.scaling.registry import policy_from_config

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
