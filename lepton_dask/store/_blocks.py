"""Task functions that write and read one block (they run on the workers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pymongo.errors
from dask.array.core import slices_from_chunks
from dask.base import tokenize

from lepton_dask.store._spec import StoreSpec, insert_idempotent
from lepton_dask.store._uri import redact_uri
from lepton_dask.store.cache import (
    READ_PREFIX,
    block_cache,
    block_key,
    count,
    install_worker_metric,
    store_identity,
)
from lepton_dask.store.errors import (
    CorruptBlockError,
    StoreWriteError,
    VersionGoneError,
)
from lepton_dask.store.layout import (
    VERSIONS,
    BlockCheckError,
    decode_block,
    encode_block,
    part_id,
    split_parts,
    version_id,
)

# pymongo refuses replies above the server's maxMessageSizeBytes (48 MB), and
# FerretDB does not cap a reply batch by size: bound the batch by part size.
_REPLY_BUDGET = 40 * 2**20


def write_block(
    block: np.ndarray,
    spec: StoreSpec,
    collection: str,
    name: str,
    version: int,
    index: Sequence[int],
    part_bytes: int,
) -> int:
    """Write one block's part documents; return the block's size in bytes.

    Idempotent: parts have deterministic ``_id`` values, so a retried task
    replaces what an earlier attempt wrote instead of adding to it.
    """
    block = np.asarray(block)
    docs = encode_block(
        block, name=name, version=version, index=index, part_bytes=part_bytes
    )
    coll = spec.db()[collection]
    try:
        spec.retry(
            lambda: insert_idempotent(coll, docs),
            f"writing block {tuple(index)} of {name!r}",
        )
    except (pymongo.errors.OperationFailure, pymongo.errors.BulkWriteError) as e:
        raise refused_write(spec, e, name, version, index) from None
    return int(block.nbytes)


def refused_write(
    spec: StoreSpec, exc: BaseException, name: str, version: int, index: Sequence[int]
) -> StoreWriteError:
    """The error for a write the server refused, naming what and where."""
    details = getattr(exc, "details", None) or {}
    errs = details.get("writeErrors") or [details]
    msg = str(errs[0].get("errmsg") or exc) if errs else str(exc)
    if len(msg) > 240:
        msg = msg[:240] + "..."
    return StoreWriteError(
        f"the server at {redact_uri(spec.address)} refused the write of block "
        f"{tuple(index)} of array {name!r} version {version} (disk full, quota "
        f"or read-only?): {msg}. Nothing was published; the previous version "
        "is still the one readers see"
    )


def read_tasks(
    spec: StoreSpec, m: dict, colls: Sequence[str], chunks: tuple
) -> tuple[str, dict]:
    """The name and tasks of a graph that reads every block of manifest ``m``.

    The name is the same whenever this version is read (the placement plugin
    finds the blocks' earlier readers by it); each task carries its block's
    cache key. The tasks carry ``spec``, whose URI is never in a key (only
    its token); on a worker they reach the store at ``spec.address``, the
    worker's own URI when it has one (:class:`StoreSpec`).
    """
    token = tokenize(spec.uri, spec.database, m["_id"], m.get("created"))
    key = f"{READ_PREFIX}{m['name']}-{token}"
    identity = store_identity(spec.uri, spec.database)
    dsk = {}
    numblocks = tuple(len(c) for c in chunks)
    for idx, coll, s in zip(
        np.ndindex(*numblocks), colls, slices_from_chunks(chunks), strict=False
    ):
        shape = tuple(sl.stop - sl.start for sl in s)
        dsk[(key, *idx)] = (
            read_block,
            spec,
            coll,
            m["name"],
            m["version"],
            idx,
            shape,
            m["dtype"],
            m["part_bytes"],
            block_key(identity, m["name"], m["version"], m.get("created"), idx),
        )
    return key, dsk


def read_block(
    spec: StoreSpec,
    collection: str,
    name: str,
    version: int,
    index: Sequence[int],
    shape: Sequence[int],
    dtype: str,
    part_bytes: int,
    cache_key: str | None = None,
) -> np.ndarray:
    """Read and verify one block: from this host's block cache when it holds
    ``cache_key`` (verified against the stored checksums), else from the server
    (and then kept in the cache).

    Raises :class:`CorruptBlockError` naming array, version and block when the
    stored parts fail verification, and :class:`VersionGoneError` when the
    version was garbage-collected while it was being read.
    """
    dt = np.dtype(dtype)
    cache = block_cache() if cache_key else None
    if cache is not None:
        install_worker_metric()
        hit = cache.get(cache_key, shape, dt)
        if hit is not None:
            count(hits=1, bytes_cache=hit.nbytes)
            return hit
        count(misses=1)
    out, crcs = _read_from_server(
        spec, collection, name, version, index, shape, dt, part_bytes
    )
    count(bytes_server=out.nbytes)
    if cache is not None:
        cache.put(cache_key, out, crcs=crcs, part_bytes=part_bytes)
    return out


def _read_from_server(
    spec: StoreSpec,
    collection: str,
    name: str,
    version: int,
    index: Sequence[int],
    shape: Sequence[int],
    dt: np.dtype,
    part_bytes: int,
) -> tuple[np.ndarray, list[int]]:
    """The block and the CRC-32 of each of its stored parts."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    ids = [part_id(index, p) for p in range(len(split_parts(nbytes, part_bytes)))]
    query = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}
    batch = max(1, _REPLY_BUDGET // max(part_bytes, 1))
    db = spec.db()

    def fetch() -> list[dict]:
        return list(db[collection].find(query, batch_size=batch))

    docs = spec.retry(fetch, f"reading block {tuple(index)} of {name!r}")
    if not docs:
        state = spec.retry(
            lambda: db[VERSIONS].find_one(
                {"_id": version_id(name, version)}, {"state": 1}
            ),
            f"checking version {version} of {name!r}",
        )
        if state is None or state.get("state") != "complete":
            raise VersionGoneError(
                f"version {version} of array {name!r} in database {spec.database!r} "
                "was garbage-collected while it was being read; read it again"
            )
    try:
        out = decode_block(
            docs, name=name, version=version, index=index, shape=shape, dtype=dt
        )
        return out, [d["crc32"] for d in sorted(docs, key=lambda d: d["part"])]
    except BlockCheckError as e:
        raise CorruptBlockError(
            f"array {name!r} version {version} block {tuple(index)} in database "
            f"{spec.database!r} is corrupt: {e}",
            name=name,
            version=version,
            block=tuple(index),
        ) from None
