"""The scheduler answers Dask's own scalers from the policy
(``lepton.scaling.serve-adaptive-target``), and is untouched without it."""

from __future__ import annotations

import json
import time
import urllib.request

import dask
import pytest
from distributed import Client, LocalCluster, Scheduler

from lepton_dask.cost import CostMonitor
from lepton_dask.scaling.managers import startup_quantile
from lepton_dask.scaling.serve import TARGETS_ROUTE, PolicyServer, dask_setup
from lepton_dask.scaling.slo import SLOPolicy, deadline
from lepton_dask.scaling.state import PoolSpec
from tests.helpers import policy_served_cluster, wait_for

POOL = PoolSpec("default", threads=1, max_workers=8)


def _nap(i):
    time.sleep(0.25)
    return i


@pytest.mark.timeout(120)
def test_stock_adaptive_scales_by_the_policy():
    """Distributed's own Adaptive asks the scheduler (``adaptive_target`` and
    ``workers_to_close`` over RPC, as dask-gateway and the operator do): it
    grows to the SLO policy's target, the batch meets its deadline, the
    decisions reach the monitor, and idle paid-out workers go."""
    monitor = CostMonitor(ledger=False, minimum_billing=1.0, flush_interval=0.2)
    server = PolicyServer(SLOPolicy(deadline=8.0), pools={"default": POOL})
    with policy_served_cluster(monitor, server, "250ms") as (cluster, client):
        sched = cluster.scheduler
        assert sched.adaptive_target() == 0  # no work, no workers
        cluster.adapt(minimum=0, maximum=8, interval="200ms", wait_count=1)
        t0 = time.time()
        with deadline(8.0):
            futures = client.map(_nap, range(40))
        client.gather(futures)
        took = time.time() - t0
        assert took <= 8.0, took
        decisions = [e for _, e in monitor.log if e.get("event") == "scaler"]
        assert decisions and all(d["served"] == "adaptive_target" for d in decisions)
        assert monitor.scaler_decisions > 0
        peak = max(sum(d["targets"].values()) for d in decisions)
        assert 1 <= peak <= 8
        # the time from an answer asking for a worker to its arrival is the
        # startup the policy plans with (its p90, the configured one counted)
        assert server.startups and min(server.startups) > 0
        assert server.pools()["default"].startup_s == startup_quantile(
            [*server.startups, POOL.startup_s]
        )
        # the HTTP routes answer from the same policy
        base = f"http://127.0.0.1:{sched.http_server.port}"
        body = json.loads(urllib.request.urlopen(base + TARGETS_ROUTE).read())
        assert set(body["targets"]) == {"default"} and body["reason"]
        api = json.loads(
            urllib.request.urlopen(base + "/api/v1/adaptive_target").read()
        )
        assert api["workers"] == server.adaptive_target()
        del futures
        # idle workers whose paid minimum is used up are released by the policy
        wait_for(lambda: len(sched.workers) == 0, 30, interval=0.2)
        later = [e for _, e in monitor.log if e.get("event") == "scaler"]
        assert any(d["retired"] for d in later[len(decisions) :])


def test_workers_to_close_names_only_what_the_policy_retires():
    async def main():
        monitor = CostMonitor(ledger=False, minimum_billing=0.0)
        server = PolicyServer(SLOPolicy(deadline=60.0), pools={"default": POOL})
        async with Scheduler(
            dashboard_address=":0", plugins=[monitor, server], validate=False
        ) as s:
            assert s.workers_to_close() == [] and s.adaptive_target() == 0
            assert s.handlers["workers_to_close"] == server.workers_to_close

    import asyncio

    asyncio.run(main())


