"""Read each published block from MongoDB once: a block cache on each host.

A published version never changes (its number is never reused and a failed
write never becomes visible), so a block read once can be served again without
asking the server. Each worker process keeps a :class:`BlockCache` on its
host's disk (``lepton.store.cache.directory``), shared by every worker process
on the host, with an optional in-memory tier in front of it.

Why ``diskcache`` and not ``zict``: the cache must outlive a worker (a
restarted cluster reads warm), and several worker processes on one host must
share it. ``zict.File`` keeps its index in the memory of one process and does
not find the files another process (or an earlier run) wrote; ``diskcache``
keeps its index in SQLite, writes each value to a file of its own before the
index row that names it is committed (so a reader never sees a torn file, and
two processes filling one key at once leave one whole entry), and evicts by
size across processes. The in-memory tier is ``zict.LRU``, as in Dask's own
spilling.

Each entry is the block's bytes behind a small header that holds the CRC-32 of
each stored part, copied from the part documents on the server. A hit is
checked against them: a corrupted or truncated file is dropped, counted, read
again from the server, and never returned. A cache that cannot be written (a
full disk, a read-only directory) turns itself off with one warning; reads go
on from the server.

Keys name the store by a hash of its hosts and database (never credentials),
then array, version, the version's creation time and the block index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import dask.config
import numpy as np

from lepton_dask.store.layout import split_parts

logger = logging.getLogger(__name__)

_MAGIC = b"LEPTONB1"
_HEAD = struct.Struct("<8sI")  # magic, header length

#: Task-name prefix of FeatureStore.get_array's read tasks.
READ_PREFIX = "lepton-read-"

#: The key of the worker metric that carries :class:`CacheCounts` to the
#: scheduler in heartbeats (``Worker.metrics``); read by the placement plugin.
CACHE_METRIC = "lepton_store_cache"


class CacheCounts(TypedDict):
    """One process's cache counters, as a worker reports them to the scheduler."""

    pid: int
    location: str  # host and cache directory: workers that share the files
    hits: int
    misses: int
    corrupt: int
    bytes_cache: int
    bytes_server: int


_counts_lock = threading.Lock()
_counts: dict[str, int] = dict.fromkeys(
    ("hits", "misses", "corrupt", "bytes_cache", "bytes_server"), 0
)


def count(**inc: int) -> None:
    """Add to this process's counters (``hits=1, bytes_cache=n``, ...)."""
    with _counts_lock:
        for k, v in inc.items():
            _counts[k] += int(v)


def counts() -> CacheCounts:
    """This process's counters, with its pid and cache location."""
    with _counts_lock:
        c = dict(_counts)
    return CacheCounts(pid=os.getpid(), location=location(), **c)  # type: ignore[typeddict-item]


def location() -> str:
    """Where this process's cache lives: host and directory (workers with the
    same location share cached blocks)."""
    import socket

    return f"{socket.gethostname()}:{CacheSettings.from_config().directory}"


def store_identity(uri: str, database: str) -> str:
    """A short hash naming a store by its hosts and database, never by its
    credentials.

    >>> a = store_identity("mongodb://u:secret@db1:27017,db0:27017/?tls=true", "f")
    >>> a == store_identity("mongodb://db0:27017,db1:27017/", "f")
    True
    >>> a == store_identity("mongodb://db0:27017,db1:27017/", "g")
    False
    """
    rest = uri.split("://", 1)[-1]
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    hosts = ",".join(sorted(h.lower() for h in netloc.split(",")))
    return hashlib.sha256(f"{hosts}/{database}".encode()).hexdigest()[:16]


def block_key(identity: str, name: str, version: int, created: Any, index) -> str:
    """The cache key of one block of one published version.

    >>> block_key("ab12", "x", 3, "2026-12-05T10:00:00", (1, 0))
    'ab12/x/3/2026-12-05T10:00:00/1.0'
    """
    return f"{identity}/{name}/{int(version)}/{created}/" + ".".join(
        str(int(i)) for i in index
    )


@dataclass(frozen=True)
class CacheSettings:
    """``lepton.store.cache.*`` resolved: on or off, where, and how big."""

    enabled: bool
    directory: str
    max_bytes: int | None  # None: a tenth of the free disk when first opened
    memory_bytes: int

    @classmethod
    def from_config(cls) -> CacheSettings:
        from dask.utils import parse_bytes

        cfg = dask.config.get("lepton.store.cache")
        directory = cfg.get("directory") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
            "lepton-dask",
            "blocks",
        )
        mx = cfg.get("max-bytes")
        return cls(
            enabled=bool(cfg.get("enabled")),
            directory=os.path.abspath(os.path.expanduser(directory)),
            max_bytes=None if mx in (None, "auto") else int(parse_bytes(mx)),
            memory_bytes=int(parse_bytes(cfg.get("memory-bytes") or 0)),
        )


