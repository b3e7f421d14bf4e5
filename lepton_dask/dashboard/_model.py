"""The Grafana dashboard model: constants, panels, variables, annotations and
a dashboard, as plain dicts (see :mod:`lepton_dask.dashboard.grafana`)."""

from __future__ import annotations

from typing import Any

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
