"""CostMonitor overhead and /metrics scrape time.

* overhead: batches of tiny tasks (50,000; ``--quick``: 5,000) on one
  LocalCluster, without (A) and with (B) the monitor, in ABBA order so that a
  drift of the cluster over the run cancels out; ratio of the mean times. The
  monitor runs fully (transition hook, budget checks and ledger flushes to the
  embedded MongoDB server every 5 s). On this 2-core machine distributed runs
  about 600 tiny tasks/s, so 200,000 tasks would take six minutes per batch.
  Also the cost of the hook alone, per task, in a tight loop.
* scrape: a scheduler with the monitor and 100 real workers (in a separate
  process, sharing one event loop there); the median time of an HTTP GET of
  the scheduler's ``/metrics`` (dask's metrics and ours), and of generating our
  families alone.

Usage: ``python benchmarks/bench_cost.py [--quick] [--rounds N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request

from _common import machine, mongo, result_line, run, table

from lepton_dask.cost import CostMonitor
from lepton_dask.cost.ledger import Ledger
from lepton_dask.cost.metrics import families
from lepton_dask.store import StoreSpec


def inc(x):
    return x + 1


def run_tasks(client, n: int) -> float:
    from distributed import wait

    t0 = time.perf_counter()
    futures = client.map(inc, range(n), pure=False)
    wait(futures)
    elapsed = time.perf_counter() - t0
    del futures
    return elapsed


def overhead(n: int, blocks: int, uri: str) -> dict:
    from distributed import Client, LocalCluster

    ledger = Ledger(StoreSpec(uri, "bench_cost", 10.0))
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        run_tasks(client, min(n, 5000))  # warm up
        times: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(blocks):
            for which in "ABBA":
                if which == "B":
                    client.register_plugin(
                        CostMonitor(ledger=ledger), name="lepton-cost"
                    )
                times[which].append(run_tasks(client, n))
                if which == "B":
                    snap = client.run_on_scheduler(
                        lambda dask_scheduler: dask_scheduler.plugins[
                            "lepton-cost"
                        ].snapshot()
                    )
                    assert snap["tasks"] >= n, snap["tasks"]
                    client.unregister_scheduler_plugin("lepton-cost")
    return {
        "base_s": times["A"],
        "monitor_s": times["B"],
        "overhead_ratio": statistics.mean(times["B"]) / statistics.mean(times["A"]),
    }


def hook_us_per_task(n: int = 200_000) -> float:
    """The monitor's transition hook alone: the 5 calls a task makes."""
    m = CostMonitor(ledger=False)
    kw = {
        "worker": "tcp://w",
        "nbytes": 28,
        "startstops": [{"action": "compute", "start": 1.0, "stop": 1.001}],
    }
    others = (
        ("released", "waiting"),
        ("waiting", "processing"),
        ("memory", "released"),
        ("released", "forgotten"),
    )
    t0 = time.perf_counter()
    for _ in range(n):
        m.transition("k", "processing", "memory", stimulus_id="s", **kw)
        for a, b in others:
            m.transition("k", a, b, stimulus_id="s")
    return (time.perf_counter() - t0) / n * 1e6


_WORKERS = r"""
import asyncio, sys
from distributed import Worker
async def main(addr, n):
    workers = [Worker(addr, nthreads=1, name=f"w{i}", dashboard=False) for i in range(n)]
    await asyncio.gather(*workers)
    await asyncio.Event().wait()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def scrape(workers: int = 100, repeat: int = 30) -> dict:
    import subprocess

    from distributed import LocalCluster

    monitor = CostMonitor(ledger=False)
    with LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"plugins": [monitor]},
    ) as cluster:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKERS, cluster.scheduler_address, str(workers)]
        )
        try:
            deadline = time.time() + 300
            while len(monitor.lives) < workers:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"only {len(monitor.lives)} workers joined")
                time.sleep(0.2)
            url = f"http://127.0.0.1:{cluster.scheduler.http_server.port}/metrics"
            urllib.request.urlopen(url, timeout=60).read()
            http_ms, ours_ms = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                body = urllib.request.urlopen(url, timeout=60).read()
                http_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                list(families(monitor.snapshot()))
                ours_ms.append((time.perf_counter() - t0) * 1000)
            assert b"lepton_workers" in body
        finally:
            proc.kill()
            proc.wait()
    return {
        "scrape_ms": statistics.median(http_ms),
        "lepton_families_ms": statistics.median(ours_ms),
        "bytes": len(body),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5,000 tasks per batch")
    ap.add_argument("--blocks", type=int, default=1, help="ABBA blocks")
    args = ap.parse_args(argv)
    n = 5_000 if args.quick else 50_000
    hook = hook_us_per_task()
    with mongo(None) as uri:
        ov = overhead(n, args.blocks, uri)
    sc = scrape()
    print(
        table(
            [
                [
                    f"{n:,} tiny tasks, no monitor (mean of {len(ov['base_s'])}), s",
                    statistics.mean(ov["base_s"]),
                ],
                [
                    f"{n:,} tiny tasks, with CostMonitor, s",
                    statistics.mean(ov["monitor_s"]),
                ],
                ["CostMonitor transition hook alone, us per task", hook],
                ["GET /metrics, 100 workers (median of 30), ms", sc["scrape_ms"]],
                ["  of which lepton_* families, ms", sc["lepton_families_ms"]],
            ],
            ["what", "value"],
        )
    )
    print(
        f"batches without: {[round(x, 2) for x in ov['base_s']]}, with: {[round(x, 2) for x in ov['monitor_s']]}"
    )
    r = {
        "overhead_ratio": round(ov["overhead_ratio"], 4),
        "scrape_ms": round(sc["scrape_ms"], 2),
        "hook_us_per_task": round(hook, 3),
        "lepton_families_ms": round(sc["lepton_families_ms"], 3),
        "tasks": n,
        "machine": machine(),
    }
    print(
        f"overhead_ratio = {r['overhead_ratio']} goal <= 1.03: {'met' if r['overhead_ratio'] <= 1.03 else 'MISSED'}"
    )
    print(
        f"scrape_ms = {r['scrape_ms']} goal < 50: {'met' if r['scrape_ms'] < 50 else 'MISSED'}"
    )
    print(result_line(r))
    return r


if __name__ == "__main__":
    run(main)
