"""The cost-aware scaler for the dask-kubernetes operator.

Same pure policies as :class:`~lepton_dask.scaling.CostAwareAdaptive`; what
differs is how a decision is applied to the operator's worker groups
(``<cluster>-default`` for the DaskCluster's own workers, ``<cluster>-<pool>``
for the others):

* **Growing**: a JSON merge patch of the group's ``spec.worker.replicas``;
  the operator creates the worker Deployments.
* **Shrinking**: never by lowering replicas alone. On scale-down the operator
  asks the scheduler to retire *n* workers of the whole cluster
  (dask-kubernetes#914), so shrinking the GPU group could retire a CPU
  worker. The scaler chooses the releasable workers of that pool itself,
  retires them by name through the scheduler, deletes exactly their
  Deployments (worker name == Deployment name, checked against the group's
  label), and only then lowers replicas to the Deployments left, so the
  operator finds nothing to retire.

Replicas are read live from every DaskWorkerGroup (including
``<cluster>-default``, which ``DaskCluster.spec.worker.replicas`` does not
follow once something scales the group); workers not yet at the scheduler
are the group's Deployments the scheduler does not know, billed from their
creation. The scaler refuses to run beside a DaskAutoscaler of the same
cluster. It talks to the API server through the official Kubernetes client
(:class:`KubernetesAPI`), in a pod or from a kubeconfig.

:func:`replica_patches` is pure; :class:`Scaler` is the loop.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from lepton_dask import _protocol as protocol
from lepton_dask.scaling.apply import ChurnCounter, plan_apply
from lepton_dask.scaling.registry import Policy
from lepton_dask.scaling.report import decision_report
from lepton_dask.scaling.state import (
    ClusterView,
    Decision,
    PoolSpec,
    ViewBuilder,
    WorkerView,
)

logger = logging.getLogger(__name__)

GROUP, VERSION = "kubernetes.dask.org", "v1"
PLURAL = {"DaskCluster": "daskclusters", "DaskWorkerGroup": "daskworkergroups"}


class AutoscalerConflict(RuntimeError):
    """A DaskAutoscaler scales the same cluster."""


@dataclass(frozen=True)
class GroupRef:
    """A pool and the Kubernetes resource whose replicas size it."""

    pool: str
    resource: str  # DaskWorkerGroup (DaskCluster accepted for old files)
    name: str
    spec: PoolSpec
    cluster: str = ""
    default: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupRef:
        resource = d.get("resource")
        if resource not in PLURAL:
            raise ValueError(
                f"group {d.get('pool')!r}: resource must be DaskCluster or "
                f"DaskWorkerGroup, got {resource!r}"
            )
        spec = PoolSpec.from_catalog(
            d["pool"],
            d["instance_type"],
            d.get("pricing", "on-demand"),
            kind=d.get("kind", "cpu"),
            threads=int(d.get("threads", 1)),
            min_workers=int(d.get("min_replicas", 0)),
            max_workers=int(d.get("max_replicas", 10)),
            startup_s=float(d.get("startup_s", 60)),
        )
        return cls(
            d["pool"],
            resource,
            d["name"],
            spec,
            cluster=str(d.get("cluster", "")),
            default=bool(d.get("default", False)),
        )


def load_groups(path: str | Path) -> list[GroupRef]:
    """The scaler's ``--groups`` file (written into a ConfigMap by the manifests)."""
    docs = yaml.safe_load(Path(path).read_text())
    if not isinstance(docs, list) or not docs:
        raise ValueError(f"{path}: expected a non-empty list of worker groups")
    return [GroupRef.from_dict(d) for d in docs]


