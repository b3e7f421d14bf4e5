"""Kubernetes manifests for the dask-kubernetes operator, from pure functions.

``deploy/kubernetes/*.yaml`` are written by ``lepton-dask deploy kubernetes``;
a test checks the committed files are what :func:`manifests` generates, the
one entry that assembles them from a :class:`~lepton_dask.deploy.spec.DeploySpec`.

What they describe:

* a ``DaskCluster`` (scheduler with the lepton plugins, a CPU worker group)
  and a ``DaskWorkerGroup`` per extra pool (e.g. GPU workers with
  ``nvidia.com/gpu`` limits and the ``GPU`` Dask resource): built here;
* MongoDB as an external URI in the ``lepton-mongo`` Secret (created by you,
  never in the repository);
* a Prometheus Operator ``ServiceMonitor`` (scheduler) and ``PodMonitor``
  (workers), the alerting rules and a ConfigMap of the Grafana dashboards
  for the Grafana sidecar (:mod:`lepton_dask.deploy.monitoring`);
* the cost-aware scaler (:mod:`lepton_dask.deploy.k8s_scaler`): a Deployment
  (``strategy: Recreate``: never two at once) with a ServiceAccount allowed
  to resize the worker groups and delete the worker Deployments it retired
  (:mod:`lepton_dask.deploy.scaler_manifests`).
"""

from __future__ import annotations

from typing import Any

import yaml

from lepton_dask.deploy.monitoring import grafana_dashboards, monitoring
from lepton_dask.deploy.scaler_manifests import scaler
from lepton_dask.deploy.sizing import node_selector
from lepton_dask.deploy.spec import (
    DASHBOARD_PORT,
    SCHEDULER_PORT,
    WORKER_DASHBOARD_PORT,
    DeploySpec,
    WorkerGroup,
    container_env,
    group_resource,
)

__all__ = ["HEADER", "dask_cluster", "manifests", "render", "worker_groups"]

API = "kubernetes.dask.org/v1"


def _worker_spec(spec: DeploySpec, group: WorkerGroup) -> dict[str, Any]:
    size = group.size
    args = [
        "dask",
        "worker",
        "--name",
        "$(DASK_WORKER_NAME)",
        "--nthreads",
        str(group.nthreads),
        "--memory-limit",
        size.dask_memory_limit,
        "--dashboard-address",
        str(WORKER_DASHBOARD_PORT),
        "--preload",
        "lepton_dask.cost.preload",
    ]
    # requests == limits: the pod fills its node and is never throttled or
    # evicted for going over what it was scheduled with (Guaranteed QoS)
    amounts: dict[str, str] = {"cpu": size.cpu, "memory": size.memory}
    if group.kind == "gpu":
        args += ["--resources", f"GPU={size.gpus}"]
        amounts["nvidia.com/gpu"] = str(size.gpus)  # quantities are strings
    container = {
        "name": "worker",
        "image": group.image or spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": container_env(spec, group),
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT}],
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
    }
    pod: dict[str, Any] = {
        "nodeSelector": node_selector(
            group.instance_type, group.pricing, spec.capacity_label
        ),
        "containers": [container],
    }
    if group.kind == "gpu":
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"replicas": group.replicas, "spec": pod}


def dask_cluster(spec: DeploySpec) -> dict[str, Any]:
    """The ``DaskCluster``: scheduler with the lepton plugins, default group."""
    labels = {"dask.org/cluster-name": spec.name, "dask.org/component": "scheduler"}
    scheduler = {
        "name": "scheduler",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "dask",
            "scheduler",
            "--port",
            str(SCHEDULER_PORT),
            "--dashboard-address",
            f":{DASHBOARD_PORT}",
            "--preload",
            "lepton_dask.cost.preload",
        ],
        "env": container_env(spec, None),
        "ports": [
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT},
            {"name": "http-dashboard", "containerPort": DASHBOARD_PORT},
        ],
        "readinessProbe": {
            "httpGet": {"port": "http-dashboard", "path": "/health"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
        },
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
    }
    return {
        "apiVersion": API,
        "kind": "DaskCluster",
        "metadata": {"name": spec.name, "namespace": spec.namespace},
        "spec": {
            "worker": _worker_spec(spec, spec.groups[0]),
            "scheduler": {
                "spec": {"containers": [scheduler]},
                "service": {
                    "type": "ClusterIP",
                    "selector": labels,
                    "ports": [
                        {
                            "name": "tcp-comm",
                            "protocol": "TCP",
                            "port": SCHEDULER_PORT,
                            "targetPort": "tcp-comm",
                        },
                        {
                            "name": "http-dashboard",
                            "protocol": "TCP",
                            "port": DASHBOARD_PORT,
                            "targetPort": "http-dashboard",
                        },
                    ],
                },
            },
        },
    }


def worker_groups(spec: DeploySpec) -> list[dict[str, Any]]:
    """One ``DaskWorkerGroup`` per group after the first."""
    out = []
    for g in spec.groups[1:]:
        _, name = group_resource(spec, g)
        # the operator names a group's workers after the group resource
        out.append(
            {
                "apiVersion": API,
                "kind": "DaskWorkerGroup",
                "metadata": {"name": name, "namespace": spec.namespace},
                "spec": {"cluster": spec.name, "worker": _worker_spec(spec, g)},
            }
        )
    return out


def manifests(spec: DeploySpec | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every manifest, grouped by the file it is written to: the namespace,
    the cluster (built here), its monitoring and its scaler."""
    spec = spec or DeploySpec()
    return {
        "namespace.yaml": [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": spec.namespace},
            }
        ],
        "dask-cluster.yaml": [dask_cluster(spec), *worker_groups(spec)],
        "monitoring.yaml": monitoring(spec),
        "scaler.yaml": scaler(spec),
        "grafana-dashboards.yaml": [grafana_dashboards(spec)],
    }


HEADER = "# generated by `lepton-dask deploy kubernetes` from lepton_dask/deploy/kubernetes.py\n"


def render(spec: DeploySpec | None = None) -> dict[str, str]:
    """File name -> YAML text."""
    return {
        name: HEADER + yaml.safe_dump_all(docs, sort_keys=False)
        for name, docs in manifests(spec).items()
    }
