"""CostMonitor on real schedulers: pricing, metrics over HTTP, ledger, budgets."""

from __future__ import annotations

import logging
import time
import urllib.request
import uuid

import dask
import pytest
from distributed import Client, Nanny, Scheduler, SpecCluster
from prometheus_client.parser import text_string_to_metric_families

from lepton_dask import _protocol as protocol
from lepton_dask.cost import CatalogError, CostMonitor, Ledger, worker_declaration
from lepton_dask.store._spec import StoreSpec
from tests.helpers import cluster_with, wait_for

pytestmark = pytest.mark.timeout(120)


def scrape(cluster) -> dict[str, list]:
    """Fetch the scheduler's /metrics over HTTP and parse it."""
    port = cluster.scheduler.http_server.port
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
        .read()
        .decode()
    )
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples, name, **labels):
    vals = [
        v
        for lab, v in samples.get(name, [])
        if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert vals, f"{name}{labels} not in scrape"
    return sum(vals)


def test_monitor_prices_workers_counts_work_and_serves_metrics():
    monitor = CostMonitor(ledger=False, minimum_billing=0)
    with cluster_with(monitor) as cluster, Client(cluster) as client:
        futures = client.map(lambda x: x + 1, range(200))
        client.gather(futures)
        time.sleep(0.3)
        snap = monitor.snapshot()
        assert snap["workers"] == 2 and snap["pools"]["default"]["workers"] == 2
        assert snap["spend_rate_usd_per_hour"] == pytest.approx(2 * 0.096)
        assert snap["tasks"] >= 200
        assert snap["spend_usd"] > 0 and 0 <= snap["utilization"] <= 1
        assert snap["cost_per_task_usd"] == pytest.approx(
            snap["spend_usd"] / snap["tasks"]
        )
        m = scrape(cluster)
        assert (
            value(
                m,
                "lepton_workers",
                pool="default",
                instance_type="local",
                pricing="on-demand",
            )
            == 2
        )
        assert value(m, "lepton_tasks_completed_total", pool="default") >= 200
        assert value(
            m, "lepton_spend_rate_usd_per_hour", pool="default"
        ) == pytest.approx(0.192)
        assert value(m, "lepton_spend_usd_total", pool="default") > 0
        assert value(m, "lepton_budget_exceeded", kind="rate") == 0
        assert "dask_scheduler_workers" in m  # next to dask's own metrics
        # bounded labels: no per-task or per-worker label anywhere
        for name, samples in m.items():
            if name.startswith("lepton_"):
                for labels, _ in samples:
                    assert set(labels) <= {
                        "pool",
                        "instance_type",
                        "pricing",
                        "kind",
                        "source",  # cache | server (lepton_store_bytes_read_total)
                    }


def _nap(x, s=0.5):
    time.sleep(s)
    return x


def test_workload_observer_is_its_own_plugin_and_feeds_the_scaler_state():
    """Observing the workload (batches) is a scheduler plugin apart from
    billing; the scaler state's batches come from it."""
    from lepton_dask.cost.observer import WorkloadObserver

    monitor = CostMonitor(ledger=False, minimum_billing=0)
    with cluster_with(monitor) as cluster, Client(cluster) as client:
        sched = cluster.scheduler
        observer = sched.plugins[WorkloadObserver.name]
        assert isinstance(observer, WorkloadObserver) and observer is monitor.observer
        futures = client.map(_nap, range(6), pure=False)
        wait_for(lambda: observer.tracker.batches, 10)
        state = client.sync(getattr(client.scheduler, protocol.SCALER_STATE))
        (batch,) = state["batches"]
        assert batch["tasks"] == 6 and set(batch["work"]) == {"cpu", "gpu"}
        client.gather(futures)
        wait_for(lambda: not observer.tracker.batches, 10)


def test_several_schedulers_in_one_process_no_duplicate_registration():
    for _ in range(3):
        monitor = CostMonitor(ledger=False)
        with cluster_with(monitor, n_workers=1) as cluster:
            m = scrape(cluster)
            assert value(m, "lepton_workers") == 1


def test_declared_types_patterns_and_unknown_types(caplog):
    rules = [
        {
            "pattern": "gpu-*",
            "instance-type": "g5.xlarge",
            "pricing": "spot",
            "pool": "gpu",
        }
    ]
    spec = {
        "gpu-0": {"cls": Nanny, "options": {"nthreads": 1}},
        "spot-cpu": {
            "cls": Nanny,
            "options": {
                "nthreads": 2,
                "startup_information": worker_declaration("m6i.xlarge", "spot", "cpu"),
            },
        },
        "weird": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "startup_information": worker_declaration("z99.mega"),
            },
        },
    }
    with dask.config.set({"lepton.cost.worker-types": rules}):
        monitor = CostMonitor(ledger=False)
    caplog.set_level(logging.ERROR, logger="lepton_dask.cost.monitor")
    with SpecCluster(
        workers=spec,
        scheduler={
            "cls": Scheduler,
            "options": {"dashboard_address": None, "plugins": [monitor]},
        },
    ) as cluster:
        wait_for(lambda: len(monitor.lives) == 3, 60)
        by_name = {life.worker: life for life in monitor.lives.values()}
        assert (
            by_name["gpu-0"].instance_type,
            by_name["gpu-0"].pricing,
            by_name["gpu-0"].pool,
        ) == ("g5.xlarge", "spot", "gpu")
        assert by_name["gpu-0"].usd_per_hour == 0.4024
        assert (by_name["spot-cpu"].instance_type, by_name["spot-cpu"].pool) == (
            "m6i.xlarge",
            "cpu",
        )
        assert (
            by_name["weird"].usd_per_hour == 0
            and monitor.snapshot()["unpriced_workers"] == 1
        )
        assert (
            "unknown instance type 'z99.mega'" in caplog.text
            and "known types:" in caplog.text
        )
        del cluster


