"""Everything we ship for Kubernetes, against a real API server (built with
Go, see tests/kube/server.py): server-side apply with strict field
validation, our scaler's calls through a ServiceAccount bound by our own
Role under RBAC, and the dask-kubernetes operator's controller (kopf) run
as a process, creating and deleting worker Deployments.

No kubelet runs: pods never start. The assertions are on the objects the
server admits, stores and refuses."""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest
import yaml

from lepton_dask.deploy import helm
from lepton_dask.deploy import kubernetes as k8s
from lepton_dask.deploy import spec as dspec
from lepton_dask.deploy.k8s_scaler import KubernetesAPI, Scaler, load_groups
from tests.deploy.schemas import crd_docs
from tests.deploy.test_helm import (
    CHART,
    SPECS,
    STANDARD,
    chart_defaults,
    check_standard_values,
    helm_bin,
    merged,
    template,
)
from tests.deploy.test_kubernetes import docs as committed
from tests.helpers import nanny_cluster, wait_for
from tests.kube.server import ApiServer, KubeError, api_server

pytestmark = pytest.mark.timeout(300)


def shipped_files() -> list[dict]:
    """deploy/kubernetes/*.yaml as committed, the Namespace first."""
    return sorted(committed(), key=lambda d: d["kind"] != "Namespace")


@pytest.fixture(scope="module")
def kube():
    with api_server() as server:
        for crd in crd_docs():
            server.admin.apply(crd)
            server.admin.wait_established(crd["metadata"]["name"])
        yield server


def namespace(kube: ApiServer, name: str) -> None:
    kube.admin.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )


def test_every_object_we_ship_is_accepted_server_side(kube, tmp_path):
    applied = []
    for doc in shipped_files():
        out = kube.admin.apply(doc, manager="deploy-files")
        applied.append((doc["kind"], out["metadata"]["name"]))
    for spec in SPECS.values():
        namespace(kube, spec.namespace)
        for doc in template(CHART, helm.values_for(spec), spec.namespace, tmp_path):
            doc.setdefault("metadata", {}).setdefault("namespace", spec.namespace)
            out = kube.admin.apply(doc, manager="helm")
            # nothing pruned: what the server stored is what we sent
            if "spec" in doc:
                assert _subset(doc["spec"], out["spec"]), (doc["kind"], doc["metadata"])
            applied.append((doc["kind"], out["metadata"]["name"]))
    kinds = {k for k, _ in applied}
    assert {
        "DaskCluster",
        "DaskWorkerGroup",
        "ServiceMonitor",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Deployment",
        "ConfigMap",
    } <= kinds


