"""Grafana dashboards: the committed JSON is what the generator writes, it is
well-formed for Grafana and passes Grafana's own dashboard schema (the models
of grafana-foundation-sdk), it imports anywhere (data source variable,
__inputs), and every panel's and annotation's PromQL returns data from a real
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
    LocalPoolCluster,
    PoolSpec,
    SLOPolicy,
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
            # no data source uid of one Grafana: the dashboard's variable
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
                # every query is scoped by the job and namespace variables
                assert "$job" in t["expr"] and "$namespace" in t["expr"], t["expr"]
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


def _missing(original, decoded, path=""):
    """Paths of ``original`` that did not survive ``decoded`` unchanged."""
    if isinstance(original, dict):
        if not isinstance(decoded, dict):
            return [f"{path}: not an object in the schema"]
        out = []
        for k, v in original.items():
            if k not in decoded:
                out.append(f"{path}/{k}: not in Grafana's schema")
            else:
                out += _missing(v, decoded[k], f"{path}/{k}")
        return out
    if isinstance(original, list):
        if not isinstance(decoded, list) or len(original) != len(decoded):
            return [f"{path}: list not kept"]
        return [
            m
            for i, (a, b) in enumerate(zip(original, decoded, strict=True))
            for m in _missing(a, b, f"{path}/{i}")
        ]
    return [] if original == decoded else [f"{path}: {original!r} became {decoded!r}"]


def test_dashboards_pass_grafanas_schema():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    for name in grafana.DASHBOARDS:
        dash = json.loads((DASHBOARDS / name).read_text())
        # __inputs/__requires are the import dialog's, not the dashboard's
        body = {k: v for k, v in dash.items() if not k.startswith("__")}
        decoded = json.loads(json.dumps(Dashboard.from_json(body), cls=JSONEncoder))
        assert _missing(body, decoded) == [], name
    # the check bites: a misspelt field is not in the schema
    bad = {**body, "panels": [{**body["panels"][0], "fieldconfig": {}}]}
    decoded = json.loads(json.dumps(Dashboard.from_json(bad), cls=JSONEncoder))
    assert _missing(bad, decoded) == ["/panels/0/fieldconfig: not in Grafana's schema"]


def test_dashboards_import_anywhere():
    for name in grafana.DASHBOARDS:
        dash = json.loads((DASHBOARDS / name).read_text())
        (ds_input,) = dash["__inputs"]
        assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert set(variables) == {"datasource", "job", "namespace", "pool"}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert f"${{{ds_input['name']}}}" in json.dumps(variables["datasource"])
        for v in ("job", "namespace", "pool"):
            assert variables[v]["includeAll"] and variables[v]["allValue"] == ".*"
        # scaler decisions are marked on every time series
        (decisions,) = [a for a in dash["annotations"]["list"] if "expr" in a]
        assert "lepton_scaler_decisions_total" in decisions["expr"]
        # ratios are over the time range or each interval, not lifetimes
        ratios = {"Cost per task", "Utilization", "Cost per task and per GB",
                  "Utilization by pool"}  # fmt: skip
        for title, expr in grafana.expressions(dash):
            if title in ratios:
                assert "increase(" in expr or "rate(" in expr, title
                assert "[$__range]" in expr or "[$__rate_interval]" in expr, title
    cost = json.loads((DASHBOARDS / "lepton-cost.json").read_text())
    by_title = {p["title"]: p for p in cost["panels"]}
    exceeded = by_title["Budget exceeded"]["fieldConfig"]["defaults"]
    assert [s["value"] for s in exceeded["thresholds"]["steps"]] == [None, 1]
    assert exceeded["mappings"][0]["options"]["1"]["text"] == "EXCEEDED"
    for title in ("Unpriced workers", "Total budget", "Time to budget exhaustion"):
        assert title in by_title
    throughput = json.loads((DASHBOARDS / "lepton-throughput.json").read_text())
    (workers,) = [p for p in throughput["panels"] if p["title"] == "Workers"]
    assert workers["targets"][0]["expr"].startswith("sum(dask_scheduler_workers")


def test_sidecar_configmap_carries_every_dashboard():
    docs = yaml.safe_load_all(
        (ROOT / "deploy/kubernetes/grafana-dashboards.yaml").read_text()
    )
    (cm,) = [d for d in docs if d]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == set(grafana.DASHBOARDS)
    for name, text in cm["data"].items():
        assert json.loads(text) == json.loads((DASHBOARDS / name).read_text())


def _sleep(x, s=0.25):
    time.sleep(s)
    return x


@pytest.mark.timeout(240)
def test_every_panel_query_returns_data(tmp_path):
    monitor = CostMonitor(
        ledger=False, budget_usd_per_hour=5.0, budget_usd=50.0, flush_interval=0.5
    )
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
            Adaptive=CostAwareAdaptive, policy=SLOPolicy(deadline=3.0), interval=0.2
        )
        port = cluster.scheduler.http_server.port
        with PrometheusServer([f"127.0.0.1:{port}"], str(tmp_path)) as prom:
            # a steady stream of work while Prometheus scrapes every second:
            # the scaler grows the pool, tasks complete, spend accrues
            futures = client.map(_sleep, range(120), pure=False)
            wait_for(lambda: monitor.scaler_decisions >= 3, timeout=60)
            wait_for(lambda: sum(f.done() for f in futures) >= 30, timeout=90)
            # as Grafana sends them with "All" selected: the variables'
            # allValue, and its own interval variables
            values = {"job": ".*", "namespace": ".*", "pool": ".*"}
            values |= {"__range": "2m", "__rate_interval": "5s", "__interval": "5s"}
            queries = [
                (name, title, expr)
                for name, fn in grafana.DASHBOARDS.items()
                for title, expr in grafana.expressions(fn(), values)
            ]
            assert not [q for q in queries if "$" in q[2]]
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
    assert len(queries) >= 30