def replica_patches(
    decision: Decision,
    view: ClusterView,
    groups: list[GroupRef],
    replicas: dict[str, int],
) -> list[dict[str, Any]]:
    """The patches that apply ``decision``, given each group's current
    ``spec.worker.replicas``.

    The plan is :func:`~lepton_dask.scaling.apply.plan_apply`'s, the one every
    scaler carries out: growing is immediate (up to the pool's maximum);
    shrinking names the workers to retire (``"retire"``): those the decision
    names, then the pool's *releasable* ones (idle, their paid minimum used
    up), paid-up longest first, and never more.

    >>> from lepton_dask.scaling.state import PoolSpec, ClusterView, Decision
    >>> g = [GroupRef("cpu", "DaskCluster", "lepton", PoolSpec("cpu", max_workers=5))]
    >>> v = ClusterView(now=0.0, pools={"cpu": g[0].spec}, workers=[], backlog={})
    >>> replica_patches(Decision({"cpu": 9}, "more"), v, g, {"cpu": 1})
    [{'resource': 'DaskCluster', 'name': 'lepton', 'pool': 'cpu', 'from': 1, 'to': 5, 'retire': [], 'patch': {'spec': {'worker': {'replicas': 5}}}}]
    """
    plan = plan_apply(
        decision,
        replace(view, pools={g.pool: g.spec for g in groups}),
        counts={g.pool: int(replicas.get(g.pool, 0)) for g in groups},
    )
    out = []
    for g in groups:
        p = plan.pools[g.pool]
        if p.target != p.have:
            out.append(
                {
                    "resource": g.resource,
                    "name": g.name,
                    "pool": g.pool,
                    "from": p.have,
                    "to": p.target,
                    "retire": list(p.retire),
                    "patch": {"spec": {"worker": {"replicas": p.target}}},
                }
            )
    return out


def pending_workers(
    view_workers: list[dict[str, Any]],
    deployments: dict[str, list[dict[str, Any]]],
) -> list[WorkerView]:
    """Each pool's worker Deployments that have not reached the scheduler
    yet, billed from the Deployment's creation (``deployments``: pool ->
    ``[{"name", "created"}]``). A retired worker's Deployment is deleted, so
    no phantom stays pending.

    >>> pending_workers([{"name": "a", "pool": "cpu"}],
    ...     {"cpu": [{"name": "a", "created": 1.0}, {"name": "b", "created": 5.0}]})
    [WorkerView(name='b', pool='cpu', billed_since=5.0, busy=False, arrived=False, holds_data=False)]
    """
    arrived = {str(w["name"]) for w in view_workers}
    return [
        WorkerView(d["name"], pool, float(d["created"]), False, False)
        for pool, deps in deployments.items()
        for d in deps
        if d["name"] not in arrived
    ]


def retire_by_name(client: Any, names: list[str]) -> list[str]:
    """Retire exactly the workers named ``names`` through the scheduler
    (gracefully: their unique data moves first); the names it retired."""
    retired = client.sync(
        client.scheduler.retire_workers, names=list(names), close_workers=True
    )
    return sorted(str(info["name"]) for info in (retired or {}).values())


