"""FeatureStore against the real embedded server: round trips, versions, bad input."""

from __future__ import annotations

import threading

import dask
import dask.array as da
import numpy as np
import pymongo
import pymongo.monitoring
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lepton_dask.store import CorruptBlockError, FeatureStore, StoreSpec
from lepton_dask.store.layout import BLOCKS_PREFIX, VERSIONS

pytestmark = pytest.mark.timeout(120)

DTYPES = st.sampled_from(
    [
        "bool",
        "int8",
        "uint16",
        "int32",
        "int64",
        "float32",
        "float64",
        "complex64",
        ">f8",
    ]
)


@st.composite
def arrays_and_chunks(draw):
    arr = draw(
        DTYPES.flatmap(
            lambda dt: hnp.arrays(
                dt, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9)
            )
        )
    )
    chunks = tuple(draw(st.integers(1, max(1, s))) for s in arr.shape)
    return arr, chunks


@pytest.mark.parametrize("per_coll", [0, 1, 3])
def test_round_trip_hypothesis(store, per_coll):
    """Any numeric dtype, shape and chunking survives put/get, for each layout."""

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(arrays_and_chunks(), st.booleans())
    def check(case, as_dask):
        arr, chunks = case
        x = da.from_array(arr, chunks=chunks) if as_dask else arr
        with dask.config.set(
            {"lepton.store.blocks-per-collection": per_coll, "scheduler": "sync"}
        ):
            v = store.put_array(
                "h", x, chunks=None if as_dask else chunks, progress=False
            )
            y = store.get_array("h")
            out = y.compute()
        assert y.chunks == da.core.normalize_chunks(chunks, arr.shape, dtype=arr.dtype)
        assert out.dtype == arr.dtype and out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)
        assert store.info("h")["version"] == v

    check()


def test_multi_part_blocks_and_big_endian(store):
    x = np.arange(50_000, dtype=">f8").reshape(5_000, 10)
    with dask.config.set(
        {"lepton.store.part-bytes": 70_000}
    ):  # 400 kB block -> 6 parts
        store.put_array("parts", x, chunks=(5_000, 10))
    out = store.get_array("parts").compute(scheduler="sync")
    assert out.dtype == np.dtype(">f8")
    np.testing.assert_array_equal(out, x)
    coll = (
        store.db[f"{BLOCKS_PREFIX}parts:1"]
        if store.blocks_per_collection() == 0
        else store.db[f"{BLOCKS_PREFIX}parts:1:0"]
    )
    docs = list(coll.find({}, {"data": 0}))
    assert len(docs) == 6 and {d["nparts"] for d in docs} == {6}
    assert all(d["byteorder"] == "big" and d["dtype"] == ">f8" for d in docs)


def test_dask_write_runs_on_the_cluster(store, client):
    x = da.random.default_rng(1).random((40_000, 6), chunks=(10_000, 6))
    expected = x.compute()
    v = store.put_array("onworkers", x, progress=False)
    got = client.compute(store.get_array("onworkers"), sync=True)
    np.testing.assert_array_equal(got, expected)
    assert v == 1
    # the write tasks ran on the workers (named lepton-put-...)
    tasks = client.run_on_scheduler(
        lambda dask_scheduler: [k for k in dask_scheduler.task_prefixes]
    )
    assert "lepton-put" in tasks and "lepton-read" in "".join(tasks)