def test_fallback_type_for_unknown_workers():
    with dask.config.set({"lepton.cost.fallback-instance-type": "m6i.large"}):
        monitor = CostMonitor(ledger=False)
    spec = {
        "w": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "startup_information": worker_declaration("nope.1"),
            },
        }
    }
    with SpecCluster(
        workers=spec,
        scheduler={
            "cls": Scheduler,
            "options": {"dashboard_address": None, "plugins": [monitor]},
        },
    ):
        wait_for(lambda: len(monitor.lives) == 1, 60)
        (life,) = monitor.lives.values()
        assert life.instance_type == "m6i.large" and not monitor.unpriced


def test_bad_configuration_is_refused():
    with dask.config.set(
        {"lepton.cost.worker-types": [{"pattern": "x*", "instance-type": "nope"}]}
    ):
        with pytest.raises(CatalogError, match="unknown instance type 'nope'"):
            CostMonitor(ledger=False)
    with dask.config.set({"lepton.cost.worker-types": [{"pattern": "x*"}]}):
        with pytest.raises(CatalogError, match=r"worker-types\[0\] needs"):
            CostMonitor(ledger=False)
    with pytest.raises(ValueError, match="budget-usd must be a positive number"):
        CostMonitor(ledger=False, budget_usd=-3)
    with pytest.raises(ValueError, match="minimum billing"):
        CostMonitor(ledger=False, minimum_billing=-1)


def test_worker_reported_twice_is_billed_once():
    monitor = CostMonitor(ledger=False)
    with cluster_with(monitor, n_workers=1) as cluster:
        (addr,) = cluster.scheduler.workers
        first = monitor.lives[addr]
        monitor.add_worker(cluster.scheduler, addr)
        assert monitor.lives[addr] is first and len(monitor.lives) == 1


