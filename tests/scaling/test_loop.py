"""CostAwareAdaptive on a real LocalPoolCluster (in-process workers; one test with
worker processes). Other managers: test_managers.py; Adaptive's contract:
test_adaptive_contract.py."""

from __future__ import annotations

import time

import dask
import pytest
from distributed import Client, wait

from lepton_dask.cost import CostMonitor
from lepton_dask.scaling import (
    BalancedPolicy,
    BudgetPolicy,
    CostAwareAdaptive,
    LocalPoolCluster,
    PoolSpec,
)
from lepton_dask.scaling.registry import policy_from_config
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(180)


def sleep(x, s=0.3):
    time.sleep(s)
    return x


def cluster(pools, monitor, **kw):
    return LocalPoolCluster(
        pools, processes=False, scheduler_options={"plugins": [monitor]}, **kw
    )


def test_scales_up_for_work_and_down_only_after_the_paid_minimum():
    monitor = CostMonitor(ledger=False, minimum_billing=4.0)
    pools = [
        PoolSpec.from_catalog("cpu", "local", threads=1, startup_s=0.5, max_workers=4)
    ]
    with cluster(pools, monitor) as c, Client(c) as client:
        ad = c.adapt(
            Adaptive=CostAwareAdaptive, policy=BalancedPolicy(50.0), interval=0.2
        )
        futures = client.map(sleep, range(24), pure=False)
        wait_for(lambda: c.pool_counts()["cpu"] >= 3, 30)
        wait(futures)
        done = time.time()
        del futures
        wait_for(lambda: c.pool_counts()["cpu"] == 0, 30)
        gone = time.time()
        # a worker is released no earlier than its paid minimum (4 s from launch)
        first_launch = min(c.launch_times().values())
        assert gone - first_launch >= 4.0 - 0.3
        assert any("delay" in e[1]["reason"] for e in ad.log)
        # (the loop logs a decision after applying it)
        wait_for(lambda: any("release" in e[1]["reason"] for e in ad.log), 10)
        # the decision reaches the monitor in the loop's next report: wait for it
        wait_for(lambda: monitor.snapshot()["scaler"]["targets"] == {"cpu": 0}, 10)
        snap = monitor.snapshot()
        assert snap["scaler"]["targets"] == {"cpu": 0} and snap["scaler_decisions"] > 0
        from lepton_dask.cost.metrics import families

        names = {f.name for f in families(snap)}
        assert {
            "lepton_scaler_target_workers",
            "lepton_scaler_predicted_finish_seconds",
            "lepton_scaler_infeasible",
            "lepton_scaler_decisions",
        } <= names
        lives = [e for e in monitor.log if e[1]["event"] == "remove-worker"]
        assert lives and all(e[1]["billed_seconds"] >= 4.0 - 1e-9 for e in lives)
        assert done > first_launch


def test_budget_is_respected_at_every_moment():
    monitor = CostMonitor(ledger=False, minimum_billing=2.0)
    price = PoolSpec.from_catalog("cpu", "m6i.large").usd_per_hour  # 0.096 $/h
    pools = [
        PoolSpec.from_catalog(
            "cpu", "m6i.large", threads=1, startup_s=0.2, max_workers=8
        )
    ]
    cap = 3 * price + 1e-9
    with cluster(pools, monitor) as c, Client(c) as client:
        c.adapt(
            Adaptive=CostAwareAdaptive,
            policy=BudgetPolicy(usd_per_hour=cap),
            interval=0.2,
        )
        futures = client.map(sleep, range(30), pure=False)
        peak = 0.0
        most = 0
        while not all(f.done() for f in futures):
            peak = max(
                peak,
                monitor.snapshot()["spend_rate_usd_per_hour"],
                len(c.worker_spec) * price,
            )
            most = max(most, c.pool_counts()["cpu"])
            time.sleep(0.05)
        assert 0 < peak <= cap
        # the budget buys exactly three workers (once the work is done the
        # scaler may already be retiring them, so look at the run, not the end)
        assert most == 3


