"""Monitoring objects: how the Prometheus Operator finds the metrics of a
deployment, the alerts it raises, and the Grafana dashboards.

A ``ServiceMonitor`` scrapes the scheduler's ``/metrics`` (the CostMonitor's
``lepton_*`` metrics), a ``PodMonitor`` the workers', and a
``PrometheusRule`` holds the alerting rules (:mod:`lepton_dask.deploy.alerts`);
each carries the ``release`` label the operator's selectors match. The
dashboards ship as a ConfigMap that the Grafana sidecar loads.
"""

from __future__ import annotations

from typing import Any

from lepton_dask.dashboard import grafana
from lepton_dask.deploy import alerts
from lepton_dask.deploy.spec import DeploySpec

__all__ = ["grafana_dashboards", "monitoring"]


def monitoring(spec: DeploySpec) -> list[dict[str, Any]]:
    """Prometheus Operator scrape configuration for scheduler and workers, and
    the alerting rules (:mod:`lepton_dask.deploy.alerts`), each labelled with
    ``release`` so that the operator's selectors pick them up."""

    def meta(name: str) -> dict[str, Any]:
        return {
            "name": f"{spec.name}-{name}",
            "namespace": spec.namespace,
            "labels": {"release": spec.release, "app.kubernetes.io/part-of": "lepton"},
        }

    endpoint = {
        "port": "http-dashboard",
        "path": "/metrics",
        "interval": spec.scrape_interval,
    }
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": meta("scheduler"),
            "spec": {
                "selector": {
                    "matchLabels": {
                        "dask.org/cluster-name": spec.name,
                        "dask.org/component": "scheduler",
                    }
                },
                "endpoints": [endpoint],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": meta("workers"),
            "spec": {
                "selector": {
                    "matchLabels": {
                        "dask.org/cluster-name": spec.name,
                        "dask.org/component": "worker",
                    }
                },
                "podMetricsEndpoints": [endpoint],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": meta("alerts"),
            "spec": {"groups": alerts.rules(scheduler_job=spec.scheduler_job)},
        },
    ]


def grafana_dashboards(spec: DeploySpec) -> dict[str, Any]:
    """The ConfigMap of the Grafana dashboards, for the Grafana sidecar."""
    return grafana.sidecar_configmap(f"{spec.name}-dashboards", spec.namespace)