def test_minimum_billing_for_a_short_lived_worker():
    monitor = CostMonitor(ledger=False, minimum_billing=60)
    with cluster_with(monitor, n_workers=1) as cluster:
        cluster.scale(0)
        wait_for(lambda: not monitor.lives, 30)
        snap = monitor.snapshot()
        # lived well under a second, billed the full minute
        assert snap["spend_usd"] == pytest.approx(60 * 0.096 / 3600, rel=1e-6)
        assert snap["workers"] == 0


def test_launch_request_starts_billing_before_arrival():
    monitor = CostMonitor(ledger=False, minimum_billing=0)
    with cluster_with(monitor, n_workers=0) as cluster, Client(cluster) as client:
        client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.handlers[protocol.COST_LAUNCH](
                name="late"
            )
        )
        requested = time.time()
        time.sleep(0.5)
        cluster.scale(0)
        from distributed import Worker

        async def add():
            w = await Worker(cluster.scheduler_address, name="late", nthreads=1)
            return w

        w = client.sync(add)
        wait_for(lambda: monitor.lives, 30)
        (life,) = monitor.lives.values()
        assert life.start == pytest.approx(requested, abs=0.2)
        client.sync(w.close)


def test_budget_crossing_warns_and_sets_metric(caplog):
    caplog.set_level(logging.WARNING, logger="lepton_dask.cost.budgets")
    monitor = CostMonitor(ledger=False, budget_usd_per_hour=0.1, flush_interval=0.05)
    with cluster_with(monitor, n_workers=2) as cluster:
        wait_for(lambda: monitor.budget_exceeded["rate"], 10)
        m = scrape(cluster)
        assert value(m, "lepton_budget_exceeded", kind="rate") == 1
        assert value(m, "lepton_budget_usd_per_hour") == 0.1
    assert "cost budget exceeded: rate 0.1920" in caplog.text
    assert caplog.text.count("cost budget exceeded") == 1  # once per crossing


def test_ledger_survives_a_scheduler_restart(mongo_uri):
    db = f"cost_{uuid.uuid4().hex[:8]}"
    run = f"run-{uuid.uuid4().hex[:6]}"
    ledger = Ledger(StoreSpec(mongo_uri, db, 10.0))
    m1 = CostMonitor(ledger=ledger, run_id=run, minimum_billing=0, flush_interval=0.1)
    with cluster_with(m1, n_workers=2):
        time.sleep(1.0)
        wait_for(lambda: len(ledger.entries(run)) == 2, 10)
    spent_first = sum(d["billed_usd"] for d in ledger.entries(run))
    assert spent_first > 0
    assert all(d["end"] is not None for d in ledger.entries(run))
    # a new scheduler with the same run id continues from the ledger
    m2 = CostMonitor(ledger=ledger, run_id=run, minimum_billing=0, flush_interval=0.1)
    with cluster_with(m2, n_workers=1):
        snap = m2.snapshot()
        assert snap["spend_usd"] >= spent_first
        assert snap["spend_usd"] == pytest.approx(spent_first, abs=0.096 / 3600 * 3)
        table = m2.report()
        assert len(table) == 4  # 3 lifetimes + TOTAL
    entries = ledger.entries(run)
    assert (
        len(entries) == 3 and len({d["_id"] for d in entries}) == 3
    )  # nothing billed twice


def test_open_lifetimes_of_a_dead_scheduler_are_closed_at_their_last_flush(mongo_uri):
    from lepton_dask.cost.billing import Lifetime
    from lepton_dask.cost.ledger import to_doc

    ledger = Ledger(StoreSpec(mongo_uri, f"cost_{uuid.uuid4().hex[:8]}", 10.0))
    life = Lifetime("w", "default", "local", "on-demand", 3.6, 1, start=1000.0)
    ledger.write(
        [to_doc("r", life, now=1100.0, minimum=60)]
    )  # last flush at t=1100, then died
    total = ledger.resume("r")
    (doc,) = ledger.entries("r")
    assert doc["end"] == 1100.0 and total == pytest.approx(0.1)  # 100 s at $3.60/h


