"""Pure layout functions: names, parts, chunk codec, block verification."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lepton_dask.store.layout import (
    BlockCheckError,
    blocks_collection,
    check_dtype,
    decode_block,
    decode_chunks,
    encode_block,
    encode_chunks,
    parse_blocks_collection,
    split_parts,
    validate_collection_name,
    validate_field_name,
    validate_name,
)

NUMERIC = st.sampled_from(
    [
        "bool",
        "int8",
        "uint16",
        "int32",
        "int64",
        "float32",
        "float64",
        "complex128",
        ">f8",
        "<i4",
    ]
)


@pytest.mark.parametrize(
    "bad", ["", "$x", "a b", "a/b", "a:b", ".a", "a..b", "x" * 129, 3, None, "a$"]
)
def test_invalid_array_names_rejected(bad):
    with pytest.raises(ValueError, match="invalid array name"):
        validate_name(bad)


@pytest.mark.parametrize("good", ["a", "features.v2", "A-1_b", "x" * 128])
def test_valid_array_names(good):
    assert validate_name(good) == good


@pytest.mark.parametrize("bad", ["", "$cmd", "a$b", ".x", "system.users", "a\x00"])
def test_invalid_collection_names(bad):
    with pytest.raises(ValueError):
        validate_collection_name(bad)


@pytest.mark.parametrize("bad", ["", "$gt", "a.b", "a\x00", 1])
def test_invalid_field_names(bad):
    with pytest.raises(ValueError):
        validate_field_name(bad)


@pytest.mark.parametrize("dt", [object, "U3", "S2", [("a", "f8")], "V8"])
def test_non_numeric_dtypes_raise_type_error(dt):
    with pytest.raises(TypeError, match="only bool, integer, float and complex"):
        check_dtype(dt)


@given(st.integers(0, 10_000), st.integers(1, 3000))
def test_split_parts_cover_exactly(nbytes, part):
    parts = split_parts(nbytes, part)
    assert parts[0][0] == 0
    assert sum(n for _, n in parts) == nbytes
    assert all(0 <= n <= part for _, n in parts)
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(parts))


@given(
    st.lists(
        st.lists(st.integers(0, 50), min_size=1, max_size=20), min_size=1, max_size=4
    )
)
def test_chunk_codec_round_trip(chunks):
    chunks = tuple(tuple(c) for c in chunks)
    assert decode_chunks(encode_chunks(chunks)) == chunks


def test_blocks_collection_names_parse_back():
    assert parse_blocks_collection(blocks_collection("a.b-c", 12, None)) == (
        "a.b-c",
        12,
    )
    assert parse_blocks_collection(blocks_collection("a", 3, 7)) == ("a", 3)
    assert parse_blocks_collection("lepton.blocks.x:y") is None


@settings(max_examples=60, deadline=None)
@given(
    arr=NUMERIC.flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=7))
    ),
    part=st.integers(1, 64),
)
def test_block_round_trip_any_part_size(arr, part):
    docs = encode_block(
        arr, name="a", version=3, index=(1,) * arr.ndim, part_bytes=part
    )
    assert all(len(d["data"]) <= part for d in docs)
    out = decode_block(
        list(reversed(docs)),
        name="a",
        version=3,
        index=(1,) * arr.ndim,
        shape=arr.shape,
        dtype=arr.dtype,
    )
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def _docs(arr=None, part=16):
    arr = np.arange(10.0) if arr is None else arr
    return arr, encode_block(arr, name="a", version=1, index=(0,), part_bytes=part)


def _decode(docs, arr):
    return decode_block(
        docs, name="a", version=1, index=(0,), shape=arr.shape, dtype=arr.dtype
    )


def test_flipped_bit_is_detected():
    arr, docs = _docs()
    data = bytearray(docs[2]["data"])
    data[3] ^= 0x10
    docs[2]["data"] = bytes(data)
    with pytest.raises(BlockCheckError, match="part 2 failed its CRC-32"):
        _decode(docs, arr)


def test_missing_part_is_detected():
    arr, docs = _docs()
    with pytest.raises(BlockCheckError, match=r"missing parts \[1\]"):
        _decode(docs[:1] + docs[2:], arr)


def test_truncated_part_is_detected():
    arr, docs = _docs()
    docs[-1]["data"] = docs[-1]["data"][:-1]
    import zlib

    docs[-1]["crc32"] = zlib.crc32(docs[-1]["data"])  # consistent checksum, short data
    with pytest.raises(BlockCheckError, match="parts hold 79 bytes, expected 80"):
        _decode(docs, arr)


def test_wrong_dtype_is_detected():
    arr, docs = _docs()
    for d in docs:
        d["dtype"] = "<i8"
    with pytest.raises(BlockCheckError, match="has dtype '<i8'"):
        _decode(docs, arr)


def test_foreign_part_is_detected():
    arr, docs = _docs()
    docs[0]["version"] = 2
    with pytest.raises(BlockCheckError, match="belongs to 'a' v2"):
        _decode(docs, arr)


def test_duplicate_part_is_detected():
    arr, docs = _docs()
    with pytest.raises(BlockCheckError, match="duplicate"):
        _decode([*docs, docs[0]], arr)


def test_no_parts():
    arr, _ = _docs()
    with pytest.raises(BlockCheckError, match="no parts"):
        _decode([], arr)
