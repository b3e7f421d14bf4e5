"""The same trace on a real LocalPoolCluster, to check the simulator.

Tasks are ``time.sleep(duration)`` submitted at the trace's times; the cluster
injects the pools' startup delay; the CostMonitor bills workers from their
launch request with the minimum billing period. The simulator then runs the
same trace, pools and policy, and the costs are compared.
"""

from __future__ import annotations

import contextlib
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


def _settle(
    futures: dict, t0: float, monitor: CostMonitor, settle: float
) -> dict[str, Any]:
    """Wait for every result, then (results released) for the scaler to
    release the workers, up to ``settle`` seconds; cost and times."""
    from distributed import wait

    wait(list(futures.values()))
    done = time.time() - t0
    futures.clear()
    end = time.time() + settle
    while time.time() < end and monitor.lives:
        time.sleep(0.2)
    snap = monitor.snapshot()
    return {
        "cost_usd": snap["spend_usd"],
        "makespan_s": done,
        "workers_left": snap["workers"],
    }


def run_real(
    trace: Trace,
    pools: list[PoolSpec],
    policy: str,
    knob: float,
    *,
    minimum_billing: float = 6.0,
    interval: float = 0.5,
    settle: float = 20.0,
) -> dict[str, Any]:
    """Run ``trace`` on a LocalPoolCluster under ``policy`` (``"ours"``: a
    BalancedPolicy of weight ``knob``; ``"adaptive"``: Dask's Adaptive with
    target_duration ``knob``). Returns cost (from the CostMonitor) and times."""
    from distributed import Client

    monitor = CostMonitor(
        ledger=False, minimum_billing=minimum_billing, flush_interval=1.0
    )
    with (
        LocalPoolCluster(
            pools,
            processes=False,
            minimum={p.name: 0 for p in pools},
            scheduler_options={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        if policy == "ours":
            cluster.adapt(
                Adaptive=CostAwareAdaptive,
                policy=BalancedPolicy(knob),
                interval=interval,
            )
        else:
            cluster.adapt(
                minimum=0,
                maximum=pools[0].max_workers,
                target_duration=knob,
                interval=interval,
                wait_count=3,
            )
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
        return _settle(futures, t0, monitor, settle)


def compare(
    policies: list[tuple[str, float]] | None = None,
    *,
    trace: Trace | None = None,
    pools: list[PoolSpec] | None = None,
    minimum_billing: float = 6.0,
) -> dict[str, dict[str, float]]:
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
            trace,
            pools,
            sim_policy,
            minimum_billing=minimum_billing,
            interval=0.5,
            hold_results=True,
        ).run()
        label = f"balanced w={knob:g}" if family == "ours" else f"Adaptive td={knob:g}s"
        out[label] = {
            "real_usd": real["cost_usd"],
            "sim_usd": sim.cost_usd,
            "error": abs(sim.cost_usd - real["cost_usd"]) / real["cost_usd"]
            if real["cost_usd"]
            else float("nan"),
            "real_s": real["makespan_s"],
            "sim_s": sim.makespan_s,
        }
    return out


# -- every trace, time-scaled -------------------------------------------------------
REAL_SECONDS = 150.0  # about how long each real run takes
MIN_TASK_S = 0.05  # shortest typical sleep task worth timing for real


def window(trace: Trace, start: float, length: float) -> Trace:
    """The bursts of ``trace`` arriving in ``[start, start + length)``, shifted
    to start at 0 (independent tasks only)."""
    if trace.deps is not None:
        raise ValueError("window() keeps independent tasks only")
    arrival = {b["burst"]: b["arrival"] for b in trace.bursts()}
    keep = np.array([start <= arrival[int(b)] < start + length for b in trace.burst])
    bursts = sorted({int(b) for b in trace.burst[keep]})
    return Trace(
        f"{trace.name}[{start:g}+{length:g}s]",
        trace.submit[keep] - start,
        trace.duration[keep],
        trace.kind[keep],
        trace.burst[keep],
        {b: trace.deadline[b] for b in bursts if b in trace.deadline},
        None,
        trace.description,
        trace.latency,
    )


def scale_for_real(scenario, seconds: float = REAL_SECONDS):
    """``(scenario, factor)``: ``scenario`` with times, durations, startup and
    minimum billing multiplied by ``factor`` (and a window of a long trace),
    so that it runs for about ``seconds`` with sleep tasks of at least
    ``MIN_TASK_S`` typically."""
    from dataclasses import replace

    from lepton_dask.experiments.harness import Scenario

    tr = scenario.trace
    span = float(tr.submit.max()) + max(tr.deadline.values(), default=0.0)
    f = min(1.0, seconds / span)
    f = max(f, MIN_TASK_S / float(np.median(tr.duration)))
    if f * span > 1.5 * seconds and tr.deps is None:
        # a long trace: its busiest stretch, as long as fits
        length = seconds / f
        arrivals = np.array([b["arrival"] for b in tr.bursts()])
        work = np.array([sum(b["work"].values()) for b in tr.bursts()])
        starts = np.arange(
            0.0, max(float(tr.submit.max()) - length, 0.0) + 1, length / 4
        )
        best = max(
            starts, key=lambda s: work[(arrivals >= s) & (arrivals < s + length)].sum()
        )
        tr = window(tr, float(best), length)
    scaled = tr.scaled(f, f)
    pools = [replace(p, startup_s=p.startup_s * f) for p in scenario.pools]
    sc = Scenario(
        scenario.name, scaled, pools, scenario.minimum_billing * f, hold_results=True
    )
    return sc, f


def _groups(trace: Trace) -> list[tuple[float, int, int, list[int]]]:
    """Tasks submitted together: ``(time, burst, kind, tasks)``, one group per
    submission time, burst, depth in the graph and kind, in an order where
    every task comes after its dependencies."""
    n = len(trace)
    depth = [0] * n
    if trace.deps is not None:
        for i in sorted(range(n), key=lambda i: trace.submit[i]):
            depth[i] = 1 + max((depth[j] for j in trace.deps[i]), default=-1)
    by: dict[tuple[float, int, int, int], list[int]] = {}
    for i in np.argsort(trace.submit, kind="stable"):
        key = (
            float(trace.submit[i]),
            depth[i],
            int(trace.burst[i]),
            int(trace.kind[i]),
        )
        by.setdefault(key, []).append(int(i))
    return [(t, b, k, ids) for (t, _, b, k), ids in sorted(by.items())]


def run_trace_real(
    scenario, factory, *, interval: float = 0.5, settle: float = 30.0
) -> dict[str, Any]:
    """Run a (scaled) scenario on a LocalPoolCluster under the policy that
    ``factory`` makes: each group of tasks submitted together is one
    ``compute`` call under :func:`lepton_dask.deadline` when its burst has a
    deadline; every result is held until the end."""
    import dask
    from distributed import Client

    from lepton_dask.scaling.slo import deadline as slo_deadline

    trace = scenario.trace
    monitor = CostMonitor(
        ledger=False, minimum_billing=scenario.minimum_billing, flush_interval=1.0
    )
    with (
        LocalPoolCluster(
            scenario.pools,
            processes=False,
            minimum={p.name: 0 for p in scenario.pools},
            scheduler_options={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.adapt(Adaptive=CostAwareAdaptive, policy=factory(), interval=interval)
        futures: dict[int, Any] = {}
        t0 = time.time()
        for at, b, kind, ids in _groups(trace):
            delay = at - (time.time() - t0)
            if delay > 0:
                time.sleep(delay)
            tasks = [
                dask.delayed(_sleep, pure=False)(
                    float(trace.duration[i]),
                    *[futures[j] for j in (trace.deps[i] if trace.deps else [])],
                    dask_key_name=f"task-{i}",
                )
                for i in ids
            ]
            d = trace.deadline.get(b)
            with slo_deadline(d) if d else contextlib.nullcontext():
                got = client.compute(tasks, resources={"GPU": 1} if kind == 1 else None)
            futures.update(zip(ids, got, strict=True))
        return _settle(futures, t0, monitor, settle)


def compare_traces(
    names: list[str] | None = None, *, seconds: float = REAL_SECONDS
) -> dict[str, dict[str, dict[str, float]]]:
    """Every scenario, time-scaled, on a real LocalPoolCluster under the SLO
    policy, against the simulator on the same scaled scenario."""
    from lepton_dask.experiments.harness import scenarios, slo_policy

    out = {}
    for name, sc in scenarios().items():
        if names and name not in names:
            continue
        small, f = scale_for_real(sc, seconds)
        factory = slo_policy(small.trace)
        if factory is None:
            continue
        interval = max(0.2, min(1.0, f))
        real = run_trace_real(small, factory, interval=interval)
        sim = Simulator(
            small.trace,
            small.pools,
            factory(),
            minimum_billing=small.minimum_billing,
            interval=interval,
            hold_results=True,
            record_timeline=False,
        ).run()
        t0 = float(small.trace.submit.min())
        out[name] = {
            factory().label: {
                "factor": f,
                "real_usd": real["cost_usd"],
                "sim_usd": sim.cost_usd,
                "error": abs(sim.cost_usd - real["cost_usd"]) / real["cost_usd"],
                "real_s": real["makespan_s"],
                "sim_s": sim.makespan_s + t0,
                "time_error": abs(sim.makespan_s + t0 - real["makespan_s"])
                / real["makespan_s"],
            }
        }
    return out
