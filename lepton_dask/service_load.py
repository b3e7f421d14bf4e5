"""Load against one running service (``lepton-dask up``): many clients writing
and reading their own arrays, readers of one shared array while it is being
re-published, and ``/metrics`` scraped every 100 ms throughout.

Every read is checked: a client's own array must come back exactly as written
(else it is *lost*); a read of the shared array must be exactly one complete
version (its blocks all hold the version's number; else it is *mixed*).

Clients are threads in a few processes (one ``distributed.Client`` per
process, shared by its threads, as notebooks in one kernel would), so fifty of
them fit on a small machine. Used by ``benchmarks/bench_load.py`` and, small,
by the test suite.
"""

from __future__ import annotations

import http.client
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LoadResult:
    ops: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lost: int = 0
    shared_reads: int = 0
    mixed: int = 0
    publishes: int = 0
    scrapes: int = 0
    scrape_errors: int = 0
    rss_mb: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

        return {
            "ops": self.ops,
            "ops_per_s": self.ops / self.seconds if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "errors": len(self.errors),
            "lost": self.lost,
            "shared_reads": self.shared_reads,
            "mixed_reads": self.mixed,
            "publishes": self.publishes,
            "scrapes": self.scrapes,
            "scrape_errors": self.scrape_errors,
            "rss_start_mb": self.rss_mb[0] if self.rss_mb else float("nan"),
            "rss_end_mb": self.rss_mb[-1] if self.rss_mb else float("nan"),
            "seconds": self.seconds,
        }