def _subset(sent, stored) -> bool:
    """Every field we sent is stored with its value (defaults may be added)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            k in stored and _subset(v, stored[k]) for k, v in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(sent) == len(stored)
            and all(_subset(a, b) for a, b in zip(sent, stored, strict=True))
        )
    return sent == stored or str(sent) == str(stored)


def test_the_server_refuses_an_unknown_field_so_acceptance_means_something(kube):
    cluster = copy.deepcopy(k8s.dask_cluster(dspec.DeploySpec(namespace="refused")))
    namespace(kube, "refused")
    cluster["spec"]["worker"]["replica"] = 3  # a typo of replicas
    with pytest.raises(KubeError) as e:
        kube.admin.apply(cluster)
    # server-side apply refuses a field the CRD's schema does not declare
    assert ".spec.worker.replica: field not declared in schema" in str(e.value)
    assert "refused" not in kube.admin.names(
        "/apis/kubernetes.dask.org/v1/namespaces/refused/daskclusters"
    )


def scaler_api(kube: ApiServer, ns: str) -> KubernetesAPI:
    """Our scaler's client with a token of its ServiceAccount (bound by our
    Role), as it runs in its pod."""
    token = kube.admin.service_account_token(ns, "lepton-scaler")
    path = kube.dir / f"token-{ns}"
    path.write_text(token)
    return KubernetesAPI(kube.admin.server, str(path), kube.admin.ca)


def worker_deployment(name: str, group: str, ns: str) -> dict:
    labels = {"dask.org/workergroup-name": group, "app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": dspec.IMAGE}]},
            },
        },
    }


def with_default_group(kube: ApiServer, ns: str) -> dspec.DeploySpec:
    """Our manifests in ``ns``, and the DaskCluster's default worker group
    (2 replicas) as the operator builds it (its own builder)."""
    from dask_kubernetes.operator.controller.controller import (
        build_default_worker_group_spec,
    )

    spec = dspec.DeploySpec(namespace=ns)
    for docs in k8s.manifests(spec).values():
        for doc in docs:
            kube.admin.apply(doc)
    group = build_default_worker_group_spec(
        "lepton", k8s.dask_cluster(spec)["spec"]["worker"], {}, {}
    )
    kube.admin.apply({**group, "metadata": {**group["metadata"], "namespace": ns}})
    return spec


def test_the_scaler_role_grants_what_the_scaler_calls_and_nothing_more(kube):
    ns = "rbac"
    # the default group and two workers, as the operator makes them (its
    # own builder; the operator itself runs in the next test)
    with_default_group(kube, ns)
    for name in ("lepton-default-worker-a1", "lepton-default-worker-b2"):
        kube.admin.apply(worker_deployment(name, "lepton-default", ns))
    api = scaler_api(kube, ns)

    # every call the scaler makes succeeds under its Role
    assert api.replicas(ns, "DaskWorkerGroup", "lepton-default") == 2
    api.patch(
        ns, "DaskWorkerGroup", "lepton-default", {"spec": {"worker": {"replicas": 3}}}
    )
    assert api.replicas(ns, "DaskWorkerGroup", "lepton-default") == 3
    assert api.autoscalers(ns, "lepton") == []
    found = {d["name"] for d in api.worker_deployments(ns, "lepton-default")}
    assert found == {"lepton-default-worker-a1", "lepton-default-worker-b2"}
    api.delete_deployment(ns, "lepton-default-worker-b2")
    assert kube.admin.names(
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        "dask.org/workergroup-name=lepton-default",
    ) == ["lepton-default-worker-a1"]

    # anything else is refused: 403 from the real authorizer, through the
    # scaler's own client (kubernetes.client) and as raw calls
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.replicas("lepton", "DaskWorkerGroup", "lepton-default")
    assert refused.value.status == 403
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.patch(ns, "DaskCluster", "lepton", replicas(9))
    assert refused.value.status == 403
    token = api.token()
    assert token
    as_scaler = kube.admin.as_token(token)
    outside = [
        ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
        (
            "PATCH",
            f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters/lepton",
            {"spec": {"worker": {"replicas": 9}}},
        ),
        (
            "DELETE",
            f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskworkergroups/lepton-gpu",
            None,
        ),
        (
            "POST",
            f"/apis/apps/v1/namespaces/{ns}/deployments",
            worker_deployment("lepton-default-worker-c3", "lepton-default", ns),
        ),
        (
            "GET",
            "/apis/kubernetes.dask.org/v1/namespaces/lepton/daskworkergroups/lepton-default",
            None,
        ),
        ("GET", f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskworkergroups", None),
    ]
    for method, path, body in outside:
        ctype = "application/merge-patch+json" if method == "PATCH" else ""
        with pytest.raises(KubeError) as e:
            as_scaler.call(method, path, body, ctype)
        assert e.value.status == 403, (method, path, e.value)


@contextlib.contextmanager
def running_operator(kube: ApiServer, namespace: str) -> Iterator[Path]:
    """The dask-kubernetes operator's controller as its image runs it
    (``kopf run``), as the admin, watching ``namespace`` (the other tests'
    clusters are left alone); yields its log. It is stopped at the end,
    and a failed assertion inside carries the log's last lines."""
    import psutil

    from lepton_dask._process import end_processes

    path = kube.dir / "operator.log"
    cmd = [
        sys.executable,
        "-m",
        "kopf",
        "run",
        "--standalone",
        "--namespace",
        namespace,
    ]
    cmd += ["-m", "dask_kubernetes.operator.controller"]
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    with open(path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    try:
        yield path
    except AssertionError as e:
        raise AssertionError(
            f"{e}\n--- the operator's log:\n{path.read_text()[-4000:]}"
        ) from e
    finally:
        end_processes([psutil.Process(proc.pid)], timeout=10)
        proc.wait(timeout=10)


def workers(kube: ApiServer, ns: str, group: str) -> list[str]:
    return kube.admin.names(
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        f"dask.org/workergroup-name={group}",
    )


def settled(
    kube: ApiServer, ns: str, group: str, n: int, hold: float = 3.0
) -> list[str]:
    """The group's worker Deployments once there are ``n`` and they stay so."""
    wait_for(lambda: len(workers(kube, ns, group)) == n, timeout=60, interval=0.2)
    first = workers(kube, ns, group)
    time.sleep(hold)
    assert workers(kube, ns, group) == first
    return first


def replicas(n: int) -> dict:
    return {"spec": {"worker": {"replicas": n}}}


def shrink_by_name(api: KubernetesAPI, spec, chosen: str, names: list[str], tmp: Path):
    """What the scaler does to shrink: retire ``chosen`` by name through a
    real scheduler (whose workers carry the Deployments' names), delete its
    Deployment, then lower replicas."""
    ns = spec.namespace
    config = next(
        d for d in k8s.manifests(spec)["scaler.yaml"] if d["kind"] == "ConfigMap"
    )
    (tmp / "groups.yaml").write_text(config["data"]["groups.yaml"])
    with nanny_cluster(**{n: {} for n in names}) as (client, _):
        client.wait_for_workers(len(names), timeout=60)
        scaler = Scaler(client, api, ns, load_groups(tmp / "groups.yaml"), policy=None)
        change = {"retire": [chosen], "pool": "cpu"}
        gone = scaler.retire(change, api.worker_deployments(ns, "lepton-default"))
        assert gone == 1 and change["retired"] == [chosen]
        api.patch(ns, "DaskWorkerGroup", "lepton-default", replicas(len(names) - 1))


def test_the_operator_creates_and_deletes_exactly_the_expected_workers(kube, tmp_path):
    ns = "op"
    spec = dspec.DeploySpec(namespace=ns)
    for docs in k8s.manifests(spec).values():
        for doc in docs:
            kube.admin.apply(doc)
    with running_operator(kube, ns) as log:
        # the cluster's components, and its default group's two workers
        for path in (
            f"/apis/apps/v1/namespaces/{ns}/deployments",
            f"/api/v1/namespaces/{ns}/services",
        ):
            wait_for(lambda p=path: "lepton-scheduler" in kube.admin.names(p), 90, 0.2)
        two = settled(kube, ns, "lepton-default", 2)

        # our scaler grows the group (its own token and Role): one more
        api = scaler_api(kube, ns)
        api.patch(ns, "DaskWorkerGroup", "lepton-default", replicas(3))
        three = settled(kube, ns, "lepton-default", 3)
        assert set(two) < set(three)

        # our scaler shrinks by name; the operator finds the count already
        # right and deletes nothing else
        shrink_by_name(api, spec, three[1], three, tmp_path)
        assert settled(kube, ns, "lepton-default", 2) == [three[0], three[2]]

        # a replica change alone (as a DaskAutoscaler makes it): the operator
        # must ask the scheduler which workers to close. Its HTTP call goes
        # through a port-forward to the scheduler pod, which never runs here;
        # the handler fails and retries later, and nothing is deleted (only a
        # non-2xx answer would send it on to its RPC and LIFO fallbacks)
        group = f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskworkergroups"
        kube.admin.call(
            "PATCH",
            f"{group}/lepton-default",
            replicas(1),
            "application/merge-patch+json",
        )
        failed = "daskworkergroup_replica_update/spec.worker.replicas' failed"
        wait_for(lambda: failed in log.read_text(), timeout=60, interval=0.2)
        assert workers(kube, ns, "lepton-default") == [three[0], three[2]]


def test_the_scaler_client_works_from_a_kubeconfig(kube):
    ns = "kubeconfig"
    with_default_group(kube, ns)
    api = KubernetesAPI(kubeconfig=str(kube.kubeconfig))  # the admin's
    assert api.token() is None  # a client certificate
    assert api.replicas(ns, "DaskWorkerGroup", "lepton-default") == 2
    api.patch(ns, "DaskWorkerGroup", "lepton-default", replicas(4))
    assert api.replicas(ns, "DaskWorkerGroup", "lepton-default") == 4


def test_the_k8s_scaler_reports_launches_and_churn_through_the_one_builder(kube):
    """The Kubernetes scaler's decision report comes from the same builder
    as the other loops: a group grown within one startup of a retirement
    moves ``lepton_scaler_churn_total`` (it never moved on Kubernetes)."""
    from distributed import Client
    from prometheus_client import CollectorRegistry, generate_latest

    from lepton_dask import _protocol as protocol
    from lepton_dask.cost import CostMonitor
    from lepton_dask.cost.metrics import CostCollector
    from lepton_dask.deploy.k8s_scaler import GroupRef
    from lepton_dask.scaling import LocalPoolCluster
    from lepton_dask.scaling.state import Decision, PoolSpec

    ns = "churn"
    with_default_group(kube, ns)
    pool = PoolSpec("cpu", startup_s=60.0, max_workers=8)
    groups = [GroupRef("cpu", "DaskWorkerGroup", "lepton-default", pool, "lepton")]

    class OneMore:  # the loop under test, not a policy: the group has 2
        def decide(self, view):
            return Decision({"cpu": 3}, "one more")

    monitor = CostMonitor(ledger=False)
    pools = [PoolSpec("cpu", max_workers=1)]
    options = {"plugins": [monitor]}
    with (
        LocalPoolCluster(pools, minimum={"cpu": 0}, scheduler_options=options) as c,
        Client(c) as client,
    ):
        scaler = Scaler(client, scaler_api(kube, ns), ns, groups, OneMore(), 1.0)
        now = client.sync(getattr(client.scheduler, protocol.SCALER_STATE))["now"]
        scaler.churn.record(now, "cpu", launched=0, retired=1, startup_s=60.0)
        (change,) = scaler.step()
        assert (change["from"], change["to"]) == (2, 3)
        registry = CollectorRegistry()
        registry.register(CostCollector(monitor))
        text = generate_latest(registry).decode()
    assert "lepton_scaler_launches_total 1.0" in text
    assert "lepton_scaler_churn_total 1.0" in text
    assert monitor.scaler_last["churn_total"] == 1


# -- the chart, installed by helm ------------------------------------------------


def run_helm(kube: ApiServer, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """helm against the API server, with a discovery cache of its own (what
    the server serves now, not what an earlier call saw)."""
    home = tmp / f"helm-home-{time.monotonic_ns()}"
    env = {
        **os.environ,
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(kube.kubeconfig),
    }
    return subprocess.run(
        [helm_bin(), *args, "--kubeconfig", str(kube.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def install(
    kube: ApiServer, tmp: Path, release: str, ns: str, values: dict
) -> list[dict]:
    """``helm install``; the objects as the server stored them."""
    vf = tmp / f"values-{release}.yaml"
    vf.write_text(yaml.safe_dump(values))
    out = run_helm(kube, tmp, "install", release, str(CHART), "-n", ns, "-f", str(vf))
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = run_helm(kube, tmp, "get", "manifest", release, "-n", ns)
    assert manifest.returncode == 0, manifest.stderr
    stored = []
    for doc in yaml.safe_load_all(manifest.stdout):
        if not doc:
            continue
        got = kube.admin.get(kube.admin.path(doc))
        if "spec" in doc:  # nothing pruned: what the server stored is what we sent
            assert _subset(doc["spec"], got["spec"]), (doc["kind"], doc["metadata"])
        stored.append(got)
    return stored


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs}


MONITORS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@contextlib.contextmanager
def without_prometheus_operator(kube: ApiServer) -> Iterator[None]:
    """The Prometheus Operator's CRDs deleted (a stock cluster), then back."""
    crds = [d for d in crd_docs() if d["spec"]["group"] == "monitoring.coreos.com"]
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in crds:
        kube.admin.call("DELETE", f"{base}/{crd['metadata']['name']}")

    def gone() -> bool:
        try:
            kube.admin.get("/apis/monitoring.coreos.com/v1")
        except KubeError as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=60, interval=0.2)
    try:
        yield
    finally:
        for crd in crds:
            kube.admin.apply(crd)
            kube.admin.wait_established(crd["metadata"]["name"])


def test_helm_install_with_and_without_the_prometheus_operator(kube, tmp_path):
    ns = "charts-plain"
    namespace(kube, ns)
    with without_prometheus_operator(kube):
        # a stock cluster: the chart's defaults install, with no monitors
        docs = install(kube, tmp_path, "plain", ns, chart_defaults())
        assert not kinds(docs) & MONITORS
        assert {"DaskCluster", "DaskWorkerGroup", "Deployment"} <= kinds(docs)
        # (asked for explicitly they would be refused: the switch matters)
        forced = merged(chart_defaults(), {"prometheus": {"enabled": True}})
        vf = tmp_path / "forced.yaml"
        vf.write_text(yaml.safe_dump(forced))
        out = run_helm(kube, tmp_path, "install", "forced", str(CHART), "-n", ns,
                   "-f", str(vf))  # fmt: skip
        assert out.returncode != 0 and "ServiceMonitor" in out.stderr, out.stderr
    ns = "charts-prom"
    namespace(kube, ns)
    docs = install(kube, tmp_path, "prom", ns, chart_defaults())
    assert MONITORS <= kinds(docs)
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_two_releases_coexist_in_one_namespace(kube, tmp_path):
    ns = "charts-two"
    namespace(kube, ns)
    a = install(kube, tmp_path, "team-a", ns, chart_defaults())
    b = install(kube, tmp_path, "team-b", ns, chart_defaults())

    def names(docs):
        return {(d["kind"], d["metadata"]["name"]) for d in docs}

    assert not names(a) & names(b)
    clusters = kube.admin.names(
        f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters"
    )
    assert clusters == ["team-a-lepton-dask", "team-b-lepton-dask"]
    out = run_helm(kube, tmp_path, "list", "-n", ns, "-q")
    assert out.stdout.split() == ["team-a", "team-b"], out.stderr


def test_every_standard_value_is_installed(kube, tmp_path):
    ns = "charts-std"
    namespace(kube, ns)
    values = merged(chart_defaults(), STANDARD)
    check_standard_values(install(kube, tmp_path, "std", ns, values))
