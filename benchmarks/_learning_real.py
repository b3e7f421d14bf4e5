"""bench_learning's real-cluster parts: the plan against a real rerun, and
what recording costs (the recording overhead and the ledger's size)."""

from __future__ import annotations

import math
import statistics
import time
import uuid

import numpy as np

from lepton_dask.scaling import BalancedPolicy, SLOPolicy
from lepton_dask.scaling.state import PoolSpec


# -- plan accuracy on a real run ---------------------------------------------------------
def _sleep(seconds, *deps):
    time.sleep(seconds)
    return seconds


def _record_job(uri: str, db: str, pools: list[PoolSpec], minimum: float) -> str:
    """Record the job: three batches 20 s apart, each a map of 24 sleeps (0.3-0.9 s)
    and a reduce over them; workload ``bench-learning``."""
    import dask
    from distributed import Client

    import lepton_dask
    from lepton_dask.cost import CostMonitor, Ledger
    from lepton_dask.scaling import CostAwareAdaptive, LocalPoolCluster
    from lepton_dask.scaling.slo import deadline as slo_deadline
    from lepton_dask.store._spec import StoreSpec

    spec = StoreSpec(uri, db, 10.0)
    run_id = f"bench-{uuid.uuid4().hex[:6]}"
    monitor = CostMonitor(
        ledger=Ledger(spec), run_id=run_id, minimum_billing=minimum, flush_interval=0.5
    )
    rng = np.random.default_rng(3)
    with (
        LocalPoolCluster(
            pools,
            processes=False,
            minimum={p.name: 0 for p in pools},
            scheduler_options={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.adapt(
            Adaptive=CostAwareAdaptive, policy=SLOPolicy(deadline=15), interval=0.5
        )
        t0, held = time.time(), []
        for b in range(3):
            time.sleep(max(0.0, 20.0 * b - (time.time() - t0)))
            maps = [
                dask.delayed(_sleep, pure=False)(float(s))
                for s in rng.uniform(0.3, 0.9, 24)
            ]
            red = dask.delayed(_sleep, pure=False)(0.5, *maps)
            with lepton_dask.workload("bench-learning"), slo_deadline(15):
                held += client.compute([*maps, red])
        client.gather(held)
        del held
        deadline_t = time.time() + 20
        while time.time() < deadline_t and monitor.recorder.unfinished:
            time.sleep(0.2)
    return run_id


def plan_accuracy(uri: str) -> dict:
    from lepton_dask.experiments.plan import plan
    from lepton_dask.experiments.real import run_trace_real
    from lepton_dask.experiments.replay import trace_from_run
    from lepton_dask.experiments.scenarios import Scenario

    minimum = 6.0
    pools = [
        PoolSpec.from_catalog("cpu", "local", threads=1, startup_s=2.0, max_workers=6)
    ]
    db = f"bench_learning_{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    run_id = _record_job(uri, db, pools, minimum)
    record_s = time.perf_counter() - t0
    from lepton_dask.store._spec import StoreSpec

    trace = trace_from_run(run_id, StoreSpec(uri, db, 10.0))
    deadline = 12.0
    # the plan on the pools the rerun has, billed as they are
    p = plan(
        trace,
        deadline=deadline,
        weights=(1.0,),
        mixes={"local": pools},
        minimum_billing=minimum,
        interval=0.5,
        hold_results=True,
    )
    rec = p["recommended"]
    kind, kwargs = rec["apply"]
    make = (
        (lambda: SLOPolicy(**kwargs))
        if kind == "SLOPolicy"
        else (lambda: BalancedPolicy(**kwargs))
    )
    planned = trace.__class__(
        trace.name,
        trace.submit,
        trace.duration,
        trace.kind,
        trace.burst,
        dict.fromkeys(np.unique(trace.burst).tolist(), deadline),
        trace.deps,
        trace.description,
    )
    scenario = Scenario("bench-learning", planned, pools, minimum, hold_results=True)
    t1 = time.perf_counter()
    real = run_trace_real(scenario, make, settle=20.0)
    rerun_s = time.perf_counter() - t1
    return {
        "run": run_id,
        "tasks": len(trace),
        "recommended": rec["policy_code"],
        "predicted_usd": rec["cost_usd"],
        "actual_usd": real["cost_usd"],
        "predicted_s": rec["makespan_s"],
        "actual_s": real["makespan_s"],
        "plan_cost_error": abs(real["cost_usd"] - rec["cost_usd"]) / real["cost_usd"],
        "plan_time_error": abs(real["makespan_s"] - rec["makespan_s"])
        / real["makespan_s"],
        "predicted_deadlines_met": rec["deadline_met"],
        "record_s": record_s,
        "rerun_s": rerun_s,
    }


# -- overhead --------------------------------------------------------------------------
def _inc(x):
    return x + 1


def _workload_once(uri: str, record: bool, tasks: int) -> float:
    import dask
    from distributed import Client, LocalCluster

    from lepton_dask.cost import CostMonitor, Ledger
    from lepton_dask.store._spec import StoreSpec

    spec = StoreSpec(uri, f"bench_ovh_{uuid.uuid4().hex[:6]}", 10.0)
    with dask.config.set({"lepton.cost.record": record}):
        monitor = CostMonitor(ledger=Ledger(spec), flush_interval=0.5)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            scheduler_kwargs={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.submit(_inc, 0).result()  # warm
        t0 = time.perf_counter()
        for b in range(10):  # ten batches of a map and a tree of sums
            futs = client.map(_inc, range(b * tasks, (b + 1) * tasks), pure=False)
            while len(futs) > 1:
                futs = [
                    client.submit(sum, futs[i : i + 8], pure=False)
                    for i in range(0, len(futs), 8)
                ]
            futs[0].result()
        return time.perf_counter() - t0


def overhead(uri: str, repeat: int = 3, tasks: int = 1000) -> dict:
    on, off = [], []
    per_batch, n = tasks, tasks
    while n > 1:
        n = math.ceil(n / 8)
        per_batch += n
    for _ in range(repeat):  # alternate
        off.append(_workload_once(uri, False, tasks))
        on.append(_workload_once(uri, True, tasks))
    return {
        "tasks_per_run": 10 * per_batch,
        "with_recording_s": on,
        "without_s": off,
        "record_overhead": statistics.median(on) / statistics.median(off),
    }


def ledger_bytes_per_1m_tasks() -> int:
    import bson

    from lepton_dask.cost import RunRecorder

    rng = np.random.default_rng(0)
    r = RunRecorder("size", workload="w")
    for gi in range(10):
        r._group(f"stage{gi}", [gi - 1] if gi else [])
    for b in range(100):
        r.batches.append(
            {
                "arrival": float(b),
                "deadline_s": 600.0,
                "groups": list(range(10)),
                "tasks": [1000] * 10,
            }
        )
    for g in r.groups:
        g.tasks = 100_000
        for s in rng.lognormal(0.0, 1.0, 100_000):
            g.done += 1
            g.dur.add(float(s))
    r.close(0.0)
    return len(bson.encode(r.to_doc(0.0)))
