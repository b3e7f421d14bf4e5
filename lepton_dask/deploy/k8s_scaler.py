"""The cost-aware scaler for the dask-kubernetes operator.

Same pure policies as :class:`~lepton_dask.scaling.CostAwareAdaptive`; what
differs is how a decision is applied: as a JSON merge patch of
``spec.worker.replicas`` on the ``DaskCluster`` (its default group) or a
``DaskWorkerGroup``. The operator then starts pods or retires workers
(gracefully, through the scheduler).

:func:`replica_patches` is pure and is what the tests check; :class:`Scaler`
is the loop (scheduler state -> view -> decision -> patches -> Kubernetes API).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lepton_dask.scaling.state import (
    ClusterView,
    Decision,
    PoolSpec,
    ViewBuilder,
    WorkerView,
    releasable,
)

logger = logging.getLogger(__name__)

PLURAL = {"DaskCluster": "daskclusters", "DaskWorkerGroup": "daskworkergroups"}


@dataclass(frozen=True)
class GroupRef:
    """A pool and the Kubernetes resource whose replicas size it."""

    pool: str
    resource: str  # DaskCluster or DaskWorkerGroup
    name: str
    spec: PoolSpec

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
        return cls(d["pool"], resource, d["name"], spec)


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

    Growing is immediate (up to the pool's maximum). Shrinking goes no lower
    than the workers that are *releasable* allow (idle, their paid minimum
    used up): the operator retires workers of its own choosing, so the scaler
    only shrinks by as many as the policy would have released itself.

    >>> from lepton_dask.scaling.state import PoolSpec, ClusterView, Decision
    >>> g = [GroupRef("cpu", "DaskCluster", "lepton", PoolSpec("cpu", max_workers=5))]
    >>> v = ClusterView(now=0.0, pools={"cpu": g[0].spec}, workers=[], backlog={})
    >>> replica_patches(Decision({"cpu": 9}, "more"), v, g, {"cpu": 1})
    [{'resource': 'DaskCluster', 'name': 'lepton', 'pool': 'cpu', 'from': 1, 'to': 5, 'patch': {'spec': {'worker': {'replicas': 5}}}}]
    """
    out = []
    for g in groups:
        have = int(replicas.get(g.pool, 0))
        want = int(decision.targets.get(g.pool, have))
        want = min(max(want, g.spec.min_workers), g.spec.max_workers)
        if want < have:
            want = max(want, have - len(releasable(view, g.pool)))
        if want != have:
            out.append(
                {
                    "resource": g.resource,
                    "name": g.name,
                    "pool": g.pool,
                    "from": have,
                    "to": want,
                    "patch": {"spec": {"worker": {"replicas": want}}},
                }
            )
    return out


def pending_workers(
    view_workers: list[dict[str, Any]],
    replicas: dict[str, int],
    requested_at: dict[str, float],
) -> list[WorkerView]:
    """Workers the groups' replicas ask for that have not reached the
    scheduler yet (billed from when the scaler asked for them)."""
    arrived: dict[str, int] = {}
    for w in view_workers:
        arrived[w["pool"]] = arrived.get(w["pool"], 0) + 1
    out = []
    for pool, n in replicas.items():
        for i in range(max(0, n - arrived.get(pool, 0))):
            out.append(
                WorkerView(
                    f"pending-{pool}-{i}",
                    pool,
                    requested_at.get(pool, 0.0),
                    False,
                    False,
                )
            )
    return out


class KubernetesAPI:
    """The few calls the scaler makes, over HTTPS with the pod's service
    account (in-cluster) or a given server and token."""

    SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
    ):
        if server is None:
            import os

            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise RuntimeError(
                    "not in a Kubernetes pod: pass --api-server and --token-file"
                )
            server = f"https://{host}:{port}"
            token = token or (self.SA / "token").read_text().strip()
            ca_file = ca_file or str(self.SA / "ca.crt")
        self.server = server.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_file)

    def _url(self, namespace: str, resource: str, name: str) -> str:
        return (
            f"{self.server}/apis/kubernetes.dask.org/v1/namespaces/{namespace}/"
            f"{PLURAL[resource]}/{name}"
        )

    def _call(self, method: str, url: str, body: bytes | None = None, ctype=None):
        req = urllib.request.Request(url, data=body, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, context=self.context, timeout=30) as r:
            return json.loads(r.read())

    def replicas(self, namespace: str, resource: str, name: str) -> int:
        obj = self._call("GET", self._url(namespace, resource, name))
        return int(obj["spec"]["worker"].get("replicas", 0))

    def patch(
        self, namespace: str, resource: str, name: str, patch: dict[str, Any]
    ) -> None:
        self._call(
            "PATCH",
            self._url(namespace, resource, name),
            json.dumps(patch).encode(),
            "application/merge-patch+json",
        )


class Scaler:
    """Decide every ``interval`` seconds and patch the worker groups."""

    def __init__(
        self,
        client: Any,
        api: KubernetesAPI,
        namespace: str,
        groups: list[GroupRef],
        policy: Any,
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
        self.requested_at: dict[str, float] = {}

    def step(self) -> list[dict[str, Any]]:
        """One decision; returns the patches sent."""
        st = self.client.sync(self.client.scheduler.lepton_scaler_state)
        replicas = {
            g.pool: self.api.replicas(self.namespace, g.resource, g.name)
            for g in self.groups
        }
        pending = pending_workers(st["workers"], replicas, self.requested_at)
        view = self.views.build(st, self.pools, pending)
        decision = self.policy.decide(view)
        patches = replica_patches(decision, view, self.groups, replicas)
        for p in patches:
            logger.info(
                "%s %s: replicas %d -> %d (%s)",
                p["resource"], p["name"], p["from"], p["to"], decision.reason,
            )  # fmt: skip
            self.api.patch(self.namespace, p["resource"], p["name"], p["patch"])
            if p["to"] > p["from"]:
                self.requested_at[p["pool"]] = st["now"]
        entry = decision.as_log(view.now)[1]
        entry["changed"] = bool(patches)
        self.client.sync(
            self.client.scheduler.lepton_scaler_decision,
            decision={**entry, "time": view.now},
        )
        return patches

    def run(self) -> None:  # pragma: no cover - needs a Kubernetes cluster
        while True:
            started = time.monotonic()
            try:
                self.step()
            except Exception as e:  # keep scaling through transient errors
                logger.error("scaling step failed: %s", e)
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))


def main(args: Any) -> int:  # pragma: no cover - needs a Kubernetes cluster
    """``lepton-dask k8s-scaler``: the policy comes from ``lepton.scaling.*``
    (e.g. ``DASK_LEPTON__SCALING__POLICY=deadline``)."""
    from dask.utils import parse_timedelta
    from distributed import Client

    from lepton_dask.scaling.adaptive import policy_from_config

    groups = load_groups(args.groups)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    api = KubernetesAPI(args.api_server, token, args.ca_file)
    interval = parse_timedelta(args.interval)
    with Client(args.scheduler) as client:
        Scaler(
            client, api, args.namespace, groups, policy_from_config(), interval
        ).run()
    return 0