def test_without_the_option_the_scheduler_is_untouched():
    """The preload with the option off installs the CostMonitor only; the
    scheduler's own adaptive_target and workers_to_close stay distributed's."""

    async def main():
        async with Scheduler(dashboard_address=":0", validate=False) as s:
            with dask.config.set({"lepton.scaling.serve-adaptive-target": False}):
                dask_setup(s)
            assert not any(isinstance(p, PolicyServer) for p in s.plugins.values())
            assert any(isinstance(p, CostMonitor) for p in s.plugins.values())
            assert s.adaptive_target.__func__ is Scheduler.adaptive_target
            assert s.workers_to_close.__func__ is Scheduler.workers_to_close
            assert s.handlers["adaptive_target"].__func__ is Scheduler.adaptive_target
        async with Scheduler(dashboard_address=":0", validate=False) as s:
            dask_setup(s, True)
            assert any(isinstance(p, PolicyServer) for p in s.plugins.values())

    import asyncio

    asyncio.run(main())


def _quick(x):
    return x


def _slow(x, delay=0.5):
    time.sleep(delay)
    return x


def _targets_along_a_workload(install_preload: bool) -> list[int]:
    """``adaptive_target`` at each step of one workload: idle, one quick task
    done, a long task queued, 100 long tasks queued (0.1 s target), all
    released."""
    from tests.helpers import wait_for

    with (
        dask.config.set(
            {
                "distributed.scheduler.default-task-durations": {"slow": 10},
                "lepton.cost.ledger": False,
                "lepton.scaling.serve-adaptive-target": False,
            }
        ),
        LocalCluster(
            n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        s = cluster.scheduler
        if install_preload:
            client.sync(_preload_on, s)
        out = [s.adaptive_target()]
        client.submit(_quick, 1).result()
        out.append(s.adaptive_target())
        long = [client.submit(_slow, 2, 0.5)]
        wait_for(lambda: long[0].key in s.tasks, 10)
        out.append(s.adaptive_target(target_duration=".1s"))
        many = client.map(_slow, range(100), delay=0.5)
        wait_for(lambda: len(s.tasks) >= 100, 10)
        out.append(s.adaptive_target(target_duration=".1s"))
        long.clear()
        del many
        wait_for(lambda: not s.tasks, 30)
        out.append(s.adaptive_target(target_duration=".1s"))
        return out


async def _preload_on(s):
    dask_setup(s)  # option off: the CostMonitor only
    # a copy: a plugin's start may add plugins (the monitor adds its observer),
    # as the scheduler's own start loop allows
    for p in list(s.plugins.values()):
        if isinstance(p, CostMonitor) and p.scheduler is None:
            await p.start(s)


@pytest.mark.timeout(120)
def test_with_the_option_off_adaptive_target_is_distributeds():
    """The same workload asks the same questions of a scheduler without
    lepton-dask and of one with its preload (option off): the same answers."""
    vanilla = _targets_along_a_workload(install_preload=False)
    ours = _targets_along_a_workload(install_preload=True)
    assert vanilla == ours
    assert vanilla[:3] == [0, 1, 1] and 10 < vanilla[3] <= 101 and vanilla[4] == 0


def test_configured_pools_size_by_the_instance_type_until_workers_arrive():
    """Before any worker arrives, a configured pool without ``threads`` has
    its instance type's vCPUs (the policy once sized the first burst for
    one thread per worker, and kept that: twice the workers on m6i.large);
    once workers arrive, their thread count."""
    from distributed import Worker

    async def main():
        monitor = CostMonitor(ledger=False, minimum_billing=0.0)
        server = PolicyServer(SLOPolicy(deadline=60.0))
        pools = [{"name": "cpu", "instance-type": "m6i.large", "startup": "5s"}]
        with dask.config.set({"lepton.scaling.pools": pools}):
            async with Scheduler(
                dashboard_address=":0", plugins=[monitor, server], validate=False
            ) as s:
                assert s.adaptive_target() == 0
                assert server.pools()["cpu"].threads == 2  # m6i.large: 2 vCPUs
                async with Worker(s.address, nthreads=4, dashboard=False):
                    assert server.pools()["cpu"].threads == 4
                    assert server.pools()["cpu"].startup_s == 5.0

    import asyncio

    asyncio.run(main())
