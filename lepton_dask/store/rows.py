"""Row collections: one document per row, read as (and written from) arrays.

What a read sees
----------------
:func:`read_collection` plans its chunks when it is called, from the ``_id``
values that match the query at that moment (one sorted ``_id`` pass, answered
from the ``_id`` index on MongoDB). Each chunk is an ``_id`` range whose row
count is known from the plan. When a chunk is read, its documents are counted
again: if documents were inserted into or deleted from that range in between,
the read raises :class:`~lepton_dask.store.errors.CollectionChangedError`
instead of returning a silently different array. Documents inserted after the
plan with an ``_id`` above the planned maximum (new ObjectIds, increasing keys)
are simply not part of the read. Values updated in place between plan and read
are read as they are when the chunk is read (no multi-document snapshot is
portable to servers without transactions).

How it reads
------------
With ``row-read: ranges`` each chunk is one query on its ``_id`` range, run in
parallel on the workers: right when the server answers ranges from its
``_id`` index (MongoDB). FerretDB's SQLite backend answers every filter with a
full table scan, so P range queries would read the collection P times; there
(``row-read: auto`` asks ``explain``) one task reads the collection in a single
pass and the chunks are cut from it.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import uuid
from collections.abc import Sequence
from typing import Any

import bson
import dask
import dask.array as da
import numpy as np
import pymongo
import pymongo.errors
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from lepton_dask.store import _caps
from lepton_dask.store._spec import StoreSpec, insert_idempotent
from lepton_dask.store.errors import CollectionChangedError
from lepton_dask.store.layout import (
    check_dtype,
    validate_collection_name,
    validate_field_name,
)

logger = logging.getLogger(__name__)

_NUMERIC = (int, float, bool, np.integer, np.floating, np.bool_)


def _id_key(v: Any) -> str:
    return type(v).__name__


def plan_ranges(
    spec: StoreSpec,
    collection: str,
    query: dict,
    rows_per_chunk: int,
) -> tuple[list[Any], list[int], Any]:
    """Split the matching documents into ``_id`` ranges of ``rows_per_chunk`` rows.

    Returns ``(starts, counts, last_id)``: chunk ``i`` holds ``counts[i]``
    documents with ``starts[i] <= _id < starts[i + 1]`` (the last chunk:
    ``<= last_id``). One streaming pass over the sorted ``_id`` values; only the
    boundaries are kept in memory.
    """
    coll = spec.db()[collection]

    def scan() -> tuple[list[Any], list[int], Any]:
        starts: list[Any] = []
        counts: list[int] = []
        last = None
        id_type = None
        cursor = coll.find(query, {"_id": 1}, batch_size=50_000).sort("_id", 1)
        for n, doc in enumerate(cursor):
            _id = doc["_id"]
            t = _id_key(_id)
            if id_type is None:
                id_type = t
            elif t != id_type:
                raise TypeError(
                    f"collection {spec.database}.{collection} mixes _id types "
                    f"({id_type} and {t}, e.g. _id={_id!r}); read_collection "
                    "partitions by _id ranges and needs one _id type"
                )
            if n % rows_per_chunk == 0:
                starts.append(_id)
                counts.append(0)
            counts[-1] += 1
            last = _id
        return starts, counts, last

    return spec.retry(scan, f"planning the read of {collection}")


def docs_to_array(
    docs: Sequence[dict],
    fields: Sequence[str],
    dtype: np.dtype,
    *,
    missing: str,
    where: str,
) -> np.ndarray:
    """Convert documents to a ``(len(docs), len(fields))`` array.

    Missing or null fields raise ``ValueError`` naming the field and ``_id``
    (or become NaN with ``missing="nan"``); non-numeric values raise
    ``TypeError`` naming the field and ``_id``.

    >>> docs_to_array([{"_id": 1, "a": 1, "b": 2.5}], ["a", "b"], np.dtype("f8"),
    ...               missing="raise", where="db.c")
    array([[1. , 2.5]])
    >>> docs_to_array([{"_id": 7, "a": "x"}], ["a"], np.dtype("f8"),
    ...               missing="raise", where="db.c")
    Traceback (most recent call last):
    ...
    TypeError: db.c: document _id=7 has non-numeric field 'a' ('x', str)
    """
    n, f = len(docs), len(fields)
    if n == 0:
        return np.empty((0, f), dtype=dtype)
    get = operator.itemgetter(*fields)
    try:
        rows = [get(d) for d in docs]
        arr = np.array(rows if f > 1 else [(r,) for r in rows])
        if arr.shape == (n, f) and _casts_exactly(arr, dtype):
            return arr.astype(dtype, copy=False)
    except (KeyError, TypeError, ValueError, OverflowError):
        pass
    # Slow path: find and name the offending document, or fill NaN.
    out = np.empty((n, f), dtype=dtype)
    for i, d in enumerate(docs):
        for j, name in enumerate(fields):
            v = d.get(name)
            if v is None:
                if missing == "nan":
                    out[i, j] = np.nan
                    continue
                state = "null" if name in d else "missing"
                raise ValueError(
                    f"{where}: document _id={d.get('_id')!r} has {state} field "
                    f"{name!r}; pass missing='nan' to read it as NaN"
                )
            if isinstance(v, bson.Decimal128):
                v = float(v.to_decimal())
            elif not isinstance(v, _NUMERIC):
                raise TypeError(
                    f"{where}: document _id={d.get('_id')!r} has non-numeric field "
                    f"{name!r} ({v!r:.40}, {type(v).__name__})"
                )
            problem = _unrepresentable(v, dtype)
            if problem:
                raise ValueError(
                    f"{where}: document _id={d.get('_id')!r} field {name!r} holds "
                    f"{v!r:.40}, which {problem} {dtype}"
                )
            out[i, j] = v
    return out


def _casts_exactly(arr: np.ndarray, dtype: np.dtype) -> bool:
    """Whether ``arr.astype(dtype)`` keeps every value (the fast path's test).

    Floats into floats round as numpy does; into integers only integral
    values in range are kept; anything else takes the slow path, which names
    the offending document.
    """
    if arr.dtype.kind not in "biuf":
        return False
    if arr.dtype.kind == "b":
        return True
    if dtype.kind == "f":
        if arr.dtype.kind == "f" and dtype.itemsize >= arr.dtype.itemsize:
            return True
        # A narrower float: finite values must not overflow to inf.
        with np.errstate(over="ignore"):
            return bool((np.isfinite(arr.astype(dtype)) == np.isfinite(arr)).all())
    if dtype.kind == "b":
        return False
    info = np.iinfo(dtype)
    if arr.size == 0:
        return True
    if arr.dtype.kind == "f" and not (
        np.isfinite(arr).all() and (arr == np.trunc(arr)).all()
    ):
        return False
    return bool(arr.min() >= info.min and arr.max() <= info.max) and (
        arr.dtype.kind != "f" or float(arr.max()) < 2.0**63
    )


def _unrepresentable(v: Any, dtype: np.dtype) -> str:
    """Why ``v`` cannot be stored in ``dtype`` exactly ('' when it can)."""
    if dtype.kind == "f":
        try:
            f = float(v)
        except OverflowError:
            return "is too large for"
        if math.isfinite(f):
            with np.errstate(over="ignore"):
                if not np.isfinite(np.asarray(f).astype(dtype)):
                    return "is too large for"
        return ""
    if dtype.kind == "b":
        return "" if isinstance(v, bool | np.bool_) else "is not a boolean for"
    if isinstance(v, float | np.floating):
        if not math.isfinite(v) or v != int(v):
            return "is not an integer, as needed by"
        v = int(v)
    info = np.iinfo(dtype)
    if not info.min <= int(v) <= info.max:
        return "is out of the range of"
    return ""


def _fetch(
    spec: StoreSpec,
    collection: str,
    query: dict,
    id_range: dict,
    fields: Sequence[str],
    *,
    sort: bool,
) -> tuple[list[dict], str]:
    """The ``fields`` of the documents matching ``query`` with ``_id`` in
    ``id_range``, and where they came from (``database.collection``)."""
    coll = spec.db()[collection]
    filt = {"_id": id_range} if not query else {"$and": [query, {"_id": id_range}]}

    def find() -> list[dict]:
        cursor = coll.find(filt, dict.fromkeys(fields, 1), batch_size=50_000)
        return list(cursor.sort("_id", 1) if sort else cursor)

    return spec.retry(find, f"reading {collection}"), f"{spec.database}.{collection}"


def _read_range(
    spec: StoreSpec,
    collection: str,
    query: dict,
    fields: Sequence[str],
    lo: Any,
    hi: Any,
    last: bool,
    expected: int,
    dtype: str,
    missing: str,
) -> np.ndarray:
    rng = {"$gte": lo, "$lte": hi} if last else {"$gte": lo, "$lt": hi}
    docs, where = _fetch(spec, collection, query, rng, fields, sort=False)
    if len(docs) != expected:
        raise CollectionChangedError(
            f"{where} changed during the read: the _id range starting at {lo!r} "
            f"held {expected} matching documents when the read was planned and "
            f"{len(docs)} now; read it again"
        )
    docs.sort(key=operator.itemgetter("_id"))
    return docs_to_array(docs, fields, np.dtype(dtype), missing=missing, where=where)


def _read_scan(
    spec: StoreSpec,
    collection: str,
    query: dict,
    fields: Sequence[str],
    starts: Sequence[Any],
    counts: Sequence[int],
    last_id: Any,
    dtype: str,
    missing: str,
) -> np.ndarray:
    docs, where = _fetch(spec, collection, query, {"$lte": last_id}, fields, sort=True)
    # Check the plan chunk by chunk: same boundaries, same counts.
    pos = 0
    for i, (lo, n) in enumerate(zip(starts, counts, strict=False)):
        hi = starts[i + 1] if i + 1 < len(starts) else None
        seg = docs[pos : pos + n]
        ok = (
            len(seg) == n
            and seg[0]["_id"] == lo
            and (hi is None or pos + n == len(docs) or docs[pos + n]["_id"] >= hi)
        )
        if not ok:
            raise CollectionChangedError(
                f"{where} changed during the read: the _id range starting at {lo!r} "
                f"no longer holds the {n} documents planned; read it again"
            )
        pos += n
    if pos != len(docs):
        raise CollectionChangedError(
            f"{where} changed during the read: {len(docs)} matching documents now, "
            f"{pos} when the read was planned; read it again"
        )
    return docs_to_array(docs, fields, np.dtype(dtype), missing=missing, where=where)


def _slice_rows(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
    return arr[start:stop]


def read_collection(
    spec: StoreSpec,
    collection: str,
    fields: Sequence[str],
    query: dict | None = None,
    *,
    rows_per_chunk: int | None = None,
    dtype: Any = "float64",
    missing: str = "raise",
    strategy: str | None = None,
    key: str = "",
) -> da.Array:
    """Read numeric ``fields`` of a row collection as a 2-D Dask array.

    See the module docstring for what a read sees; :meth:`FeatureStore.read_collection`
    is the public entry point.
    """
    collection, fields, query, dt, rows_per_chunk, strategy = _read_arguments(
        collection, fields, query, rows_per_chunk, dtype, missing, strategy
    )
    db = spec.db()
    exists = spec.retry(
        lambda: collection in db.list_collection_names(filter={"name": collection}),
        "listing collections",
    )
    if not exists:
        raise KeyError(f"no collection {collection!r} in database {spec.database!r}")
    starts, counts, last_id = plan_ranges(spec, collection, query, rows_per_chunk)
    if strategy == "auto":
        indexed = spec.retry(
            lambda: _caps.indexed(db, collection, "range", spec.uri), "probing"
        )
        strategy = "ranges" if indexed else "scan"
    name = f"lepton-rows-{collection}-{tokenize(key, spec.database, collection, fields, query, rows_per_chunk, dt.str, missing, strategy, starts, counts, last_id)}"
    chunks = (tuple(counts) or (0,), (len(fields),))
    if not counts:  # nothing matches: one empty chunk
        dsk = {(name, 0, 0): (np.empty, (0, len(fields)), dt)}
    elif strategy == "ranges":
        dsk = {
            (name, i, 0): (
                _read_range,
                spec,
                collection,
                query,
                fields,
                lo,
                last_id if i == len(starts) - 1 else starts[i + 1],
                i == len(starts) - 1,
                n,
                dt.str,
                missing,
            )
            for i, (lo, n) in enumerate(zip(starts, counts, strict=False))
        }
    else:
        scan_key = f"{name}-scan"
        dsk = {
            scan_key: (
                _read_scan,
                spec,
                collection,
                query,
                fields,
                list(starts),
                list(counts),
                last_id,
                dt.str,
                missing,
            )
        }
        offsets = [0, *itertools.accumulate(counts)]
        for i in range(len(counts)):
            dsk[(name, i, 0)] = (_slice_rows, scan_key, offsets[i], offsets[i + 1])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks, dtype=dt)


def _read_arguments(
    collection, fields, query, rows_per_chunk, dtype, missing, strategy
):
    """``read_collection``'s arguments checked, with their defaults from
    ``lepton.store``: a clear error for each bad one."""
    collection = validate_collection_name(collection)
    fields = [validate_field_name(f) for f in fields]
    if not fields:
        raise ValueError("read_collection needs at least one field")
    if len(set(fields)) != len(fields):
        raise ValueError(f"duplicate fields in {fields}")
    if query is None:
        query = {}
    if not isinstance(query, dict):
        raise TypeError(
            f"query must be a dict (a MongoDB filter), got {type(query).__name__}"
        )
    if missing not in ("raise", "nan"):
        raise ValueError(f"missing must be 'raise' or 'nan', got {missing!r}")
    dt = check_dtype(dtype, "rows")
    if missing == "nan" and dt.kind not in "fc":
        raise ValueError(f"missing='nan' needs a float dtype, got {dt}")
    rows_per_chunk = int(
        rows_per_chunk or dask.config.get("lepton.store.rows-per-chunk")
    )
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    strategy = strategy or dask.config.get("lepton.store.row-read")
    if strategy not in ("auto", "ranges", "scan"):
        raise ValueError(f"strategy must be auto, ranges or scan, got {strategy!r}")
    return collection, fields, query, dt, rows_per_chunk, strategy


def _insert_rows(
    block: np.ndarray,
    spec: StoreSpec,
    collection: str,
    fields: Sequence[str],
    row0: int,
) -> int:
    block = np.asarray(block)
    if block.ndim == 1:
        block = block[:, None]
    rows = block.tolist()
    docs = [
        {"_id": row0 + i, **dict(zip(fields, row, strict=False))}
        for i, row in enumerate(rows)
    ]
    coll = spec.db()[collection]

    def insert() -> None:
        for start in range(0, len(docs), 10_000):
            insert_idempotent(coll, docs[start : start + 10_000])

    spec.retry(insert, f"writing rows to {collection}")
    return len(docs)


def write_collection(
    spec: StoreSpec,
    collection: str,
    x: Any,
    fields: Sequence[str] | None = None,
) -> int:
    """Write the rows of a 2-D array as documents, replacing ``collection``.

    Rows get ``_id`` = their row number. The rows are written to a temporary
    collection first and renamed over ``collection`` at the end, so a failed
    write leaves the previous collection as it was. On MongoDB the rename
    replaces the target atomically (``dropTarget``); FerretDB does not support
    ``dropTarget``, so there the old collection is renamed aside first and
    dropped after the swap (readers may see no collection for that instant).
    """
    collection = validate_collection_name(collection)
    if not isinstance(x, da.Array):
        x = np.asarray(x)
    dt = check_dtype(x.dtype, "rows")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"write_collection needs a 1-D or 2-D array, got {x.ndim}-D")
    ncols = x.shape[1]
    fields = list(fields) if fields is not None else [f"f{j}" for j in range(ncols)]
    fields = [validate_field_name(f) for f in fields]
    if len(fields) != ncols or len(set(fields)) != ncols:
        raise ValueError(
            f"need {ncols} distinct field names for {ncols} columns, got {fields}"
        )
    if dt.kind == "c":
        raise TypeError("complex values cannot be stored as BSON numbers")
    if not isinstance(x, da.Array):
        x = da.from_array(x, chunks=(max(1, min(len(x), 50_000)), ncols))
    x = x.rechunk({1: ncols})
    tmp = f"{collection}__lepton_tmp_{uuid.uuid4().hex[:12]}"  # no dots: FerretDB renames split on "."
    offsets = [0, *itertools.accumulate(x.chunks[0])]
    tasks = [
        dask.delayed(_insert_rows, pure=False)(blk, spec, tmp, fields, offsets[i])
        for i, blk in enumerate(x.to_delayed().ravel())
    ]
    db = spec.db()
    try:
        counts = dask.compute(*tasks)
        _swap_in(spec, tmp, collection)
    except BaseException:
        try:
            db.drop_collection(tmp)
        except Exception as e:  # pragma: no cover - best effort
            logger.warning(
                "could not drop %s after a failed write (gc removes it): %s",
                tmp,
                e,
                exc_info=True,
            )
        raise
    return int(sum(counts))


def _swap_in(spec: StoreSpec, tmp: str, target: str) -> None:
    db = spec.db()
    try:
        spec.retry(
            lambda: db[tmp].rename(target, dropTarget=True), f"publishing {target}"
        )
        return
    except pymongo.errors.OperationFailure as e:
        if "dropTarget" not in str(e) and e.code not in (238,):  # NotImplemented
            raise
    names = set(db.list_collection_names())
    if target not in names:
        spec.retry(lambda: db[tmp].rename(target), f"publishing {target}")
        return
    aside = f"{target}__lepton_old_{uuid.uuid4().hex[:12]}"
    spec.retry(lambda: db[target].rename(aside), f"publishing {target}")
    try:
        spec.retry(lambda: db[tmp].rename(target), f"publishing {target}")
    except BaseException:
        db[aside].rename(target)  # put the old one back
        raise
    db.drop_collection(aside)
