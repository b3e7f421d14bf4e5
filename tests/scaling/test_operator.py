"""The dask-kubernetes operator's DaskAutoscaler asks our policy, through the
operator's own code.

``get_desired_workers`` and ``retire_workers`` (dask_kubernetes.operator
.controller) run unchanged against a real scheduler's HTTP server with
``PolicyServer`` installed. Only ``get_scheduler_address`` is replaced: in a
cluster it looks the scheduler's Service up in the Kubernetes API; here it
returns the scheduler's own address. Pods never run here, so the LocalCluster's
workers stand in for the worker Deployments.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from lepton_dask.cost import CostMonitor
from lepton_dask.scaling.serve import PolicyServer
from lepton_dask.scaling.slo import SLOPolicy, deadline
from lepton_dask.scaling.state import PoolSpec
from tests.helpers import policy_served_cluster, wait_for

controller = pytest.importorskip("dask_kubernetes.operator.controller.controller")

POOL = PoolSpec("default", threads=1, max_workers=6)


def _nap(i):
    time.sleep(0.3)
    return i


@pytest.fixture
def served(monkeypatch):
    monitor = CostMonitor(ledger=False, minimum_billing=1.0, flush_interval=0.2)
    server = PolicyServer(SLOPolicy(deadline=6.0), pools={"default": POOL})
    with policy_served_cluster(monitor, server, "300ms") as (cluster, client):
        sched = cluster.scheduler
        http = f"http://127.0.0.1:{sched.http_server.port}"

        async def address(service_name, namespace, port_name="tcp-comm", **_):
            assert service_name == "demo-scheduler" and namespace == "ns"
            return http if port_name == "http-dashboard" else sched.address

        monkeypatch.setattr(controller, "get_scheduler_address", address)
        yield cluster, client, server, monitor


def _desired() -> int:
    return asyncio.run(controller.get_desired_workers("demo-scheduler", "ns"))


@pytest.mark.timeout(120)
def test_operator_scales_and_retires_by_the_policy(served):
    cluster, client, server, monitor = served
    assert _desired() == 0  # no work, no workers
    with deadline(6.0):
        futures = client.map(_nap, range(30))
    wait_for(lambda: _desired() > 0, 10, interval=0.2)
    want = _desired()
    assert want == server.adaptive_target() and 1 <= want <= POOL.max_workers
    cluster.scale(want)  # what the operator's replica patch brings up
    client.gather(futures)
    served_decisions = [
        e for _, e in monitor.log if e.get("event") == "scaler" and e.get("served")
    ]
    assert served_decisions  # in the decision log, as under CostAwareAdaptive
    del futures
    # idle, paid-up workers: the policy lets them go, and the operator's retire
    # path retires exactly the ones it names
    wait_for(lambda: server.targets()["retire"]["default"], 20, interval=0.2)
    named = set(server.targets()["retire"]["default"])
    retired = asyncio.run(
        controller.retire_workers(
            n_workers=len(named),
            scheduler_service_name="demo-scheduler",
            worker_group_name="demo-default",
            namespace="ns",
            logger=logging.getLogger("kopf-test"),
        )
    )
    assert {str(r) for r in retired} == named  # (LocalCluster names are ints)
    wait_for(
        lambda: not named & {str(w.name) for w in cluster.scheduler.workers.values()},
        20,
    )


def test_operator_asks_for_no_more_than_the_policy_releases(served):
    """With nothing to release the retire path closes no worker, whatever n
    the operator sends (the policy, not LIFO, picks)."""
    cluster, client, server, _ = served
    cluster.scale(2)
    client.wait_for_workers(2)
    with deadline(30.0):
        futures = client.map(_nap, range(20))
    assert server.targets()["retire"]["default"] == []
    retired = asyncio.run(
        controller.retire_workers(
            n_workers=2,
            scheduler_service_name="demo-scheduler",
            worker_group_name="demo-default",
            namespace="ns",
            logger=logging.getLogger("kopf-test"),
        )
    )
    assert retired == []
    assert len(cluster.scheduler.workers) == 2
    client.gather(futures)