class _FindCounter(pymongo.monitoring.CommandListener):
    def __init__(self):
        self.collections: list[str] = []

    def started(self, event):
        if event.command_name == "find":
            self.collections.append(event.command["find"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_row_selection_reads_only_needed_blocks(mongo_uri, store):
    with dask.config.set({"lepton.store.cache.enabled": False}):  # count server reads
        _reads_only_needed_blocks(mongo_uri, store)


def _reads_only_needed_blocks(mongo_uri, store):
    x = np.arange(1000.0 * 4).reshape(1000, 4)
    store.put_array("sel", x, chunks=(100, 4))
    counter = _FindCounter()
    pymongo.monitoring.register(counter)
    # a distinct URI gives a fresh client that carries the listener
    s2 = FeatureStore(mongo_uri + "?appname=lepton-count", store.database)
    y = s2.get_array("sel")
    counter.collections.clear()
    out = y[250:260].compute(scheduler="sync")
    np.testing.assert_array_equal(out, x[250:260])
    block_reads = [c for c in counter.collections if c.startswith(BLOCKS_PREFIX)]
    assert len(block_reads) == 1  # one block, one query
    counter.collections.clear()
    y[95:205].compute(scheduler="sync")
    assert len([c for c in counter.collections if c.startswith(BLOCKS_PREFIX)]) == 3


def test_versions_and_info(store):
    a = np.zeros((10, 2))
    b = np.ones((12, 2))
    assert store.put_array("v", a) == 1
    assert store.put_array("v", b) == 2
    np.testing.assert_array_equal(store.get_array("v").compute(), b)
    np.testing.assert_array_equal(store.get_array("v", version=1).compute(), a)
    info = store.info("v")
    assert info["version"] == 2 and info["shape"] == (12, 2)
    assert info["versions"] == [1, 2]
    assert store.list() == ["v"]


def test_delete_and_gc(store):
    store.put_array("d", np.ones(5))
    store.put_array("d", np.ones(6))
    store.delete("d")
    assert store.list() == []
    with pytest.raises(KeyError, match="no array 'd' in database"):
        store.get_array("d")
    removed = store.gc(grace=0)
    assert sorted(removed["versions"]) == [("d", 1), ("d", 2)]
    assert not [
        c for c in store.db.list_collection_names() if c.startswith(BLOCKS_PREFIX)
    ]
    # a new array of the same name starts after the tombstone
    assert store.put_array("d", np.ones(3)) == 4


def test_retain_versions_and_grace(store):
    for i in range(4):
        store.put_array("r", np.full(3, i))
    # default grace keeps superseded versions for readers in flight
    assert store.info("r")["versions"] == [1, 2, 3, 4]
    with dask.config.set({"lepton.store.retain-versions": 1}):
        store.gc(grace=0)
    assert store.info("r")["versions"] == [3, 4]


def test_unknown_array_key_error_names_array_and_database(store):
    with pytest.raises(KeyError) as e:
        store.get_array("nope")
    assert "'nope'" in str(e.value) and store.database in str(e.value)
    with pytest.raises(KeyError, match="version 7"):
        store.put_array("yes", np.ones(2)) and store.get_array("yes", version=7)


@pytest.mark.parametrize(
    "bad",
    [np.array(["a", "b"]), np.array([object(), 1], dtype=object), np.array([b"x"])],
)
def test_non_numeric_dtype_rejected_before_writing(store, bad):
    with pytest.raises(TypeError, match="only bool, integer, float and complex"):
        store.put_array("bad", bad)
    with pytest.raises(TypeError):
        store.put_array("bad", da.from_array(bad, chunks=1))
    assert store.db[VERSIONS].count_documents({}) == 0
    assert not [
        c for c in store.db.list_collection_names() if c.startswith(BLOCKS_PREFIX)
    ]


def test_invalid_names_rejected(store):
    for bad in ["$where", "a/b", "", "x:1"]:
        with pytest.raises(ValueError, match="invalid array name"):
            store.put_array(bad, np.ones(2))


def test_checksum_corruption_names_array_version_block(store):
    x = np.arange(100.0).reshape(20, 5)
    store.put_array("c", x, chunks=(5, 5))
    per = store.blocks_per_collection()
    coll = f"{BLOCKS_PREFIX}c:1" if per == 0 else f"{BLOCKS_PREFIX}c:1:2"
    doc = store.db[coll].find_one({"_id": "2.0:0"})
    data = bytearray(doc["data"])
    data[7] ^= 0xFF
    store.db[coll].update_one({"_id": "2.0:0"}, {"$set": {"data": bytes(data)}})
    y = store.get_array("c")
    np.testing.assert_array_equal(y[:10].compute(), x[:10])  # other blocks fine
    with pytest.raises(CorruptBlockError) as e:
        y.compute(scheduler="sync")
    msg = str(e.value)
    assert "'c'" in msg and "version 1" in msg and "(2, 0)" in msg and "CRC-32" in msg
    assert e.value.block == (2, 0) and e.value.version == 1


def test_concurrent_writers_of_the_same_name(store):
    arrays = {i: np.full((300, 3), float(i)) for i in range(4)}
    versions: dict[int, int] = {}
    errors = []

    def write(i):
        try:
            s = FeatureStore(store.uri, store.database)
            versions[i] = s.put_array("cw", arrays[i], chunks=(50, 3))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in arrays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(versions.values()) == [1, 2, 3, 4]  # distinct versions
    for i, v in versions.items():  # every version is exactly one writer's data
        np.testing.assert_array_equal(
            store.get_array("cw", version=v).compute(), arrays[i]
        )
    newest = max(versions, key=versions.get)
    np.testing.assert_array_equal(store.get_array("cw").compute(), arrays[newest])


def test_gc_spares_a_version_allocated_while_it_runs(store):
    """GC lists manifests, then collections: a write that starts in between
    has a collection but no manifest in GC's first listing, and must survive."""
    store.put_array("race", np.zeros((20, 2)), chunks=(10, 2))
    writer = FeatureStore(store.uri, store.database)
    x = np.arange(40.0).reshape(20, 2)
    written = []

    class Interleaved(StoreSpec):
        def retry(self, fn, what):
            out = super().retry(fn, what)
            if what == "listing versions" and not written:
                written.append(writer.put_array("race", x, chunks=(10, 2)))
            return out

    gc = FeatureStore(store.uri, store.database)
    gc.spec = Interleaved(gc.uri, gc.database, gc.spec.timeout)
    gc.gc("race")
    assert written == [2]
    np.testing.assert_array_equal(store.get_array("race").compute(), x)


def test_version_invisible_until_every_block_is_written(store):
    old = np.zeros((40, 2))
    store.put_array("vis", old, chunks=(10, 2))
    gate = threading.Event()
    started = threading.Event()

    def slow(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 3:
            started.set()
            assert gate.wait(30)
        return block + 1

    new = da.zeros((40, 2), chunks=(10, 2)).map_blocks(slow, dtype=float)
    result = {}

    def writer():
        with dask.config.set(scheduler="threads"):
            result["v"] = store.put_array("vis", new, progress=False)

    t = threading.Thread(target=writer)
    t.start()
    assert started.wait(30)
    # mid-write: the new version exists as "writing" but readers see the old one
    states = {
        d["version"]: d["state"] for d in store.db[VERSIONS].find({"name": "vis"})
    }
    assert states == {1: "complete", 2: "writing"}
    assert store.info("vis")["version"] == 1
    np.testing.assert_array_equal(store.get_array("vis").compute(), old)
    gate.set()
    t.join(30)
    assert result["v"] == 2
    np.testing.assert_array_equal(store.get_array("vis").compute(), old + 1)


def test_failed_write_keeps_previous_version_and_cleans_up(store):
    old = np.arange(20.0).reshape(10, 2)
    store.put_array("f", old, chunks=(5, 2))

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("disk on fire")
        return block

    bad = da.ones((10, 2), chunks=(5, 2)).map_blocks(boom, dtype=float)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.put_array("f", bad, progress=False)
    np.testing.assert_array_equal(store.get_array("f").compute(), old)
    assert store.info("f")["versions"] == [1]
    # the failed version's blocks are gone, its manifest too
    colls = [c for c in store.db.list_collection_names() if c.startswith(BLOCKS_PREFIX)]
    assert all(":2" not in c.split("f", 1)[1] for c in colls)
    # its manifest remains only as a "collected" record: numbers are never reused
    assert (
        store.db[VERSIONS].find_one({"name": "f", "version": 2})["state"] == "collected"
    )
    assert store.put_array("f", old) == 3
    store.gc(grace=0)
    assert store.db[VERSIONS].count_documents({"name": "f", "version": 2}) == 0


def test_orphan_block_collections_are_collected(store):
    store.put_array("o", np.ones(4))
    store.db[f"{BLOCKS_PREFIX}o:9"].insert_one({"_id": "0:0"})
    removed = store.gc(grace=0)
    assert removed["collections"] == [f"{BLOCKS_PREFIX}o:9"]
    np.testing.assert_array_equal(store.get_array("o").compute(), np.ones(4))


def test_unknown_chunks_rejected(store):
    x = da.ones(10, chunks=5)
    x = x[x > 0]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        store.put_array("u", x)


def test_zero_size_and_scalar_arrays(store):
    store.put_array("empty", np.empty((0, 3)))
    assert store.get_array("empty").compute().shape == (0, 3)
    store.put_array("scalar", np.float64(2.5))
    assert store.get_array("scalar").compute() == 2.5
