"""The embedded server, outages, and a writer killed halfway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import dask
import numpy as np
import pytest

from lepton_dask.store import (
    EmbeddedServer,
    FeatureStore,
    ServerStartError,
    StoreUnavailableError,
)
from lepton_dask.store.layout import BLOCKS_PREFIX, VERSIONS
from lepton_dask.store.server import free_port, ping, read_state, resolve_uri
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)


def test_two_servers_at_once_and_one_per_data_dir(tmp_path):
    with (
        EmbeddedServer(str(tmp_path / "a")) as a,
        EmbeddedServer(str(tmp_path / "b")) as b,
    ):
        assert a.uri != b.uri and ping(a.uri) and ping(b.uri)
        with pytest.raises(ServerStartError, match="another server already serves"):
            EmbeddedServer(str(tmp_path / "a")).start()
        assert read_state(str(tmp_path / "a"))["uri"] == a.uri
    assert not a.running and read_state(str(tmp_path / "a")) is None


def test_resolve_uri_reuses_a_running_server(tmp_path):
    with EmbeddedServer(str(tmp_path)) as srv:
        with dask.config.set(
            {"lepton.store.data-dir": str(tmp_path), "lepton.store.uri": None}
        ):
            assert resolve_uri() == srv.uri


def test_resolve_uri_prefers_environment(monkeypatch):
    monkeypatch.setenv("LEPTON_MONGO_URI", "mongodb://from-env:1/")
    with dask.config.set({"lepton.store.uri": "mongodb://from-config:1/"}):
        assert resolve_uri() == "mongodb://from-env:1/"


def test_data_persists_across_restarts(tmp_path):
    x = np.arange(12.0)
    with EmbeddedServer(str(tmp_path)) as srv:
        FeatureStore(srv.uri, "p").put_array("keep", x)
    with EmbeddedServer(str(tmp_path)) as srv:
        np.testing.assert_array_equal(
            FeatureStore(srv.uri, "p").get_array("keep").compute(), x
        )


def test_unreachable_server_error_is_prompt_and_redacted():
    port = free_port()
    uri = f"mongodb://alice:hunter2secret@127.0.0.1:{port}/?authSource=admin"
    with dask.config.set({"lepton.store.timeout": "1.5s"}):
        store = FeatureStore(uri, "x")
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError) as e:
            store.list()
        elapsed = time.monotonic() - t0
    msg = str(e.value)
    assert "hunter2secret" not in msg and "hunter2secret" not in repr(store)
    assert f"alice:***@127.0.0.1:{port}" in msg and "unreachable" in msg
    assert elapsed < 1.5 + 3.0


def test_server_down_and_back(tmp_path):
    srv = EmbeddedServer(str(tmp_path)).start()
    try:
        with dask.config.set({"lepton.store.timeout": "20s"}):
            store = FeatureStore(srv.uri, "db")
            x = np.arange(30.0).reshape(10, 3)
            store.put_array("a", x, chunks=(5, 3))
            y = store.get_array("a")
            port = srv.port
            srv.kill()
            assert not ping(srv.uri, timeout=0.2)
            restarted = {}

            def restart():
                time.sleep(1.0)
                restarted["srv"] = EmbeddedServer(str(tmp_path), port=port).start()

            t = threading.Thread(target=restart)
            t.start()
            out = y.compute(scheduler="sync")  # retries until the server is back
            t.join(30)
            np.testing.assert_array_equal(out, x)
            assert store.put_array("a", x + 1) == 2
    finally:
        srv.stop()
        if "srv" in restarted:
            restarted["srv"].stop()


_KILLED_WRITER = r"""
import sys, time, numpy as np, dask, dask.array as da
from lepton_dask.store import FeatureStore
store = FeatureStore(sys.argv[1], sys.argv[2])
def slow(b, block_info=None):
    if block_info[0]["chunk-location"][0] >= 2:
        time.sleep(600)
    return b + 1
x = da.zeros((40, 3), chunks=(10, 3)).map_blocks(slow, dtype=float)
with dask.config.set(scheduler="threads", num_workers=4):
    store.put_array("k", x, progress=False)
"""


def test_writer_killed_halfway(store):
    old = np.arange(120.0).reshape(40, 3)
    store.put_array("k", old, chunks=(10, 3))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, store.uri, store.database]
    )
    try:
        # wait until the new version is being written and some blocks are stored
        def blocks_of_v2():
            return [
                c
                for c in store.db.list_collection_names()
                if c.startswith(f"{BLOCKS_PREFIX}k:2")
            ]

        wait_for(lambda: len(blocks_of_v2()) >= 2, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the previous version is still the head, readable and intact
    assert store.info("k")["version"] == 1
    np.testing.assert_array_equal(store.get_array("k").compute(), old)
    assert (
        store.db[VERSIONS].find_one({"name": "k", "version": 2})["state"] == "writing"
    )
    # a live write is not collected; once stale it is, with all its blocks
    assert store.gc(grace=0)["versions"] == []
    removed = store.gc(grace=0, stale_after=0)
    assert removed["versions"] == [("k", 2)]
    assert blocks_of_v2() == []
    np.testing.assert_array_equal(store.get_array("k").compute(), old)
    assert store.put_array("k", old * 2) == 3
