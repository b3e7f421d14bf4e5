"""Chunked operations: ours on a LocalCluster vs numpy/scikit-learn in one process.

Same data in one run: 2,000,000 x 64 float64 (``--quick``: 250,000 x 64),
eight Gaussian blobs plus a label from a noisy linear rule. Ours runs on a
LocalCluster of 2 single-threaded workers with the data persisted as 8 row
blocks; the peers run in this process (numpy and scikit-learn with their usual
threads). dask-ml on the same persisted data is a second peer column.

This machine sets OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (for old OpenBLAS
builds); they slow a current numpy, so this script re-executes itself once with
both unset (its own process and its workers only; tests and CI keep them), and
prints the BLAS kernel it then runs.

With a GPU and cupy (``--gpu auto``), the GPU path (one worker with the
``GPU`` resource, blocks as cupy arrays) is timed against our CPU path above.

Usage: ``python benchmarks/bench_ops.py [--quick] [--rows N] [--no-dask-ml] [--gpu auto|no]``
"""

from __future__ import annotations

import os
import sys

if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("OPENBLAS_L2_SIZE"):
    if "--keep-openblas-env" not in sys.argv:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        }
        env["LEPTON_BENCH_UNSET_OPENBLAS"] = "1"
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse
import time
import warnings

import dask.array as da
import numpy as np
from _common import local_cluster, machine, result_line, run, table, timed

import lepton_dask.ops as ops

D = 64
K = 8


CLASSES = 10


def make_block(i: int, rows: int, seed: int = 0):
    """Block ``i`` of the benchmark data: blobs + a noisy linear label, a
    10-class label (noisy argmax of linear scores) and a regression target."""
    rng = np.random.default_rng([seed, 0])
    centers = rng.normal(0.0, 4.0, size=(K, D))
    w = rng.normal(size=D)
    w10 = rng.normal(size=(D, CLASSES))
    wr = rng.normal(size=D)
    r = np.random.default_rng([seed, i + 1])
    lab = r.integers(K, size=rows)
    X = centers[lab] + r.normal(size=(rows, D))
    Xc = X - centers.mean(axis=0)
    y = Xc @ w / np.sqrt(D) + 2.0 * r.normal(size=rows) > 0
    y10 = (Xc @ w10 / np.sqrt(D) + 2.0 * r.gumbel(size=(rows, CLASSES))).argmax(1)
    yr = X @ wr + 3.0 + 5.0 * r.normal(size=rows)
    return X, y.astype(np.int64), y10.astype(np.int64), yr


def persisted(client, n: int, blocks: int = 8, resources=None, extra=False):
    """(X, y) as Dask arrays whose blocks were made on the workers (with
    ``extra``: also the 10-class label and the regression target)."""
    import dask

    rows = n // blocks
    parts = [dask.delayed(make_block, pure=True)(i, rows) for i in range(blocks)]
    Xs = [da.from_delayed(p[0], shape=(rows, D), dtype=float) for p in parts]
    cols = [
        da.concatenate([da.from_delayed(p[j], shape=(rows,), dtype=dt) for p in parts])
        for j, dt in ((1, np.int64), (2, np.int64), (3, float))
    ]
    arrays = [da.concatenate(Xs), *(cols if extra else cols[:1])]
    arrays = client.persist(arrays, resources=resources)
    from distributed import wait

    wait(arrays)
    return arrays


def gemm_gflops() -> float:
    a = np.random.default_rng(0).random((2048, 2048))
    b = np.random.default_rng(1).random((2048, 2048))
    t, _ = timed(lambda: a @ b, repeat=3)
    return 2 * 2048**3 / t / 1e9


def blas_info() -> str:
    from threadpoolctl import threadpool_info

    return ", ".join(
        f"{i['internal_api']} {i.get('version')} {i.get('architecture')} x{i['num_threads']}"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    )


def alternate(ours_fn, peer_fn, repeat: int):
    """Time ``ours_fn`` and ``peer_fn`` ``repeat`` times each, alternating (so
    noise from the other engineers' jobs hits both alike): medians, spreads
    (max - min) and the last results."""
    t_ours, t_peer = [], []
    for _ in range(repeat):
        t, r_ours = timed(ours_fn)
        t_ours.append(t)
        t, r_peer = timed(peer_fn)
        t_peer.append(t)
    return (
        {"median": float(np.median(t_ours)), "spread": max(t_ours) - min(t_ours)},
        {"median": float(np.median(t_peer)), "spread": max(t_peer) - min(t_peer)},
        r_ours,
        r_peer,
    )


