"""The deployment spec: what a Kubernetes deployment of lepton-dask is made
of, and how its settings reach the pods.

A :class:`DeploySpec` (cluster name, namespace, image, the
:class:`WorkerGroup` pools, the scaler's policy and budgets) is all the
Kubernetes manifests (:mod:`lepton_dask.deploy.kubernetes`) and the Helm
chart (:mod:`lepton_dask.deploy.helm`) are generated from; it refuses at
construction what the cluster would refuse at start (an unpinned image, a GPU
group without a GPU image, a policy its scaler could not build). Here too is
the wiring every pod shares: the ports, the MongoDB Secret and the settings
passed as environment variables (:func:`container_env`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lepton_dask._version import __version__
from lepton_dask.deploy.sizing import PodSize, node_selector, pod_size
from lepton_dask.scaling.registry import DEFAULT_DEADLINE_S

__all__ = [
    "DASHBOARD_PORT",
    "DEFAULT_DEADLINE",
    "GPU_IMAGE",
    "IMAGE",
    "MONGO_SECRET",
    "SCHEDULER_PORT",
    "WORKER_DASHBOARD_PORT",
    "DeploySpec",
    "WorkerGroup",
    "container_env",
    "default_groups",
    "env_value",
    "group_resource",
    "parse_pool",
    "scaling_config",
]

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


def env_value(value: Any) -> str:
    """A setting as an environment value: numbers as Helm prints them (600,
    not 600.0), so the chart renders the same text.

    >>> env_value(600.0), env_value(2.5), env_value("slo")
    ('600', '2.5', 'slo')
    """
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def container_env(spec: DeploySpec, group: WorkerGroup | None) -> list[dict[str, Any]]:
    """The environment of a container: the MongoDB URI (from the
    :data:`MONGO_SECRET` Secret) for all; the budgets, as ``lepton.cost``
    settings, on the scheduler side (``group`` None); a worker's instance
    type, pricing and pool for a worker of ``group``."""
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
                env.append(
                    {"name": f"DASK_LEPTON__COST__{key}", "value": env_value(value)}
                )
    else:
        env += [
            {"name": "LEPTON_INSTANCE_TYPE", "value": group.instance_type},
            {"name": "LEPTON_PRICING", "value": group.pricing},
            {"name": "LEPTON_POOL", "value": group.name},
        ]
    return env
