"""The Helm chart (deploy/helm/lepton-dask): generated from the manifests'
builders, checked by a real helm (built with Go from helm.sh/helm/v4, as
`make` builds it): `helm lint`, `helm template` against the same schemas as
the manifests, and the rendered objects equal to what `lepton-dask deploy
kubernetes write` writes for the same settings."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from lepton_dask.deploy import helm
from lepton_dask.deploy import kubernetes as k8s
from lepton_dask.deploy import spec as dspec
from lepton_dask.store._install import cache_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "lepton-dask"
HELM_VERSION = "v4.3.2"  # the Makefile's HELM_VERSION


@functools.cache
def helm_bin() -> str:
    """The helm `make` builds (built here the same way when missing)."""
    dest = Path(cache_dir()) / "bin" / f"helm-{HELM_VERSION}"
    if not os.access(dest, os.X_OK):
        build = subprocess.run(
            [str(ROOT / ".ci" / "build-helm"), HELM_VERSION, str(dest)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert build.returncode == 0, f"building helm failed:\n{build.stderr}"
    return str(dest)


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [helm_bin(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HELM_CACHE_HOME": str(Path(cache_dir()) / "helm")},
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def template(
    chart: Path,
    values: dict,
    namespace: str,
    tmp: Path,
    *args: str,
    release: str = "rel",
) -> list[dict]:
    vf = tmp / f"values-{release}.yaml"
    vf.write_text(yaml.safe_dump(values))
    out = run_helm(
        "template", release, str(chart), "-n", namespace, "-f", str(vf), *args
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def chart_defaults() -> dict:
    """The committed chart's values.yaml."""
    return yaml.safe_load((CHART / "values.yaml").read_text())


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in (mappings merged, the rest replaced)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


#: what ``helm template`` is told the cluster serves when the Prometheus
#: Operator is installed
WITH_MONITORING = ("--api-versions", helm.MONITORING_API)


def cli_objects(spec: dspec.DeploySpec) -> list[dict]:
    """What `deploy kubernetes write` writes, less the Namespace (a chart
    installs into the release's namespace; `helm install -n NS --create-namespace`)."""
    docs = [d for ds in k8s.manifests(spec).values() for d in ds]
    return [d for d in docs if d["kind"] != "Namespace"]


def key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_the_committed_chart_is_generated():
    for rel, text in helm.render().items():
        path = CHART / rel
        assert path.is_file() and path.read_text() == text, (
            f"deploy/helm/lepton-dask/{rel} stale: lepton-dask deploy helm write"
        )


def test_helm_lint_passes_strict():
    out = run_helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


DEFAULT_POOLS = dspec.default_groups()


def _pools(**changes) -> tuple[dspec.WorkerGroup, ...]:
    """The default pools with other replicas, bounds or images."""
    import dataclasses

    return tuple(
        dataclasses.replace(g, **changes.get(g.name, {})) for g in DEFAULT_POOLS
    )


