"""Bad input, tried systematically: malformed row documents, corrupted block
documents, malformed configuration. Each gives a clear error naming where the
problem is; never a wrong array, never a crashed worker."""

from __future__ import annotations

import copy
import datetime
import math

import bson
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_dask.store import CorruptBlockError
from lepton_dask.store.layout import (
    BLOCKS_PREFIX,
    BlockCheckError,
    decode_block,
    encode_block,
)
from lepton_dask.store.rows import docs_to_array

# -- row documents ------------------------------------------------------------------
GOOD = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
BAD = st.one_of(
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.just(bson.ObjectId("65f000000000000000000000")),
    st.just(datetime.datetime(2026, 1, 1)),
    st.integers(2**64, 2**70),  # no float64 / int64 holds these exactly
)
VALUE = st.one_of(GOOD, GOOD, BAD, st.none(), st.just("<missing>"))


@st.composite
def row_docs(draw):
    n = draw(st.integers(1, 6))
    docs = []
    for i in range(n):
        d = {"_id": i}
        for f in ("a", "b"):
            v = draw(VALUE)
            if not (isinstance(v, str) and v == "<missing>"):
                d[f] = v
        docs.append(d)
    return docs


def _fits(v, dt: np.dtype) -> bool:
    """What may be read into ``dt`` without changing it (floats round)."""
    if not isinstance(v, bool | int | float):
        return False
    if dt.kind == "f":
        return True
    info = np.iinfo(dt)
    return math.isfinite(v) and v == int(v) and info.min <= int(v) <= info.max


@settings(max_examples=400, suppress_health_check=list(HealthCheck))
@given(
    row_docs(), st.sampled_from(["f8", "f4", "i8"]), st.sampled_from(["raise", "nan"])
)
def test_row_documents_read_right_or_fail_naming_the_document(docs, dtype, missing):
    dt = np.dtype(dtype)
    if missing == "nan" and dt.kind != "f":
        return  # refused up front by read_collection (tested there)
    try:
        arr = docs_to_array(docs, ["a", "b"], dt, missing=missing, where="db.rows")
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert msg.startswith("db.rows: document _id=")
        assert "'a'" in msg or "'b'" in msg
        return
    # read: every value is exactly what the document holds
    for i, d in enumerate(docs):
        for j, f in enumerate(("a", "b")):
            v = d.get(f)
            if v is None:
                assert missing == "nan" and math.isnan(arr[i, j])
                continue
            assert _fits(v, dt), f"accepted {v!r} into {dt}"
            if dt.kind == "f":
                want = np.array(float(v)).astype(dt)
                assert (np.isnan(want) and np.isnan(arr[i, j])) or arr[i, j] == want
            else:
                assert float(v) == int(v) and arr[i, j] == int(v), (v, arr[i, j])


# -- block documents ----------------------------------------------------------------
MUTATIONS = [
    "flip_bit", "truncate", "extend", "drop_part", "duplicate_part", "wrong_dtype",
    "wrong_shape", "wrong_nbytes", "wrong_name", "wrong_version", "wrong_block",
    "data_not_bytes", "offset_not_int", "no_crc", "no_data", "bad_nparts",
    "swap_payloads", "part_not_int",
]  # fmt: skip


def mutate(docs, how, rnd):
    docs = copy.deepcopy(docs)
    d = docs[rnd.randrange(len(docs))]
    if how == "flip_bit":
        data = bytearray(d["data"])
        if not data:
            d["data"] = b"\x00"
            return docs
        i = rnd.randrange(len(data))
        data[i] ^= 1 << rnd.randrange(8)
        d["data"] = bytes(data)
    elif how == "truncate":
        d["data"] = d["data"][: max(0, len(d["data"]) - 1 - rnd.randrange(4))]
        if not docs[0]["nbytes"]:
            d["data"] = b"x"
    elif how == "extend":
        d["data"] = d["data"] + b"\x00"
    elif how == "drop_part":
        if len(docs) == 1:
            return []
        docs.remove(d)
    elif how == "duplicate_part":
        docs.append(copy.deepcopy(d))
    elif how == "wrong_dtype":
        d["dtype"] = "<i8" if d["dtype"] != "<i8" else "<f8"
    elif how == "wrong_shape":
        d["shape"] = [*d["shape"], 1] if rnd.random() < 0.5 else d["shape"][:-1]
    elif how == "wrong_nbytes":
        d["nbytes"] += 8
    elif how == "wrong_name":
        d["name"] = "other"
    elif how == "wrong_version":
        d["version"] += 1
    elif how == "wrong_block":
        d["block"] = [b + 1 for b in d["block"]]
    elif how == "data_not_bytes":
        d["data"] = "text"
    elif how == "offset_not_int":
        d["offset"] = str(d["offset"])
    elif how == "no_crc":
        del d["crc32"]
    elif how == "no_data":
        del d["data"]
    elif how == "bad_nparts":
        d["nparts"] += 1
    elif how == "swap_payloads":
        if len(docs) < 2 or docs[0]["data"] == docs[1]["data"]:
            d["data"] = bytes(reversed(d["data"])) + b"\x01"
        else:
            docs[0]["data"], docs[1]["data"] = docs[1]["data"], docs[0]["data"]
    elif how == "part_not_int":
        d["part"] = float(d["part"])
    return docs