class _Reader:
    """A file-like over a header and a block's bytes (diskcache streams it to
    its file without joining them in memory)."""

    def __init__(self, head: bytes, payload: memoryview):
        self._parts = [memoryview(head), payload]

    def read(self, n: int = -1) -> bytes | memoryview:
        while self._parts and not len(self._parts[0]):
            self._parts.pop(0)
        if not self._parts:
            return b""
        part = self._parts[0]
        n = len(part) if n is None or n < 0 else n
        out, self._parts[0] = part[:n], part[n:]
        return out


class BlockCache:
    """Blocks of published versions on this host's disk (and optionally in
    memory), verified on every hit.

    >>> import tempfile
    >>> cache = BlockCache(tempfile.mkdtemp(), max_bytes=2**20)
    >>> block = np.arange(6.0).reshape(2, 3)
    >>> cache.put("k", block, crcs=[zlib.crc32(block.tobytes())], part_bytes=2**20)
    True
    >>> cache.get("k", (2, 3), "f8")
    array([[0., 1., 2.],
           [3., 4., 5.]])
    >>> cache.get("other", (2, 3), "f8") is None
    True
    >>> cache.close()
    """

    def __init__(
        self, directory: str, max_bytes: int | None = None, memory_bytes: int = 0
    ):
        self.directory = directory
        self.disabled: str | None = None
        self._lock = threading.Lock()
        self._disk = None
        self._memory = None
        if memory_bytes > 0:
            import zict

            self._memory = zict.LRU(
                memory_bytes, {}, weight=lambda k, v: max(int(v.nbytes), 1)
            )
        try:
            import diskcache

            os.makedirs(directory, exist_ok=True)
            if max_bytes is None:
                max_bytes = shutil.disk_usage(directory).free // 10
            self.max_bytes = int(max_bytes)
            self._disk = diskcache.Cache(
                directory,
                size_limit=self.max_bytes,
                eviction_policy="least-recently-used",
            )
        except (OSError, sqlite3.Error) as e:
            self.max_bytes = int(max_bytes or 0)
            self._turn_off(f"cannot open {directory!r}: {e}")

    # -- reads ---------------------------------------------------------------------
    def get(self, key: str, shape: Sequence[int], dtype: Any) -> np.ndarray | None:
        """The cached block, verified; None on a miss (or a dropped entry)."""
        _wait_pending(key)
        if self._memory is not None:
            with self._lock:
                hit = self._memory.get(key)
            if hit is not None:
                return hit
        disk = self._disk  # (a writer thread may turn the cache off meanwhile)
        if disk is None:
            return None
        try:
            f = disk.get(key, default=None, read=True, retry=True)
        except (OSError, sqlite3.Error) as e:
            logger.debug("block cache: reading %s failed: %s", key, e)
            return None
        if f is None:
            return None
        with f:
            out = self._verified(f, key, tuple(int(s) for s in shape), np.dtype(dtype))
        if out is not None and self._memory is not None:
            self._remember(key, out)
        return out

    def _verified(self, f, key: str, shape: tuple, dtype: np.dtype):
        out = np.empty(shape, dtype=dtype)
        nbytes = out.nbytes
        try:
            magic, hlen = _HEAD.unpack(f.read(_HEAD.size))
            if magic != _MAGIC or hlen > 2**20:
                raise ValueError("not a block entry")
            head = json.loads(f.read(hlen))
            buf = memoryview(out.reshape(-1).view(np.uint8))
            got = f.readinto(buf)
            if got != nbytes or f.read(1) or head["nbytes"] != nbytes:
                raise ValueError(f"{got} bytes, expected {nbytes}")
            parts = split_parts(nbytes, int(head["part_bytes"]))
            if len(parts) != len(head["crc32"]) or any(
                zlib.crc32(buf[off : off + n]) != crc
                for (off, n), crc in zip(parts, head["crc32"], strict=True)
            ):
                raise ValueError("checksum mismatch")
        except (ValueError, KeyError, TypeError, struct.error, OSError) as e:
            logger.warning(
                "block cache: dropped a damaged entry %s (%s); reading it from the "
                "server",
                key,
                e,
            )
            count(corrupt=1)
            self.discard(key)
            return None
        return out

    # -- writes --------------------------------------------------------------------
    def put(
        self, key: str, block: np.ndarray, *, crcs: Sequence[int], part_bytes: int
    ) -> bool:
        """Keep ``block`` with the CRC-32 of each stored part; whether it will be
        kept.

        The disk write happens behind the caller (one writer thread per
        process), so a read does not wait for it; a later :meth:`get` of the
        same key in this process waits for it, and :func:`flush` waits for all.
        """
        block = np.ascontiguousarray(block)
        if self._memory is not None:  # a copy: the caller may change its block
            self._remember(key, block.copy())
        if self._disk is None or block.nbytes > self.max_bytes:
            return False
        return _behind(self, key, block, list(crcs), int(part_bytes))

    def write(
        self, key: str, block: np.ndarray, crcs: Sequence[int], part_bytes: int
    ) -> bool:
        """Write one entry now (what :meth:`put` runs behind the caller)."""
        disk = self._disk
        if disk is None:
            return False
        head = json.dumps(
            {
                "nbytes": int(block.nbytes),
                "part_bytes": int(part_bytes),
                "crc32": list(crcs),
            }
        ).encode()
        payload = memoryview(block.reshape(-1).view(np.uint8))
        try:
            disk.set(
                key,
                _Reader(_HEAD.pack(_MAGIC, len(head)) + head, payload),
                read=True,
                retry=True,
            )
        except OSError as e:
            self._turn_off(f"cannot write to {self.directory!r}: {e}")
            return False
        except sqlite3.Error as e:
            logger.debug("block cache: keeping %s failed: %s", key, e)
            return False
        return True

    def _remember(self, key: str, block: np.ndarray) -> None:
        view = block.view()
        view.flags.writeable = False
        with self._lock:
            self._memory[key] = view

    def discard(self, key: str) -> None:
        """Forget one entry (both tiers)."""
        if self._memory is not None:
            with self._lock:
                self._memory.pop(key, None)
        disk = self._disk
        if disk is not None:
            with contextlib.suppress(OSError, sqlite3.Error):
                disk.delete(key, retry=True)

    def _turn_off(self, why: str) -> None:
        if self.disabled is None:
            logger.warning(
                "block cache turned off (reads go on from the server): %s", why
            )
        self.disabled = why
        disk, self._disk = self._disk, None
        if disk is not None:
            with contextlib.suppress(Exception):
                disk.close()

    # -- housekeeping --------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Entries, bytes and limits (JSON-able)."""
        out: dict[str, Any] = {
            "directory": self.directory,
            "max_bytes": self.max_bytes,
            "disabled": self.disabled,
            "entries": 0,
            "bytes": 0,
        }
        if self._disk is not None:
            out["entries"] = len(self._disk)
            out["bytes"] = int(self._disk.volume())
        return out

    def clear(self) -> int:
        """Drop every entry; return how many there were."""
        if self._memory is not None:
            with self._lock:
                self._memory.clear()
        return int(self._disk.clear(retry=True)) if self._disk is not None else 0

    def close(self) -> None:
        """Finish the writes handed to this process's writer, then close."""
        flush()
        disk = self._disk
        if disk is not None:
            disk.close()