SPECS = {
    "defaults": dspec.DeploySpec(),
    "slo with budgets": dspec.DeploySpec(
        name="team-a",
        namespace="ml",
        scaler_policy="slo",
        scaler_deadline=600.0,
        budget_usd_per_hour=2.5,
        budget_usd=100.0,
        groups=_pools(cpu={"replicas": 3, "min_replicas": 2, "max_replicas": 9}),
    ),
    "predictive stream": dspec.DeploySpec(
        namespace="stream",
        image="ghcr.io/acme/lepton:1.2.3",
        release="prom",
        scrape_interval="30s",
        scaler_policy="predictive",
        scaler_latency=45.5,
        scaler_interval="5s",
        workload="nightly-etl",
        groups=_pools(gpu={"image": "ghcr.io/acme/lepton:1.2.3-cuda12"}),
    ),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_the_chart_renders_what_the_cli_writes(name, tmp_path):
    spec = SPECS[name]
    docs = template(CHART, helm.values_for(spec), spec.namespace, tmp_path)
    want = cli_objects(spec)
    assert sorted(map(key, docs)) == sorted(map(key, want))
    got = {key(d): d for d in docs}
    for doc in want:
        assert got[key(doc)] == doc, key(doc)


def test_a_chart_for_other_pools_agrees_and_passes_the_api_schemas(tmp_path):
    from tests.deploy.schemas import errors

    spec = dspec.DeploySpec(
        name="team-b",
        namespace="ml",
        capacity_label="eks.amazonaws.com/capacityType",
        scaler_policy="slo",
        scaler_deadline=300.0,
        groups=(
            dspec.WorkerGroup("cpu", "m6i.2xlarge", pricing="spot", max_replicas=4),
            dspec.WorkerGroup("mem", "r6i.xlarge", replicas=1, max_replicas=2),
            dspec.WorkerGroup(
                "gpu", "g6.xlarge", image=dspec.GPU_IMAGE, pricing="spot"
            ),
        ),
    )
    chart = tmp_path / "lepton-dask"
    for rel, text in helm.render(spec).items():
        (chart / rel).parent.mkdir(parents=True, exist_ok=True)
        (chart / rel).write_text(text)
    run_helm("lint", "--strict", str(chart))
    docs = template(chart, helm.values_for(spec), spec.namespace, tmp_path)
    assert {key(d): d for d in docs} == {key(d): d for d in cli_objects(spec)}
    assert [e for d in docs for e in errors(d)] == []


def test_switches_leave_out_monitoring_dashboards_and_scaler(tmp_path):
    values = helm.values_for(dspec.DeploySpec())
    values["prometheus"]["enabled"] = False
    values["grafana"]["dashboards"] = False
    values["scaler"]["enabled"] = False
    kinds = {d["kind"] for d in template(CHART, values, "lepton", tmp_path)}
    assert kinds == {"DaskCluster", "DaskWorkerGroup"}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("scaler", "policy"), "fastest", "'/scaler/policy': value must be one of"),
        (("fullnameOverride",), "Team_A", "'/fullnameOverride'"),
        (("fullnameOverride",), "a" * 38, "'/fullnameOverride'"),
        (("prometheus", "enabled"), "yes", "'/prometheus/enabled'"),
        (("tolerations",), {"key": "x"}, "'/tolerations'"),
        (("imagePullSecrets",), ["regcred"], "'/imagePullSecrets/0'"),
        (("pools", "cpu", "env"), [{"value": "1"}], "'/pools/cpu/env/0'"),
        (("pools", "cpu", "annotations"), {"a": 1}, "'/pools/cpu/annotations/a'"),
        (("serviceAccount", "create"), "yes", "'/serviceAccount/create'"),
        (("scheduler", "resources"), {"request": {}}, "'/scheduler/resources'"),
        (("image",), "ghcr.io/acme/lepton", "'/image'"),
        (("scaler", "deadline"), -5, "'/scaler/deadline'"),
        (("pools", "cpu", "maxReplicas"), "ten", "'/pools/cpu/maxReplicas'"),
        (("pools", "spot"), {"replicas": 1}, "additional properties 'spot'"),
    ],
)
def test_the_values_schema_refuses_bad_values(path, value, message, tmp_path):
    values = helm.values_for(dspec.DeploySpec())
    at = values
    for p in path[:-1]:
        at = at[p]
    at[path[-1]] = value
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    out = run_helm("template", "rel", str(CHART), "-f", str(vf), check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs}


MONITORS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize(
    ("enabled", "api", "rendered"),
    [
        ("auto", False, False),  # a stock cluster: no Prometheus Operator
        ("auto", True, True),
        (True, False, True),  # asked for explicitly
        (False, True, False),
    ],
)
def test_monitoring_objects_render_only_where_their_api_is(
    enabled, api, rendered, tmp_path
):
    values = merged(chart_defaults(), {"prometheus": {"enabled": enabled}})
    args = WITH_MONITORING if api else ()
    docs = template(CHART, values, "lepton", tmp_path, *args)
    assert (MONITORS <= kinds(docs)) is rendered
    assert not rendered or MONITORS <= kinds(docs)
    assert {"DaskCluster", "DaskWorkerGroup", "Deployment"} <= kinds(docs)


