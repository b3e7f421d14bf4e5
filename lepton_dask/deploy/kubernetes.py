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
  (``strategy: Recreate``: never two at once) with a ServiceAccount allowed
  to resize the worker groups and delete the worker Deployments it retired;
* a ConfigMap of the Grafana dashboards for the Grafana sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from lepton_dask._version import __version__
from lepton_dask.dashboard import grafana
from lepton_dask.deploy import alerts
from lepton_dask.deploy.sizing import PodSize, node_selector, pod_size
from lepton_dask.scaling.registry import DEFAULT_DEADLINE_S

API = "kubernetes.dask.org/v1"
#: images built from deploy/docker/ (tags pinned to the package version)
IMAGE = f"ghcr.io/lepton-dask/lepton-dask:{__version__}"
GPU_IMAGE = f"ghcr.io/lepton-dask/lepton-dask:{__version__}-cuda12"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
MONGO_SECRET = "lepton-mongo"
#: seconds: the deadline of each batch under the default (SLO) policy, the
#: policy's own default, written into the manifests and the chart's values
#: where a reader sees it
DEFAULT_DEADLINE = DEFAULT_DEADLINE_S


@dataclass(frozen=True)
class WorkerGroup:
    """A pool of workers: one ``DaskWorkerGroup`` (or the cluster's default group).

    Its pods are sized to fill one node of ``instance_type`` (the catalog's
    allocatable table, :func:`~lepton_dask.deploy.sizing.pod_size`) and are
    tied to such nodes of the ``pricing``'s capacity type by a nodeSelector.
    ``threads`` defaults to the instance's vCPUs. A GPU instance type makes a
    GPU group, which needs an explicit GPU ``image`` (with CUDA and cupy): a
    GPU group on the CPU image would start workers that cannot run GPU tasks.
    """

    name: str
    instance_type: str
    kind: str | None = None
    pricing: str = "on-demand"
    image: str | None = None
    threads: int | None = None
    replicas: int = 0
    min_replicas: int = 0
    max_replicas: int = 10

    def __post_init__(self):
        size = pod_size(self.instance_type)  # raises for an unknown type
        kind = "gpu" if size.gpus else "cpu"
        if self.kind is None:
            object.__setattr__(self, "kind", kind)
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(
                f"worker group {self.name!r}: kind must be 'cpu' or 'gpu', got {self.kind!r}"
            )
        if self.kind != kind:
            raise ValueError(
                f"worker group {self.name!r}: {self.instance_type} has "
                f"{size.gpus} GPUs, so the group is {kind}, not {self.kind}"
            )
        if self.pricing not in ("on-demand", "spot"):
            raise ValueError(
                f"worker group {self.name!r}: pricing must be 'on-demand' or "
                f"'spot', got {self.pricing!r}"
            )
        if self.threads is not None and not 1 <= self.threads <= size.threads:
            raise ValueError(
                f"worker group {self.name!r}: threads must be 1..{size.threads} "
                f"(the vCPUs of {self.instance_type}), got {self.threads}"
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

    @property
    def size(self) -> PodSize:
        return pod_size(self.instance_type)

    @property
    def nthreads(self) -> int:
        """Dask threads: as given, else one per GPU or one per vCPU."""
        if self.threads:
            return self.threads
        return self.size.gpus if self.kind == "gpu" else self.size.threads


def default_groups() -> tuple[WorkerGroup, ...]:
    """A CPU pool on m6i.large (on-demand) and a GPU pool on g5.xlarge."""
    return (
        WorkerGroup("cpu", "m6i.large", replicas=2, min_replicas=1, max_replicas=50),
        WorkerGroup("gpu", "g5.xlarge", image=GPU_IMAGE, replicas=0, max_replicas=8),
    )


def parse_pool(text: str) -> WorkerGroup:
    """A worker group from ``NAME=TYPE[:PRICING][,key=value...]`` (the CLI's
    ``--pool``); keys: replicas, min, max, threads, image. A GPU type without
    ``image=`` gets :data:`GPU_IMAGE`.

    >>> g = parse_pool("gpu=g5.xlarge:spot,max=4")
    >>> g.kind, g.pricing, g.max_replicas, g.image == GPU_IMAGE
    ('gpu', 'spot', 4, True)
    """
    head, *opts = text.split(",")
    name, sep, itype = head.partition("=")
    if not sep or not name or not itype:
        raise ValueError(f"--pool {text!r}: expected NAME=TYPE[:PRICING][,key=value]")
    itype, _, pricing = itype.partition(":")
    kw: dict[str, Any] = {"pricing": pricing or "on-demand"}
    keys = {"replicas": "replicas", "min": "min_replicas", "max": "max_replicas"}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if key in keys:
            kw[keys[key]] = int(value)
        elif key == "threads":
            kw["threads"] = int(value)
        elif key == "image":
            kw["image"] = value
        else:
            raise ValueError(
                f"--pool {text!r}: unknown option {key!r} "
                "(use replicas, min, max, threads, image)"
            )
    if pod_size(itype).gpus and "image" not in kw:
        kw["image"] = GPU_IMAGE
    kw.setdefault("replicas", kw.get("min_replicas", 0))
    kw.setdefault("max_replicas", max(10, kw["replicas"]))
    return WorkerGroup(name, itype, **kw)


@dataclass(frozen=True)
class DeploySpec:
    """Everything the manifests are generated from.

    ``release`` is the ``release`` label the Prometheus Operator's monitor
    and rule selectors match (kube-prometheus-stack selects its Helm release
    name); ``capacity_label`` the node label of spot/on-demand capacity
    (:data:`~lepton_dask.deploy.sizing.CAPACITY_LABELS`); budgets become the
    scheduler's ``lepton.cost.budget-*`` settings.
    """

    name: str = "lepton"
    namespace: str = "lepton"
    image: str = IMAGE
    groups: tuple[WorkerGroup, ...] = field(default_factory=default_groups)
    #: None: the SLO policy, with a deadline of :data:`DEFAULT_DEADLINE`
    #: seconds unless a deadline or latency is given
    scaler_policy: str | None = None
    scaler_interval: str = "10s"
    #: the SLO terms of ``slo`` and ``predictive`` (lepton.scaling.deadline,
    #: latency) and the workload key a predictive scaler learns under
    scaler_deadline: float | None = None
    scaler_latency: float | None = None
    workload: str | None = None
    release: str = "kube-prometheus-stack"
    capacity_label: str = "karpenter.sh/capacity-type"
    budget_usd_per_hour: float | None = None
    budget_usd: float | None = None
    scrape_interval: str = "15s"

    def __post_init__(self):
        if self.scaler_policy is None:  # the README's recommendation
            object.__setattr__(self, "scaler_policy", "slo")
            if self.scaler_deadline is None and self.scaler_latency is None:
                object.__setattr__(self, "scaler_deadline", DEFAULT_DEADLINE)
        if not self.groups or self.groups[0].kind != "cpu":
            raise ValueError(
                "the first worker group (the cluster's default) must be CPU"
            )
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"worker group names must be unique, got {names}")
        if "default" in names[1:]:
            raise ValueError("'default' names the cluster's own group; rename it")
        if not _pinned(self.image):
            raise ValueError(f"image {self.image!r} is not pinned")
        for g in self.groups:
            node_selector(g.instance_type, g.pricing, self.capacity_label)
        for b in (self.budget_usd_per_hour, self.budget_usd):
            if b is not None and not b > 0:
                raise ValueError(f"budgets must be > 0, got {b}")
        _check_policy(self)

    @property
    def scheduler_job(self) -> str:
        """The ``job`` label Prometheus gives the scheduler (the Service name)."""
        return f"{self.name}-scheduler"


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

    Every group is a DaskWorkerGroup: the operator makes the DaskCluster's
    own one ``<cluster>-default`` (and scales it, not the DaskCluster, when
    the cluster is adapted), the others are ``<cluster>-<group>``.

    >>> spec = DeploySpec()
    >>> [group_resource(spec, g) for g in spec.groups]
    [('DaskWorkerGroup', 'lepton-default'), ('DaskWorkerGroup', 'lepton-gpu')]
    """
    if group is spec.groups[0]:
        return "DaskWorkerGroup", f"{spec.name}-default"
    return "DaskWorkerGroup", f"{spec.name}-{group.name}"


def scaling_config(spec: DeploySpec) -> dict[str, Any]:
    """The ``lepton.scaling`` settings the scaler runs with (and the
    workload key), as the environment gives them to it."""
    cfg: dict[str, Any] = {"policy": spec.scaler_policy}
    if spec.scaler_deadline is not None:
        cfg["deadline"] = float(spec.scaler_deadline)
    if spec.scaler_latency is not None:
        cfg["latency"] = float(spec.scaler_latency)
    return cfg


def _check_policy(spec: DeploySpec) -> None:
    """Refuse a policy its scaler would refuse at start: built here by the
    same factory (``policy_from_config``), without reading any history."""
    import dask.config

    from lepton_dask.scaling.registry import policy_from_config

    if spec.workload is not None and not str(spec.workload).strip():
        raise ValueError("workload must be a non-empty name")
    with dask.config.set({"lepton.workload": None}):
        policy_from_config(
            {**dask.config.get("lepton.scaling"), **scaling_config(spec)}
        )


def _text(value: Any) -> str:
    """A setting as an environment value: numbers as Helm prints them (600,
    not 600.0), so the chart renders the same text.

    >>> _text(600.0), _text(2.5), _text("slo")
    ('600', '2.5', 'slo')
    """
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _scaler_env(spec: DeploySpec) -> list[dict[str, Any]]:
    env = [
        {"name": f"DASK_LEPTON__SCALING__{k.upper()}", "value": _text(v)}
        for k, v in scaling_config(spec).items()
    ]
    if spec.workload is not None:
        env.append({"name": "DASK_LEPTON__WORKLOAD", "value": spec.workload})
    return env


def _env(spec: DeploySpec, group: WorkerGroup | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {
            "name": "LEPTON_MONGO_URI",
            "valueFrom": {"secretKeyRef": {"name": MONGO_SECRET, "key": "uri"}},
        },
    ]
    if group is None:
        for key, value in (
            ("BUDGET_USD_PER_HOUR", spec.budget_usd_per_hour),
            ("BUDGET_USD", spec.budget_usd),
        ):
            if value is not None:
                env.append({"name": f"DASK_LEPTON__COST__{key}", "value": _text(value)})
    else:
        env += [
            {"name": "LEPTON_INSTANCE_TYPE", "value": group.instance_type},
            {"name": "LEPTON_PRICING", "value": group.pricing},
            {"name": "LEPTON_POOL", "value": group.name},
        ]
    return env


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
        "env": _env(spec, group),
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


def scaler_groups(spec: DeploySpec) -> list[dict[str, Any]]:
    """What the scaler needs to know of each group (its ``--groups`` file)."""
    out = []
    for g in spec.groups:
        kind, name = group_resource(spec, g)
        out.append(
            {
                "pool": g.name,
                "resource": kind,
                "name": name,
                "kind": g.kind,
                "cluster": spec.name,
                "default": g is spec.groups[0],
                "instance_type": g.instance_type,
                "pricing": g.pricing,
                "threads": g.nthreads,
                "min_replicas": g.min_replicas,
                "max_replicas": g.max_replicas,
                "startup_s": 90 if g.kind == "gpu" else 60,
            }
        )
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
        *_scaler_rbac(spec, name, meta),
        _scaler_deployment(spec, name, meta),
    ]


def _scaler_rbac(spec: DeploySpec, name: str, meta: dict) -> list[dict[str, Any]]:
    """The scaler's Role and its binding to the scaler's ServiceAccount."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        # what the scaler does and nothing more: read and resize worker
        # groups, see DaskAutoscalers (it refuses to run beside one),
        # list its workers' Deployments and delete those it retired
        "rules": [
            {
                "apiGroups": ["kubernetes.dask.org"],
                "resources": ["daskworkergroups"],
                "verbs": ["get", "patch"],
            },
            {
                "apiGroups": ["kubernetes.dask.org"],
                "resources": ["daskautoscalers"],
                "verbs": ["list"],
            },
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["list", "delete"],
            },
        ],
    }
    binding = {
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
    }
    return [role, binding]


def _scaler_deployment(spec: DeploySpec, name: str, meta: dict) -> dict[str, Any]:
    """One scaler replica, never two at once (RollingUpdate starts the new one
    before the old one stops)."""
    container = {
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
        "env": [*_env(spec, None), *_scaler_env(spec)],
        "volumeMounts": [{"name": "groups", "mountPath": "/etc/lepton"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "serviceAccountName": name,
                    "containers": [container],
                    "volumes": [{"name": "groups", "configMap": {"name": name}}],
                },
            },
        },
    }


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
        "grafana-dashboards.yaml": [
            grafana.sidecar_configmap(f"{spec.name}-dashboards", spec.namespace)
        ],
    }


HEADER = "# generated by `lepton-dask deploy kubernetes` from lepton_dask/deploy/kubernetes.py\n"


def render(spec: DeploySpec | None = None) -> dict[str, str]:
    """File name -> YAML text."""
    return {
        name: HEADER + yaml.safe_dump_all(docs, sort_keys=False)
        for name, docs in manifests(spec).items()
    }