def run_pairs(client, arrays, local, repeat):
    """Ours (cluster, persisted arrays) and numpy/scikit-learn (this process,
    the same data), each operation ``repeat`` times, alternating."""
    from distributed import wait
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    X, y, y10, yr = arrays
    Xn, yn, y10n, yrn = local
    warm = X[:20_000].persist()  # warm the workers up (imports, first pickles)
    ops.gram(warm).compute()
    ops.StandardScaler().fit(warm)

    def standardize():
        Z = ops.StandardScaler().fit_transform(X).persist()
        wait(Z)
        return Z

    pairs = {
        "gram": (lambda: ops.gram(X).compute(), lambda: Xn.T @ Xn),
        "standardize": (
            standardize,
            lambda: (Xn - Xn.mean(axis=0)) / Xn.std(axis=0),
        ),
        "pca": (lambda: ops.PCA(8).fit(X), lambda: PCA(8, svd_solver="full").fit(Xn)),
        "logreg": (
            lambda: ops.LogisticRegression().fit(X, y),
            lambda: LogisticRegression(solver="lbfgs").fit(Xn, yn),
        ),
        "multiclass_logreg": (
            lambda: ops.LogisticRegression().fit(X, y10),
            lambda: LogisticRegression(solver="lbfgs").fit(Xn, y10n),
        ),
        "kmeans": (
            lambda: ops.KMeans(K, random_state=0).fit(X),
            lambda: KMeans(K, n_init=1, random_state=0).fit(Xn),
        ),
        "linreg": (
            lambda: ops.LinearRegression().fit(X, yr),
            lambda: LinearRegression().fit(Xn, yrn),
        ),
        "ridge": (
            lambda: ops.Ridge(alpha=1.0).fit(X, yr),
            lambda: Ridge(alpha=1.0).fit(Xn, yrn),
        ),
    }
    t, res, pres = {}, {}, {}
    for k, (ours_fn, peer_fn) in pairs.items():
        _log(f"timing {k}")
        with scheduler_log() as log:
            o, p, res[k], pres[k] = alternate(ours_fn, peer_fn, repeat)
        t[k] = {"ours": o, "peer": p, "collisions": log.getvalue().count(_COLLIDE)}
        if k == "standardize":
            res[k] = pres[k] = None
    return t, res, pres


_COLLIDE = "Detected different `run_spec`"


def scheduler_log():
    """Capture the scheduler's log (the LocalCluster's scheduler runs here)."""
    import contextlib
    import io
    import logging

    @contextlib.contextmanager
    def cm():
        log = io.StringIO()
        handler = logging.StreamHandler(log)
        logger = logging.getLogger("distributed.scheduler")
        logger.addHandler(handler)
        try:
            yield log
        finally:
            logger.removeHandler(handler)

    return cm()


def sklearn_checks_failed() -> tuple[int, dict[str, int]]:
    """Failed ``check_estimator`` checks over all our estimators (numpy input,
    no client: run before the cluster starts)."""
    from sklearn.utils.estimator_checks import check_estimator

    ests = [
        ops.StandardScaler(),
        ops.PCA(),
        ops.LogisticRegression(),
        ops.KMeans(n_clusters=3, random_state=0),
        ops.LinearRegression(),
        ops.Ridge(),
    ]
    failed = {}
    os.environ.setdefault("SCIPY_ARRAY_API", "1")  # the array-API check runs too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in ests:
            out = check_estimator(est, on_fail=None)
            failed[type(est).__name__] = sum(r["status"] == "failed" for r in out)
            for r in out:
                if r["status"] == "failed":
                    print(
                        f"FAILED {r['check_name']}: {r['exception']}", file=sys.stderr
                    )
    return sum(failed.values()), failed


