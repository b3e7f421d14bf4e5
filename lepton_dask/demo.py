"""The main job (``make demo``): features into MongoDB, back out, computed on.

Starts (or reuses) the embedded MongoDB-compatible server and a LocalCluster,
writes a synthetic feature matrix with a progress bar, reads it back as a Dask
array, computes column means/stds and X^T X on the cluster, checks them
against numpy, and prints a summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from lepton_dask.store import FeatureStore
from lepton_dask.store._uri import redact_uri


@dataclass
class Step:
    """One timed step of the demo."""

    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoReport:
    """What the demo did, for the summary (and for tests)."""

    uri: str
    database: str
    rows: int
    cols: int
    nbytes: int
    version: int
    chunks: tuple
    steps: list[Step] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A short human-readable summary."""
        mb = self.nbytes / 2**20
        lines = [
            "",
            "lepton-dask demo summary",
            "------------------------",
            f"features   : {self.rows:,} x {self.cols} float64 = {mb:,.1f} MiB "
            f"in {len(self.chunks[0])} blocks, version {self.version}",
            f"stored in  : {redact_uri(self.uri)} database {self.database!r}",
        ]
        for s in self.steps:
            lines.append(f"{s.name:<11}: {s.seconds:7.2f} s  {s.detail}")
        ok = all(self.checks.values())
        checks = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in self.checks.items())
        lines.append(f"checks     : {checks} -> {'all match numpy' if ok else 'MISMATCH'}")
        for k, v in self.extra.items():
            lines.append(f"{k:<11}: {v}")
        return "\n".join(lines)


def run_demo(
    client: Any,
    store: FeatureStore,
    *,
    rows: int = 2_000_000,
    cols: int = 16,
    chunk_rows: int = 250_000,
    name: str = "demo.features",
    progress: bool | None = True,
    seed: int = 42,
) -> DemoReport:
    """Run the main job on ``client``'s cluster against ``store``.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as c:
    ...     with Client(c) as client:
    ...         report = run_demo(client, store, rows=10_000, progress=False)
    >>> all(report.checks.values())
    True
    """
    rng = da.random.default_rng(seed)
    X = rng.standard_normal((rows, cols), chunks=(chunk_rows, cols)) * (
        1.0 + np.arange(cols)
    ) + np.arange(cols)
    t0 = time.perf_counter()
    version = store.put_array(name, X, progress=progress)
    t_write = time.perf_counter() - t0
    nbytes = rows * cols * 8
    report = DemoReport(
        uri=store.uri,
        database=store.database,
        rows=rows,
        cols=cols,
        nbytes=nbytes,
        version=version,
        chunks=X.chunks,
    )
    report.steps.append(
        Step("write", t_write, f"{nbytes / 2**20 / t_write:,.1f} MiB/s (put_array)")
    )

    Y = store.get_array(name)
    t0 = time.perf_counter()
    Y = client.persist(Y)
    from distributed import wait

    wait(Y)
    t_read = time.perf_counter() - t0
    report.steps.append(
        Step("read", t_read, f"{nbytes / 2**20 / t_read:,.1f} MiB/s (get_array)")
    )

    t0 = time.perf_counter()
    mean, std, gram = client.compute([Y.mean(axis=0), Y.std(axis=0), Y.T @ Y], sync=True)
    t_stats = time.perf_counter() - t0
    report.steps.append(Step("compute", t_stats, "column mean, std and X^T X"))

    Xn = X.compute()
    report.checks["mean"] = bool(np.allclose(mean, Xn.mean(axis=0)))
    report.checks["std"] = bool(np.allclose(std, Xn.std(axis=0)))
    report.checks["X^T X"] = bool(np.allclose(gram, Xn.T @ Xn, rtol=1e-9))
    report.checks["round trip"] = bool(
        np.array_equal(client.compute(Y[:1000], sync=True), Xn[:1000])
    )
    return report
