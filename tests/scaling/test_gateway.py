"""A real dask-gateway-server (PyPI; its unsafe local backend, which needs no
root) whose clusters' schedulers carry our preload, with the cluster option
``lepton_policy`` (``lepton.scaling.serve-adaptive-target``) on by default: a
user's ``cluster.adapt()`` then scales by the SLO policy, through the
gateway's own adapt loop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("dask_gateway_server")


@pytest.fixture
def gateway():
    """A dask-gateway-server on free loopback ports (the configuration of
    :mod:`lepton_dask.experiments.gateway`, which the README quotes); stopped
    with every process it started."""
    from lepton_dask.experiments.gateway import local_gateway

    env = {
        "DASK_LEPTON__SCALING__POLICY": "slo",
        "DASK_LEPTON__SCALING__DEADLINE": "30",
        "DASK_LEPTON__COST__LEDGER": "false",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # the test's tasks
    }
    with local_gateway(env) as address:
        yield address


def _nap(i):
    time.sleep(0.5)
    return i


def _scaler_decisions(dask_scheduler=None):
    from lepton_dask.cost.monitor import CostMonitor

    monitor = next(
        p for p in dask_scheduler.plugins.values() if isinstance(p, CostMonitor)
    )
    return [e for _, e in monitor.log if e.get("event") == "scaler"]


def _close(g, cluster) -> None:
    cluster.shutdown()
    cluster.close()
    g.close()
    # dask-gateway 2026.3: Gateway.__del__ calls close() again, which raises
    # once the loop runner has stopped; closed here (ours, and the one the
    # cluster object holds), they need not
    for gw in (g, cluster.gateway):
        gw.__dict__.pop("_loop_runner", None)


@pytest.mark.timeout(240)
def test_gateway_cluster_scales_by_the_slo_policy(gateway):
    from dask_gateway import Gateway
    from dask_gateway.auth import BasicAuth

    from lepton_dask.scaling.slo import deadline

    g = Gateway(gateway, auth=BasicAuth(username="alice", password=None))
    cluster = g.new_cluster()
    try:
        cluster.adapt(minimum=0, maximum=4)
        client = cluster.get_client()
        t0 = time.time()
        with deadline(30):
            assert client.gather(client.map(_nap, range(40))) == list(range(40))
        took = time.time() - t0
        decisions = client.run_on_scheduler(_scaler_decisions)
        client.close()
    finally:
        _close(g, cluster)
    assert took <= 30.0, took
    assert decisions, "the gateway's adapt loop never asked the policy"
    assert all(d["served"] == "adaptive_target" for d in decisions)
    assert any("by EDF" in d["reason"] for d in decisions)
    assert max(sum(d["targets"].values()) for d in decisions) <= 4


def _served(dask_scheduler=None) -> list[str]:
    from lepton_dask.scaling.serve import PolicyServer

    return [
        type(p).__name__
        for p in dask_scheduler.plugins.values()
        if isinstance(p, PolicyServer)
    ]


@pytest.mark.timeout(240)
def test_option_off_leaves_the_gateway_stock(gateway):
    """``lepton_policy=False``: the scheduler bills (the CostMonitor) but
    answers the gateway's adapt loop as distributed does."""
    from dask_gateway import Gateway
    from dask_gateway.auth import BasicAuth

    g = Gateway(gateway, auth=BasicAuth(username="bob", password=None))
    assert g.cluster_options()["lepton_policy"] is True  # the default
    cluster = g.new_cluster(lepton_policy=False)
    try:
        cluster.adapt(minimum=0, maximum=2)
        client = cluster.get_client()
        assert client.gather(client.map(_nap, range(8))) == list(range(8))
        served = client.run_on_scheduler(_served)
        decisions = client.run_on_scheduler(_scaler_decisions)
        client.close()
    finally:
        _close(g, cluster)
    assert served == [] and decisions == []