@settings(max_examples=600, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(["<f8", "<i4", "|u1", "<c16", "|b1"]),
    st.tuples(st.integers(0, 9), st.integers(1, 5)),
    st.integers(8, 64),
    st.sampled_from(MUTATIONS),
    st.randoms(use_true_random=False),
)
def test_corrupted_blocks_are_refused_naming_the_problem(
    dtype, shape, part_bytes, how, rnd
):
    dt = np.dtype(dtype)
    x = (np.arange(int(np.prod(shape))).reshape(shape) % 7).astype(dt)
    docs = encode_block(x, name="arr", version=3, index=(2, 0), part_bytes=part_bytes)
    bad = mutate(docs, how, rnd)
    kw = {"name": "arr", "version": 3, "index": (2, 0), "shape": shape, "dtype": dt}
    try:
        out = decode_block(bad, **kw)
    except BlockCheckError as e:
        assert str(e)  # a message that says what is wrong
        return
    # accepted only if the mutation left the bytes equal (e.g. a flipped
    # padding bit of a bool is still caught by the CRC, so: never a wrong array)
    np.testing.assert_array_equal(out, x)
    assert out.dtype == dt


@pytest.mark.timeout(120)
def test_corrupt_block_on_a_worker_names_it_and_the_worker_survives(store, client):
    import random

    x = np.arange(200.0).reshape(40, 5)
    store.put_array("z", x, chunks=(10, 5))
    per = store.blocks_per_collection()
    coll = f"{BLOCKS_PREFIX}z:1" if per == 0 else f"{BLOCKS_PREFIX}z:1:1"
    rnd = random.Random(0)
    tried = 0
    for how in MUTATIONS:
        doc = store.db[coll].find_one({"block": [1, 0]})
        bad = {d["_id"]: d for d in mutate([doc], how, rnd)}  # one doc per _id
        if how == "duplicate_part":  # a server keeps one per _id: use a foreign one
            bad = {doc["_id"]: {**doc, "block": [9, 9]}}
        store.db[coll].delete_many({"block": [1, 0]})
        for d in bad.values():
            store.db[coll].insert_one(d)
        try:
            with pytest.raises(CorruptBlockError) as e:
                store.get_array("z").compute()
        finally:
            store.db[coll].delete_many({"_id": doc["_id"]})
            store.db[coll].insert_one(doc)
        msg = str(e.value)
        assert "'z'" in msg and "version 1" in msg and "(1, 0)" in msg, (how, msg)
        tried += 1
    assert tried == len(MUTATIONS)
    # the workers are alive and the repaired array reads right
    assert len(client.run(lambda: 1)) == len(client.scheduler_info()["workers"])
    np.testing.assert_array_equal(store.get_array("z").compute(), x)


# -- configuration ------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, match",
    [
        ("lepton.store.blocks-per-collection", -1, "blocks-per-collection"),
        ("lepton.store.part-bytes", "20 MiB", "part-bytes"),
        ("lepton.scaling.policy", "fastest", "lepton.scaling.policy"),
        ("lepton.cost.budget-usd-per-hour", -3, "budget-usd-per-hour"),
        ("lepton.cost.minimum-billing", "ten minutes", "minimum-billing"),
        ("lepton.cost.default-instance-type", "no-such-type", "no-such-type"),
    ],
)
def test_malformed_configuration_names_the_key(key, value, match, store):
    import dask

    from lepton_dask.cost import CostMonitor
    from lepton_dask.scaling.adaptive import policy_from_config

    with (
        dask.config.set({key: value}),
        pytest.raises((ValueError, KeyError, TypeError)) as e,
    ):
        if key.startswith("lepton.store"):
            store.put_array("cfg", np.ones(4))
        elif key.startswith("lepton.scaling"):
            policy_from_config()
        else:
            CostMonitor(ledger=False)
    assert match in str(e.value)


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://",
        "http://127.0.0.1:1/",
        "mongodb://u:p@h:notaport/",
        "mongodb://h/?tls=maybe",
    ],
)
def test_malformed_uris_fail_clearly_and_redacted(uri):
    from lepton_dask.store import FeatureStore, StoreError

    with pytest.raises((StoreError, ValueError)) as e:
        FeatureStore(uri, "x").list()
    msg = str(e.value)
    assert ":p@" not in msg
    assert "invalid MongoDB URI" in msg or "unreachable" in msg, msg
