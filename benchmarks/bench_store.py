"""Feature store throughput: ours vs the wire limit and the dask-mongo way.

One run, one server, one float64 matrix (512 MiB; ``--quick`` 64 MiB):

(a) raw pymongo: the same bytes stored as binary documents, read with one
    cursor into one preallocated numpy array (the wire limit);
(b) ``FeatureStore.get_array(...).compute()`` on a LocalCluster (2 x 1);
(c) ``FeatureStore.read_collection`` on a one-document-per-row copy;
(d) the dask-mongo way (its ``read_mongo``, re-implemented here because its
    ``$bucketAuto`` planning is not available on FerretDB): ``$count``, ``_id``
    ranges from ``$bucketAuto`` (falling back to a sorted ``_id`` scan when the
    server lacks it), one new MongoClient and one ``$match`` aggregate per
    partition returning whole documents, a bag of dicts per partition,
    converted to numpy.
Writes: ``put_array`` of the numpy matrix vs raw ``insert_many`` of the same
binary documents.

The row copy is a prefix of the matrix (all 64 columns; 32,768 rows, or 8,192
with ``--quick``): on FerretDB/SQLite every range query is a full scan at a
few thousand documents per second, so a 512 MiB row copy would take hours to
read the peer's way. Rates are per byte of float64 payload.

The wire stage reads with the block cache off (it measures the server). The
cache stage (``_store_cache.py``) measures the block cache: cold, warm, after
a restart and off, and the hit rate on 4 workers with separate caches.

Usage: ``python benchmarks/bench_store.py [--quick] [--uri URI] [--stage all|wire|cache]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import bson
import dask
import numpy as np
import pymongo
from _common import local_cluster, machine, mongo, result_line, table, timed
from _store_cache import run_cache_stage

from lepton_dask.store import FeatureStore

COLS = 64
PART = 12 * 2**20


def raw_write(db, X: np.ndarray) -> None:
    flat = memoryview(np.ascontiguousarray(X)).cast("B")
    docs = [
        {"_id": i, "offset": off, "data": bson.Binary(bytes(flat[off : off + PART]))}
        for i, off in enumerate(range(0, len(flat), PART))
    ]
    db["raw"].drop()
    db["raw"].insert_many(docs, ordered=True)


def raw_read(db, shape) -> np.ndarray:
    out = np.empty(shape)
    buf = out.reshape(-1).view(np.uint8)
    for doc in db["raw"].find({}, batch_size=3):
        data = doc["data"]
        buf[doc["offset"] : doc["offset"] + len(data)] = np.frombuffer(data, np.uint8)
    return out


def write_rows(db, X: np.ndarray) -> None:
    names = [f"c{j}" for j in range(X.shape[1])]
    db["rows"].drop()
    docs = [
        {"_id": i, **dict(zip(names, row, strict=False))}
        for i, row in enumerate(X.tolist())
    ]
    for s in range(0, len(docs), 5000):
        db["rows"].insert_many(docs[s : s + 5000])


# -- the peer: the dask-mongo way -----------------------------------------------------
def _peer_fetch(uri, database, lo, hi, include_last):
    with pymongo.MongoClient(
        uri
    ) as c:  # a new client per partition, as dask-mongo does
        rng = {"$gte": lo, "$lte" if include_last else "$lt": hi}
        return list(
            c[database]["rows"].aggregate([{"$match": {}}, {"$match": {"_id": rng}}])
        )


def _peer_to_numpy(docs, fields):
    return np.array([[d[f] for f in fields] for d in docs], dtype=float)


def peer_read(uri, database, fields, chunksize) -> tuple[np.ndarray, str]:
    with pymongo.MongoClient(uri) as c:
        coll = c[database]["rows"]
        nrows = next(coll.aggregate([{"$match": {}}, {"$count": "count"}]))["count"]
        nparts = math.ceil(nrows / chunksize)
        try:
            buckets = list(
                coll.aggregate(
                    [
                        {"$match": {}},
                        {"$bucketAuto": {"groupBy": "$_id", "buckets": nparts}},
                    ],
                    allowDiskUse=True,
                )
            )
            bounds = [(b["_id"]["min"], b["_id"]["max"]) for b in buckets]
            planner = "$bucketAuto"
        except pymongo.errors.OperationFailure:
            ids = [d["_id"] for d in coll.find({}, {"_id": 1}).sort("_id", 1)]
            starts = ids[::chunksize]
            bounds = [
                (s, starts[i + 1] if i + 1 < len(starts) else ids[-1])
                for i, s in enumerate(starts)
            ]
            planner = "sorted _id scan ($bucketAuto unsupported)"
    parts = [
        dask.delayed(_peer_fetch)(uri, database, lo, hi, i == len(bounds) - 1)
        for i, (lo, hi) in enumerate(bounds)
    ]
    arrays = [dask.delayed(_peer_to_numpy)(p, fields) for p in parts]
    return np.concatenate(dask.compute(*arrays)), planner


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB instead of 512 MiB")
    ap.add_argument(
        "--uri", default=None, help="MongoDB URI (default: fresh embedded server)"
    )
    ap.add_argument(
        "--stage",
        choices=["all", "wire", "cache"],
        default="all",
        help="wire: the reads and writes above; cache: the block cache",
    )
    args = ap.parse_args(argv)
    r: dict = {}
    with mongo(args.uri) as uri:
        if args.stage in ("all", "wire"):
            r.update(_wire_stage(args, uri))
        if args.stage in ("all", "cache"):
            r.update(run_cache_stage(uri, args.quick))
    r.update(quick=args.quick, machine=machine(), stage=args.stage)
    r["server"] = "embedded" if args.uri is None else "given"
    print(result_line(r))
    return r


def _wire_stage(args, uri: str) -> dict:
    mib = 64 if args.quick else 512
    rows = mib * 2**20 // (8 * COLS)
    row_copy = 8192 if args.quick else 32768
    nbytes = rows * COLS * 8
    X = np.random.default_rng(0).random((rows, COLS))
    fields = [f"c{j}" for j in range(COLS)]
    with (
        local_cluster(2, 1) as client,
        dask.config.set({"lepton.store.cache.enabled": False}),
    ):
        store = FeatureStore(uri, f"bench_store_{int(time.time())}")
        db = store.db
        print(
            f"server {store!r}; matrix {rows:,} x {COLS} float64 = {mib} MiB",
            file=sys.stderr,
        )
        t_raw_w, _ = timed(raw_write, db, X)
        t_put, _ = timed(
            store.put_array, "bench", X, chunks=(rows // 8, COLS), progress=False
        )
        t_raw_r, got = timed(raw_read, db, X.shape)
        assert np.array_equal(got, X)
        t_get, got = timed(lambda: client.compute(store.get_array("bench"), sync=True))
        assert np.array_equal(got, X)
        del got
        Xr = X[:row_copy]
        rnbytes = Xr.nbytes
        t_rows_w, _ = timed(write_rows, db, Xr)
        chunk = row_copy // 8
        t_row, got = timed(
            lambda: client.compute(
                store.read_collection("rows", fields, rows_per_chunk=chunk), sync=True
            )
        )
        assert np.array_equal(got, Xr)
        t_peer, (got, planner) = timed(peer_read, uri, store.database, fields, chunk)
        assert np.array_equal(got, Xr)
        db.client.drop_database(store.database)

    mbps = lambda n, t: n / 2**20 / t  # noqa: E731
    r = {
        "raw_read_mbps": round(mbps(nbytes, t_raw_r), 2),
        "chunked_read_mbps": round(mbps(nbytes, t_get), 2),
        "row_read_mbps": round(mbps(rnbytes, t_row), 3),
        "peer_row_read_mbps": round(mbps(rnbytes, t_peer), 3),
        "raw_write_mbps": round(mbps(nbytes, t_raw_w), 2),
        "put_write_mbps": round(mbps(nbytes, t_put), 2),
    }
    r["chunked_vs_raw"] = round(r["chunked_read_mbps"] / r["raw_read_mbps"], 3)
    r["chunked_vs_peer"] = round(r["chunked_read_mbps"] / r["peer_row_read_mbps"], 1)
    r["row_vs_peer"] = round(t_peer / t_row, 2)
    r["write_vs_raw"] = round(t_raw_w / t_put, 3)
    print(
        table(
            [
                [
                    "(a) raw pymongo read, binary docs",
                    f"{mib} MiB",
                    t_raw_r,
                    r["raw_read_mbps"],
                ],
                [
                    "(b) get_array().compute()",
                    f"{mib} MiB",
                    t_get,
                    r["chunked_read_mbps"],
                ],
                [
                    "(c) read_collection (rows)",
                    f"{rnbytes / 2**20:.0f} MiB",
                    t_row,
                    r["row_read_mbps"],
                ],
                [
                    "(d) dask-mongo way (rows)",
                    f"{rnbytes / 2**20:.0f} MiB",
                    t_peer,
                    r["peer_row_read_mbps"],
                ],
                [
                    "raw insert_many, binary docs",
                    f"{mib} MiB",
                    t_raw_w,
                    r["raw_write_mbps"],
                ],
                ["put_array (numpy)", f"{mib} MiB", t_put, r["put_write_mbps"]],
                [
                    "(row copy written with insert_many)",
                    f"{rnbytes / 2**20:.0f} MiB",
                    t_rows_w,
                    mbps(rnbytes, t_rows_w),
                ],
            ],
            ["what", "data", "seconds", "MiB/s"],
        )
    )
    print(f"\npeer planning: {planner}")
    goals = {
        "chunked_vs_raw": 0.6,
        "chunked_vs_peer": 10,
        "row_vs_peer": 2,
        "write_vs_raw": 0.6,
    }
    for k, g in goals.items():
        print(f"{k:>16} = {r[k]:<8} goal >= {g}: {'met' if r[k] >= g else 'MISSED'}")
    return r


if __name__ == "__main__":
    main()
