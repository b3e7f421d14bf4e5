"""The scaler's Kubernetes objects: what runs the cost-aware scaler
(:mod:`lepton_dask.deploy.k8s_scaler`) in the cluster, and what it may do there.

A ServiceAccount with a Role that lets it read and resize the worker groups,
see DaskAutoscalers (it refuses to run beside one) and delete the worker
Deployments it retired, and nothing more; a ConfigMap describing
each worker group (:func:`scaler_groups`, the scaler's ``--groups`` file);
and a one-replica Deployment (``strategy: Recreate``: never two scalers at
once) that runs it with the policy's settings as ``lepton.scaling``.
"""

from __future__ import annotations

from typing import Any

import yaml

from lepton_dask.deploy.spec import (
    SCHEDULER_PORT,
    DeploySpec,
    container_env,
    env_value,
    group_resource,
    scaling_config,
)

__all__ = ["scaler", "scaler_groups"]


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
        "env": [*container_env(spec, None), *_scaler_env(spec)],
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


def _scaler_env(spec: DeploySpec) -> list[dict[str, Any]]:
    env = [
        {"name": f"DASK_LEPTON__SCALING__{k.upper()}", "value": env_value(v)}
        for k, v in scaling_config(spec).items()
    ]
    if spec.workload is not None:
        env.append({"name": "DASK_LEPTON__WORKLOAD", "value": spec.workload})
    return env
