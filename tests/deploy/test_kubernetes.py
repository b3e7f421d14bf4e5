"""Kubernetes manifests and the scaler's replica patches, checked without a
cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lepton_dask.deploy import kubernetes as k8s
from lepton_dask.deploy import spec as dspec
from lepton_dask.deploy.k8s_scaler import (
    GroupRef,
    load_groups,
    pending_workers,
    replica_patches,
)
from lepton_dask.deploy.scaler_manifests import scaler
from lepton_dask.scaling import BalancedPolicy, SLOPolicy
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
            assert dspec._pinned(c["image"]), c["image"]
            # the store URI only ever comes from the Secret
            env = {e["name"]: e for e in c.get("env", [])}
            assert (
                env["LEPTON_MONGO_URI"]["valueFrom"]["secretKeyRef"]["name"]
                == dspec.MONGO_SECRET
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
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and "GPU=1" in c["args"]
    assert gpu["spec"]["cluster"] == cluster["metadata"]["name"]
    # the scaler may resize worker groups, see autoscalers, and list and
    # delete Deployments (its retired workers'), and nothing more
    role = next(d for d in all_docs if d["kind"] == "Role")
    grants = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert grants == {
        ("kubernetes.dask.org", "daskworkergroups", "get"),
        ("kubernetes.dask.org", "daskworkergroups", "patch"),
        ("kubernetes.dask.org", "daskautoscalers", "list"),
        ("apps", "deployments", "list"),
        ("apps", "deployments", "delete"),
    }
    scaler_dep = next(d for d in all_docs if d["kind"] == "Deployment")
    assert scaler_dep["spec"]["strategy"] == {"type": "Recreate"}
    # the scaler's groups file names resources that exist
    cm = next(d for d in all_docs if "groups.yaml" in d.get("data", {}))
    groups = yaml.safe_load(cm["data"]["groups.yaml"])
    names = {(d["kind"], d["metadata"]["name"]) for d in all_docs}
    for g in groups:
        if g["default"]:  # the operator creates <cluster>-default itself
            assert ("DaskCluster", g["cluster"]) in names
            assert g["name"] == f"{g['cluster']}-default"
        else:
            assert (g["resource"], g["name"]) in names


def _quantity(q: str) -> float:
    """cpu in cores, memory in MiB (the forms the generator writes)."""
    if q.endswith("m"):
        return int(q[:-1]) / 1000
    if q.endswith("Mi"):
        return int(q[:-2])
    if q.endswith("Gi"):
        return int(q[:-2]) * 1024
    return float(q)


def test_worker_pods_fit_the_nodes_they_are_priced_as():
    from lepton_dask.deploy.sizing import allocatable_table

    table = allocatable_table()
    assert "EKS" in table["source"]
    groups = [d for d in docs() if d["kind"] in ("DaskCluster", "DaskWorkerGroup")]
    assert len(groups) == 2
    for d in groups:
        pod = d["spec"]["worker"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        itype, pricing = env["LEPTON_INSTANCE_TYPE"], env["LEPTON_PRICING"]
        # the nodeSelector names the very instance type and capacity it is priced as
        assert pod["nodeSelector"] == {
            "node.kubernetes.io/instance-type": itype,
            "karpenter.sh/capacity-type": pricing,
        }
        alloc = table["instance-types"][itype]
        req = c["resources"]["requests"]
        assert c["resources"]["limits"] == req  # Guaranteed QoS
        assert all(isinstance(v, str) for v in req.values())
        assert _quantity(req["cpu"]) * 1000 <= alloc["cpu-m"]
        assert _quantity(req["memory"]) <= alloc["memory-mi"]
        # the worker's memory limit is the pod's, its threads the instance's vCPUs
        args = c["args"]
        assert args[args.index("--memory-limit") + 1] == req["memory"] + "B"
    # two pools of one type on one capacity class are allowed; a type with no
    # allocatable row is not (it would be priced for a node it may not fit)
    with pytest.raises(ValueError, match="no Kubernetes allocatable"):
        dspec.WorkerGroup("cpu", "local")
    with pytest.raises(ValueError, match="pricing must be"):
        dspec.WorkerGroup("cpu", "m6i.large", pricing="reserved")
    with pytest.raises(ValueError, match="capacity label"):
        dspec.DeploySpec(capacity_label="example.com/capacity")


def test_write_options_reach_the_manifests(tmp_path):
    from lepton_dask.cli import main

    rc = main(
        ["deploy", "kubernetes", "write", "--dir", str(tmp_path),
         "--namespace", "ml", "--image", "example.org/lepton:1.2.3",
         "--pool", "cpu=m6i.xlarge:spot,min=1,max=7",
         "--pool", "gpu=g6.xlarge,max=2",
         "--release", "prom", "--budget-usd-per-hour", "3.5"]
    )  # fmt: skip
    assert rc == 0
    out = [
        d
        for p in sorted(tmp_path.glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in out} == {
        "ml"
    }
    cluster = next(d for d in out if d["kind"] == "DaskCluster")
    w = cluster["spec"]["worker"]["spec"]
    assert w["nodeSelector"]["node.kubernetes.io/instance-type"] == "m6i.xlarge"
    assert w["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"
    assert w["containers"][0]["image"] == "example.org/lepton:1.2.3"
    sched_env = {
        e["name"]: e.get("value")
        for e in cluster["spec"]["scheduler"]["spec"]["containers"][0]["env"]
    }
    assert sched_env["DASK_LEPTON__COST__BUDGET_USD_PER_HOUR"] == "3.5"
    monitors = [d for d in out if d["apiVersion"].startswith("monitoring.coreos")]
    assert len(monitors) == 3
    assert {d["metadata"]["labels"]["release"] for d in monitors} == {"prom"}
    cm = next(d for d in out if "groups.yaml" in d.get("data", {}))
    pools = {g["pool"]: g for g in yaml.safe_load(cm["data"]["groups.yaml"])}
    assert pools["cpu"]["max_replicas"] == 7 and pools["cpu"]["pricing"] == "spot"
    assert pools["gpu"]["kind"] == "gpu"
    assert main(["deploy", "kubernetes", "write", "--dir", str(tmp_path),
                 "--pool", "cpu=m6i.large:reserved"]) == 2  # fmt: skip


def test_gpu_group_without_gpu_image_is_rejected():
    with pytest.raises(ValueError, match="GPU group but has no GPU image"):
        dspec.WorkerGroup("gpu", "g5.xlarge", kind="gpu")
    with pytest.raises(ValueError, match="GPU group but has no GPU image"):
        dspec.WorkerGroup("gpu", "g5.xlarge", kind="gpu", image=dspec.IMAGE)
    with pytest.raises(ValueError, match="not pinned"):
        dspec.WorkerGroup("gpu", "g5.xlarge", kind="gpu", image="example/cuda:latest")
    with pytest.raises(ValueError, match="so the group is gpu"):
        dspec.WorkerGroup("gpu", "g5.xlarge", kind="cpu")
    with pytest.raises(ValueError, match="must be CPU"):
        dspec.DeploySpec(
            groups=(
                dspec.WorkerGroup("g", "g5.xlarge", kind="gpu", image=dspec.GPU_IMAGE),
            )
        )
    with pytest.raises(ValueError, match="replicas"):
        dspec.WorkerGroup("cpu", "m6i.large", replicas=5, max_replicas=2)


@pytest.fixture
def groups(tmp_path):
    cm = next(d for d in scaler(dspec.DeploySpec()) if d["kind"] == "ConfigMap")
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
    d = SLOPolicy(deadline=600).decide(v)
    patches = replica_patches(d, v, groups, {"cpu": 1, "gpu": 0})
    by = {p["pool"]: p for p in patches}
    # the default group is read and sized as the operator's <cluster>-default
    assert by["cpu"]["resource"] == "DaskWorkerGroup"
    assert by["cpu"]["name"] == "lepton-default"
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
    # and the scaler names them itself (the one holding data last)
    assert p["retire"] == ["a", "d"]


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


def test_pending_workers_are_deployments_not_yet_at_the_scheduler():
    arrived = [{"name": "lepton-default-worker-a", "pool": "cpu"}]
    deps = {
        "cpu": [
            {"name": "lepton-default-worker-a", "created": 10.0},
            {"name": "lepton-default-worker-b", "created": 50.0},
        ],
        "gpu": [{"name": "lepton-gpu-worker-c", "created": 70.0}],
    }
    pend = pending_workers(arrived, deps)
    assert sorted((w.name, w.pool, w.billed_since, w.arrived) for w in pend) == [
        ("lepton-default-worker-b", "cpu", 50.0, False),
        ("lepton-gpu-worker-c", "gpu", 70.0, False),
    ]
    # a retired worker's Deployment is gone: nothing stays pending for it
    assert pending_workers([], {"cpu": [], "gpu": []}) == []


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


def test_every_manifest_passes_the_api_schemas():
    from tests.deploy.schemas import errors

    all_docs = docs()
    assert all_docs
    problems = [e for d in all_docs for e in errors(d)]
    assert problems == []
    # and so do the manifests of other options (spot pools, EKS labels, budgets)
    spec = dspec.DeploySpec(
        name="team-a",
        namespace="ml",
        capacity_label="eks.amazonaws.com/capacityType",
        budget_usd_per_hour=2.5,
        budget_usd=100.0,
        groups=(
            dspec.WorkerGroup("cpu", "m6i.2xlarge", pricing="spot", max_replicas=4),
            dspec.WorkerGroup("mem", "r6i.xlarge", replicas=1, max_replicas=2),
            dspec.WorkerGroup(
                "gpu", "g6.xlarge", image=dspec.GPU_IMAGE, pricing="spot"
            ),
        ),
    )
    other = [d for ds in k8s.manifests(spec).values() for d in ds]
    assert [e for d in other for e in errors(d)] == []


def test_the_schema_check_rejects_what_the_server_rejects():
    from tests.deploy.schemas import errors

    gpu = next(d for d in docs() if d["kind"] == "DaskWorkerGroup")
    bad = yaml.safe_load(yaml.safe_dump(gpu))
    limits = bad["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]
    limits["nvidia.com/gpu"] = 1  # an integer quantity: the CRD types them as strings
    assert any("nvidia.com/gpu" in e and "string" in e for e in errors(bad))
    bad = yaml.safe_load(yaml.safe_dump(gpu))
    bad["spec"]["worker"]["spec"]["nodeSelectors"] = {}  # misspelt field
    assert any("nodeSelectors" in e for e in errors(bad))
    dep = next(d for d in docs() if d["kind"] == "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(dep))
    bad["spec"]["strategy"]["typ"] = "Recreate"
    assert errors(bad)
    rule = next(d for d in docs() if d["kind"] == "PrometheusRule")
    bad = yaml.safe_load(yaml.safe_dump(rule))
    bad["spec"]["groups"][0]["rules"][0]["fore"] = "5m"
    assert any("fore" in e for e in errors(bad))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"scaler_policy": "budget"}, "budget-usd-per-hour is not set"),
        (
            {"scaler_policy": "slo", "scaler_latency": -5.0},
            # (the policy's check, or the duration parser's before it)
            "latency must be a (positive number|duration)",
        ),
        (
            {"scaler_policy": "slo", "scaler_deadline": 60.0, "scaler_latency": 5.0},
            "give deadline= .* or latency=",
        ),
        ({"scaler_policy": "nope"}, "lepton.scaling.policy must be one of"),
    ],
)
def test_scaler_policy_terms_are_validated(kw, message):
    with pytest.raises(ValueError, match=message):
        dspec.DeploySpec(**kw)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("kw", "policy", "terms"),
    [
        ({"scaler_policy": "slo", "scaler_deadline": 600.0}, "SLOPolicy", 600.0),
        (
            {"scaler_policy": "predictive", "scaler_latency": 30.0, "workload": "etl"},
            "PredictivePolicy",
            30.0,
        ),
    ],
)
def test_scaler_policy_round_trips_into_a_running_scheduler(
    tmp_path, kw, policy, terms
):
    """The scaler Deployment's environment, given to a real scheduler process,
    makes it build the stated policy from its own dask.config."""
    import json
    import os
    import subprocess
    import sys

    from distributed import Client

    from tests.helpers import wait_for

    scaler = next(
        d
        for d in k8s.manifests(dspec.DeploySpec(**kw))["scaler.yaml"]
        if d["kind"] == "Deployment"
    )
    env = {
        e["name"]: e["value"]
        for e in scaler["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e and e["name"].startswith("DASK_")
    }
    sfile = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--host",
            "127.0.0.1",
            "--scheduler-file",
            str(sfile),
        ],
        env={**os.environ, **env, "DASK_LEPTON__COST__LEDGER": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(sfile.exists, 60, interval=0.2)
        with Client(scheduler_file=str(sfile), timeout="30s") as client:
            got = json.loads(client.run_on_scheduler(_policy_there))
    finally:
        proc.terminate()
        proc.wait(30)
    assert got["policy"] == policy
    assert got["terms"] == terms
    assert got["workload"] == kw.get("workload")


def _policy_there(dask_scheduler=None) -> str:
    import json

    import dask

    import lepton_dask  # noqa: F401  (its config defaults)
    from lepton_dask.scaling.registry import policy_from_config

    with dask.config.set({"lepton.workload": None}):  # no history to read here
        p = policy_from_config()
    base = getattr(p, "base", p)
    return json.dumps(
        {
            "policy": type(p).__name__,
            "terms": base.deadline,
            "workload": dask.config.get("lepton.workload", None),
        }
    )


@pytest.mark.parametrize(
    ("kw", "policy", "deadline", "latency"),
    [
        ({}, "slo", dspec.DEFAULT_DEADLINE, None),  # the README's recommendation
        ({"scaler_latency": 30.0}, "slo", None, 30.0),
        ({"scaler_policy": "balanced"}, "balanced", None, None),
    ],
)
def test_the_default_policy_is_the_slo_policy(kw, policy, deadline, latency):
    from lepton_dask.scaling.registry import DEFAULT_DEADLINE_S

    spec = dspec.DeploySpec(**kw)
    assert (spec.scaler_policy, spec.scaler_deadline, spec.scaler_latency) == (
        policy,
        deadline,
        latency,
    )
    assert dspec.DEFAULT_DEADLINE == DEFAULT_DEADLINE_S  # the policy's own