def _payload(client_id: int, i: int, rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng([client_id, i])
    return rng.standard_normal((rows, cols))


def _client_process(args: dict[str, Any], queue: Any) -> None:
    """One process: a distributed Client and ``threads`` client threads."""
    from distributed import Client

    from lepton_dask.store import FeatureStore

    out = {"lat": [], "errors": [], "lost": 0, "ops": 0}
    lock = threading.Lock()
    with Client(args["scheduler"], timeout="60s") as client:

        def one(cid: int) -> None:
            store = FeatureStore(args["uri"], args["database"])
            name = f"load.c{cid}"
            for i in range(args["iterations"]):
                x = _payload(cid, i, args["rows"], args["cols"])
                try:
                    t0 = time.perf_counter()
                    store.put_array(
                        name,
                        x,
                        chunks=(args["rows"] // 4, args["cols"]),
                        progress=False,
                    )
                    t1 = time.perf_counter()
                    y = client.compute(store.get_array(name)).result()
                    t2 = time.perf_counter()
                    ok = np.array_equal(x, y)
                    with lock:
                        out["lat"] += [(t1 - t0) * 1e3, (t2 - t1) * 1e3]
                        out["ops"] += 2
                        out["lost"] += 0 if ok else 1
                except Exception:  # counted and reported, never hidden
                    with lock:
                        out["errors"].append(traceback.format_exc(limit=3))

        threads = [
            threading.Thread(target=one, args=(cid,)) for cid in args["client_ids"]
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    queue.put(out)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class _Background:
    """The threads beside the client processes: a publisher of new versions
    of a shared array, readers that must never see two versions mixed, and a
    scraper of the service's ``/metrics``."""

    SHARED = "load.shared"
    ROWS = 8_000

    def __init__(self, res: LoadResult, uri: str, database: str, **scrape: Any):
        self.res = res
        self.uri = uri
        self.database = database
        self.metrics_url = scrape["metrics_url"]
        self.service_pid = scrape["service_pid"]
        self.scrape_interval = scrape["scrape_interval"]
        # versions the publisher has started (a reader may see one before
        # put_array returns); version numbers are never reused: next is max+1
        self.attempted = {1}
        self.done = threading.Event()

    def _version(self, store: Any, value: float) -> int:
        data = np.full((self.ROWS, 4), value)
        return store.put_array(self.SHARED, data, chunks=(1_000, 4), progress=False)

    def publisher(self) -> None:
        from lepton_dask.store import FeatureStore

        s = FeatureStore(self.uri, self.database)
        while not self.done.is_set():
            try:
                nxt = max(self.attempted) + 1
                self.attempted.add(nxt)
                got = self._version(s, float(nxt))
                self.res.publishes += 1
                if got != nxt:
                    self.res.errors.append(
                        f"publisher expected version {nxt}, got {got}"
                    )
            except Exception:
                self.res.errors.append(traceback.format_exc(limit=3))

    def reader(self, client: Any) -> None:
        from lepton_dask.store import FeatureStore

        s = FeatureStore(self.uri, self.database)
        while not self.done.is_set():
            try:
                y = client.compute(s.get_array(self.SHARED)).result()
                vals = np.unique(y)
                self.res.shared_reads += 1
                if len(vals) != 1 or float(vals[0]) not in self.attempted:
                    self.res.mixed += 1
            except Exception:
                self.res.errors.append(traceback.format_exc(limit=3))

    def scraper(self) -> None:
        res = self.res
        while not self.done.is_set():
            t0 = time.monotonic()
            try:
                body = urllib.request.urlopen(self.metrics_url, timeout=10).read()
                res.scrapes += 1
                if b"lepton_spend_usd_total" not in body:
                    res.scrape_errors += 1
            except (OSError, ValueError, http.client.HTTPException):
                res.scrape_errors += 1  # counted in the report
            if self.service_pid is not None and res.scrapes % 20 == 1:
                res.rss_mb.append(_rss_mb(self.service_pid))
            self.done.wait(max(0.0, self.scrape_interval - (time.monotonic() - t0)))

    def threads(self, client: Any, readers: int) -> list[threading.Thread]:
        out = [threading.Thread(target=self.publisher)]
        out += [
            threading.Thread(target=self.reader, args=(client,)) for _ in range(readers)
        ]
        if self.metrics_url:
            out.append(threading.Thread(target=self.scraper))
        return out


def run_load(
    scheduler: str,
    uri: str,
    database: str,
    *,
    clients: int = 50,
    processes: int = 5,
    iterations: int = 4,
    rows: int = 20_000,
    cols: int = 8,
    readers: int = 5,
    metrics_url: str | None = None,
    service_pid: int | None = None,
    scrape_interval: float = 0.1,
) -> LoadResult:
    """Run the load; see the module docstring."""
    from distributed import Client

    from lepton_dask.store import FeatureStore

    res = LoadResult()
    bg = _Background(
        res,
        uri,
        database,
        metrics_url=metrics_url,
        service_pid=service_pid,
        scrape_interval=scrape_interval,
    )
    bg._version(FeatureStore(uri, database), 1.0)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    ids = list(range(clients))
    args = {
        "scheduler": scheduler,
        "uri": uri,
        "database": database,
        "iterations": iterations,
        "rows": rows,
        "cols": cols,
    }
    procs = [
        ctx.Process(target=_client_process, args=({**args, "client_ids": p}, queue))
        for p in (ids[k::processes] for k in range(processes))
        if p
    ]
    with Client(scheduler, timeout="60s") as client:
        aux = bg.threads(client, readers)
        t0 = time.perf_counter()
        for t in aux:
            t.start()
        for p in procs:
            p.start()
        outs = [queue.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(60)
        res.seconds = time.perf_counter() - t0
        bg.done.set()
        for t in aux:
            t.join(120)
        if service_pid is not None:
            res.rss_mb.append(_rss_mb(service_pid))
    for o in outs:
        res.ops += o["ops"]
        res.latencies_ms += o["lat"]
        res.errors += o["errors"]
        res.lost += o["lost"]
    res.errors += [
        f"client process exited with {p.exitcode}"
        for p in procs
        if p.exitcode not in (0, None)
    ]
    return res


class Service:
    """``lepton-dask up`` in a subprocess, for load runs: ``with Service(uri)
    as svc: run_load(svc.scheduler, uri, ..., metrics_url=svc.metrics)``."""

    def __init__(self, uri: str, database: str, workers: int = 2, threads: int = 1):
        self.cmd = [
            sys.executable,
            "-m",
            "lepton_dask.cli",
            "up",
            "--uri",
            uri,
            "--database",
            database,
            "--nworkers",
            str(workers),
            "--nthreads",
            str(threads),
            "--port",
            "0",
            "--dashboard-port",
            "0",
        ]
        self.lines: list[str] = []

    def __enter__(self) -> Service:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        found: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "LEPTON_METRICS" not in found:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            key, _, value = line.strip().removeprefix("export ").partition("=")
            if key.startswith("LEPTON_"):
                found[key] = value
        if "LEPTON_METRICS" not in found:
            self.__exit__()
            raise RuntimeError("lepton-dask up did not start:\n" + "".join(self.lines))
        self.scheduler = found["LEPTON_SCHEDULER"]
        self.metrics = found["LEPTON_METRICS"]
        self.pid = self.proc.pid
        # keep reading its output so it never blocks on a full pipe
        self._drain = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stdout), daemon=True
        )
        self._drain.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "_drain", None) is not None:
            self._drain.join(10)
        self.proc.stdout.close()
