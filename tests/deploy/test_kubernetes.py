"""Kubernetes manifests and the scaler's replica patches, checked without a
cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lepton_dask.deploy import kubernetes as k8s
from lepton_dask.deploy.k8s_scaler import (
    GroupRef,
    load_groups,
    pending_workers,
    replica_patches,
)
from lepton_dask.scaling import BalancedPolicy, DeadlinePolicy
from lepton_dask.scaling.state import ClusterView, Decision, WorkerView

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "kubernetes"


def docs():
    out = []
    for path in sorted(OUT.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def containers(doc):
    if doc["kind"] == "DaskCluster":
        yield from doc["spec"]["worker"]["spec"]["containers"]
        yield from doc["spec"]["scheduler"]["spec"]["containers"]
    elif doc["kind"] == "DaskWorkerGroup":
        yield from doc["spec"]["worker"]["spec"]["containers"]
    elif doc["kind"] == "Deployment":
        yield from doc["spec"]["template"]["spec"]["containers"]


def test_committed_manifests_are_generated():
    for name, text in k8s.render().items():
        assert (OUT / name).read_text() == text, (
            f"{name} stale: lepton-dask deploy kubernetes write"
        )


def test_manifests_valid_pinned_and_consistent():
    all_docs = docs()
    kinds = [d["kind"] for d in all_docs]
    for kind in (
        "DaskCluster",
        "DaskWorkerGroup",
        "ServiceMonitor",
        "PodMonitor",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "ConfigMap",
    ):
        assert kind in kinds, kind
    for d in all_docs:
        assert d["apiVersion"] and d["metadata"]["name"]
        for c in containers(d):
            assert k8s._pinned(c["image"]), c["image"]
            # the store URI only ever comes from the Secret
            env = {e["name"]: e for e in c.get("env", [])}
            assert (
                env["LEPTON_MONGO_URI"]["valueFrom"]["secretKeyRef"]["name"]
                == k8s.MONGO_SECRET
            )
    cluster = next(d for d in all_docs if d["kind"] == "DaskCluster")
    sched = cluster["spec"]["scheduler"]
    ports = {
        p["name"]: p["containerPort"] for p in sched["spec"]["containers"][0]["ports"]
    }
    svc_ports = {p["name"]: p for p in sched["service"]["ports"]}
    assert set(ports) == set(svc_ports)
    for name, p in svc_ports.items():
        assert p["targetPort"] == name and p["port"] == ports[name]
    assert f":{ports['http-dashboard']}" in sched["spec"]["containers"][0]["args"]
    # Prometheus scrapes the named ports that exist
    mon = next(d for d in all_docs if d["kind"] == "ServiceMonitor")
    assert mon["spec"]["endpoints"][0]["port"] in svc_ports
    pm = next(d for d in all_docs if d["kind"] == "PodMonitor")
    for d in all_docs:
        if d["kind"] in ("DaskCluster", "DaskWorkerGroup"):
            w = d["spec"]["worker"]["spec"]["containers"][0]
            names = {p["name"] for p in w["ports"]}
            assert pm["spec"]["podMetricsEndpoints"][0]["port"] in names
            port = next(p["containerPort"] for p in w["ports"])
            assert str(port) in w["args"]
    # the GPU group asks for a GPU and advertises the Dask resource
    gpu = next(d for d in all_docs if d["kind"] == "DaskWorkerGroup")
    c = gpu["spec"]["worker"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and "GPU=1" in c["args"]
    assert gpu["spec"]["cluster"] == cluster["metadata"]["name"]
    # the scaler may patch exactly the worker-group resources
    role = next(d for d in all_docs if d["kind"] == "Role")
    assert role["rules"][0]["verbs"] == ["get", "list", "patch"]
    # the scaler's groups file names resources that exist
    cm = next(d for d in all_docs if d["kind"] == "ConfigMap")
    groups = yaml.safe_load(cm["data"]["groups.yaml"])
    names = {(d["kind"], d["metadata"]["name"]) for d in all_docs}
    for g in groups:
        assert (g["resource"], g["name"]) in names


def test_gpu_group_without_gpu_image_is_rejected():
    with pytest.raises(ValueError, match="GPU group but has no GPU image"):
        k8s.WorkerGroup("gpu", "g5.xlarge", kind="gpu")
    with pytest.raises(ValueError, match="GPU group but has no GPU image"):
        k8s.WorkerGroup("gpu", "g5.xlarge", kind="gpu", image=k8s.IMAGE)
    with pytest.raises(ValueError, match="not pinned"):
        k8s.WorkerGroup("gpu", "g5.xlarge", kind="gpu", image="example/cuda:latest")
    with pytest.raises(ValueError, match="must be CPU"):
        k8s.DeploySpec(
            groups=(k8s.WorkerGroup("g", "g5.xlarge", kind="gpu", image=k8s.GPU_IMAGE),)
        )
    with pytest.raises(ValueError, match="replicas"):
        k8s.WorkerGroup("cpu", "m6i.large", replicas=5, max_replicas=2)


@pytest.fixture
def groups(tmp_path):
    cm = next(d for d in k8s.scaler(k8s.DeploySpec()) if d["kind"] == "ConfigMap")
    path = tmp_path / "groups.yaml"
    path.write_text(cm["data"]["groups.yaml"])
    return load_groups(path)


def view(groups, workers=(), backlog=None, now=1000.0):
    return ClusterView(
        now=now,
        pools={g.pool: g.spec for g in groups},
        workers=list(workers),
        backlog=backlog or {},
        tasks_ready={k: 10_000 for k in (backlog or {})},
        minimum_billing=60.0,
    )


def test_scale_up_patches_the_cluster_and_the_gpu_group(groups):
    v = view(groups, backlog={"cpu": 3000.0, "gpu": 500.0})
    d = DeadlinePolicy(deadline=v.now + 600).decide(v)
    patches = replica_patches(d, v, groups, {"cpu": 1, "gpu": 0})
    by = {p["pool"]: p for p in patches}
    assert by["cpu"]["resource"] == "DaskCluster" and by["cpu"]["name"] == "lepton"
    assert (
        by["gpu"]["resource"] == "DaskWorkerGroup" and by["gpu"]["name"] == "lepton-gpu"
    )
    for p in patches:
        assert p["to"] > p["from"]
        assert p["patch"] == {"spec": {"worker": {"replicas": p["to"]}}}
        assert p["to"] == d.targets[p["pool"]]


def test_targets_are_clamped_to_the_groups_limits(groups):
    v = view(groups)
    cpu = next(g for g in groups if g.pool == "cpu")
    (p,) = replica_patches(
        Decision({"cpu": 10_000, "gpu": 0}, "x"), v, groups, {"cpu": 2, "gpu": 0}
    )
    assert p["to"] == cpu.spec.max_workers
    idle = [WorkerView(n, "cpu", 0.0, False, True) for n in "ab"]  # paid up
    (p,) = replica_patches(
        Decision({"cpu": 0, "gpu": 0}, "x"),
        view(groups, idle),
        groups,
        {"cpu": 2, "gpu": 0},
    )
    assert p["to"] == cpu.spec.min_workers == 1


def test_scale_down_only_by_releasable_workers(groups):
    now = 1000.0
    workers = [
        WorkerView("a", "cpu", now - 300, False, True),  # idle, paid minimum used
        WorkerView("b", "cpu", now - 10, False, True),  # idle but paid for 50 s more
        WorkerView("c", "cpu", now - 300, True, True),  # busy
        WorkerView("d", "cpu", now - 300, False, True, True),  # idle, holds data
    ]
    v = view(groups, workers, backlog={"cpu": 1.0})
    patches = replica_patches(
        Decision({"cpu": 1, "gpu": 0}, "x"), v, groups, {"cpu": 4, "gpu": 0}
    )
    (p,) = patches
    # "a" and "d" are releasable (idle, paid up); "b" has paid time left, "c" is busy
    assert p["from"] == 4 and p["to"] == 2


def test_no_patch_when_nothing_changes(groups):
    v = view(groups, [WorkerView("a", "cpu", 0.0, True, True)], backlog={"cpu": 1.0})
    assert (
        replica_patches(
            Decision({"cpu": 1, "gpu": 0}, "x"), v, groups, {"cpu": 1, "gpu": 0}
        )
        == []
    )
    steady = BalancedPolicy(1.0).decide(
        view(groups, [WorkerView("a", "cpu", 999.0, False, True)])
    )
    assert all(
        p["to"] >= 1 for p in replica_patches(steady, v, groups, {"cpu": 1, "gpu": 0})
    )


def test_pending_workers_count_requested_replicas_not_yet_arrived():
    arrived = [{"name": "w1", "pool": "cpu"}]
    pend = pending_workers(arrived, {"cpu": 3, "gpu": 1}, {"cpu": 50.0})
    assert sorted((w.pool, w.arrived) for w in pend) == [
        ("cpu", False),
        ("cpu", False),
        ("gpu", False),
    ]
    assert {w.billed_since for w in pend if w.pool == "cpu"} == {50.0}


def test_groups_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text(
        "[{pool: cpu, resource: Deployment, name: x, instance_type: m6i.large}]"
    )
    with pytest.raises(
        ValueError, match="resource must be DaskCluster or DaskWorkerGroup"
    ):
        load_groups(bad)
    bad.write_text("{}")
    with pytest.raises(ValueError, match="non-empty list"):
        load_groups(bad)
    assert isinstance(
        GroupRef.from_dict(
            {
                "pool": "cpu",
                "resource": "DaskCluster",
                "name": "l",
                "instance_type": "m6i.large",
            }
        ),
        GroupRef,
    )
