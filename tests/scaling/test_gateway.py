"""A real dask-gateway-server (PyPI; its unsafe local backend, which needs no
root) whose clusters' schedulers carry our preload with
``lepton.scaling.serve-adaptive-target``: a user's ``cluster.adapt()`` then
scales by the SLO policy, through the gateway's own adapt loop."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytest.importorskip("dask_gateway_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """
import sys
c.Gateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.Gateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.Gateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.ClusterConfig.scheduler_cmd = [sys.executable, "-m",
    "distributed.cli.dask_scheduler", "--preload", "lepton_dask.scaling.serve"]
c.ClusterConfig.worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker"]
c.ClusterConfig.worker_memory = "512 M"
c.ClusterConfig.environment = {{
    "DASK_LEPTON__SCALING__SERVE_ADAPTIVE_TARGET": "true",
    "DASK_LEPTON__SCALING__POLICY": "slo",
    "DASK_LEPTON__SCALING__DEADLINE": "30",
    "DASK_LEPTON__COST__LEDGER": "false",
    "PYTHONPATH": {root!r},  # the tasks are this test module's functions
}}
c.UnsafeLocalBackend.cluster_start_timeout = 60
"""


@pytest.fixture
def gateway(tmp_path):
    """A dask-gateway-server on free loopback ports; stopped with every
    process it started."""
    import psutil

    api, proxy = _free_port(), _free_port()
    root = str(Path(__file__).resolve().parents[2])
    (tmp_path / "config.py").write_text(CONFIG.format(api=api, proxy=proxy, root=root))
    server = subprocess.Popen(
        [sys.executable, "-m", "dask_gateway_server", "-f", "config.py"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{proxy}"

    def up():  # the proxy routes the gateway's API (not just listens)
        import urllib.request

        try:
            with urllib.request.urlopen(f"{address}/api/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, interval=0.2)
        yield address
    finally:
        children = psutil.Process(server.pid).children(recursive=True)
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        for child in children:
            try:
                child.terminate()
            except psutil.Error:
                pass
        psutil.wait_procs(children, timeout=10)


def _nap(i):
    time.sleep(0.5)
    return i


def _scaler_decisions(dask_scheduler=None):
    from lepton_dask.cost.monitor import CostMonitor

    monitor = next(
        p for p in dask_scheduler.plugins.values() if isinstance(p, CostMonitor)
    )
    return [e for _, e in monitor.log if e.get("event") == "scaler"]


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
        cluster.shutdown()
        cluster.close()
        g.close()
        # dask-gateway 2026.3: Gateway.__del__ calls close() again, which
        # raises once the loop runner has stopped; closed here (ours, and the
        # one the cluster object holds), they need not
        for gw in (g, cluster.gateway):
            gw.__dict__.pop("_loop_runner", None)
    assert took <= 30.0, took
    assert decisions, "the gateway's adapt loop never asked the policy"
    assert all(d["served"] == "adaptive_target" for d in decisions)
    assert any("by EDF" in d["reason"] for d in decisions)
    assert max(sum(d["targets"].values()) for d in decisions) <= 4
