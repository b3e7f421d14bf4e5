"""Grafana dashboards (cost, throughput, scaling) generated from pure functions.

``dashboards/*.json`` and ``dashboards/provisioning/`` are written by
``lepton-dask dashboards write`` (``make dashboards``); a test checks that the
committed files are what these functions generate, another checks them
against Grafana's own dashboard schema (grafana-foundation-sdk's models), and
another evaluates every panel's and annotation's PromQL against a real
Prometheus scraping a real scheduler.

They import anywhere: every panel uses the ``${datasource}`` template
variable (the import dialog asks for it through ``__inputs``; the compose
provisioning's data source is the default), and ``job``, ``namespace`` and
``pool`` variables select the cluster. Ratios are over the dashboard's time
range (``$__range``), rates over ``$__rate_interval``.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

#: the Prometheus data source the compose provisioning creates (the default)
DATASOURCE_UID = "lepton-prometheus"
#: every panel's data source: the dashboard's ``datasource`` variable
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: dashboard JSON schema version (Grafana 11)
SCHEMA_VERSION = 39
TAGS = ["lepton", "dask", "cost"]
#: label matchers of a scheduler's series, and of its per-pool series
SEL = 'job=~"$job", namespace=~"$namespace"'
POOL = SEL + ', pool=~"$pool"'
#: what Grafana puts in for its own variables when the test evaluates queries
BUILTINS = ("$__range", "$__rate_interval", "$__interval")


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
    thresholds: list[tuple[float | None, str]] | None = None,
    mappings: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """One panel; ``queries`` are ``(PromQL, legend)`` pairs. Layout is set
    by :func:`dashboard`. ``thresholds`` are ``(from value, colour)`` steps
    (the first from ``None``); ``mappings`` map a value to ``(text, colour)``.

    >>> p = panel("x", [("up", "up")], kind="stat", thresholds=[(None, "green"), (1, "red")])
    >>> p["fieldConfig"]["defaults"]["thresholds"]["steps"][1]
    {'color': 'red', 'value': 1}
    """
    defaults: dict[str, Any] = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    if thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in thresholds],
        }
        defaults["color"] = {"mode": "thresholds"}
    if mappings:
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    value: {"text": text, "color": color, "index": i}
                    for i, (value, (text, color)) in enumerate(mappings.items())
                },
            }
        ]
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 2,
            "fillOpacity": 10 if stack else 0,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "showPoints": "never",
            "spanNulls": True,
        }
    return {
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
            else {
                "reduceOptions": {
                    "calcs": ["lastNotNull"],
                    "fields": "",
                    "values": False,
                },
                "colorMode": "value" if thresholds else "none",
            }
        ),
    }


def _query_variable(name: str, label: str, query: str, multi: bool) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,  # on time range change: new clusters appear
        "sort": 1,
        "includeAll": True,
        "allValue": ".*",  # also matches series without the label (compose)
        "multi": multi,
        "current": {"text": "All", "value": "$__all"},
    }


def variables() -> list[dict[str, Any]]:
    """``datasource``, ``job``, ``namespace`` and ``pool`` template variables."""
    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "current": {"text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"},
            "hide": 0,
        },
        _query_variable(
            "job", "Job", "label_values(lepton_budget_exceeded, job)", multi=True
        ),
        _query_variable(
            "namespace",
            "Namespace",
            'label_values(lepton_budget_exceeded{job=~"$job"}, namespace)',
            multi=True,
        ),
        _query_variable(
            "pool", "Pool", f"label_values(lepton_workers{{{SEL}}}, pool)", multi=True
        ),
    ]


def annotations() -> list[dict[str, Any]]:
    """Grafana's own annotations, and one mark per scaler decision."""
    return [
        {
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": "orange",
            "name": "Scaler decisions",
            "expr": f"increase(lepton_scaler_decisions_total{{{SEL}}}[$__interval]) > 0",
        },
    ]


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
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "the Prometheus that scrapes the lepton schedulers",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {
                "type": "grafana",
                "id": "grafana",
                "name": "Grafana",
                "version": "10.0.0",
            },
            {
                "type": "datasource",
                "id": "prometheus",
                "name": "Prometheus",
                "version": "1.0.0",
            },
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
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
        "templating": {"list": variables()},
        "annotations": {"list": annotations()},
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
    spend = f"sum(lepton_spend_usd_total{{{POOL}}})"
    rate = f"sum(lepton_spend_rate_usd_per_hour{{{POOL}}})"
    left = f"(max(lepton_budget_usd{{{SEL}}}) - sum(lepton_spend_usd_total{{{SEL}}}))"
    return dashboard(
        "lepton-cost",
        "lepton: cost",
        [
            panel(
                "Spend", [(spend, "USD")], unit="currencyUSD", kind="stat", decimals=4
            ),
            panel(
                "Spend rate",
                [(rate, "USD/h")],
                unit="currencyUSD",
                kind="stat",
                decimals=2,
            ),
            panel(
                "Cost per task",
                [
                    (
                        f"sum(increase(lepton_spend_usd_total{{{POOL}}}[$__range])) / sum(increase(lepton_tasks_completed_total{{{POOL}}}[$__range]))",
                        "USD/task",
                    )
                ],
                unit="currencyUSD",
                kind="stat",
                decimals=6,
                description="spend over tasks completed in the dashboard's time range",
            ),
            panel(
                "Budget exceeded",
                [(f"max(lepton_budget_exceeded{{{SEL}}})", "exceeded")],
                kind="stat",
                thresholds=[(None, "green"), (1, "red")],
                mappings={"0": ("within budget", "green"), "1": ("EXCEEDED", "red")},
                description="1 when a configured budget (per hour or total) is exceeded",
            ),
            panel(
                "Total budget",
                [(f"max(lepton_budget_usd{{{SEL}}})", "USD")],
                unit="currencyUSD",
                kind="stat",
                decimals=2,
            ),
            panel(
                "Time to budget exhaustion",
                [
                    (
                        f"{left} / sum(lepton_spend_rate_usd_per_hour{{{SEL}}}) * 3600",
                        "left",
                    )
                ],
                unit="s",
                kind="stat",
                thresholds=[(None, "red"), (3600, "orange"), (6 * 3600, "green")],
                description="USD left of lepton.cost.budget-usd at the current spend rate",
            ),
            panel(
                "Unpriced workers",
                [(f"max(lepton_unpriced_workers{{{SEL}}})", "unpriced")],
                kind="stat",
                thresholds=[(None, "green"), (1, "red")],
                description="workers whose instance type is missing from the price catalog",
            ),
            panel(
                "Spend in range",
                [(f"sum(increase(lepton_spend_usd_total{{{POOL}}}[$__range]))", "USD")],
                unit="currencyUSD",
                kind="stat",
                decimals=4,
            ),
            panel(
                "Spend rate vs budget",
                [
                    (rate, "spend rate"),
                    (f"max(lepton_budget_usd_per_hour{{{SEL}}})", "budget"),
                ],
                unit="currencyUSD",
                description="USD per hour now, against lepton.cost.budget-usd-per-hour",
            ),
            panel(
                "Cumulative spend vs total budget",
                [(spend, "spend"), (f"max(lepton_budget_usd{{{SEL}}})", "budget")],
                unit="currencyUSD",
            ),
            panel(
                "Spend by pool",
                [(f"sum by (pool) (lepton_spend_usd_total{{{POOL}}})", "{{pool}}")],
                unit="currencyUSD",
                stack=True,
            ),
            panel(
                "Cost per task and per GB",
                [
                    (
                        f"sum(rate(lepton_spend_usd_total{{{POOL}}}[$__rate_interval])) / sum(rate(lepton_tasks_completed_total{{{POOL}}}[$__rate_interval]))",
                        "per task",
                    ),
                    (
                        f"sum(rate(lepton_spend_usd_total{{{POOL}}}[$__rate_interval])) / sum(rate(lepton_computed_bytes_total{{{POOL}}}[$__rate_interval])) * 1e9",
                        "per GB of results",
                    ),
                ],
                unit="currencyUSD",
                description="over each point's interval (not since the scheduler started)",
            ),
        ],
    )


