"""A real dask-gateway-server on this machine, with our policy as a cluster
option, and traces run through it.

:func:`gateway_config` writes the configuration a gateway administrator would
use (the README quotes it): the schedulers carry the preload
``lepton_dask.scaling.serve`` and, when the user's cluster option
``lepton_policy`` is on, ``lepton.scaling.serve-adaptive-target``. The gateway
runs its own adapt loop (``adaptive_target`` every 3 s, ``workers_to_close``
to pick who goes), which then asks the policy. :func:`local_gateway` runs the
server from the PyPI package with its unsafe local backend (worker and
scheduler processes on this machine, no root needed) on free loopback ports.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from lepton_dask._process import end_processes
from lepton_dask.store.server import free_port

CONFIG = """\
import sys

from dask_gateway_server.options import Bool, Options

c.Gateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.Gateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.Gateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.ClusterConfig.scheduler_cmd = [
    sys.executable, "-m", "distributed.cli.dask_scheduler",
    "--preload", "lepton_dask.scaling.serve",
]
c.ClusterConfig.worker_cmd = [
    sys.executable, "-m", "distributed.cli.dask_worker",
    "--preload", "lepton_dask.scaling.serve",
]
c.ClusterConfig.worker_threads = {threads}
c.ClusterConfig.adaptive_period = {period}
c.ClusterConfig.worker_memory = "512 M"
c.UnsafeLocalBackend.cluster_start_timeout = 60

ENVIRONMENT = {env!r}


def options_handler(options):
    env = dict(ENVIRONMENT)
    env["DASK_LEPTON__SCALING__SERVE_ADAPTIVE_TARGET"] = (
        "true" if options.lepton_policy else "false"
    )
    return {{"environment": env}}


c.Backend.cluster_options = Options(
    Bool("lepton_policy", default=True, label="Cost-aware scaling (lepton)"),
    handler=options_handler,
)
"""


def gateway_config(
    api: int,
    proxy: int,
    env: Mapping[str, str],
    threads: int = 1,
    adaptive_period: float = 3.0,
) -> str:
    """The ``dask_gateway_config.py`` text: our preload on schedulers and
    workers, ``env`` in their environment, and the ``lepton_policy`` option;
    the gateway's adapt loop asks every ``adaptive_period`` seconds (its
    default 3)."""
    return CONFIG.format(
        api=api,
        proxy=proxy,
        env=dict(env),
        threads=int(threads),
        period=float(adaptive_period),
    )


@contextlib.contextmanager
def local_gateway(
    env: Mapping[str, str],
    threads: int = 1,
    adaptive_period: float = 3.0,
    startup_timeout: float = 60.0,
) -> Iterator[str]:
    """Run a dask-gateway-server; yield its address. Every process it started
    (schedulers, workers) is stopped on exit."""
    import psutil

    api, proxy = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="lepton-gateway-") as d:
        with open(os.path.join(d, "dask_gateway_config.py"), "w") as f:
            f.write(gateway_config(api, proxy, env, threads, adaptive_period))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask_gateway_server",
                "-f",
                "dask_gateway_config.py",
            ],
            cwd=d,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        address = f"http://127.0.0.1:{proxy}"
        try:
            _wait_up(address, server, startup_timeout)
            yield address
        finally:
            children = psutil.Process(server.pid).children(recursive=True)
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            end_processes(children, timeout=10)


def _wait_up(address: str, server: subprocess.Popen, timeout: float) -> None:
    """Until the proxy routes the gateway's API (not just listens)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"dask-gateway-server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"dask-gateway-server at {address} not up in {timeout:g} s")


def scenario_env(scenario, factor: float) -> dict[str, str]:
    """The environment that gives a gateway cluster ``scenario``'s pool (its
    price, startup and minimum billing) and the scheduler's time-scaled guess
    for an unseen task (as :func:`~lepton_dask.experiments.real.scaled_world`)."""
    from lepton_dask.experiments.real import UNKNOWN_S

    (pool,) = scenario.pools
    # the policy's default terms: the trace's longest stated deadline (each
    # burst states its own through lepton_dask.deadline)
    deadline = max(scenario.trace.deadline.values(), default=600.0)
    return {
        "DASK_LEPTON__SCALING__POLICY": "slo",
        "DASK_LEPTON__SCALING__DEADLINE": f"{deadline}",
        "DASK_LEPTON__SCALING__POOLS": repr(
            [
                {
                    "name": pool.name,
                    "instance-type": pool.instance_type,
                    "pricing": pool.pricing,
                    "startup": f"{pool.startup_s}s",
                    "max-workers": pool.max_workers,
                }
            ]
        ),
        "DASK_LEPTON__COST__MINIMUM_BILLING": f"{scenario.minimum_billing}s",
        "DASK_LEPTON__COST__LEDGER": "false",
        "DASK_DISTRIBUTED__SCHEDULER__UNKNOWN_TASK_DURATION": f"{UNKNOWN_S * factor}s",
        "LEPTON_INSTANCE_TYPE": pool.instance_type,
        "LEPTON_PRICING": pool.pricing,
        "LEPTON_POOL": pool.name,
    }


def _cost(dask_scheduler=None) -> dict[str, Any]:
    from lepton_dask.cost.monitor import CostMonitor

    monitor = next(
        p for p in dask_scheduler.plugins.values() if isinstance(p, CostMonitor)
    )
    snap = monitor.snapshot()
    decisions = [e for _, e in monitor.log if e.get("event") == "scaler"]
    return {
        "cost_usd": snap["spend_usd"],
        "workers_left": snap["workers"],
        "launches": len(monitor.lives) + len(monitor.finished),
        "decisions": len(decisions),
    }


def run_trace_gateway(
    address: str,
    scenario,
    *,
    lepton_policy: bool,
    maximum: int,
    settle: float = 30.0,
) -> dict[str, Any]:
    """Run ``scenario``'s trace on a new gateway cluster with
    ``cluster.adapt(minimum=0, maximum=maximum)``, as a user would; returns
    the cost (the scheduler's CostMonitor, after the idle workers went),
    makespan and the share of deadlines met."""
    from dask_gateway import Gateway
    from dask_gateway.auth import BasicAuth
    from distributed import wait

    from lepton_dask.experiments.real import deadlines_met, submit_trace

    g = Gateway(address, auth=BasicAuth(username="bench", password=None))
    cluster = g.new_cluster(lepton_policy=lepton_policy)
    try:
        cluster.adapt(minimum=0, maximum=maximum)
        client = cluster.get_client()
        futures, finished, t0 = submit_trace(client, scenario.trace)
        wait(list(futures.values()))
        makespan = time.time() - t0
        futures.clear()
        end = time.time() + settle
        while time.time() < end and client.run_on_scheduler(_cost)["workers_left"]:
            time.sleep(0.5)
        out = client.run_on_scheduler(_cost)
        client.close()
    finally:
        cluster.shutdown()
        cluster.close()
        g.close()
        for gw in (g, cluster.gateway):  # (see tests/scaling/test_gateway.py)
            gw.__dict__.pop("_loop_runner", None)
    out["makespan_s"] = makespan
    out["deadline_met"] = deadlines_met(scenario.trace, finished, t0)
    return out
