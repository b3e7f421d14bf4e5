"""The MongoDB-compatible server killed mid-write (back soon, or gone), and a
full disk: either the write completes after the restart or it fails with a
clear error; the store stays consistent either way."""

from __future__ import annotations

import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest

from lepton_dask.store import (
    EmbeddedServer,
    FeatureStore,
    StoreUnavailableError,
    StoreWriteError,
)
from lepton_dask.store._uri import close_clients
from lepton_dask.store.layout import BLOCKS_PREFIX, VERSIONS
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


def _slow(block):
    time.sleep(0.2)
    return block + 0.0


def _v2_blocks(store, name):
    return sum(
        store.db[c].estimated_document_count()
        for c in store.db.list_collection_names()
        if c.startswith(f"{BLOCKS_PREFIX}{name}:2")
    )


def _consistent(store, name, old):
    """Head readable and verified; no version half-published."""
    np.testing.assert_array_equal(
        store.get_array(name, 1).compute(scheduler="sync"), old
    )
    for d in store.db[VERSIONS].find({"name": name}):
        if d["state"] == "complete":
            store.get_array(name, d["version"]).compute(
                scheduler="sync"
            )  # CRCs checked


def test_server_killed_mid_write_and_restarted(tmp_path):
    srv = EmbeddedServer(str(tmp_path)).start()
    port, restarted = srv.port, {}
    try:
        with dask.config.set({"lepton.store.timeout": "30s", "scheduler": "threads"}):
            store = FeatureStore(srv.uri, "f")
            old = np.zeros((120, 3))
            store.put_array("w", old, chunks=(10, 3))
            x = np.arange(360.0).reshape(120, 3)
            out, errors = {}, []

            def write():
                try:
                    out["v"] = store.put_array(
                        "w",
                        da.from_array(x, chunks=(10, 3)).map_blocks(_slow, dtype=float),
                    )
                except Exception as e:  # pragma: no cover - reported below
                    errors.append(e)

            t = threading.Thread(target=write)
            t.start()
            wait_for(lambda: _v2_blocks(store, "w") >= 2, timeout=60)
            srv.kill()
            time.sleep(1.0)
            restarted["srv"] = EmbeddedServer(str(tmp_path), port=port).start()
            t.join(120)
            assert not errors, errors
            assert out["v"] == 2
            np.testing.assert_array_equal(store.get_array("w").compute(), x)
            _consistent(store, "w", old)
    finally:
        close_clients()
        srv.stop()
        if "srv" in restarted:
            restarted["srv"].stop()


def test_server_killed_mid_write_and_gone(tmp_path):
    srv = EmbeddedServer(str(tmp_path)).start()
    port = srv.port
    try:
        with dask.config.set({"lepton.store.timeout": "2s", "scheduler": "threads"}):
            store = FeatureStore(srv.uri, "g")
            old = np.ones((120, 3))
            store.put_array("w", old, chunks=(10, 3))
            slow = da.from_array(old * 5, chunks=(10, 3)).map_blocks(_slow, dtype=float)
            caught = []

            def write():
                try:
                    store.put_array("w", slow)
                except Exception as e:
                    caught.append(e)

            t = threading.Thread(target=write)
            t.start()
            wait_for(lambda: _v2_blocks(store, "w") >= 2, timeout=60)
            srv.kill()
            t.join(120)
            (err,) = caught
            assert isinstance(err, StoreUnavailableError)
            assert f"127.0.0.1:{port}" in str(err) and "unreachable" in str(err)
        close_clients()
        srv = EmbeddedServer(str(tmp_path), port=port).start()
        store = FeatureStore(srv.uri, "g")
        assert store.info("w")["version"] == 1  # nothing half-published
        state = store.db[VERSIONS].find_one({"name": "w", "version": 2})["state"]
        assert state in ("writing", "failed")
        _consistent(store, "w", old)
        removed = store.gc("w", grace=0, stale_after=0)
        assert ("w", 2) in removed["versions"] and _v2_blocks(store, "w") == 0
    finally:
        close_clients()
        srv.stop()


def test_disk_full_write_is_refused_clearly(tmp_path):
    srv = EmbeddedServer(str(tmp_path), file_size_limit=8 * 2**20).start()
    try:
        store = FeatureStore(srv.uri, "full")
        small = np.arange(100.0)
        store.put_array("small", small)
        big = np.random.default_rng(0).random(2_000_000)  # 16 MB: past the limit
        with pytest.raises(StoreWriteError) as e:
            store.put_array("big", big, chunks=(250_000,))
        msg = str(e.value)
        assert (
            "refused the write" in msg
            and "'big'" in msg
            and "Nothing was published" in msg
        )
        assert store.list() == ["small"]
        with pytest.raises(KeyError):
            store.get_array("big")
        np.testing.assert_array_equal(
            store.get_array("small").compute(scheduler="sync"), small
        )
    finally:
        close_clients()
        srv.stop()
    # space freed (no limit): the failed write is collected, a new one works
    # (a full disk may refuse even the mark that the write failed: the write
    # then looks unfinished, and gc takes it once it is stale)
    srv = EmbeddedServer(str(tmp_path)).start()
    try:
        store = FeatureStore(srv.uri, "full")
        store.gc(grace=0, stale_after=0)
        assert not [
            c
            for c in store.db.list_collection_names()
            if c.startswith(f"{BLOCKS_PREFIX}big")
        ]
        assert store.put_array("big", big[:1000]) == 2  # version numbers never reused
        np.testing.assert_array_equal(
            store.get_array("small").compute(scheduler="sync"), small
        )
    finally:
        close_clients()
        srv.stop()
