"""The contract distributed's own suite holds any Adaptive to
(distributed/deploy/tests/test_adaptive.py), run with CostAwareAdaptive and a
neutral policy (the target the test sets): minimum and maximum respected,
adapt stopped when the cluster closes, a scale that must be awaited is
awaited, stopped on a status change, the interval honoured, errors while
adapting logged and not raised, the stop logged once, stopped on deletion;
adapt's core and memory bounds and the distributed.adaptive config apply.
"""

from __future__ import annotations

import asyncio
import logging
import math

import dask
import pytest
from distributed import Client, LocalCluster
from distributed.core import Status
from distributed.utils_test import captured_logger

from lepton_dask.scaling import CostAwareAdaptive, Decision

pytestmark = pytest.mark.timeout(120)


class FixedTarget:
    """A neutral policy: ``n`` workers in every pool, whatever the work."""

    def __init__(self, n: int = 0):
        self.n = n

    def decide(self, view):
        return Decision(dict.fromkeys(view.pools, self.n), f"fixed {self.n}")


@pytest.fixture(autouse=True)
def _config():
    with dask.config.set(
        {"lepton.cost.ledger": False, "lepton.cost.minimum-billing": 0}
    ):
        yield


async def poll(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, predicate
        await asyncio.sleep(0.01)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def local(**kw):
    return LocalCluster(
        n_workers=0,
        processes=False,
        asynchronous=True,
        dashboard_address=":0",
        threads_per_worker=1,
        **kw,
    )


async def decisions(adapt, n):
    """Wait for ``n`` more decisions of ``adapt``."""
    await poll(lambda: adapt.monitor is not None)
    start = adapt.monitor.scaler_decisions
    await poll(lambda: adapt.monitor.scaler_decisions >= start + n)


def test_min_max():
    async def main():
        async with local() as cluster, Client(cluster, asynchronous=True):
            policy = FixedTarget(0)
            adapt = cluster.adapt(
                Adaptive=CostAwareAdaptive,
                policy=policy,
                minimum=1,
                maximum=2,
                interval="20 ms",
            )
            await poll(lambda: len(cluster.scheduler.workers) == 1)
            await decisions(adapt, 5)
            assert len(cluster.scheduler.workers) == 1 == len(cluster.worker_spec)
            policy.n = 10
            await poll(lambda: len(cluster.scheduler.workers) == 2)
            await decisions(adapt, 5)
            assert len(cluster.worker_spec) == 2 == len(cluster.scheduler.workers)
            policy.n = 0
            await poll(lambda: len(cluster.scheduler.workers) == 1)
            await decisions(adapt, 5)
            assert len(cluster.worker_spec) == 1
            assert adapt.log[-1][1]["retired"]

    run(main())


def test_adapt_gets_stopped_on_cluster_close():
    async def main():
        async with local() as cluster:
            adapt = cluster.adapt(
                Adaptive=CostAwareAdaptive,
                policy=FixedTarget(),
                minimum=1,
                maximum=10,
                interval="10ms",
            )
            await poll(lambda: adapt.state == "running")
            await cluster.close()
            assert adapt.state == "stopped"

    run(main())


def test_adaptive_stopped():
    async def main():
        async with local() as cluster:
            adapt = cluster.adapt(
                Adaptive=CostAwareAdaptive, policy=FixedTarget(), interval="10ms"
            )
            await poll(lambda: adapt.state == "running")
            assert adapt.periodic_callback.is_running()
            pc = adapt.periodic_callback
        await poll(lambda: adapt.state == "stopped")
        assert not pc.is_running()

    run(main())


def test_scale_needs_to_be_awaited():
    """A manager whose scale() schedules its work through sync() and returns
    an awaitable: the one-pool scaler awaits it."""

    class RequiresAwaitCluster(LocalCluster):
        def scale(self, n):
            method = super().scale

            async def _():
                return method(n)

            return self.sync(_)

    async def main():
        async with (
            RequiresAwaitCluster(
                n_workers=0, asynchronous=True, processes=False, dashboard_address=":0"
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            futures = client.map(lambda x: x + 1, range(5))
            assert len(cluster.workers) == 0
            policy = FixedTarget(2)
            cluster.adapt(Adaptive=CostAwareAdaptive, policy=policy, interval="20ms")
            assert await client.gather(futures) == list(range(1, 6))
            del futures
            policy.n = 0
            await poll(lambda: not cluster.workers)

    run(main())


def test_adaptive_stops_on_cluster_status_change():
    async def main():
        async with local() as cluster:
            adapt = CostAwareAdaptive(cluster, policy=FixedTarget(), interval="100 ms")
            assert adapt.state == "starting"
            await poll(lambda: adapt.state == "running")
            assert adapt.periodic_callback.is_running()
            try:
                cluster.status = Status.closing
                await poll(lambda: adapt.state != "running")
                assert adapt.state == "stopped"
                assert not adapt.periodic_callback
            finally:
                cluster.status = Status.running

    run(main())


def test_interval():
    async def main():
        async with local() as cluster:
            policy = FixedTarget(0)
            adapt = CostAwareAdaptive(cluster, policy=policy, interval="100 ms")
            assert not adapt.plan
            for n in [0, 3, 1]:
                policy.n = n
                await poll(lambda n=n: len(adapt.plan) == n, 5)
            adapt.stop()
            await asyncio.sleep(0.05)  # (as upstream: nothing may happen meanwhile)
            policy.n = 10
            await asyncio.sleep(0.3)  # three intervals: no decision is taken
            assert len(adapt.plan) == 1  # last value from before, unchanged

    run(main())


def test_adapt_logs_error_in_target():
    class Broken:
        def decide(self, view):
            raise OSError("no decision")

    async def main():
        async with local() as cluster:
            with captured_logger(
                "distributed.deploy.adaptive", level=logging.WARNING
            ) as log:
                adapt = cluster.adapt(
                    Adaptive=CostAwareAdaptive,
                    policy=Broken(),
                    minimum=1,
                    maximum=4,
                    interval="10ms",
                )
                await poll(lambda: "encountered an error" in log.getvalue())
            assert "stop" not in log.getvalue()
            assert adapt.state == "running"
            assert adapt.periodic_callback.is_running()
            # the flag is reset after the error (a 10 ms loop may be mid-call
            # at any one instant: wait for a moment between calls)
            await poll(lambda: not adapt._adapting)

    run(main())


def test_adapt_callback_logs_error_in_scale_down():
    class BadAdaptive(CostAwareAdaptive):
        async def scale_down(self, workers=None):
            raise OSError()

    async def main():
        async with local() as cluster:
            policy = FixedTarget(2)
            adapt = cluster.adapt(
                Adaptive=BadAdaptive,
                policy=policy,
                minimum=1,
                maximum=4,
                interval="10ms",
            )
            await poll(lambda: len(cluster.scheduler.workers) == 2)
            with captured_logger(
                "distributed.deploy.adaptive", level=logging.WARNING
            ) as log:
                policy.n = 0
                await poll(lambda: "encountered an error" in log.getvalue())
            assert "stop" not in log.getvalue()
            assert adapt.periodic_callback.is_running()
            assert len(cluster.worker_spec) == 2

    run(main())


@pytest.mark.parametrize("wait_until_running", [True, False])
def test_adaptive_logs_stopping_once(wait_until_running):
    async def main():
        async with local() as cluster:
            with captured_logger("distributed.deploy.adaptive") as log:
                adapt = cluster.adapt(
                    Adaptive=CostAwareAdaptive, policy=FixedTarget(), interval="100ms"
                )
                if wait_until_running:
                    await poll(lambda: adapt.state == "running")
                    assert adapt.periodic_callback.is_running()
                else:
                    assert not adapt.periodic_callback.is_running()
                pc = adapt.periodic_callback
                adapt.stop()
                adapt.stop()
            assert adapt.state == "stopped"
            assert not adapt.periodic_callback and not pc.is_running()
            lines = log.getvalue().splitlines()
            assert sum("Adaptive scaling stopped" in line for line in lines) == 1

    run(main())


def test_adapt_stop_del():
    async def main():
        async with local() as cluster:
            adapt = cluster.adapt(
                Adaptive=CostAwareAdaptive, policy=FixedTarget(), interval="100ms"
            )
            pc = adapt.periodic_callback
            await poll(lambda: cluster._adaptive.state == "running")
            cluster._adaptive = None
            del adapt
            await poll(lambda: not pc.is_running())

    run(main())


def test_adapt_cores_memory_and_config():
    async def main():
        async with LocalCluster(
            n_workers=0,
            threads_per_worker=2,
            memory_limit="3 GB",
            processes=False,
            asynchronous=True,
            dashboard_address=":0",
        ) as cluster:
            adapt = cluster.adapt(
                Adaptive=CostAwareAdaptive,
                policy=FixedTarget(),
                minimum_cores=3,
                maximum_cores=9,
            )
            assert (adapt.minimum, adapt.maximum) == (2, 4)
            assert adapt.managed.pools["default"].max_workers == 4
            adapt = cluster.adapt(
                Adaptive=CostAwareAdaptive,
                policy=FixedTarget(),
                minimum_memory="7GB",
                maximum_memory="20 GB",
            )
            assert (adapt.minimum, adapt.maximum) == (3, 6)
            adapt.stop()

    run(main())
    with dask.config.set(
        {"distributed.adaptive.minimum": 10, "distributed.adaptive.wait-count": 8}
    ):
        adapt = CostAwareAdaptive(interval="5s", policy=FixedTarget())
        assert adapt.minimum == 10
        assert adapt.maximum == math.inf
        assert adapt.interval == 5
        assert adapt.wait_count == 8
