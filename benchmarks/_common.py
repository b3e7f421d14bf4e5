"""Shared helpers for the benchmarks: servers, clusters, timing, output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from typing import Any


def timed(fn, *args, repeat: int = 1, **kwargs) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs of ``fn`` and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, result


@contextlib.contextmanager
def mongo(uri: str | None) -> Iterator[str]:
    """A MongoDB URI: the given one, or a fresh embedded server in a temp dir."""
    if uri:
        yield uri
        return
    from lepton_dask.store import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as d:
        with EmbeddedServer(d) as server:
            yield server.uri


@contextlib.contextmanager
def local_cluster(workers: int = 2, threads: int = 1) -> Iterator[Any]:
    """A LocalCluster of worker processes and a Client to it."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A markdown table."""
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return (
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        )

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def result_line(result: dict[str, Any]) -> str:
    """The benchmark's last line."""
    return "RESULT " + json.dumps(result, sort_keys=True, default=str)


def run(main) -> None:
    """Run a benchmark's ``main()`` and say how long it took (on stderr)."""
    import sys

    t0 = time.perf_counter()
    main()
    print(f"(took {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