def throughput_dashboard() -> dict[str, Any]:
    busy = f"sum(increase(lepton_task_compute_seconds_total{{{POOL}}}[$__range]))"
    paid = f"sum(increase(lepton_paid_thread_seconds_total{{{POOL}}}[$__range]))"
    return dashboard(
        "lepton-throughput",
        "lepton: throughput",
        [
            panel(
                "Tasks/s",
                [
                    (
                        f"sum(rate(lepton_tasks_completed_total{{{POOL}}}[$__rate_interval]))",
                        "tasks/s",
                    )
                ],
                kind="stat",
                decimals=1,
            ),
            panel(
                "Results",
                [
                    (
                        f"sum(rate(lepton_computed_bytes_total{{{POOL}}}[$__rate_interval]))",
                        "bytes/s",
                    )
                ],
                unit="Bps",
                kind="stat",
            ),
            panel(
                "Utilization",
                [(f"{busy} / {paid}", "busy/paid")],
                unit="percentunit",
                kind="stat",
                description="busy over paid thread-seconds in the dashboard's time range",
            ),
            panel(
                "Workers",
                [(f"sum(dask_scheduler_workers{{{SEL}}})", "workers")],
                kind="stat",
                decimals=0,
            ),
            panel(
                "Tasks per second",
                [
                    (
                        f"sum(lepton_throughput_tasks_per_second{{{SEL}}})",
                        "last minute (monitor)",
                    ),
                    (
                        f"sum by (pool) (rate(lepton_tasks_completed_total{{{POOL}}}[$__rate_interval]))",
                        "{{pool}}",
                    ),
                ],
                unit="ops",
            ),
            panel(
                "Result bytes per second",
                [
                    (
                        f"sum by (pool) (rate(lepton_computed_bytes_total{{{POOL}}}[$__rate_interval]))",
                        "{{pool}}",
                    )
                ],
                unit="Bps",
            ),
            panel(
                "Utilization by pool",
                [
                    (
                        f"sum by (pool) (rate(lepton_task_compute_seconds_total{{{POOL}}}[$__rate_interval])) / sum by (pool) (rate(lepton_paid_thread_seconds_total{{{POOL}}}[$__rate_interval]))",
                        "{{pool}}",
                    )
                ],
                unit="percentunit",
                description="busy thread-seconds over paid thread-seconds, per interval",
            ),
            panel(
                "Queue: tasks by state",
                [(f"sum by (state) (dask_scheduler_tasks{{{SEL}}})", "{{state}}")],
                stack=True,
            ),
        ],
    )


