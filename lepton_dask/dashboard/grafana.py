"""Grafana dashboards (cost, throughput, scaling) generated from pure functions.

``dashboards/*.json`` and ``dashboards/provisioning/`` are written by
``lepton-dask dashboards write`` (``make dashboards``); a test checks that the
committed files are what these functions generate, and another evaluates every
panel's PromQL against a real Prometheus scraping a real scheduler.

Dashboards refer to their data source by uid (:data:`DATASOURCE_UID`, the
one the provisioning file creates) and have stable uids, so links survive
re-imports.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

#: the Prometheus data source every panel uses (provisioned with this uid)
DATASOURCE_UID = "lepton-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
#: dashboard JSON schema version (Grafana 11)
SCHEMA_VERSION = 39
TAGS = ["lepton", "dask", "cost"]


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": True,
    }


def panel(
    title: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
    stack: bool = False,
    decimals: int | None = None,
) -> dict[str, Any]:
    """One panel; ``queries`` are ``(PromQL, legend)`` pairs. Layout is set
    by :func:`dashboard`."""
    defaults: dict[str, Any] = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 2,
            "fillOpacity": 10 if stack else 0,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "showPoints": "never",
            "spanNulls": True,
        }
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [
            _target(expr, legend, chr(ord("A") + i))
            for i, (expr, legend) in enumerate(queries)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": (
            {"legend": {"displayMode": "list", "placement": "bottom"}}
            if kind == "timeseries"
            else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
        ),
    }
    return p


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    """A dashboard with ``panels`` laid out two per row (stats four per row)."""
    x = y = 0
    row_h = 0
    laid = []
    for i, p in enumerate(panels, start=1):
        w, h = (6, 4) if p["type"] == "stat" else (12, 8)
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        laid.append({**p, "id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x += w
        row_h = max(row_h, h)
    return {
        "uid": uid,
        "title": title,
        "tags": TAGS,
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["lepton"],
                "asDropdown": False,
                "title": "lepton",
            }
        ],
        "panels": laid,
    }


def cost_dashboard() -> dict[str, Any]:
    return dashboard(
        "lepton-cost",
        "lepton: cost",
        [
            panel("Spend", [("sum(lepton_spend_usd_total)", "USD")], unit="currencyUSD", kind="stat", decimals=4),
            panel("Spend rate", [("sum(lepton_spend_rate_usd_per_hour)", "USD/h")], unit="currencyUSD", kind="stat", decimals=2),
            panel("Cost per task", [("lepton_cost_per_task_usd", "USD/task")], unit="currencyUSD", kind="stat", decimals=6),
            panel("Budget exceeded", [("max(lepton_budget_exceeded)", "exceeded")], kind="stat"),
            panel(
                "Spend rate vs budget",
                [
                    ("sum(lepton_spend_rate_usd_per_hour)", "spend rate"),
                    ("lepton_budget_usd_per_hour", "budget"),
                ],
                unit="currencyUSD",
                description="USD per hour now, against lepton.cost.budget-usd-per-hour",
            ),
            panel("Cumulative spend", [("sum(lepton_spend_usd_total)", "spend")], unit="currencyUSD"),
            panel(
                "Spend by pool",
                [("sum by (pool) (lepton_spend_usd_total)", "{{pool}}")],
                unit="currencyUSD",
                stack=True,
            ),
            panel(
                "Cost per task and per GB",
                [
                    ("lepton_cost_per_task_usd", "per task"),
                    ("lepton_cost_per_gigabyte_usd", "per GB of results"),
                ],
                unit="currencyUSD",
            ),
        ],
    )  # fmt: skip


def throughput_dashboard() -> dict[str, Any]:
    return dashboard(
        "lepton-throughput",
        "lepton: throughput",
        [
            panel("Tasks/s", [("lepton_throughput_tasks_per_second", "tasks/s")], kind="stat", decimals=1),
            panel("Results", [("lepton_throughput_bytes_per_second", "bytes/s")], unit="Bps", kind="stat"),
            panel("Utilization", [("sum(lepton_task_compute_seconds_total) / sum(lepton_paid_thread_seconds_total)", "busy/paid")], unit="percentunit", kind="stat"),
            panel("Workers", [("dask_scheduler_workers", "workers")], kind="stat"),
            panel(
                "Tasks per second",
                [
                    ("lepton_throughput_tasks_per_second", "last minute (monitor)"),
                    ("sum by (pool) (rate(lepton_tasks_completed_total[1m]))", "{{pool}}"),
                ],
                unit="ops",
            ),
            panel(
                "Result bytes per second",
                [("lepton_throughput_bytes_per_second", "bytes/s")],
                unit="Bps",
            ),
            panel(
                "Utilization by pool",
                [("lepton_utilization_ratio", "{{pool}}")],
                unit="percentunit",
                description="busy thread-seconds over paid thread-seconds",
            ),
            panel(
                "Queue: tasks by state",
                [("sum by (state) (dask_scheduler_tasks)", "{{state}}")],
                stack=True,
            ),
        ],
    )  # fmt: skip


def scaling_dashboard() -> dict[str, Any]:
    return dashboard(
        "lepton-scaling",
        "lepton: scaling",
        [
            panel("Decisions (5 min)", [("increase(lepton_scaler_decisions_total[5m])", "decisions")], kind="stat", decimals=0),
            panel("Infeasible", [("lepton_scaler_infeasible", "infeasible")], kind="stat"),
            panel("Predicted finish", [("lepton_scaler_predicted_finish_seconds", "finish")], unit="s", kind="stat"),
            panel("Predicted spend", [("lepton_scaler_predicted_spend_usd", "USD")], unit="currencyUSD", kind="stat", decimals=4),
            panel(
                "Workers by pool",
                [("sum by (pool) (lepton_workers)", "{{pool}}")],
                stack=True,
            ),
            panel(
                "Target vs actual workers",
                [
                    ("lepton_scaler_target_workers", "target {{pool}}"),
                    ("sum by (pool) (lepton_workers)", "actual {{pool}}"),
                ],
            ),
            panel(
                "Predicted finish vs deadline",
                [
                    ("lepton_scaler_predicted_finish_seconds", "predicted finish"),
                    ("lepton_scaler_time_to_deadline_seconds", "time to deadline"),
                ],
                unit="s",
                description="the deadline policy is on time while the first line is below the second",
            ),
            panel(
                "Decisions per minute",
                [("rate(lepton_scaler_decisions_total[1m]) * 60", "decisions/min")],
            ),
        ],
    )  # fmt: skip


DASHBOARDS = {
    "lepton-cost.json": cost_dashboard,
    "lepton-throughput.json": throughput_dashboard,
    "lepton-scaling.json": scaling_dashboard,
}


def provisioning(
    dashboards_path: str = "/var/lib/grafana/dashboards",
    prometheus_url: str = "http://prometheus:9090",
) -> dict[str, dict[str, Any]]:
    """Grafana provisioning files: the Prometheus data source and the
    dashboard provider, keyed by their path under ``provisioning/``."""
    return {
        "datasources/lepton.yaml": {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Prometheus",
                    "uid": DATASOURCE_UID,
                    "type": "prometheus",
                    "access": "proxy",
                    "url": prometheus_url,
                    "isDefault": True,
                    "jsonData": {"timeInterval": "5s"},
                }
            ],
        },
        "dashboards/lepton.yaml": {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "lepton",
                    "folder": "lepton",
                    "type": "file",
                    "disableDeletion": False,
                    "allowUiUpdates": True,
                    "options": {"path": dashboards_path},
                }
            ],
        },
    }


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every query in a dashboard."""
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def render() -> dict[str, str]:
    """Every generated file's text, keyed by its path under ``dashboards/``."""
    out = {
        name: json.dumps(fn(), indent=2, sort_keys=True) + "\n"
        for name, fn in DASHBOARDS.items()
    }
    for path, doc in provisioning().items():
        out[f"provisioning/{path}"] = (
            "# generated by `lepton-dask dashboards write`\n"
            + (yaml.safe_dump(doc, sort_keys=False))
        )
    return out
