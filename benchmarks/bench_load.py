"""Load: 50 concurrent clients against one service, 5 readers of one array
while it is re-published, ``/metrics`` scraped every 100 ms throughout.

* ours: ``lepton-dask up`` (2 worker processes) on a fresh embedded server;
  50 clients (threads in 5 processes, one ``distributed.Client`` each) each
  ``put_array`` their own 20,000 x 8 array (4 blocks) and read it back through
  the cluster, 4 times; every read is compared with what was written (lost),
  every shared read must be one complete version (mixed). Latency of each
  put and each read.
* limit: the same bytes with raw pymongo from 50 threads: ``insert_many`` of
  4 documents of raw bytes, then ``find`` them back, on the same server (no
  versioning, no checksums, no cluster).

Goals: ``errors == 0``, ``lost == 0`` (and no mixed reads, no scrape errors).

Usage: ``python benchmarks/bench_load.py [--quick]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time

import numpy as np
from _common import machine, mongo, result_line, run, table

from lepton_dask.service_load import Service, run_load


def raw_limit(uri: str, clients: int, iterations: int, rows: int, cols: int) -> dict:
    import pymongo

    client = pymongo.MongoClient(uri, maxPoolSize=clients + 4)
    db = client["bench_load_raw"]
    lat: list[float] = []
    busy = [0]

    def retry(fn):  # FerretDB/SQLite answers "database is locked" under load
        while True:
            try:
                return fn()
            except pymongo.errors.OperationFailure as e:
                if "SQLITE_BUSY" not in str(e):
                    raise
                busy[0] += 1
                time.sleep(0.05)

    def one(cid: int) -> None:
        # a collection per client (as our layout has per array): a find is
        # then not a scan of everyone's blobs on FerretDB's SQLite
        coll = db[f"blobs_{cid}"]
        rng = np.random.default_rng(cid)
        for i in range(iterations):
            x = rng.standard_normal((rows, cols))
            docs = [
                {"c": cid, "i": i, "p": p, "data": b.tobytes()}
                for p, b in enumerate(np.array_split(x, 4))
            ]
            t0 = time.perf_counter()
            retry(lambda: coll.delete_many({}))
            retry(lambda d=docs: coll.insert_many([dict(x) for x in d]))
            t1 = time.perf_counter()
            got = sorted(retry(lambda: list(coll.find())), key=lambda d: d["p"])
            y = np.frombuffer(b"".join(d["data"] for d in got)).reshape(rows, cols)
            t2 = time.perf_counter()
            assert np.array_equal(x, y)
            lat.extend([(t1 - t0) * 1e3, (t2 - t1) * 1e3])

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        list(ex.map(one, range(clients)))
    seconds = time.perf_counter() - t0
    client.close()
    lat.sort()
    return {
        "ops_per_s": len(lat) / seconds,
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "seconds": seconds,
        "busy_retries": busy[0],
    }


def scrape_memory(url: str, pid: int, n: int = 2000) -> dict:
    """The service's RSS before and after ``n`` back-to-back /metrics scrapes
    (after 200 to warm up), and their median time."""
    import urllib.request

    from lepton_dask.service_load import _rss_mb

    for _ in range(200):
        urllib.request.urlopen(url, timeout=10).read()
    before = _rss_mb(pid)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        urllib.request.urlopen(url, timeout=10).read()
        times.append(time.perf_counter() - t0)
    after = _rss_mb(pid)
    times.sort()
    return {
        "n": n,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "median_ms": times[n // 2] * 1e3,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 clients, 2 iterations")
    args = ap.parse_args(argv)
    clients, procs, iters, readers = (10, 2, 2, 2) if args.quick else (50, 5, 4, 5)
    rows, cols = 20_000, 8
    with mongo(None) as uri:
        with Service(uri, "bench_load", workers=2) as svc:
            res = run_load(
                svc.scheduler, uri, "bench_load",
                clients=clients, processes=procs, iterations=iters, rows=rows, cols=cols,
                readers=readers, metrics_url=svc.metrics, service_pid=svc.pid,
            )  # fmt: skip
            scrape = scrape_memory(svc.metrics, svc.pid)
        raw = raw_limit(uri, clients, iters, rows, cols)
    s = res.summary()
    print(
        table(
            [
                ["lepton put + get (versioned, CRC, via cluster)", s["ops_per_s"], s["p50_ms"], s["p99_ms"], s["seconds"]],
                ["raw pymongo insert + find (limit)", raw["ops_per_s"], raw["p50_ms"], raw["p99_ms"], raw["seconds"]],
            ],
            ["what", "ops/s", "p50 ms", "p99 ms", "s"],
        )
    )  # fmt: skip
    print(
        f"clients {clients} x {iters} iterations ({s['ops']} ops), errors {s['errors']}, "
        f"lost {s['lost']}; shared array: {s['shared_reads']} reads by {readers} readers "
        f"during {s['publishes']} re-publishes, mixed {s['mixed_reads']}; /metrics every "
        f"100 ms: {s['scrapes']} scrapes, {s['scrape_errors']} errors, service RSS "
        f"{s['rss_start_mb']:.0f} -> {s['rss_end_mb']:.0f} MB"
    )
    print(
        f"/metrics x {scrape['n']} back to back after the load: median "
        f"{scrape['median_ms']:.1f} ms, service RSS {scrape['rss_before_mb']:.1f} -> "
        f"{scrape['rss_after_mb']:.1f} MB"
    )
    for e in res.errors[:3]:
        print("error:", e, file=sys.stderr)
    r = {
        "ops_per_s": round(s["ops_per_s"], 2),
        "p50_ms": round(s["p50_ms"], 1),
        "p99_ms": round(s["p99_ms"], 1),
        "errors": s["errors"],
        "lost": s["lost"],
        "mixed_reads": s["mixed_reads"],
        "shared_reads": s["shared_reads"],
        "publishes": s["publishes"],
        "scrapes": s["scrapes"],
        "scrape_errors": s["scrape_errors"],
        "service_rss_mb": [round(s["rss_start_mb"], 1), round(s["rss_end_mb"], 1)],
        "metrics_rss_growth_mb_per_2000_scrapes": round(
            scrape["rss_after_mb"] - scrape["rss_before_mb"], 1
        ),
        "metrics_median_ms": round(scrape["median_ms"], 2),
        "raw_ops_per_s": round(raw["ops_per_s"], 2),
        "raw_p99_ms": round(raw["p99_ms"], 1),
        "raw_busy_retries": raw["busy_retries"],
        "ops_vs_raw": round(s["ops_per_s"] / raw["ops_per_s"], 3),
        "clients": clients,
        "machine": machine(),
    }
    ok = r["errors"] == 0 and r["lost"] == 0 and r["mixed_reads"] == 0
    print(
        f"errors == 0 and lost == 0 (and no mixed reads): {'met' if ok else 'MISSED'}"
    )
    print(result_line(r))
    return r


if __name__ == "__main__":
    run(main)
