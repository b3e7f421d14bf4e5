"""Row collections (one document per row) against the real server."""

from __future__ import annotations

import bson
import dask
import dask.array as da
import numpy as np
import pytest

from lepton_dask.store import CollectionChangedError
from lepton_dask.store.rows import plan_ranges

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rows(store):
    rng = np.random.default_rng(0)
    X = rng.random((257, 4))
    docs = [
        {"_id": bson.ObjectId(), "a": a, "b": b, "c": c, "d": d, "tag": "x"}
        for a, b, c, d in X.tolist()
    ]
    store.db["events"].insert_many(docs)
    return store, X


@pytest.mark.parametrize("strategy", ["ranges", "scan", "auto"])
def test_read_collection_in_id_order_with_known_chunks(rows, strategy):
    store, X = rows
    Y = store.read_collection(
        "events", ["a", "c"], rows_per_chunk=60, strategy=strategy
    )
    assert Y.chunks == ((60, 60, 60, 60, 17), (2,))
    np.testing.assert_array_equal(Y.compute(), X[:, [0, 2]])
    np.testing.assert_array_equal(Y[100:130].compute(), X[100:130, [0, 2]])


def test_auto_strategy_follows_the_server_plan(rows):
    store, _ = rows
    from lepton_dask.store import _caps

    indexed = _caps.indexed(store.db, "events", "range", store.uri)
    Y = store.read_collection("events", ["a"], rows_per_chunk=100)
    has_scan = any("scan" in str(k) for k in Y.__dask_graph__())
    assert has_scan == (not indexed)


def test_query_selects_rows(store):
    store.db["q"].insert_many(
        [{"_id": i, "v": float(i), "even": i % 2 == 0} for i in range(50)]
    )
    Y = store.read_collection("q", ["v"], {"even": True}, rows_per_chunk=7)
    np.testing.assert_array_equal(Y.compute()[:, 0], np.arange(0, 50, 2.0))
    assert sum(Y.chunks[0]) == 25


def test_missing_field_raises_naming_field_and_id(store):
    store.db["m"].insert_many([{"_id": 1, "a": 1.0, "b": 2.0}, {"_id": 2, "a": 3.0}])
    with pytest.raises(ValueError, match=r"_id=2 has missing field 'b'.*missing='nan'"):
        store.read_collection("m", ["a", "b"]).compute()
    Y = store.read_collection("m", ["a", "b"], missing="nan").compute()
    np.testing.assert_array_equal(Y, [[1.0, 2.0], [3.0, np.nan]])


def test_null_field_is_missing(store):
    store.db["n"].insert_many([{"_id": 1, "a": None}])
    with pytest.raises(ValueError, match="null field 'a'"):
        store.read_collection("n", ["a"]).compute()


def test_non_numeric_field_raises_type_error(store):
    store.db["s"].insert_many([{"_id": 1, "a": 1.0}, {"_id": 2, "a": "1.5"}])
    with pytest.raises(
        TypeError, match=r"_id=2 has non-numeric field 'a' \('1.5', str\)"
    ):
        store.read_collection("s", ["a"], missing="nan").compute()


def test_numeric_types_are_accepted(store):
    # (Decimal128 is converted too, but FerretDB v1 cannot store it: see
    # test_decimal128_is_converted for the conversion itself.)
    store.db["t"].insert_many(
        [
            {"_id": 1, "a": 1},
            {"_id": 2, "a": True},
            {"_id": 3, "a": bson.Int64(7)},
            {"_id": 4, "a": 2.5},
        ]
    )
    np.testing.assert_array_equal(
        store.read_collection("t", ["a"]).compute()[:, 0], [1, 1, 7, 2.5]
    )


def test_decimal128_is_converted():
    from lepton_dask.store.rows import docs_to_array

    docs = [{"_id": 1, "a": bson.Decimal128("2.5")}, {"_id": 2, "a": 1}]
    out = docs_to_array(docs, ["a"], np.dtype("f8"), missing="raise", where="db.c")
    np.testing.assert_array_equal(out[:, 0], [2.5, 1.0])


