"""The main job (``make demo``): features into MongoDB, back out, computed on.

Starts (or reuses) the embedded MongoDB-compatible server and a LocalCluster,
writes a synthetic feature matrix with a progress bar, reads it back as a Dask
array (twice: the second read comes from the workers' block cache), computes
column means/stds and X^T X on the cluster, checks them against numpy, and
prints a summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from lepton_dask.store import FeatureStore, redact_uri


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
    #: what one worker costs, to price the time a step saved
    usd_per_worker_hour: float = 0.0

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
        checks = ", ".join(
            f"{k} {'ok' if v else 'FAILED'}" for k, v in self.checks.items()
        )
        lines.append(
            f"checks     : {checks} -> {'all match numpy' if ok else 'MISMATCH'}"
        )
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
    usd_per_worker_hour: float = 0.0,
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

    X, y = _features(rows, cols, chunk_rows, seed)
    t0 = time.perf_counter()
    version = store.put_array(name, X, progress=progress)
    store.put_array(name + ".label", y, progress=False)
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
        usd_per_worker_hour=usd_per_worker_hour,
    )
    report.steps.append(
        Step("write", t_write, f"{nbytes / 2**20 / t_write:,.1f} MiB/s (put_array)")
    )
    results = _compute(client, store, name, report)
    _check(client, X, y, results, report)
    return report


def _features(rows: int, cols: int, chunk_rows: int, seed: int) -> tuple:
    """Correlated features (a few latent factors mixed into ``cols`` columns,
    plus noise, scaled and shifted per column, so PCA has something to find)
    and a binary label from a linear model of them."""
    rng = da.random.default_rng(seed)
    local = np.random.default_rng(seed)
    factors = max(1, cols // 4)
    mixing = local.normal(size=(factors, cols))
    latent = rng.standard_normal((rows, factors), chunks=(chunk_rows, factors))
    noise_x = rng.standard_normal((rows, cols), chunks=(chunk_rows, cols))
    X = (latent @ mixing + 0.5 * noise_x) * (1.0 + np.arange(cols)) + np.arange(cols)
    w = local.normal(size=cols) / (1.0 + np.arange(cols))
    noise = rng.standard_normal(rows, chunks=chunk_rows)
    y = ((X - np.arange(cols)) @ w + noise > 0).astype(np.int8)
    return X, y


def _compute(client: Any, store: FeatureStore, name: str, report: DemoReport) -> dict:
    """Read the features back and compute on them, each step timed."""
    from lepton_dask import ops

    def step(label: str, fn, detail: str = ""):
        t = time.perf_counter()
        out = fn()
        report.steps.append(Step(label, time.perf_counter() - t, detail))
        return out

    Y, labels = step(
        "read",
        lambda: _persist(
            client, store.get_array(name), store.get_array(name + ".label")
        ),
    )
    first = report.steps[-1]
    first.detail = f"{report.nbytes / 2**20 / first.seconds:,.1f} MiB/s (get_array)"
    _forget(client, Y, labels)  # read again, as a re-run notebook cell would
    del Y, labels
    before = _cache_counts(client)
    Y, labels = step(
        "read again",
        lambda: _persist(
            client, store.get_array(name), store.get_array(name + ".label")
        ),
    )
    hits, misses = (a - b for a, b in zip(_cache_counts(client), before, strict=True))
    report.steps[-1].detail = _second_read(client, report, first, report.steps[-1])
    report.steps[-1].detail += f"; {hits} of {hits + misses} blocks from the cache"
    mean, std, gram = step(
        "moments",
        lambda: client.compute([Y.mean(axis=0), Y.std(axis=0), ops.gram(Y)], sync=True),
        "column mean, std and X^T X",
    )
    Z = step(
        "standardize",
        lambda: _persist(client, ops.StandardScaler().fit_transform(Y))[0],
        "StandardScaler",
    )
    pca = step("pca", lambda: ops.PCA(4).fit(Z), "PCA, 4 components (TSQR)")
    clf = step(
        "logreg",
        lambda: ops.LogisticRegression().fit(Z, labels),
        "LogisticRegression (L-BFGS)",
    )
    acc = step("predict", lambda: clf.score(Z, labels), "accuracy on the cluster")
    return {"Y": Y, "mean": mean, "std": std, "gram": gram, "accuracy": acc, "pca": pca}


def _check(client: Any, X, y, results: dict, report: DemoReport) -> None:
    """Every result against numpy and scikit-learn on the same data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    Xn = X.compute()
    yn = y.compute()
    report.checks["mean"] = bool(np.allclose(results["mean"], Xn.mean(axis=0)))
    report.checks["std"] = bool(np.allclose(results["std"], Xn.std(axis=0)))
    report.checks["X^T X"] = bool(np.allclose(results["gram"], Xn.T @ Xn, rtol=1e-9))
    report.checks["round trip"] = bool(
        np.array_equal(client.compute(results["Y"][:1000], sync=True), Xn[:1000])
    )
    Zn = StandardScaler().fit_transform(Xn)
    t = time.perf_counter()
    sk_acc = LogisticRegression().fit(Zn, yn).score(Zn, yn)
    t_sk = time.perf_counter() - t
    acc = results["accuracy"]
    report.checks["accuracy vs sklearn"] = abs(acc - sk_acc) <= 0.005
    report.extra["accuracy"] = (
        f"ours {acc:.4f}, scikit-learn {sk_acc:.4f} (sklearn fit {t_sk:.2f} s in one process)"
    )
    report.extra["pca"] = "explained variance ratio " + ", ".join(
        f"{v:.3f}" for v in results["pca"].explained_variance_ratio_
    )