def test_real_prometheus_scrapes_spend_and_work(tmp_path):
    """Debian's prometheus scrapes a running scheduler; PromQL agrees with the
    monitor's own accounting at the sample's timestamp."""
    from tests.prom import PrometheusServer

    monitor = CostMonitor(ledger=False, minimum_billing=0)
    with cluster_with(monitor, n_workers=2) as cluster, Client(cluster) as client:
        port = cluster.scheduler.http_server.port
        with PrometheusServer([f"127.0.0.1:{port}"], str(tmp_path)) as prom:
            client.gather(client.map(lambda x: x * 2, range(300)))
            tasks = monitor.snapshot()["tasks"]
            # wait for a scrape taken after the work finished
            (_sample,) = wait_for(
                lambda: [
                    s
                    for s in prom.query("sum(lepton_tasks_completed_total)")
                    if prom.value(s) >= tasks
                ],
                timeout=30,
            )
            (spend,) = prom.query("sum(lepton_spend_usd_total)")
            expected = monitor.snapshot(now=prom.when(spend))["spend_usd"]
            # within one scrape interval of spend at $0.192/hour
            assert prom.value(spend) == pytest.approx(expected, abs=0.192 / 3600 * 1.5)
            (rate,) = prom.query("sum(lepton_spend_rate_usd_per_hour)")
            assert prom.value(rate) == pytest.approx(0.192)
            (workers,) = prom.query('sum(lepton_workers{instance_type="local"})')
            assert prom.value(workers) == 2
            (util,) = prom.query("max(lepton_utilization_ratio)")
            assert 0 < prom.value(util) <= 1
            assert prom.wait_for_samples("rate(lepton_spend_usd_total[5s])", timeout=20)


def test_cost_cli_report_runs_catalog(mongo_uri):
    import subprocess
    import sys

    from lepton_dask.cost.billing import Lifetime
    from lepton_dask.cost.ledger import to_doc

    db = f"cost_{uuid.uuid4().hex[:8]}"
    ledger = Ledger(StoreSpec(mongo_uri, db, 10.0))
    ledger.write(
        [
            to_doc(
                "nightly",
                Lifetime("cpu-0", "cpu", "m6i.large", "spot", 0.0384, 2, 0.0, 3600.0),
                3600.0,
                60,
            )
        ]
    )
    cli = [sys.executable, "-m", "lepton_dask.cli", "cost"]
    opts = ["--uri", mongo_uri, "--database", db]
    out = subprocess.run(
        [*cli, "report", *opts], capture_output=True, text=True, timeout=60
    )
    assert (
        out.returncode == 0
        and "spend of run nightly" in out.stdout
        and "0.0384" in out.stdout
    )
    out = subprocess.run(
        [*cli, "report", "--run", "nope", *opts],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "no run 'nope'" in out.stderr
    out = subprocess.run(
        [*cli, "runs", *opts], capture_output=True, text=True, timeout=60
    )
    assert "nightly" in out.stdout
    out = subprocess.run([*cli, "catalog"], capture_output=True, text=True, timeout=60)
    assert "g5.xlarge" in out.stdout and "p4d.24xlarge" in out.stdout


def test_windowed_throughput():
    monitor = CostMonitor(ledger=False)
    monitor._sample(now=100.0)
    monitor.pools["default"].tasks = 50
    monitor.pools["default"].compute_seconds = 20.0
    monitor.pools["default"].nbytes = 1000
    monitor._sample(now=110.0)
    tp = monitor.throughput()
    assert tp == {
        "tasks_per_second": 5.0,
        "task_seconds_per_second": 2.0,
        "bytes_per_second": 100.0,
    }
    assert monitor.snapshot()["tasks_per_second"] == 5.0
