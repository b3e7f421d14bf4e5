"""A spot worker reclaimed while it holds results: the work is recomputed, its
spend is still counted, and the scaler replaces the capacity."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest
from distributed import Client, wait

from lepton_dask.cost import CostMonitor
from lepton_dask.scaling import (
    BalancedPolicy,
    CostAwareAdaptive,
    LocalPoolCluster,
    PoolSpec,
)

pytestmark = pytest.mark.timeout(180)


def _slow(x):
    time.sleep(0.4)
    return x


def test_preempted_worker_holding_results(tmp_path):
    monitor = CostMonitor(ledger=False, minimum_billing=1.0)
    pool = PoolSpec.from_catalog(
        "spot", "m6i.large", "spot", threads=1, startup_s=0.3, max_workers=3
    )
    with (
        LocalPoolCluster([pool], processes=False, minimum={"spot": 2},
                         scheduler_options={"plugins": [monitor]}) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        x = da.arange(4000, chunks=500).astype(float)
        held = x.persist()
        wait(held)
        owners = client.who_has(held)
        victim_addr = next(iter(next(iter(owners.values()))))
        victim = next(
            name for name, w in cluster.workers.items() if w.address == victim_addr
        )
        spend_before = monitor.snapshot()["spend_usd"]
        # work waiting, and a scaler that wants capacity for it
        cluster.adapt(
            Adaptive=CostAwareAdaptive, policy=BalancedPolicy(100.0), interval=0.2
        )
        backlog = client.map(_slow, range(24), pure=False)
        cluster.sync(cluster.preempt, victim)
        assert victim in cluster.preempted
        # results the victim held are recomputed, and right
        np.testing.assert_array_equal(held.compute(), np.arange(4000.0))
        assert sorted(client.gather(backlog)) == list(range(24))
        # its spend is still counted: billed up to the reclaim
        assert monitor.snapshot()["spend_usd"] > spend_before
        gone = [e for e in monitor.log
                if e[1].get("event") == "remove-worker" and e[1]["worker"] in (victim, victim_addr)]  # fmt: skip
        assert gone and gone[0][1]["billed_seconds"] > 0
        # the scaler launched a replacement while the backlog lasted
        launched = {str(n) for n in cluster.launch_times()}
        assert launched - {"spot-0", "spot-1"}, launched
