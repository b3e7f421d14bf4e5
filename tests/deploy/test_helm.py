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


def template(chart: Path, values: dict, namespace: str, tmp: Path) -> list[dict]:
    vf = tmp / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    out = run_helm("template", "rel", str(chart), "-n", namespace, "-f", str(vf))
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def cli_objects(spec: k8s.DeploySpec) -> list[dict]:
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


DEFAULT_POOLS = k8s.default_groups()


def _pools(**changes) -> tuple[k8s.WorkerGroup, ...]:
    """The default pools with other replicas, bounds or images."""
    import dataclasses

    return tuple(
        dataclasses.replace(g, **changes.get(g.name, {})) for g in DEFAULT_POOLS
    )


SPECS = {
    "defaults": k8s.DeploySpec(),
    "slo with budgets": k8s.DeploySpec(
        name="team-a",
        namespace="ml",
        scaler_policy="slo",
        scaler_deadline=600.0,
        budget_usd_per_hour=2.5,
        budget_usd=100.0,
        groups=_pools(cpu={"replicas": 3, "min_replicas": 2, "max_replicas": 9}),
    ),
    "predictive stream": k8s.DeploySpec(
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

    spec = k8s.DeploySpec(
        name="team-b",
        namespace="ml",
        capacity_label="eks.amazonaws.com/capacityType",
        scaler_policy="slo",
        scaler_deadline=300.0,
        groups=(
            k8s.WorkerGroup("cpu", "m6i.2xlarge", pricing="spot", max_replicas=4),
            k8s.WorkerGroup("mem", "r6i.xlarge", replicas=1, max_replicas=2),
            k8s.WorkerGroup("gpu", "g6.xlarge", image=k8s.GPU_IMAGE, pricing="spot"),
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
    values = helm.values_for(k8s.DeploySpec())
    values["prometheus"]["enabled"] = False
    values["grafana"]["dashboards"] = False
    values["scaler"]["enabled"] = False
    kinds = {d["kind"] for d in template(CHART, values, "lepton", tmp_path)}
    assert kinds == {"DaskCluster", "DaskWorkerGroup"}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("scaler", "policy"), "fastest", "'/scaler/policy': value must be one of"),
        (("clusterName",), "Team_A", "'/clusterName'"),
        (("image",), "ghcr.io/acme/lepton", "'/image'"),
        (("scaler", "deadline"), -5, "'/scaler/deadline'"),
        (("pools", "cpu", "maxReplicas"), "ten", "'/pools/cpu/maxReplicas'"),
        (("pools", "spot"), {"replicas": 1}, "additional properties 'spot'"),
    ],
)
def test_the_values_schema_refuses_bad_values(path, value, message, tmp_path):
    values = helm.values_for(k8s.DeploySpec())
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