def names(docs: list[dict]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_objects_are_named_after_the_release(tmp_path):
    values = chart_defaults()
    a = template(CHART, values, "ml", tmp_path, *WITH_MONITORING, release="team-a")
    b = template(CHART, values, "ml", tmp_path, *WITH_MONITORING, release="team-b")
    assert not names(a) & names(b)  # two releases in one namespace coexist
    cluster = next(d for d in a if d["kind"] == "DaskCluster")
    assert cluster["metadata"]["name"] == "team-a-lepton-dask"
    scaler = next(d for d in a if d["kind"] == "Deployment")
    args = scaler["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "tcp://team-a-lepton-dask-scheduler:8786" in args
    groups = next(d for d in a if d.get("data", {}).get("groups.yaml"))
    refs = yaml.safe_load(groups["data"]["groups.yaml"])
    assert {g["cluster"] for g in refs} == {"team-a-lepton-dask"}
    # a release named like the chart is the name; a long one is cut short
    own = template(CHART, values, "ml", tmp_path, release="lepton-dask")
    assert ("DaskCluster", "lepton-dask") in names(own)
    long = template(CHART, values, "ml", tmp_path, release="a-very-long-release-name-x")
    (name,) = [n for k, n in names(long) if k == "DaskCluster"]
    assert len(name) <= helm.NAME_MAX and not name.endswith("-")


def test_the_default_policy_is_the_slo_policy(tmp_path):
    docs = template(CHART, chart_defaults(), "ml", tmp_path)
    scaler = next(d for d in docs if d["kind"] == "Deployment")
    env = scaler["spec"]["template"]["spec"]["containers"][0]["env"]
    env = {e["name"]: e.get("value") for e in env}
    assert env["DASK_LEPTON__SCALING__POLICY"] == "slo"
    assert env["DASK_LEPTON__SCALING__DEADLINE"] == "600"


#: every standard value, set (tests/kube installs it on the API server)
STANDARD = {
    "image": "registry.example.com/ml/lepton-dask:0.1.0",
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccount": {
        "create": True,
        "name": "lepton-scaler-sa",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/lepton"},
    },
    "nodeSelector": {"team": "ml"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "topology.kubernetes.io/zone",
                                "operator": "In",
                                "values": ["eu-west-1a"],
                            }
                        ]
                    }
                ]
            }
        }
    },
    "scheduler": {
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"memory": "4Gi"},
        }
    },
    "scaler": {
        "resources": {
            "requests": {"cpu": "200m", "memory": "300Mi"},
            "limits": {"memory": "300Mi"},
        }
    },
    "pools": {
        "cpu": {
            "resources": {
                "requests": {"cpu": "1", "memory": "3Gi"},
                "limits": {"cpu": "1", "memory": "3Gi"},
            },
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
            "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [
                {"key": "spot", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {
                                    "matchLabels": {"dask.org/component": "worker"}
                                },
                            },
                        }
                    ]
                }
            },
        },
        "gpu": {
            "env": [{"name": "CUPY_CACHE_DIR", "value": "/tmp/cupy"}],
            "annotations": {"team": "vision"},
        },
    },
}


def pods(docs: list[dict]) -> dict[str, tuple[dict, dict]]:
    """(pod spec, its first container) of the scheduler, each pool and the
    scaler."""
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    gpu = next(d for d in docs if d["kind"] == "DaskWorkerGroup")
    scaler = next(d for d in docs if d["kind"] == "Deployment")
    out = {
        "scheduler": cluster["spec"]["scheduler"]["spec"],
        "cpu": cluster["spec"]["worker"]["spec"],
        "gpu": gpu["spec"]["worker"]["spec"],
        "scaler": scaler["spec"]["template"]["spec"],
    }
    return {k: (pod, pod["containers"][0]) for k, pod in out.items()}