def run_dask_ml(client, X, y):
    try:
        import dask_ml.cluster
        import dask_ml.decomposition
        import dask_ml.linear_model
        import dask_ml.preprocessing
    except Exception as e:  # pragma: no cover - optional peer
        print(f"dask-ml unavailable: {e}", file=sys.stderr)
        return {}
    from distributed import wait

    t = {}
    t["gram"], _ = timed(lambda: (X.T @ X).compute())

    def standardize():
        Z = dask_ml.preprocessing.StandardScaler().fit_transform(X).persist()
        wait(Z)

    t["standardize"], _ = timed(standardize)
    t["pca"], _ = timed(lambda: dask_ml.decomposition.PCA(8, svd_solver="tsqr").fit(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t["logreg"], _ = timed(
            lambda: dask_ml.linear_model.LogisticRegression(solver="lbfgs").fit(X, y)
        )
        t["kmeans"], _ = timed(
            lambda: dask_ml.cluster.KMeans(n_clusters=K, random_state=0).fit(X)
        )
    return t


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _time_path(client, X, repeat=3):
    """Gram, column moments, standardize and k-means on one path (CPU or GPU blocks)."""
    from distributed import wait

    _log(f"timing path on {type(X._meta).__module__} blocks")
    warm = X[:20_000].persist()
    ops.gram(warm).compute()
    ops.KMeans(K, random_state=0, max_iter=2).fit(warm)
    t, res = {}, {}
    t["gram"], res["gram"] = timed(lambda: ops.gram(X).compute(), repeat=repeat)
    # (k-means and standardize start with these; on the GPU they were the bottleneck)
    t["moments"], _ = timed(lambda: ops.column_moments(X).compute(), repeat=repeat)

    def standardize():
        Z = ops.StandardScaler().fit_transform(X).persist()
        wait(Z)

    t["standardize"], _ = timed(standardize, repeat=1)
    t["kmeans"], res["kmeans"] = timed(
        lambda: ops.KMeans(K, random_state=0).fit(X), repeat=2
    )
    _log(f"done: {t}")
    return t, res


def make_block_gpu(i: int, rows: int, seed: int = 0):
    """Like make_block, drawn with cupy's generator on the GPU (same
    distribution, other draws): generating 10^9 normals on one CPU thread
    would take most of a minute."""
    import cupy

    rng = np.random.default_rng([seed, 0])
    centers = cupy.asarray(rng.normal(0.0, 4.0, size=(K, D)))
    r = cupy.random.RandomState(seed * 1000 + i + 1)
    lab = r.randint(0, K, size=rows)
    return centers[lab] + r.standard_normal((rows, D))


def run_gpu(n):
    """Our GPU path (one worker with the GPU resource) vs our CPU path
    (LocalCluster, 2 workers x 1 thread), on n x 64 data of the same law."""
    try:
        import cupy
    except ImportError:
        return None
    if not ops.gpu_available():
        return None
    import dask
    from distributed import Client, LocalCluster, wait

    _log(f"GPU comparison at {n:,} rows: CPU path")
    with local_cluster(2, 1) as client:
        X, _ = persisted(client, n)
        cpu_t, cpu_res = _time_path(client, X)
        del X
    _log("GPU path")
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            resources={"GPU": 1},
            # cupy blocks live in device memory: the worker's host-memory
            # manager must not count them (it would spill them to disk)
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        rows = n // 8
        meta = cupy.empty((0, D))
        with dask.annotate(resources={"GPU": 1}):
            Xg = da.concatenate(
                [
                    da.from_delayed(
                        dask.delayed(make_block_gpu)(i, rows),
                        (rows, D),
                        dtype=float,
                        meta=meta,
                    )
                    for i in range(8)
                ]
            )
        Xg = client.persist(Xg)
        wait(Xg)
        gpu_t, gpu_res = _time_path(client, Xg)
        device = _gpu_name(client)
    return {
        "device": device,
        "rows": n,
        "cpu_path_seconds": {k: round(v, 4) for k, v in cpu_t.items()},
        "gpu_seconds": {k: round(v, 4) for k, v in gpu_t.items()},
        "speedup_vs_cpu_path": {k: round(cpu_t[k] / gpu_t[k], 1) for k in gpu_t},
        "kmeans_iterations": [cpu_res["kmeans"].n_iter_, gpu_res["kmeans"].n_iter_],
        "kmeans_inertia_per_row": [
            cpu_res["kmeans"].inertia_ / n,
            gpu_res["kmeans"].inertia_ / n,
        ],
    }


def _print_gpu(gpu):
    print(
        f"\nGPU path ({gpu['device']}) vs our CPU path (2 workers x 1 thread), {gpu['rows']:,} x {D}:"
    )
    print(
        table(
            [
                [
                    k,
                    gpu["cpu_path_seconds"][k],
                    gpu["gpu_seconds"][k],
                    gpu["speedup_vs_cpu_path"][k],
                ]
                for k in gpu["gpu_seconds"]
            ],
            ["op", "CPU path s", "GPU s", "speedup"],
        )
    )
    for k in ("gram", "kmeans"):
        ok = gpu["speedup_vs_cpu_path"][k] >= 20
        print(
            f"GPU {k} speedup {gpu['speedup_vs_cpu_path'][k]}x, goal >= 20x: {'met' if ok else 'MISSED'}"
        )


def _gpu_name(client):
    def name():
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()

    return next(iter(client.run(name).values()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="250,000 rows")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--no-dask-ml", action="store_true")
    ap.add_argument("--gpu", choices=["auto", "no"], default="auto")
    ap.add_argument(
        "--gpu-rows", type=int, default=None, help="rows for the GPU comparison"
    )
    ap.add_argument(
        "--gpu-only", action="store_true", help="only the GPU vs CPU-path comparison"
    )
    ap.add_argument(
        "--keep-openblas-env", action="store_true", help="do not unset them"
    )
    args = ap.parse_args(argv)
    n = args.rows or (250_000 if args.quick else 2_000_000)
    repeat = 3
    print(f"BLAS: {blas_info()}", file=sys.stderr)
    if os.environ.get("LEPTON_BENCH_UNSET_OPENBLAS"):
        print(
            "(re-executed with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset)",
            file=sys.stderr,
        )
    if args.gpu_only:
        gpu = run_gpu(args.gpu_rows or n)
        if gpu is None:
            print("no GPU/cupy here", file=sys.stderr)
            return None
        _print_gpu(gpu)
        print(result_line({"gpu": gpu, "machine": machine()}))
        return gpu
    n_failed, failed_by = sklearn_checks_failed()
    gemm = gemm_gflops()
    with local_cluster(2, 1) as client:
        arrays = persisted(client, n, extra=True)
        # the same blocks, made here for the in-process peers (deterministic)
        parts = [make_block(i, n // 8) for i in range(8)]
        local = [np.concatenate([p[j] for p in parts]) for j in range(4)]
        del parts
        Xn, yn, y10n, yrn = local
        print(
            f"data: {n:,} x {D} float64 = {Xn.nbytes / 2**20:,.0f} MiB, 8 blocks",
            file=sys.stderr,
        )
        times, res, pres = run_pairs(client, arrays, local, repeat)
        X, y = arrays[:2]
        dml = {} if args.no_dask_ml else run_dask_ml(client, X, y)
    ours = {k: v["ours"]["median"] for k, v in times.items()}
    peers = {k: v["peer"]["median"] for k, v in times.items()}
    acc_ours = float(np.mean(res["logreg"].predict(Xn) == yn))
    acc_sk = float(np.mean(pres["logreg"].predict(Xn) == yn))
    acc10_ours = float(np.mean(res["multiclass_logreg"].predict(Xn) == y10n))
    acc10_sk = float(np.mean(pres["multiclass_logreg"].predict(Xn) == y10n))
    r2 = {
        k: [float(res[k].score(Xn, yrn)), float(pres[k].score(Xn, yrn))]
        for k in ("linreg", "ridge")
    }
    coef_err = {
        k: float(
            np.abs(res[k].coef_ - pres[k].coef_).max() / np.abs(pres[k].coef_).max()
        )
        for k in ("linreg", "ridge", "multiclass_logreg")
    }
    gram_err = float(
        np.abs(res["gram"] - pres["gram"]).max() / np.abs(pres["gram"]).max()
    )
    comp_err = float(np.abs(res["pca"].components_ - pres["pca"].components_).max())
    gpu = run_gpu(args.gpu_rows or n) if args.gpu == "auto" else None

    rows = []
    names = {
        "gram": "X^T X",
        "standardize": "standardize",
        "pca": "PCA (8 comps)",
        "logreg": "LogisticRegression",
        "multiclass_logreg": "LogisticRegression (10 cl.)",
        "kmeans": "KMeans (8)",
        "linreg": "LinearRegression",
        "ridge": "Ridge",
    }
    for k, label in names.items():
        rows.append(
            [
                label,
                f"{peers[k]:.3g} ± {times[k]['peer']['spread']:.2g}",
                f"{ours[k]:.3g} ± {times[k]['ours']['spread']:.2g}",
                ours[k] / peers[k],
                dml.get(k, float("nan")),
                dml[k] / ours[k] if k in dml else float("nan"),
                times[k]["collisions"],
            ]
        )
    print(f"medians of {repeat} alternating runs, ± max - min")
    print(
        table(
            rows,
            [
                "op",
                "numpy/sklearn s",
                "ours s",
                "ours/peer",
                "dask-ml s",
                "dask-ml/ours",
                "key collisions",
            ],
        )
    )
    gram_gflops = 2 * n * D * D / ours["gram"] / 1e9
    print(
        f"\nGram: {gram_gflops:.1f} GFLOP/s (2nd^2 flops) vs GEMM 2048^3 in this process: {gemm:.1f} GFLOP/s"
    )
    print(
        f"Gram max rel. difference vs numpy: {gram_err:.1e}; PCA components max diff: {comp_err:.1e}"
    )
    print(
        f"LogisticRegression accuracy: ours {acc_ours:.4f}, sklearn {acc_sk:.4f} "
        f"(iterations {res['logreg'].n_iter_[0]} vs {pres['logreg'].n_iter_[0]})"
    )
    print(
        f"10-class accuracy: ours {acc10_ours:.4f}, sklearn {acc10_sk:.4f} "
        f"(iterations {res['multiclass_logreg'].n_iter_[0]} vs "
        f"{pres['multiclass_logreg'].n_iter_[0]}); goal within 0.5 points: "
        f"{'met' if abs(acc10_ours - acc10_sk) <= 0.005 else 'MISSED'}"
    )
    for k in ("linreg", "ridge"):
        ok = abs(r2[k][0] - r2[k][1]) <= 1e-6
        print(
            f"{k} R^2: ours {r2[k][0]:.10f}, sklearn {r2[k][1]:.10f}; goal equal "
            f"to 1e-6: {'met' if ok else 'MISSED'}"
        )
    print(f"max rel. coefficient difference vs sklearn: {coef_err}")
    print(
        f"KMeans inertia: ours {res['kmeans'].inertia_:.6g} ({res['kmeans'].n_iter_} it), "
        f"sklearn {pres['kmeans'].inertia_:.6g} ({pres['kmeans'].n_iter_} it)"
    )
    print(
        f"sklearn check_estimator failures: {n_failed} {failed_by}; goal 0: "
        f"{'met' if n_failed == 0 else 'MISSED'}"
    )
    if gpu:
        _print_gpu(gpu)
    result = {
        "gram_vs_numpy": round(ours["gram"] / peers["gram"], 3),
        "standardize_vs_numpy": round(ours["standardize"] / peers["standardize"], 3),
        "pca_vs_sklearn": round(ours["pca"] / peers["pca"], 3),
        "logreg_vs_sklearn": round(ours["logreg"] / peers["logreg"], 3),
        "kmeans_vs_sklearn": round(ours["kmeans"] / peers["kmeans"], 3),
        "gram_gflops": round(gram_gflops, 2),
        "gemm_gflops": round(gemm, 2),
        "logreg_accuracy": [round(acc_ours, 5), round(acc_sk, 5)],
        "multiclass_logreg_vs_sklearn": round(
            ours["multiclass_logreg"] / peers["multiclass_logreg"], 3
        ),
        "multiclass_logreg_accuracy": [round(acc10_ours, 5), round(acc10_sk, 5)],
        "linreg_vs_sklearn": round(ours["linreg"] / peers["linreg"], 3),
        "ridge_vs_sklearn": round(ours["ridge"] / peers["ridge"], 3),
        "linreg_r2": r2["linreg"],
        "ridge_r2": r2["ridge"],
        "coef_rel_diff": coef_err,
        "sklearn_checks_failed": n_failed,
        "seconds": {
            k: {
                side: {m: round(v, 4) for m, v in times[k][side].items()}
                for side in ("ours", "peer")
            }
            for k in times
        },
        "repeat": repeat,
        "key_collisions": {k: times[k]["collisions"] for k in times},
        "dask_ml_vs_ours": {k: round(dml[k] / ours[k], 2) for k in dml},
        "gpu": gpu,
        "rows": n,
        "blas": blas_info(),
        "openblas_env_unset": bool(os.environ.get("LEPTON_BENCH_UNSET_OPENBLAS")),
        "machine": machine(),
    }
    goals = [k for k in result if k.endswith(("_vs_numpy", "_vs_sklearn"))]
    for k in goals:
        print(
            f"{k:>28} = {result[k]:<7} goal <= 1.3: {'met' if result[k] <= 1.3 else 'MISSED'}"
        )
    print(result_line(result))
    return result


if __name__ == "__main__":
    run(main)
