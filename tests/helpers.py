"""Test helpers: poll-until-true instead of bare sleeps."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval=0.02):
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def cluster_with(monitor, n_workers=2, **kw):
    """An in-process LocalCluster whose scheduler runs ``monitor``, with its
    dashboard (Cost page, /metrics) on a free loopback port."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=False,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"plugins": [monitor]},
        **kw,
    )


@contextlib.contextmanager
def policy_served_cluster(monitor, server, unknown_task_duration: str):
    """An in-process LocalCluster with no workers whose scheduler runs
    ``monitor`` and the PolicyServer ``server``, with the ``/api/v1`` routes
    (as the dask-kubernetes operator enables them) on a free loopback port;
    yields ``(cluster, client)``."""
    import dask
    from distributed import Client, LocalCluster

    routes = [
        *dask.config.get("distributed.scheduler.http.routes"),
        "distributed.http.scheduler.api",
    ]
    with (
        dask.config.set(
            {
                "distributed.scheduler.unknown-task-duration": unknown_task_duration,
                "distributed.scheduler.http.routes": routes,
            }
        ),
        LocalCluster(
            n_workers=0,
            processes=False,
            threads_per_worker=1,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"plugins": [monitor, server]},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


@contextlib.contextmanager
def nanny_cluster(**workers: dict):
    """One single-threaded worker process per keyword (its name: its extra
    options, e.g. ``cpu={"resources": {"CPU": 1}}``) and a Client; yields the
    client and the worker names by address."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    spec = {
        name: {"cls": Nanny, "options": {"nthreads": 1, **opts}}
        for name, opts in workers.items()
    }
    with (
        SpecCluster(
            workers=spec,
            scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
        ) as cluster,
        Client(cluster) as client,
    ):
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        yield client, names


#: what the suite's processes run (a worker, a server, a browser, a daemon)
OURS = (
    "dask",
    "distributed",
    "lepton",
    "ferretdb",
    "prometheus",
    "alertmanager",
    "chromium",
    "munged",
    "slurm",
    "kopf",
    "kube-apiserver",
    "etcd",
    "SLURMCluster",
    "mongod",
)


#: set by conftest for the session; every process the tests start inherits it
SESSION_VAR = "LEPTON_TEST_SESSION"


def _this_session(p) -> bool:
    """Whether ``p`` was started under this test session (it carries the
    session's mark in its environment): another session's processes, a
    build or a benchmark running beside the tests are not ours to end."""
    import psutil

    mark = os.environ.get(SESSION_VAR)
    if mark is None:
        return True
    try:
        return p.environ().get(SESSION_VAR) == mark
    except (psutil.Error, OSError):
        return False


def started_since(since: float, marker: str | tuple[str, ...] = OURS) -> list:
    """Processes of this test session alive now, created at or after
    ``since``, whose command line names ``marker`` (any of them), other than
    this process and its parents."""
    import psutil

    markers = (marker,) if isinstance(marker, str) else marker
    me = psutil.Process()
    skip = {me.pid, *(p.pid for p in me.parents())}
    out = []
    for p in psutil.process_iter(["pid", "create_time", "cmdline", "status"]):
        info = p.info
        if info["pid"] in skip or (info["create_time"] or 0) < since - 1.0:
            continue
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(info["cmdline"] or ())
        if any(m in cmd for m in markers) and _this_session(p):
            out.append(p)
    return out


def kill_started_since(since: float, marker: str | tuple[str, ...] = OURS) -> None:
    """Terminate (then kill) what :func:`started_since` finds."""
    from lepton_dask._process import end_processes

    end_processes(started_since(since, marker), timeout=5)
