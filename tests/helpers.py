"""Test helpers: poll-until-true instead of bare sleeps."""

from __future__ import annotations

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