class KubernetesAPI:
    """The few calls the scaler makes, on the official Kubernetes client.

    Where it connects, in order: a kubeconfig (``kubeconfig``, else
    ``$KUBECONFIG`` or ``~/.kube/config`` outside a pod), the pod's service
    account (in a pod, with no ``server``), or ``server`` with a service
    account's ``token_file`` and ``ca_file`` (as in a pod, pointed elsewhere).

    The client does what a Kubernetes client should without code of ours:
    a service-account token is reread from its file (the client's in-cluster
    loader, every minute: projected tokens rotate well before they expire),
    and a call the server throttles (429, API Priority and Fairness) is
    retried after the server's ``Retry-After`` (urllib3's ``Retry``, every
    verb: a throttled request was not carried out), at most :attr:`TRIES`
    times. The official client rather than ``kr8s`` (which dask-kubernetes
    uses): kr8s 0.20 retries nothing on 429 (it raises at once), so the
    retry loop would be ours again; and the scaler's loop is synchronous,
    as this client is.

    >>> api = KubernetesAPI(kubeconfig="~/.kube/config")  # doctest: +SKIP
    >>> api.replicas("lepton", "DaskWorkerGroup", "lepton-default")  # doctest: +SKIP
    2
    """

    SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    #: tries of a call the server throttles
    TRIES = 5

    def __init__(
        self,
        server: str | None = None,
        token_file: str | None = None,
        ca_file: str | None = None,
        kubeconfig: str | None = None,
    ):
        import kubernetes.client
        import urllib3

        cfg = _configuration(server, token_file, ca_file, kubeconfig)
        cfg.retries = urllib3.Retry(
            total=self.TRIES - 1,
            connect=0,
            read=0,
            status_forcelist=(429,),
            allowed_methods=None,  # PATCH and DELETE too
            respect_retry_after_header=True,
            backoff_factor=0.5,
            backoff_max=5,
            raise_on_status=False,  # the last 429 is raised as an ApiException
        )
        self.client = kubernetes.client.ApiClient(cfg)
        self.server = cfg.host
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)

    def token(self) -> str | None:
        """The bearer token the next call sends (None with a client
        certificate)."""
        cfg = self.client.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        value = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
        if not value:
            return None
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else value

    def replicas(self, namespace: str, resource: str, name: str) -> int:
        obj = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL[resource], name
        )
        return int(obj["spec"]["worker"].get("replicas", 0))

    def patch(
        self, namespace: str, resource: str, name: str, patch: dict[str, Any]
    ) -> None:
        """A JSON merge patch (the client's content type for custom objects)."""
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL[resource], name, patch
        )

    def autoscalers(self, namespace: str, cluster: str) -> list[str]:
        """DaskAutoscalers of ``cluster`` (the scaler refuses to run beside one)."""
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "daskautoscalers"
        )["items"]
        return [
            a["metadata"]["name"]
            for a in items
            if a.get("spec", {}).get("cluster") == cluster
        ]

    def worker_deployments(self, namespace: str, group: str) -> list[dict[str, Any]]:
        """``[{"name", "created"}]`` of the worker Deployments of one group."""
        found = self.apps.list_namespaced_deployment(
            namespace, label_selector=f"dask.org/workergroup-name={group}"
        )
        return [
            {
                "name": d.metadata.name,
                "created": d.metadata.creation_timestamp.timestamp(),
            }
            for d in found.items
        ]

    def delete_deployment(self, namespace: str, name: str) -> None:
        self.apps.delete_namespaced_deployment(
            name, namespace, propagation_policy="Background"
        )


def _configuration(
    server: str | None,
    token_file: str | None,
    ca_file: str | None,
    kubeconfig: str | None,
) -> Any:
    """The client's configuration for :class:`KubernetesAPI` (see there)."""
    import kubernetes.client
    import kubernetes.config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    cfg = kubernetes.client.Configuration()
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if kubeconfig is not None or (server is None and not in_pod):
        try:
            kubernetes.config.load_kube_config(
                config_file=kubeconfig, client_configuration=cfg
            )
        except kubernetes.config.ConfigException as e:
            raise RuntimeError(
                f"not in a Kubernetes pod and no usable kubeconfig ({e}): pass "
                "--api-server and --token-file, or set KUBECONFIG"
            ) from None
    elif server is None:
        InClusterConfigLoader(
            str(KubernetesAPI.SA / "token"), str(KubernetesAPI.SA / "ca.crt")
        ).load_and_set(cfg)
    else:
        if not token_file or not ca_file:
            raise ValueError("--api-server needs --token-file and --ca-file")
        url = urllib.parse.urlsplit(server)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(
                f"--api-server must be https://HOST[:PORT], got {server!r}"
            )
        # the in-cluster loader, for another server: the same token rereading
        environ = {
            "KUBERNETES_SERVICE_HOST": url.hostname,
            "KUBERNETES_SERVICE_PORT": str(url.port or 443),
        }
        InClusterConfigLoader(token_file, ca_file, environ=environ).load_and_set(cfg)
    return cfg