def _second_read(client: Any, report: DemoReport, first: Step, again: Step) -> str:
    """The second read beside the first: speed-up, and what it saved."""
    workers = len(client.scheduler_info()["workers"])
    saved = max(first.seconds - again.seconds, 0.0) * workers
    usd = saved * report.usd_per_worker_hour / 3600
    return (
        f"{report.nbytes / 2**20 / again.seconds:,.1f} MiB/s, "
        f"{first.seconds / again.seconds:,.1f}x the first read (block cache); "
        f"saved {saved:,.1f} worker-seconds = ${usd:.6f}"
    )


def _cache_counts(client: Any) -> tuple[int, int]:
    """Block-cache hits and misses, summed over the workers."""
    from lepton_dask.store.cache import counts

    per = client.run(counts).values()
    return sum(c["hits"] for c in per), sum(c["misses"] for c in per)


def _forget(client: Any, *arrays: da.Array, timeout: float = 10.0) -> None:
    """Release ``arrays`` and wait until the scheduler has forgotten them (a
    graph with the same keys would otherwise be answered from memory)."""
    from dask.core import flatten

    keys = [k for a in arrays for k in flatten(a.__dask_keys__())]
    client.cancel(list(arrays))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not client.run_on_scheduler(_known, keys):
            return
        time.sleep(0.05)


def _known(keys: list, dask_scheduler=None) -> bool:
    return any(k in dask_scheduler.tasks for k in keys)


def _persist(client: Any, *arrays: da.Array) -> tuple:
    from distributed import wait

    out = client.persist(list(arrays))
    wait(out)
    return tuple(out)


def scaler_summary(log: Any, budget: float) -> str:
    """What the scaler decided and why, for the demo summary: the decisions
    that changed the cluster, newest last.

    >>> scaler_summary([(0.0, {"targets": {"cpu": 2}, "reason": "go", "changed": True})], 1.0)
    'budget $1.000/hour; 1 changes: cpu->2 (go)'
    """
    changes = [e for _, e in log if e.get("changed")]
    shown = changes[-4:]
    parts = [
        ", ".join(f"{p}->{n}" for p, n in e["targets"].items())
        + f" ({e['reason'][:70]})"
        for e in shown
    ]
    more = f"{len(changes) - len(shown)} earlier, " if len(changes) > len(shown) else ""
    return f"budget ${budget:.3f}/hour; {len(changes)} changes: {more}" + "; ".join(
        parts
    )
