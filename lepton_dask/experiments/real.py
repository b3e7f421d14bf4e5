"""The same trace on a real LocalPoolCluster, to check the simulator.

Tasks are ``time.sleep(duration)`` submitted at the trace's times; the cluster
injects the pools' startup delay; the CostMonitor bills workers from their
launch request with the minimum billing period. The simulator then runs the
same trace, pools and policy, and the costs are compared.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lepton_dask.cost.monitor import CostMonitor
from lepton_dask.scaling.adaptive import CostAwareAdaptive
from lepton_dask.scaling.policies import BalancedPolicy, StockAdaptivePolicy
from lepton_dask.scaling.pools import LocalPoolCluster
from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim.simulator import Simulator
from lepton_dask.sim.trace import Trace, sawtooth


def _sleep(seconds: float, *deps: Any) -> float:
    time.sleep(seconds)
    return seconds


def small_sawtooth() -> Trace:
    """A sawtooth shaped like the simulated one, small enough to run for real
    in about a minute: four bursts of 24 short tasks, idle gaps of 4-20 s."""
    return sawtooth(
        gaps=(4.0, 12.0, 20.0), tasks_per_burst=24, task_s=0.4, deadline=8.0, seed=5
    )


def small_pools() -> list[PoolSpec]:
    """One CPU pool of ``local`` workers (catalog price) with a 2 s startup."""
    return [
        PoolSpec.from_catalog("cpu", "local", threads=1, startup_s=2.0, max_workers=6)
    ]


def run_real(trace: Trace, pools: list[PoolSpec], policy: str, knob: float, *, minimum_billing: float = 6.0,
             interval: float = 0.5, settle: float = 20.0) -> dict[str, Any]:  # fmt: skip
    """Run ``trace`` on a LocalPoolCluster under ``policy`` (``"ours"``: a
    BalancedPolicy of weight ``knob``; ``"adaptive"``: Dask's Adaptive with
    target_duration ``knob``). Returns cost (from the CostMonitor) and times."""
    from distributed import Client, wait

    monitor = CostMonitor(
        ledger=False, minimum_billing=minimum_billing, flush_interval=1.0
    )
    with (
        LocalPoolCluster(pools, processes=False, minimum={p.name: 0 for p in pools},
                         scheduler_options={"plugins": [monitor]}) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        if policy == "ours":
            cluster.adapt(
                Adaptive=CostAwareAdaptive,
                policy=BalancedPolicy(knob),
                interval=interval,
            )
        else:
            cluster.adapt(minimum=0, maximum=pools[0].max_workers, target_duration=knob, interval=interval,
                          wait_count=3)  # fmt: skip
        order = np.argsort(trace.submit, kind="stable")
        t0 = time.time()
        futures: dict[int, Any] = {}
        for i in order:
            delay = trace.submit[i] - (time.time() - t0)
            if delay > 0:
                time.sleep(delay)
            deps = [futures[j] for j in (trace.deps[i] if trace.deps else [])]
            futures[int(i)] = client.submit(
                _sleep, float(trace.duration[i]), *deps, pure=False
            )
        wait(list(futures.values()))
        done = time.time() - t0
        del futures
        end = time.time() + settle
        while time.time() < end and monitor.lives:
            time.sleep(0.2)
        snap = monitor.snapshot()
    return {
        "cost_usd": snap["spend_usd"],
        "makespan_s": done,
        "workers_left": snap["workers"],
    }


def compare(policies: list[tuple[str, float]] | None = None, *, trace: Trace | None = None,
            pools: list[PoolSpec] | None = None, minimum_billing: float = 6.0) -> dict[str, dict[str, float]]:  # fmt: skip
    """Real and simulated cost of the same runs; ``{label: {...}}``."""
    trace = trace or small_sawtooth()
    pools = pools or small_pools()
    policies = policies or [("ours", 1.0), ("adaptive", 1.0)]
    out = {}
    for family, knob in policies:
        real = run_real(trace, pools, family, knob, minimum_billing=minimum_billing)
        sim_policy = (
            BalancedPolicy(knob) if family == "ours" else StockAdaptivePolicy(knob)
        )
        # run_real keeps every future until the end: the cluster holds results
        sim = Simulator(
            trace, pools, sim_policy, minimum_billing=minimum_billing, interval=0.5,
            hold_results=True,
        ).run()  # fmt: skip
        label = f"balanced w={knob:g}" if family == "ours" else f"Adaptive td={knob:g}s"
        out[label] = {
            "real_usd": real["cost_usd"], "sim_usd": sim.cost_usd,
            "error": abs(sim.cost_usd - real["cost_usd"]) / real["cost_usd"] if real["cost_usd"] else float("nan"),
            "real_s": real["makespan_s"], "sim_s": sim.makespan_s,
        }  # fmt: skip
    return out