class Scaler:
    """Decide every ``interval`` seconds and patch the worker groups."""

    def __init__(
        self,
        client: Any,
        api: KubernetesAPI,
        namespace: str,
        groups: list[GroupRef],
        policy: Policy,
        interval: float = 10.0,
    ):
        self.client = client
        self.api = api
        self.namespace = namespace
        self.groups = groups
        self.pools = {g.pool: g.spec for g in groups}
        self.policy = policy
        self.interval = interval
        self.views = ViewBuilder()
        self.churn = ChurnCounter()

    def check_alone(self) -> None:
        """Refuse to run beside a DaskAutoscaler of the same cluster: two
        loops would fight over the same replicas."""
        for cluster in sorted({g.cluster for g in self.groups if g.cluster}):
            found = self.api.autoscalers(self.namespace, cluster)
            if found:
                raise AutoscalerConflict(
                    f"DaskAutoscaler {', '.join(found)} scales cluster {cluster!r}: "
                    "delete it (or stop this scaler); both cannot run"
                )

    def step(self) -> list[dict[str, Any]]:
        """One decision; returns the changes applied."""
        self.check_alone()
        st = self.client.sync(getattr(self.client.scheduler, protocol.SCALER_STATE))
        replicas = {
            g.pool: self.api.replicas(self.namespace, g.resource, g.name)
            for g in self.groups
        }
        deployments = {
            g.pool: self.api.worker_deployments(self.namespace, g.name)
            for g in self.groups
        }
        pending = pending_workers(st["workers"], deployments)
        view = self.views.build(st, self.pools, pending)
        decision = self.policy.decide(view)
        changes = replica_patches(decision, view, self.groups, replicas)
        for p in changes:
            if p["retire"]:
                p["to"] = p["from"] - self.retire(p, deployments[p["pool"]])
                p["patch"] = {"spec": {"worker": {"replicas": p["to"]}}}
            logger.info(
                "%s %s: replicas %d -> %d (%s)",
                p["resource"],
                p["name"],
                p["from"],
                p["to"],
                decision.reason,
            )
            if p["to"] != p["from"]:
                self.api.patch(self.namespace, p["resource"], p["name"], p["patch"])
        for p in changes:  # the operator names the new workers: counted here
            self.churn.record(
                view.now,
                p["pool"],
                launched=max(0, p["to"] - p["from"]),
                retired=max(0, p["from"] - p["to"]),
                startup_s=view.pools[p["pool"]].startup_s,
            )
        report = decision_report(
            decision,
            view.now,
            self.churn,
            launched=[],
            retired=[n for p in changes for n in p.get("retired", ())],
            changed=any(p["to"] != p["from"] for p in changes),
        )
        self.client.sync(
            getattr(self.client.scheduler, protocol.SCALER_DECISION), decision=report
        )
        return changes

    def retire(self, change: dict[str, Any], deployments: list[dict[str, Any]]) -> int:
        """Retire the chosen workers by name, delete exactly their
        Deployments; returns how many went."""
        mine = {d["name"] for d in deployments}
        names = [n for n in change["retire"] if n in mine]
        if not names:
            return 0
        gone = retire_by_name(self.client, names)
        for name in gone:
            if name in mine:
                self.api.delete_deployment(self.namespace, name)
        change["retired"] = gone
        return sum(1 for n in gone if n in mine)

    def run(self) -> None:  # pragma: no cover - needs a Kubernetes cluster
        while True:
            started = time.monotonic()
            try:
                self.step()
            except AutoscalerConflict:
                raise  # beside a DaskAutoscaler: stop
            except Exception as e:  # keep scaling through transient errors
                logger.error(
                    "scaling step failed, skipped until the next interval: %s",
                    e,
                    exc_info=True,
                )
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))


def main(args: Any) -> int:  # pragma: no cover - needs a Kubernetes cluster
    """``lepton-dask k8s-scaler``: the policy comes from ``lepton.scaling.*``
    (e.g. ``DASK_LEPTON__SCALING__POLICY=deadline``)."""
    from dask.utils import parse_timedelta
    from distributed import Client

    from lepton_dask.scaling.registry import policy_from_config

    groups = load_groups(args.groups)
    api = KubernetesAPI(
        args.api_server,
        args.token_file,
        args.ca_file,
        kubeconfig=getattr(args, "kubeconfig", None),
    )
    interval = parse_timedelta(args.interval)
    with Client(args.scheduler) as client:
        scaler = Scaler(
            client, api, args.namespace, groups, policy_from_config(), interval
        )
        try:
            scaler.check_alone()
        except AutoscalerConflict as e:
            logger.error("%s", e)
            return 2
        scaler.run()
    return 0