def scaling_dashboard() -> dict[str, Any]:
    return dashboard(
        "lepton-scaling",
        "lepton: scaling",
        [
            panel(
                "Decisions (in range)",
                [
                    (
                        f"sum(increase(lepton_scaler_decisions_total{{{SEL}}}[$__range]))",
                        "decisions",
                    )
                ],
                kind="stat",
                decimals=0,
            ),
            panel(
                "Infeasible",
                [(f"max(lepton_scaler_infeasible{{{SEL}}})", "infeasible")],
                kind="stat",
                thresholds=[(None, "green"), (1, "red")],
                mappings={"0": ("feasible", "green"), "1": ("INFEASIBLE", "red")},
            ),
            panel(
                "Predicted finish",
                [(f"max(lepton_scaler_predicted_finish_seconds{{{SEL}}})", "finish")],
                unit="s",
                kind="stat",
            ),
            panel(
                "Predicted spend",
                [(f"sum(lepton_scaler_predicted_spend_usd{{{SEL}}})", "USD")],
                unit="currencyUSD",
                kind="stat",
                decimals=4,
            ),
            panel(
                "Workers by pool",
                [(f"sum by (pool) (lepton_workers{{{POOL}}})", "{{pool}}")],
                stack=True,
            ),
            panel(
                "Desired vs actual workers",
                [
                    (
                        f"sum by (pool) (lepton_scaler_target_workers{{{POOL}}})",
                        "target {{pool}}",
                    ),
                    (f"sum by (pool) (lepton_workers{{{POOL}}})", "actual {{pool}}"),
                    (f"sum(dask_scheduler_desired_workers{{{SEL}}})", "Dask's desired"),
                ],
                description="what the cost-aware scaler asks for, what is running, and what Dask's own adaptive would ask for",
            ),
            panel(
                "Predicted finish vs deadline",
                [
                    (
                        f"max(lepton_scaler_predicted_finish_seconds{{{SEL}}})",
                        "predicted finish",
                    ),
                    (
                        f"max(lepton_scaler_time_to_deadline_seconds{{{SEL}}})",
                        "time to deadline",
                    ),
                ],
                unit="s",
                description="the deadline policy is on time while the first line is below the second",
            ),
            panel(
                "Forecast vs actual workers",
                [
                    (
                        f"sum(lepton_forecast_workers{{{SEL}}}) or vector(0)",
                        "forecast",
                    ),
                    (
                        f"sum(lepton_prewarmed_workers{{{SEL}}}) or vector(0)",
                        "pre-warmed",
                    ),
                    (f"sum(lepton_workers{{{POOL}}})", "actual"),
                ],
                description="workers the predictive policy wants warm for the next forecast batch, those it launched ahead of one, and those running (0 without a predictive policy)",
            ),
            panel(
                "Forecast hits and misses (in range)",
                [
                    (
                        f"sum(increase(lepton_forecast_hits_total{{{SEL}}}[$__range])) or vector(0)",
                        "hits",
                    ),
                    (
                        f"sum(increase(lepton_forecast_misses_total{{{SEL}}}[$__range])) or vector(0)",
                        "misses",
                    ),
                ],
                kind="stat",
                decimals=0,
                description="forecast batches that arrived in their window, and those that did not (three misses in five switch the forecast off)",
            ),
            panel(
                "Decisions per minute",
                [
                    (
                        f"sum(rate(lepton_scaler_decisions_total{{{SEL}}}[$__rate_interval])) * 60",
                        "decisions/min",
                    )
                ],
            ),
        ],
    )


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


def expressions(
    dash: dict[str, Any], values: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every query in a dashboard, and of its
    query annotations; ``values`` replaces ``$name`` variables (longest
    names first) as Grafana would, e.g. ``{"job": ".*", "__range": "5m"}``."""
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]
    out += [
        (f"annotation: {a['name']}", a["expr"])
        for a in dash["annotations"]["list"]
        if "expr" in a
    ]
    for name in sorted(values or {}, key=len, reverse=True):
        out = [(t, e.replace(f"${name}", values[name])) for t, e in out]
    return out


def sidecar_configmap(name: str, namespace: str) -> dict[str, Any]:
    """The dashboards as one ConfigMap for the Grafana sidecar (kube-prometheus-
    stack's ``grafana.sidecar.dashboards``), which loads every ConfigMap
    labelled ``grafana_dashboard``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "lepton"},
            "annotations": {"grafana_folder": "lepton"},
        },
        "data": {
            fname: json.dumps(fn(), indent=2, sort_keys=True)
            for fname, fn in DASHBOARDS.items()
        },
    }


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