def test_gpu_tasks_grow_the_gpu_pool():
    monitor = CostMonitor(ledger=False, minimum_billing=2.0)
    pools = [
        PoolSpec.from_catalog("cpu", "local", threads=1, startup_s=0.2, max_workers=2),
        PoolSpec.from_catalog(
            "gpu", "g5.xlarge", kind="gpu", threads=1, startup_s=0.2, max_workers=2
        ),
    ]
    with cluster(pools, monitor) as c, Client(c) as client:
        c.adapt(Adaptive=CostAwareAdaptive, policy=BalancedPolicy(100.0), interval=0.2)
        with dask.annotate(resources={"GPU": 1}):
            futures = client.map(sleep, range(8), pure=False)
        wait_for(lambda: c.pool_counts()["gpu"] >= 1, 30)
        assert c.pool_counts()["cpu"] == 0  # GPU work does not grow the CPU pool
        wait(futures)
        ran = client.run_on_scheduler(
            lambda dask_scheduler: {
                str(ws.name)
                for ws in dask_scheduler.workers.values()
                if ws.resources.get("GPU")
            }
        )
        assert ran and all(n.startswith("gpu-") for n in ran)
        snap = monitor.snapshot()
        assert snap["pools"]["gpu"]["tasks"] == 8


def test_spot_preemption_reschedules_and_spend_is_still_counted():
    monitor = CostMonitor(ledger=False, minimum_billing=1.0)
    pools = [
        PoolSpec.from_catalog(
            "spot",
            "m6i.large",
            "spot",
            threads=1,
            startup_s=0.2,
            max_workers=3,
            preemptions_per_hour=3600.0 * 0.1,
        )
    ]
    with cluster(pools, monitor, preemption_seed=1) as c, Client(c) as client:
        c.adapt(Adaptive=CostAwareAdaptive, policy=BalancedPolicy(100.0), interval=0.2)
        for _ in range(6):  # preemptions are random: run batches until one happens
            futures = client.map(sleep, range(20), [0.5] * 20, pure=False)
            results = client.gather(futures)
            assert sorted(results) == list(range(20))  # every task's work was done
            if c.preempted:
                break
        assert c.preempted  # some workers were reclaimed
        preempted_lives = [
            e
            for e in monitor.log
            if e[1]["event"] == "remove-worker" and e[1]["worker"] in set(c.preempted)
        ]
        assert preempted_lives and monitor.snapshot()["spend_usd"] > 0


def test_requires_a_spec_cluster_and_config_policy():
    import asyncio

    from distributed.deploy import Cluster

    async def plain_cluster():  # a Cluster that is no SpecCluster
        async with Cluster(asynchronous=True) as c:
            CostAwareAdaptive(c, policy=BalancedPolicy(1.0))

    with pytest.raises(TypeError, match=r"needs a distributed\.deploy\.SpecCluster"):
        asyncio.run(plain_cluster())
    with dask.config.set({"lepton.scaling.policy": "deadline"}):  # slo's term
        with pytest.raises(ValueError, match=r"lepton\.scaling\.policy must be one of"):
            policy_from_config()
    with dask.config.set(
        {"lepton.scaling.policy": "budget", "lepton.scaling.budget-usd-per-hour": 2.0}
    ):
        assert isinstance(policy_from_config(), BudgetPolicy)
    with pytest.raises(ValueError, match="unknown pool"):
        LocalPoolCluster([PoolSpec("cpu")], processes=False, minimum={"gpu": 1})


def test_worker_processes_log_at_the_clusters_level(capfd):
    """Like LocalCluster, worker processes log at ``silence_logs`` (WARNING):
    no INFO lines from each worker's start and close on the user's terminal."""
    with (
        LocalPoolCluster([PoolSpec("cpu")], processes=True, minimum={"cpu": 1}) as c,
        Client(c) as client,
    ):
        client.wait_for_workers(1)
        assert client.submit(sum, [1, 2]).result() == 3
    err = capfd.readouterr().err
    assert "distributed.worker - INFO" not in err
    assert "distributed.nanny - INFO" not in err