# -- write-behind ----------------------------------------------------------------
_writer = None
_pending: dict[str, Any] = {}  # key -> Future of its write
_pending_bytes = [0]
_pending_lock = threading.Lock()
#: above this many bytes waiting to be written, put() writes in the caller
MAX_PENDING_BYTES = 512 * 2**20


def _behind(cache: BlockCache, key: str, block, crcs, part_bytes) -> bool:
    global _writer
    from concurrent.futures import ThreadPoolExecutor

    with _pending_lock:
        if _pending_bytes[0] + block.nbytes > MAX_PENDING_BYTES:
            inline = True
        else:
            inline = False
            _pending_bytes[0] += block.nbytes
            if _writer is None:
                _writer = ThreadPoolExecutor(
                    1, thread_name_prefix="lepton-cache-writer", initializer=_lowest
                )
            fut = _writer.submit(cache.write, key, block, crcs, part_bytes)
            _pending[key] = fut
    if inline:
        return cache.write(key, block, crcs, part_bytes)

    def done(_f, n=block.nbytes) -> None:
        with _pending_lock:
            _pending_bytes[0] -= n
            if _pending.get(key) is _f:
                del _pending[key]

    fut.add_done_callback(done)
    return True


def _lowest() -> None:
    """The writer thread yields the CPU to reads and compute (Linux nices
    threads one by one): on a busy host the cache costs the reads little."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _wait_pending(key: str) -> None:
    fut = _pending.get(key)
    if fut is not None:
        with contextlib.suppress(Exception):
            fut.result()


def flush() -> None:
    """Wait until every block this process handed to the cache is written."""
    with _pending_lock:
        futs = list(_pending.values())
    for fut in futs:
        with contextlib.suppress(Exception):
            fut.result()


_caches: dict[CacheSettings, BlockCache] = {}
_caches_lock = threading.Lock()


def block_cache(settings: CacheSettings | None = None) -> BlockCache | None:
    """This process's cache for the configured settings (None when off)."""
    settings = settings or CacheSettings.from_config()
    if not settings.enabled:
        return None
    with _caches_lock:
        cache = _caches.get(settings)
        if cache is None:
            cache = _caches[settings] = BlockCache(
                settings.directory, settings.max_bytes, settings.memory_bytes
            )
    return None if cache.disabled and cache._memory is None else cache


def install_worker_metric() -> None:
    """On a worker, send this process's counters to the scheduler with each
    heartbeat (idempotent; a no-op outside a worker)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return
    if CACHE_METRIC not in worker.metrics:
        worker.metrics[CACHE_METRIC] = lambda _w: counts()
