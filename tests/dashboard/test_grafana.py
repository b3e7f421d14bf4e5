"""Grafana dashboards: the committed JSON is what the generator writes, it is
well-formed for Grafana, and every panel's PromQL returns data from a real
Prometheus scraping a real scheduler that is running work under the scaler."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from distributed import Client

from lepton_dask.cost import CostMonitor
from lepton_dask.dashboard import grafana
from lepton_dask.scaling import (
    CostAwareAdaptive,
    DeadlinePolicy,
    LocalPoolCluster,
    PoolSpec,
)
from tests.helpers import wait_for
from tests.prom import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"


def test_committed_dashboards_are_generated():
    for rel, text in grafana.render().items():
        path = DASHBOARDS / rel
        assert path.is_file(), f"{path} missing: run `make dashboards`"
        assert path.read_text() == text, f"{path} is stale: run `make dashboards`"


def test_dashboards_are_well_formed():
    uids = set()
    for name in grafana.DASHBOARDS:
        dash = json.loads((DASHBOARDS / name).read_text())
        assert dash["schemaVersion"] >= 36
        assert dash["uid"] not in uids and len(dash["uid"]) <= 40
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        for p in dash["panels"]:
            assert p["datasource"] == {"type": "prometheus", "uid": "lepton-prometheus"}
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "lepton-prometheus"
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        # panels do not overlap
        cells = set()
        for p in dash["panels"]:
            g = p["gridPos"]
            mine = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & mine, p["title"]
            cells |= mine
    ds = yaml.safe_load(
        (DASHBOARDS / "provisioning/datasources/lepton.yaml").read_text()
    )
    assert ds["datasources"][0]["uid"] == "lepton-prometheus"
    assert {"lepton-cost", "lepton-throughput", "lepton-scaling"} == uids


def _sleep(x, s=0.25):
    time.sleep(s)
    return x


@pytest.mark.timeout(240)
def test_every_panel_query_returns_data(tmp_path):
    monitor = CostMonitor(ledger=False, budget_usd_per_hour=5.0, flush_interval=0.5)
    pools = [
        PoolSpec.from_catalog("cpu", "local", threads=1, startup_s=0.3, max_workers=3)
    ]
    with (
        LocalPoolCluster(
            pools,
            processes=False,
            dashboard_address="127.0.0.1:0",
            scheduler_options={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.adapt(
            Adaptive=CostAwareAdaptive, policy=DeadlinePolicy(within=3.0), interval=0.2
        )
        port = cluster.scheduler.http_server.port
        with PrometheusServer([f"127.0.0.1:{port}"], str(tmp_path)) as prom:
            # a steady stream of work while Prometheus scrapes every second:
            # the scaler grows the pool, tasks complete, spend accrues
            futures = client.map(_sleep, range(120), pure=False)
            wait_for(lambda: monitor.scaler_decisions >= 3, timeout=60)
            wait_for(lambda: sum(f.done() for f in futures) >= 30, timeout=90)
            queries = [
                (name, title, expr)
                for name, fn in grafana.DASHBOARDS.items()
                for title, expr in grafana.expressions(fn())
            ]
            empty = {}

            def all_answer() -> bool:
                empty.clear()
                for name, title, expr in queries:
                    if not prom.query(expr):
                        empty[f"{name}: {title}"] = expr
                return not empty

            try:
                wait_for(all_answer, timeout=60, interval=1.0)
            except AssertionError:
                pytest.fail(f"panels whose query returned nothing: {empty}")
            client.gather(futures)
    assert len(queries) >= 24
