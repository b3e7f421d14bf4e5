"""The feature store: versioned chunked arrays in MongoDB, read as Dask arrays."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NoReturn

import dask
import dask.array as da
import numpy as np
import pymongo
import pymongo.errors
from dask.array.core import normalize_chunks, slices_from_chunks
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from lepton_dask._client import current_client
from lepton_dask._progress import bar, want_progress
from lepton_dask.config import get_bytes
from lepton_dask.store import _caps
from lepton_dask.store._blocks import read_tasks, write_block
from lepton_dask.store._spec import StoreSpec
from lepton_dask.store._uri import redact_uri
from lepton_dask.store.cache import CacheSettings
from lepton_dask.store.errors import VersionGoneError
from lepton_dask.store.gc import collect, now, remove_version
from lepton_dask.store.layout import (
    VERSIONS,
    block_group,
    blocks_collection,
    check_dtype,
    decode_chunks,
    encode_chunks,
    validate_name,
    version_id,
)
from lepton_dask.store.placement import install_placement

logger = logging.getLogger(__name__)


class FeatureStore:
    """Versioned numeric arrays in MongoDB, read back as chunked Dask arrays.

    Parameters
    ----------
    uri : str, optional
        MongoDB connection string. Default: ``LEPTON_MONGO_URI``, then
        ``lepton.store.uri``, then a local server (see
        :func:`lepton_dask.store.server.resolve_uri`).
    database : str, optional
        Database name; default ``lepton.store.database``.
    worker_uri : str, optional
        The store's address as the workers reach it, when it differs from
        ``uri`` (a notebook on a laptop with ``localhost`` through a
        port-forward or a published port, workers in containers or pods that
        reach it as ``mongo:27017``). Default: ``uri``.

    Notes
    -----
    **Where the workers reach the store.** The read and write tasks carry
    the store's settings; on a worker, a URI of the worker's own
    (``LEPTON_MONGO_URI`` or ``lepton.store.uri`` in its environment or
    configuration, as the compose file and the Helm chart give every worker)
    wins over the one in the graph, then ``worker_uri``, then ``uri``. A
    worker whose configuration is the client's (a local cluster started
    from the same process or environment) uses the URI the client chose.
    Passwords never appear in task keys, reprs or logs (they are redacted).

    Examples
    --------
    >>> import numpy as np
    >>> store = FeatureStore(database="example")
    >>> v = store.put_array("x", np.arange(12.0).reshape(4, 3), chunks=(2, 3))
    >>> store.get_array("x")[1:3].compute()
    array([[3., 4., 5.],
           [6., 7., 8.]])
    """

    def __init__(
        self,
        uri: str | None = None,
        database: str | None = None,
        worker_uri: str | None = None,
    ):
        self.spec = StoreSpec.from_config(uri, database, worker_uri=worker_uri)
        self.uri = self.spec.uri
        self.database = self.spec.database
        self._ready = False

    def __repr__(self) -> str:
        return f"FeatureStore({redact_uri(self.uri)!r}, database={self.database!r})"

    # -- plumbing ----------------------------------------------------------------
    @property
    def db(self):
        """The :class:`pymongo.database.Database` (shared client)."""
        return self.spec.db()

    def _setup(self) -> None:
        if self._ready:
            return

        def create() -> None:
            self.db[VERSIONS].create_index(
                [("name", pymongo.ASCENDING), ("version", pymongo.DESCENDING)],
                name="name_version",
            )

        self.spec.retry(create, "preparing the store")
        self._ready = True

    def _retry(self, fn, what: str):
        return self.spec.retry(fn, what)

    def blocks_per_collection(self) -> int:
        """How many blocks share a collection for new writes (0: all of them).

        ``lepton.store.blocks-per-collection: auto`` asks the server whether an
        ``_id`` lookup is an index seek: if so all blocks of a version share one
        collection, else each block gets its own (so a lookup scans one block).
        """
        value = dask.config.get("lepton.store.blocks-per-collection")
        if value != "auto":
            n = int(value)
            if n < 0:
                raise ValueError(
                    f"lepton.store.blocks-per-collection must be >= 0, got {n}"
                )
            return n
        self._setup()
        seek = self._retry(
            lambda: _caps.indexed(self.db, VERSIONS, "eq", self.uri),
            "probing the server",
        )
        return 0 if seek else 1

    # -- manifests ---------------------------------------------------------------
    def _versions(self, name: str, **filt: Any) -> list[dict]:
        self._setup()
        query = {"name": name, **filt}
        return self._retry(
            lambda: list(
                self.db[VERSIONS].find(query).sort("version", pymongo.DESCENDING)
            ),
            f"listing versions of {name!r}",
        )

    def _manifest(self, name: str, version: int | None = None) -> dict:
        name = validate_name(name)
        if version is None:
            docs = self._versions(name, state="complete")
            doc = docs[0] if docs else None
            if doc is not None and doc.get("tombstone"):
                doc = None
        else:
            self._setup()
            vid = version_id(name, int(version))
            doc = self._retry(
                lambda: self.db[VERSIONS].find_one({"_id": vid}), f"reading {name!r}"
            )
            if doc is not None and (
                doc.get("state") != "complete" or doc.get("tombstone")
            ):
                if doc.get("state") == "collected":
                    _gone(doc)
                doc = None
            elif doc is None and self._versions(name, version={"$gt": int(version)}):
                _gone({"name": name, "version": int(version)})
        if doc is None:
            which = "" if version is None else f" version {version}"
            raise KeyError(
                f"no array {name!r}{which} in database {self.database!r} "
                f"at {redact_uri(self.uri)}"
            )
        return doc

    def _allocate(self, name: str, fields: dict[str, Any]) -> int:
        """Insert a manifest with the next free version number; return it.

        Portable compare-and-insert: the unique ``_id`` decides between
        concurrent writers (no transactions needed).
        """
        self._setup()
        coll = self.db[VERSIONS]
        for _ in range(1000):
            last = self._retry(
                lambda: coll.find_one(
                    {"name": name},
                    {"version": 1},
                    sort=[("version", pymongo.DESCENDING)],
                ),
                f"allocating a version of {name!r}",
            )
            version = (last["version"] if last else 0) + 1
            doc = {
                "_id": version_id(name, version),
                "name": name,
                "version": version,
                "created": now(),
                "writer": {"host": socket.gethostname(), "pid": os.getpid()},
                **fields,
            }
            try:
                self._retry(lambda d=doc: coll.insert_one(d), f"allocating {name!r}")
                return version
            except pymongo.errors.DuplicateKeyError:
                continue
        raise RuntimeError(
            f"could not allocate a version of {name!r}"
        )  # pragma: no cover

    # -- writing -------------------------------------------------------------------
    def put_array(
        self,
        name: str,
        x: Any,
        *,
        chunks: Any = None,
        attrs: dict[str, Any] | None = None,
        progress: bool | None = None,
    ) -> int:
        """Store ``x`` as a new version of array ``name``; return the version.

        The new version becomes visible only after every block is written. A
        write that fails or is interrupted leaves the previous version readable
        and intact; its partial blocks are removed (now, or by :meth:`gc`).

        Parameters
        ----------
        name : str
            Array name (letters, digits, ``_``, ``-``, ``.``).
        x : numpy.ndarray or dask.array.Array or array-like
            Numeric (bool, integer, float, complex) data. A Dask array is
            written by its own tasks, one per block, in parallel on the
            cluster; a numpy array is written from this process by a few
            threads.
        chunks : optional
            Block shape (any form :func:`dask.array.core.normalize_chunks`
            accepts). Default: the Dask array's chunks, or ``"auto"``.
        attrs : dict, optional
            Small JSON-like metadata kept with the version.
        progress : bool, optional
            Show a progress bar (default: when stderr is a terminal).

        Returns
        -------
        int
            The version number written.

        Examples
        --------
        >>> store.put_array("prices", np.random.rand(1000, 8))
        1
        >>> store.put_array("prices", np.random.rand(2000, 8))
        2
        """
        name = validate_name(name)
        is_dask = isinstance(x, da.Array)
        if not is_dask:
            if getattr(x, "dtype", None) is not None:
                check_dtype(x.dtype)  # before np.asarray can copy anything
            x = np.asarray(x)
        dtype = check_dtype(x.dtype)
        if is_dask:
            if chunks is not None:
                x = x.rechunk(chunks)
            if any(np.isnan(c) for dim in x.chunks for c in dim):
                raise ValueError(
                    f"array {name!r} has unknown chunk sizes; call "
                    "x.compute_chunk_sizes() before put_array"
                )
            chunk_spec = x.chunks
        else:
            chunk_spec = normalize_chunks(
                "auto" if chunks is None else chunks, x.shape, dtype=dtype
            )
        part_bytes = get_bytes("lepton.store.part-bytes")
        if not 0 < part_bytes <= 15 * 2**20:
            raise ValueError(
                f"lepton.store.part-bytes must be in (0, 15 MiB], got {part_bytes}"
            )
        per_coll = self.blocks_per_collection()
        fields = {
            "state": "writing",
            "shape": [int(s) for s in x.shape],
            "dtype": dtype.str,
            "chunks": encode_chunks(chunk_spec),
            "nbytes": int(x.nbytes),
            "part_bytes": part_bytes,
            "blocks_per_collection": per_coll,
            "attrs": dict(attrs or {}),
        }
        version = self._allocate(name, fields)
        show = want_progress(progress)
        try:
            if is_dask:
                self._write_dask(name, version, x, per_coll, part_bytes, show)
            else:
                self._write_numpy(
                    name, version, x, chunk_spec, per_coll, part_bytes, show
                )
            self._publish(name, version)
        except BaseException:
            self._abandon(name, version)
            raise
        try:
            self.gc(name)
        except Exception as e:  # GC is opportunistic; the write succeeded
            logger.warning(
                "garbage collection of %r after a write failed, skipped: %s",
                name,
                e,
                exc_info=True,
            )
        return version

    def _block_collections(
        self, name: str, version: int, numblocks: Sequence[int], per_coll: int
    ) -> list[str]:
        count = int(np.prod(numblocks, dtype=np.int64))
        return [
            blocks_collection(name, version, block_group(flat, per_coll))
            for flat in range(count)
        ]

    def _write_numpy(self, name, version, x, chunks, per_coll, part_bytes, show):
        numblocks = tuple(len(c) for c in chunks)
        colls = self._block_collections(name, version, numblocks, per_coll)
        slices = slices_from_chunks(chunks)
        indices = list(np.ndindex(*numblocks))
        workers = max(1, min(4, len(indices)))
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            futures = [
                ex.submit(
                    write_block, x[s], self.spec, c, name, version, idx, part_bytes
                )
                for s, c, idx in zip(slices, colls, indices, strict=False)
            ]
            _wait_all(
                futures,
                concurrent.futures.as_completed,
                lambda: [f.cancel() for f in futures],
                f"put {name}",
                show,
            )

    def _write_dask(self, name, version, x, per_coll, part_bytes, show):
        colls = self._block_collections(name, version, x.numblocks, per_coll)
        token = tokenize(self.database, name, version)
        blocks = x.to_delayed().ravel()
        tasks = [
            dask.delayed(write_block, pure=True)(
                blk,
                self.spec,
                coll,
                name,
                version,
                idx,
                part_bytes,
                dask_key_name=f"lepton-put-{token}-{flat}",
            )
            for flat, (blk, coll, idx) in enumerate(
                zip(blocks, colls, np.ndindex(*x.numblocks), strict=False)
            )
        ]
        client = current_client()
        if client is None:
            if show:
                from dask.diagnostics import ProgressBar

                with ProgressBar():
                    dask.compute(*tasks)
            else:
                dask.compute(*tasks)
            return
        from distributed import as_completed

        futures = client.compute(tasks)
        _wait_all(
            futures, as_completed, lambda: client.cancel(futures), f"put {name}", show
        )

    def _publish(self, name: str, version: int) -> None:
        vid = version_id(name, version)
        res = self._retry(
            lambda: self.db[VERSIONS].update_one(
                {"_id": vid, "state": "writing"},
                {"$set": {"state": "complete", "completed": now()}},
            ),
            f"publishing {name!r}",
        )
        if res.matched_count != 1:
            raise VersionGoneError(
                f"version {version} of {name!r} was abandoned before it was published "
                "(the write took longer than lepton.store.stale-write-after?)"
            )

    def _abandon(self, name: str, version: int) -> None:
        """Mark a failed write and remove its blocks (best effort; gc finishes:
        at once if the mark was written, else once the write is stale)."""
        try:
            self.db[VERSIONS].update_one(
                {"_id": version_id(name, version), "state": "writing"},
                {"$set": {"state": "failed", "failed": now()}},
            )
            remove_version(self.spec, name, version)
        except Exception as e:
            logger.warning(
                "could not clean up the failed write of %r version %d (%s); "
                "`FeatureStore.gc()` will (once the write is older than "
                "lepton.store.stale-write-after, if even its failure could not "
                "be recorded)",
                name,
                version,
                e,
                exc_info=True,
            )

    # -- reading -------------------------------------------------------------------
    def get_array(self, name: str, version: int | None = None) -> da.Array:
        """Array ``name`` (its newest version, or ``version``) as a Dask array.

        One task per stored block, read lazily on the workers and verified
        against its checksums; slicing reads only the blocks it needs. To read
        on particular workers (e.g. CPU workers of a mixed cluster), persist it
        with :func:`lepton_dask.ops.persist_on`.

        Raises
        ------
        KeyError
            No such array (or version) in this database.

        Examples
        --------
        >>> store.put_array("prices", np.ones((1000, 8)), chunks=(100, 8))
        1
        >>> x = store.get_array("prices")
        >>> x.numblocks
        (10, 1)
        >>> x[:10].mean(axis=0).compute()  # reads one block
        array([1., 1., 1., 1., 1., 1., 1., 1.])
        """
        m = self._manifest(name, version)
        chunks = decode_chunks(m["chunks"])
        numblocks = tuple(len(c) for c in chunks)
        colls = self._block_collections(
            m["name"], m["version"], numblocks, m["blocks_per_collection"]
        )
        if (
            dask.config.get("lepton.store.cache.placement")
            and CacheSettings.from_config().enabled  # (the workers keep the cache)
            and (client := current_client()) is not None
        ):
            install_placement(client)
        key, dsk = read_tasks(self.spec, m, colls, chunks)
        graph = HighLevelGraph.from_collections(key, dsk, dependencies=())
        return da.Array(graph, key, chunks, dtype=np.dtype(m["dtype"]))

    def list(self) -> list[str]:
        """Names of the arrays that currently have a readable version.

        >>> _ = store.put_array("prices", np.ones(3)), store.put_array("x", np.ones(3))
        >>> store.list()
        ['prices', 'x']
        """
        self._setup()
        docs = self._retry(
            lambda: list(
                self.db[VERSIONS].find(
                    {"state": "complete"}, {"name": 1, "version": 1, "tombstone": 1}
                )
            ),
            "listing arrays",
        )
        head: dict[str, dict] = {}
        for d in docs:
            if d["name"] not in head or d["version"] > head[d["name"]]["version"]:
                head[d["name"]] = d
        return sorted(n for n, d in head.items() if not d.get("tombstone"))

    def info(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Shape, dtype, chunks, size, times and versions of an array.

        >>> _ = store.put_array("prices", np.ones((1000, 8)))
        >>> store.info("prices")["shape"]
        (1000, 8)
        """
        m = self._manifest(name, version)
        versions = [
            d["version"]
            for d in self._versions(m["name"], state="complete")
            if not d.get("tombstone")
        ]
        return {
            "name": m["name"],
            "version": m["version"],
            "shape": tuple(m["shape"]),
            "dtype": np.dtype(m["dtype"]),
            "chunks": decode_chunks(m["chunks"]),
            "nbytes": m["nbytes"],
            "created": m["created"],
            "completed": m.get("completed"),
            "attrs": m.get("attrs", {}),
            "versions": sorted(versions),
            "database": self.database,
            "layout": {
                "part_bytes": m["part_bytes"],
                "blocks_per_collection": m["blocks_per_collection"],
            },
        }

    def delete(self, name: str) -> None:
        """Delete array ``name``: it disappears at once; space is freed by gc.

        Writes a *tombstone* version (one atomic insert), so readers see the
        array either whole or gone. Readers already holding a version keep it
        for ``lepton.store.gc-grace``.
        """
        self._manifest(name)  # KeyError if absent
        version = self._allocate(
            name, {"state": "complete", "tombstone": True, "completed": now()}
        )
        logger.info("deleted %r (tombstone version %d)", name, version)
        self.gc(name)

    # -- row collections -------------------------------------------------------------
    def read_collection(
        self,
        collection: str,
        fields: Sequence[str],
        query: dict | None = None,
        *,
        rows_per_chunk: int | None = None,
        dtype: Any = "float64",
        missing: str = "raise",
        strategy: str | None = None,
        database: str | None = None,
    ) -> da.Array:
        """Read numeric ``fields`` of a one-document-per-row collection.

        Returns a ``(rows, len(fields))`` Dask array in ``_id`` order, chunked
        by ``_id`` ranges of ``rows_per_chunk`` rows planned on the server now
        (chunk sizes are known). Documents inserted or deleted inside a planned
        range before it is read make that chunk raise
        :class:`~lepton_dask.store.errors.CollectionChangedError`; see
        :mod:`lepton_dask.store.rows` for exactly what a read sees.

        Parameters
        ----------
        collection : str
            Collection name (in ``database``, default the store's).
        fields : list of str
            Top-level numeric fields, one column each.
        query : dict, optional
            A MongoDB filter selecting the rows.
        rows_per_chunk : int, optional
            Default ``lepton.store.rows-per-chunk``.
        dtype : dtype
            Result dtype (default float64).
        missing : {"raise", "nan"}
            A missing or null field raises ``ValueError`` naming field and
            ``_id``, or (``"nan"``) reads as NaN. Non-numeric values always
            raise ``TypeError``.
        strategy : {"auto", "ranges", "scan"}, optional
            Default ``lepton.store.row-read``.

        Examples
        --------
        >>> store.write_collection("events", np.ones((250, 2)), ["price", "qty"])
        250
        >>> X = store.read_collection("events", ["price", "qty"], rows_per_chunk=100)
        >>> X.chunks
        ((100, 100, 50), (2,))
        """
        spec = self.spec if database is None else replace(self.spec, database=database)
        from lepton_dask.store.rows import read_collection

        return read_collection(
            spec,
            collection,
            fields,
            query,
            rows_per_chunk=rows_per_chunk,
            dtype=dtype,
            missing=missing,
            strategy=strategy,
        )

    def write_collection(
        self,
        collection: str,
        x: Any,
        fields: Sequence[str] | None = None,
        *,
        database: str | None = None,
    ) -> int:
        """Write the rows of a 2-D array as documents (``_id`` = row number).

        Replaces ``collection``: rows go to a temporary collection that is
        renamed over the old one at the end, so a failed write changes nothing.
        Returns the number of rows written.

        >>> store.write_collection("events", np.ones((3, 2)), ["a", "b"])
        3
        """
        spec = self.spec if database is None else replace(self.spec, database=database)
        from lepton_dask.store.rows import write_collection

        return write_collection(spec, collection, x, fields)

    # -- garbage collection ----------------------------------------------------------
    def gc(
        self,
        name: str | None = None,
        *,
        grace: float | None = None,
        stale_after: float | None = None,
    ) -> dict[str, list]:
        """Remove blocks nobody can or should read any more.

        Removes failed writes, writes older than ``stale_after`` that never
        finished (their writer died), superseded versions beyond
        ``lepton.store.retain-versions`` once ``grace`` seconds have passed since
        they were superseded, and block collections with no manifest at all
        (:mod:`lepton_dask.store.gc`).

        Returns
        -------
        dict
            ``{"versions": [(name, version), ...], "collections": [...]}`` removed.

        Examples
        --------
        >>> _ = store.put_array("prices", np.ones(3))
        >>> store.gc("prices")
        {'versions': [], 'collections': []}
        """
        self._setup()
        return collect(self.spec, name, grace=grace, stale_after=stale_after)


def _gone(doc: dict) -> NoReturn:
    raise VersionGoneError(
        f"version {doc['version']} of array {doc['name']!r} was removed (garbage-"
        "collected); read a newer version"
    )


def _wait_all(futures, as_completed, cancel, desc: str, show: bool) -> None:
    """Wait for every block write (thread or Dask futures), with a progress
    bar; the first failure (or an interrupt) cancels the rest and is raised."""
    try:
        for fut in bar(
            as_completed(futures),
            total=len(futures),
            desc=desc,
            unit="block",
            enabled=show,
        ):
            fut.result()
    except BaseException:
        cancel()
        raise
