"""Kubernetes manifests for the dask-kubernetes operator, from pure functions.

``deploy/kubernetes/*.yaml`` are written by ``lepton-dask deploy kubernetes``;
a test checks the committed files are what :func:`manifests` generates.

What they describe:

* a ``DaskCluster`` (scheduler with the lepton plugins, a CPU worker group)
  and a ``DaskWorkerGroup`` per extra pool (e.g. GPU workers with
  ``nvidia.com/gpu`` limits and the ``GPU`` Dask resource);
* MongoDB as an external URI in the ``lepton-mongo`` Secret (created by you,
  never in the repository);
* a Prometheus Operator ``ServiceMonitor`` (scheduler) and ``PodMonitor``
  (workers);
* the cost-aware scaler (:mod:`lepton_dask.deploy.k8s_scaler`): a Deployment
  with a ServiceAccount allowed to patch the worker groups' replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from lepton_dask import __version__

API = "kubernetes.dask.org/v1"
#: images built from deploy/docker/ (tags pinned to the package version)
IMAGE = f"ghcr.io/lepton-dask/lepton-dask:{__version__}"
GPU_IMAGE = f"ghcr.io/lepton-dask/lepton-dask:{__version__}-cuda12"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
MONGO_SECRET = "lepton-mongo"


@dataclass(frozen=True)
class WorkerGroup:
    """A pool of workers: one ``DaskWorkerGroup`` (or the cluster's default group).

    ``kind="gpu"`` needs an explicit GPU ``image`` (with CUDA and cupy): a GPU
    group on the CPU image would start workers that cannot run GPU tasks.
    """

    name: str
    instance_type: str
    kind: str = "cpu"
    pricing: str = "on-demand"
    image: str | None = None
    threads: int = 2
    memory: str = "8Gi"
    replicas: int = 0
    min_replicas: int = 0
    max_replicas: int = 10
    gpus: int = 1

    def __post_init__(self):
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(
                f"worker group {self.name!r}: kind must be 'cpu' or 'gpu', got {self.kind!r}"
            )
        if self.kind == "gpu" and (self.image is None or self.image == IMAGE):
            raise ValueError(
                f"worker group {self.name!r} is a GPU group but has no GPU image: "
                f"set image= to a CUDA image with cupy (e.g. {GPU_IMAGE})"
            )
        if not 0 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"worker group {self.name!r}: need 0 <= min_replicas <= replicas <= "
                f"max_replicas, got {self.min_replicas}, {self.replicas}, {self.max_replicas}"
            )
        if self.image is not None and not _pinned(self.image):
            raise ValueError(
                f"worker group {self.name!r}: image {self.image!r} is not pinned "
                "(give a version tag or a digest, not :latest)"
            )


@dataclass(frozen=True)
class DeploySpec:
    """Everything the manifests are generated from."""

    name: str = "lepton"
    namespace: str = "lepton"
    image: str = IMAGE
    groups: tuple[WorkerGroup, ...] = field(
        default_factory=lambda: (
            WorkerGroup("cpu", "m6i.large", replicas=2, min_replicas=1, max_replicas=50),
            WorkerGroup(
                "gpu", "g5.xlarge", kind="gpu", image=GPU_IMAGE, threads=1,
                memory="16Gi", replicas=0, max_replicas=8,
            ),
        )
    )  # fmt: skip
    scaler_policy: str = "balanced"
    scaler_interval: str = "10s"

    def __post_init__(self):
        if not self.groups or self.groups[0].kind != "cpu":
            raise ValueError(
                "the first worker group (the cluster's default) must be CPU"
            )
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"worker group names must be unique, got {names}")
        if not _pinned(self.image):
            raise ValueError(f"image {self.image!r} is not pinned")


def _pinned(image: str) -> bool:
    """``True`` for ``repo:tag`` (tag not ``latest``) or ``repo@sha256:...``.

    >>> _pinned("mongo:7.0.14"), _pinned("mongo"), _pinned("mongo:latest")
    (True, False, False)
    """
    if "@sha256:" in image:
        return True
    repo, _, tag = image.rpartition(":")
    return bool(repo) and "/" not in tag and tag not in ("", "latest")


def group_resource(spec: DeploySpec, group: WorkerGroup) -> tuple[str, str]:
    """(kind, name) of the resource whose ``spec.worker.replicas`` sizes ``group``.

    The first group is the DaskCluster's own; the operator names the others'
    DaskWorkerGroups ``<cluster>-<group>``.
    """
    if group is spec.groups[0]:
        return "DaskCluster", spec.name
    return "DaskWorkerGroup", f"{spec.name}-{group.name}"


def _env(spec: DeploySpec, group: WorkerGroup | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {
            "name": "LEPTON_MONGO_URI",
            "valueFrom": {"secretKeyRef": {"name": MONGO_SECRET, "key": "uri"}},
        },
    ]
    if group is not None:
        env += [
            {"name": "LEPTON_INSTANCE_TYPE", "value": group.instance_type},
            {"name": "LEPTON_PRICING", "value": group.pricing},
            {"name": "LEPTON_POOL", "value": group.name},
        ]
    return env


def _worker_spec(spec: DeploySpec, group: WorkerGroup) -> dict[str, Any]:
    args = [
        "dask",
        "worker",
        "--name",
        "$(DASK_WORKER_NAME)",
        "--nthreads",
        str(group.threads),
        "--memory-limit",
        group.memory.replace("Gi", "GiB"),
        "--dashboard-address",
        str(WORKER_DASHBOARD_PORT),
        "--preload",
        "lepton_dask.cost.preload",
    ]
    resources: dict[str, Any] = {
        "requests": {"cpu": str(group.threads), "memory": group.memory},
        "limits": {"memory": group.memory},
    }
    if group.kind == "gpu":
        args += ["--resources", f"GPU={group.gpus}"]
        resources["limits"]["nvidia.com/gpu"] = group.gpus
    container = {
        "name": "worker",
        "image": group.image or spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": _env(spec, group),
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT}],
        "resources": resources,
    }
    pod: dict[str, Any] = {"containers": [container]}
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
        "env": _env(spec, None),
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
        out.append(
            {
                "apiVersion": API,
                "kind": "DaskWorkerGroup",
                "metadata": {"name": name, "namespace": spec.namespace},
                "spec": {"cluster": spec.name, "worker": _worker_spec(spec, g)},
            }
        )
    return out


def monitoring(spec: DeploySpec) -> list[dict[str, Any]]:
    """Prometheus Operator scrape configuration for scheduler and workers."""
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": f"{spec.name}-scheduler", "namespace": spec.namespace},
            "spec": {
                "selector": {
                    "matchLabels": {
                        "dask.org/cluster-name": spec.name,
                        "dask.org/component": "scheduler",
                    }
                },
                "endpoints": [
                    {"port": "http-dashboard", "path": "/metrics", "interval": "15s"}
                ],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": f"{spec.name}-workers", "namespace": spec.namespace},
            "spec": {
                "selector": {
                    "matchLabels": {
                        "dask.org/cluster-name": spec.name,
                        "dask.org/component": "worker",
                    }
                },
                "podMetricsEndpoints": [
                    {"port": "http-dashboard", "path": "/metrics", "interval": "15s"}
                ],
            },
        },
    ]


def scaler_groups(spec: DeploySpec) -> list[dict[str, Any]]:
    """What the scaler needs to know of each group (its ``--groups`` file)."""
    out = []
    for g in spec.groups:
        kind, name = group_resource(spec, g)
        out.append(
            {
                "pool": g.name, "resource": kind, "name": name, "kind": g.kind,
                "instance_type": g.instance_type, "pricing": g.pricing,
                "threads": g.threads, "min_replicas": g.min_replicas,
                "max_replicas": g.max_replicas, "startup_s": 90 if g.kind == "gpu" else 60,
            }
        )  # fmt: skip
    return out


def scaler(spec: DeploySpec) -> list[dict[str, Any]]:
    """The cost-aware scaler: RBAC and a one-replica Deployment."""
    name = f"{spec.name}-scaler"
    meta = {"name": name, "namespace": spec.namespace}
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {"groups.yaml": yaml.safe_dump(scaler_groups(spec), sort_keys=False)},
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        config,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": ["kubernetes.dask.org"],
                    "resources": ["daskclusters", "daskworkergroups"],
                    "verbs": ["get", "list", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": name,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}
            ],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [
                            {
                                "name": "scaler",
                                "image": spec.image,
                                "imagePullPolicy": "IfNotPresent",
                                "args": [
                                    "lepton-dask",
                                    "k8s-scaler",
                                    "--scheduler",
                                    f"tcp://{spec.name}-scheduler:{SCHEDULER_PORT}",
                                    "--namespace",
                                    spec.namespace,
                                    "--groups",
                                    "/etc/lepton/groups.yaml",
                                    "--interval",
                                    spec.scaler_interval,
                                ],
                                "env": [
                                    *_env(spec, None),
                                    {
                                        "name": "DASK_LEPTON__SCALING__POLICY",
                                        "value": spec.scaler_policy,
                                    },
                                ],
                                "volumeMounts": [
                                    {"name": "groups", "mountPath": "/etc/lepton"}
                                ],
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "256Mi"}
                                },
                            }
                        ],
                        "volumes": [{"name": "groups", "configMap": {"name": name}}],
                    },
                },
            },
        },
    ]


def manifests(spec: DeploySpec | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every manifest, grouped by the file it is written to."""
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
    }


HEADER = "# generated by `lepton-dask deploy kubernetes` from lepton_dask/deploy/kubernetes.py\n"


def render(spec: DeploySpec | None = None) -> dict[str, str]:
    """File name -> YAML text."""
    return {
        name: HEADER + yaml.safe_dump_all(docs, sort_keys=False)
        for name, docs in manifests(spec).items()
    }
