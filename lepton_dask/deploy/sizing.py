"""Pod sizes and node selectors that match the instance a pool is priced as.

A worker pod of a pool priced as ``m6i.large`` must land on an ``m6i.large``
node (of the pricing's capacity type, spot or on-demand) and fit in what that
node offers to pods: its *allocatable* resources, less room for the node's
DaemonSets. Both come from the ``kubernetes-allocatable`` table of the price
catalog (``lepton_dask/cost/catalog.yaml``), which states its source.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import dask
import yaml

from lepton_dask.cost.catalog import DEFAULT_CATALOG, load_catalog

#: the well-known node label of the instance type (set by the kubelet)
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
#: capacity-type labels of the common node provisioners, with their values
CAPACITY_LABELS: dict[str, dict[str, str]] = {
    "karpenter.sh/capacity-type": {"spot": "spot", "on-demand": "on-demand"},
    "eks.amazonaws.com/capacityType": {"spot": "SPOT", "on-demand": "ON_DEMAND"},
    "cloud.google.com/gke-spot": {"spot": "true", "on-demand": "false"},
}


@dataclass(frozen=True)
class PodSize:
    """What one worker pod requests (and is limited to) on its node type.

    >>> s = pod_size("m6i.large")
    >>> s.cpu, s.memory, s.threads, s.gpus
    ('1680m', '6596Mi', 2, 0)
    """

    instance_type: str
    cpu: str
    memory: str
    memory_mi: int
    threads: int
    gpus: int

    @property
    def dask_memory_limit(self) -> str:
        """The worker's ``--memory-limit`` (the pod's memory limit).

        >>> pod_size("m6i.large").dask_memory_limit
        '6596MiB'
        """
        return f"{self.memory_mi}MiB"


def allocatable_table(path: str | None = None) -> dict[str, Any]:
    """The catalog's ``kubernetes-allocatable`` table.

    >>> sorted(allocatable_table())
    ['daemonset-reserve', 'instance-types', 'source']
    """
    path = path or dask.config.get("lepton.cost.catalog") or DEFAULT_CATALOG
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    table = data.get("kubernetes-allocatable")
    if not isinstance(table, dict) or not isinstance(table.get("instance-types"), dict):
        raise ValueError(
            f"{path}: no 'kubernetes-allocatable' table with 'instance-types'"
        )
    return table


def pod_size(instance_type: str, catalog: str | None = None) -> PodSize:
    """Requests for a worker pod that fills one node of ``instance_type``:
    its allocatable CPU and memory less the DaemonSet reserve; one Dask thread
    per vCPU; every GPU of the instance."""
    table = allocatable_table(catalog)
    types = table["instance-types"]
    if instance_type not in types:
        near = difflib.get_close_matches(str(instance_type), list(types), n=3)
        raise ValueError(
            f"instance type {instance_type!r} has no Kubernetes allocatable "
            "resources in the catalog"
            + (f"; did you mean {' or '.join(map(repr, near))}?" if near else "")
            + f" (known: {', '.join(sorted(types))})"
        )
    alloc = types[instance_type]
    reserve = table.get("daemonset-reserve", {"cpu-m": 0, "memory-mi": 0})
    cpu_m = int(alloc["cpu-m"]) - int(reserve["cpu-m"])
    mem_mi = int(alloc["memory-mi"]) - int(reserve["memory-mi"])
    if cpu_m <= 0 or mem_mi <= 0:
        raise ValueError(f"{instance_type}: the DaemonSet reserve leaves no room")
    itype = load_catalog(catalog)[instance_type]
    return PodSize(
        instance_type=instance_type,
        cpu=f"{cpu_m}m",
        memory=f"{mem_mi}Mi",
        memory_mi=mem_mi,
        threads=itype.vcpus,
        gpus=itype.gpus,
    )


def node_selector(
    instance_type: str, pricing: str, capacity_label: str
) -> dict[str, str]:
    """The nodeSelector that ties a pool to its priced instance and capacity.

    >>> node_selector("g5.xlarge", "spot", "karpenter.sh/capacity-type")
    {'node.kubernetes.io/instance-type': 'g5.xlarge', 'karpenter.sh/capacity-type': 'spot'}
    """
    if capacity_label not in CAPACITY_LABELS:
        raise ValueError(
            f"capacity label {capacity_label!r} unknown; use one of "
            f"{', '.join(CAPACITY_LABELS)}"
        )
    values = CAPACITY_LABELS[capacity_label]
    if pricing not in values:
        raise ValueError(f"pricing must be one of {', '.join(values)}, got {pricing!r}")
    return {INSTANCE_TYPE_LABEL: instance_type, capacity_label: values[pricing]}