def check_standard_values(docs: list[dict]) -> None:
    """Every value of :data:`STANDARD` is where it belongs in ``docs``."""
    defaults = chart_defaults()
    got = pods(docs)
    s = STANDARD
    for name, (pod, container) in got.items():
        assert pod["imagePullSecrets"] == s["imagePullSecrets"], name
        want = defaults["pools"]["gpu"]["image"] if name == "gpu" else s["image"]
        assert container["image"] == want, name
    for name in ("scheduler", "scaler"):
        pod, container = got[name]
        assert pod["nodeSelector"] == s["nodeSelector"]
        assert pod["tolerations"] == s["tolerations"]
        assert pod["affinity"] == s["affinity"]
        assert container["resources"] == s[name]["resources"]
    cpu, cpu_c = got["cpu"]
    pool = s["pools"]["cpu"]
    catalog = defaults["pools"]["cpu"]["nodeSelector"]
    assert cpu["nodeSelector"] == catalog | pool["nodeSelector"] | s["nodeSelector"]
    assert cpu["tolerations"] == pool["tolerations"] + s["tolerations"]
    assert cpu["affinity"] == pool["affinity"]  # a pool's own, instead
    assert cpu_c["resources"] == pool["resources"]
    memory = cpu_c["args"][cpu_c["args"].index("--memory-limit") + 1]
    assert memory == pool["resources"]["limits"]["memory"] + "B"  # Dask's follows
    assert cpu_c["env"][-1] == pool["env"][0]
    assert cpu_c["env"][0]["name"] == "LEPTON_MONGO_URI"  # ours stay
    gpu, gpu_c = got["gpu"]
    gdef = defaults["pools"]["gpu"]
    assert gpu["nodeSelector"] == gdef["nodeSelector"] | s["nodeSelector"]
    assert gpu["tolerations"] == gdef["tolerations"] + s["tolerations"]
    assert gpu["affinity"] == s["affinity"]
    assert gpu_c["resources"] == gdef["resources"]  # the catalog's, with the GPU
    assert gpu_c["env"][-1] == s["pools"]["gpu"]["env"][0]
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    group = next(d for d in docs if d["kind"] == "DaskWorkerGroup")
    assert cluster["spec"]["worker"]["metadata"]["annotations"] == pool["annotations"]
    assert group["spec"]["worker"]["metadata"]["annotations"] == {"team": "vision"}
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert account["metadata"]["name"] == s["serviceAccount"]["name"]
    # (helm install adds its own, meta.helm.sh/release-*)
    annotations = account["metadata"]["annotations"].items()
    assert s["serviceAccount"]["annotations"].items() <= annotations
    assert got["scaler"][0]["serviceAccountName"] == s["serviceAccount"]["name"]
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == s["serviceAccount"]["name"]


def test_every_standard_value_lands_in_the_objects(tmp_path):
    from tests.deploy.schemas import errors

    values = merged(chart_defaults(), STANDARD)
    docs = template(CHART, values, "ml", tmp_path, *WITH_MONITORING)
    check_standard_values(docs)
    assert [e for d in docs for e in errors(d)] == []


def test_a_service_account_of_the_platforms_is_used_not_made(tmp_path):
    values = merged(
        chart_defaults(), {"serviceAccount": {"create": False, "name": "platform-sa"}}
    )
    docs = template(CHART, values, "ml", tmp_path)
    assert "ServiceAccount" not in kinds(docs)
    (pod, _) = pods(docs)["scaler"]
    assert pod["serviceAccountName"] == "platform-sa"
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == "platform-sa"


def test_notes_tell_how_to_connect_a_client(tmp_path):
    out = run_helm(
        "install", "team-a", str(CHART), "-n", "ml", "--dry-run=client"
    ).stdout
    notes = out[out.index("NOTES:") :]
    assert 'Client("tcp://team-a-lepton-dask-scheduler.ml.svc:8786")' in notes
    assert 'KubeCluster.from_name("team-a-lepton-dask", namespace="ml")' in notes
    assert "port-forward svc/team-a-lepton-dask-scheduler 8786 8787" in notes
    words = " ".join(notes.split())
    assert "this cluster has no Prometheus Operator" in words
    assert "No registry hosts the lepton-dask images yet" in words


def test_a_pool_without_a_memory_limit_leaves_dask_its_own(tmp_path):
    # (Helm merges values into the chart's: null removes its default limits)
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": None}
    values = merged(chart_defaults(), {"pools": {"cpu": {"resources": resources}}})
    (_, worker) = pods(template(CHART, values, "ml", tmp_path))["cpu"]
    assert worker["args"][worker["args"].index("--memory-limit") + 1] == "auto"
    assert worker["resources"] == {"requests": resources["requests"]}