def test_unknown_collection_and_bad_arguments(store):
    with pytest.raises(KeyError, match="no collection 'ghost'"):
        store.read_collection("ghost", ["a"])
    store.db["x"].insert_one({"_id": 1, "a": 1})
    with pytest.raises(ValueError, match="invalid field name"):
        store.read_collection("x", ["$where"])
    with pytest.raises(ValueError, match="invalid collection name"):
        store.read_collection("a$b", ["a"])
    with pytest.raises(TypeError, match="query must be a dict"):
        store.read_collection("x", ["a"], "this.a > 1")
    with pytest.raises(ValueError, match="needs at least one field"):
        store.read_collection("x", [])


def test_mixed_id_types_refused(store):
    store.db["mix"].insert_many([{"_id": 1, "a": 1}, {"_id": "two", "a": 2}])
    with pytest.raises(TypeError, match="mixes _id types"):
        store.read_collection("mix", ["a"])


@pytest.mark.parametrize("strategy", ["ranges", "scan"])
def test_insert_inside_a_planned_range_is_detected(store, strategy):
    store.db["grow"].insert_many([{"_id": i * 10, "a": float(i)} for i in range(30)])
    Y = store.read_collection("grow", ["a"], rows_per_chunk=10, strategy=strategy)
    store.db["grow"].insert_one({"_id": 55, "a": -1.0})  # inside the first range
    with pytest.raises(CollectionChangedError, match="changed during the read"):
        Y.compute()


def test_insert_above_the_plan_is_not_included(store):
    store.db["tail"].insert_many([{"_id": i, "a": float(i)} for i in range(30)])
    Y = store.read_collection("tail", ["a"], rows_per_chunk=10)
    store.db["tail"].insert_one({"_id": 1000, "a": -1.0})
    np.testing.assert_array_equal(Y.compute()[:, 0], np.arange(30.0))


def test_empty_result(store):
    store.db["e"].insert_one({"_id": 1, "a": 1.0})
    Y = store.read_collection("e", ["a"], {"a": {"$gt": 5}})
    assert Y.shape == (0, 1) and Y.compute().shape == (0, 1)


def test_plan_ranges_counts(store):
    store.db["p"].insert_many([{"_id": i, "a": 0} for i in range(25)])
    starts, counts, last = plan_ranges(store.spec, "p", {}, 10)
    assert starts == [0, 10, 20] and counts == [10, 10, 5] and last == 24


def test_write_collection_round_trip(store, client):
    X = da.random.default_rng(3).random((1000, 3), chunks=(300, 3))
    n = store.write_collection("w", X, ["x", "y", "z"])
    assert n == 1000
    doc = store.db["w"].find_one({"_id": 5})
    assert set(doc) == {"_id", "x", "y", "z"}
    Y = store.read_collection("w", ["x", "y", "z"], rows_per_chunk=400)
    np.testing.assert_array_equal(Y.compute(), X.compute())


def test_failed_write_collection_leaves_previous_rows(store):
    store.write_collection("keep", np.ones((10, 2)), ["a", "b"])

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("interrupted")
        return block

    bad = da.zeros((10, 2), chunks=(5, 2)).map_blocks(boom, dtype=float)
    with pytest.raises(RuntimeError, match="interrupted"):
        with dask.config.set(scheduler="sync"):
            store.write_collection("keep", bad, ["a", "b"])
    np.testing.assert_array_equal(
        store.read_collection("keep", ["a", "b"]).compute(), np.ones((10, 2))
    )
    assert [c for c in store.db.list_collection_names() if "lepton_tmp" in c] == []


def test_write_collection_replaces(store):
    store.write_collection("rep", np.ones((10, 2)), ["a", "b"])
    store.write_collection("rep", np.zeros((4, 2)), ["a", "b"])
    np.testing.assert_array_equal(
        store.read_collection("rep", ["a", "b"]).compute(), np.zeros((4, 2))
    )
    assert [c for c in store.db.list_collection_names() if "lepton_" in c] == []


def test_write_collection_bad_input(store):
    with pytest.raises(TypeError):
        store.write_collection("bad", np.array([["a"]]))
    with pytest.raises(ValueError, match="distinct field names"):
        store.write_collection("bad", np.ones((2, 2)), ["a"])
    with pytest.raises(ValueError, match="1-D or 2-D"):
        store.write_collection("bad", np.ones((2, 2, 2)))
