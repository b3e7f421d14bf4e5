"""On-server layout of stored arrays: names, part documents, checksums.

Pure functions only (no I/O), so the layout can be tested and reasoned about
without a server.

Layout
------
``lepton.versions``
    One manifest document per array version, ``_id = "<name>/<version>"``,
    with ``state`` in ``writing | complete | failed``. The newest *complete*
    version is the array's head: a new version becomes visible by a single
    document update of its own manifest, after all of its blocks are written.
    A delete writes a complete *tombstone* version.
``lepton.blocks.<name>:<version>[:<group>]``
    The blocks of one version. Each block is stored as one or more *part*
    documents of at most ``part-bytes`` bytes, with a deterministic string
    ``_id = "<i>.<j>...:<part>"`` (a retried write cannot duplicate a part, and a
    lookup is one ``_id`` index seek). Every part repeats the block's
    identity (array name, version, block index, shape, dtype, byte order) and
    carries a CRC-32 of its bytes, all verified on read.

When the server does not answer ``_id`` lookups from an index (FerretDB's
SQLite backend scans the table on every query), blocks are spread over
collections of ``blocks_per_collection`` blocks each, so that a lookup scans
only its own block's parts. The choice is recorded in the manifest.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

VERSIONS = "lepton.versions"
BLOCKS_PREFIX = "lepton.blocks."
NUMERIC_KINDS = frozenset("biufc")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# MongoDB and FerretDB: no '$' or NUL anywhere, no leading '.', no "system." prefix.
_COLLECTION_RE = re.compile(r"^(?!system\.)[^.$\x00][^$\x00]{0,200}$")
_FIELD_RE = re.compile(r"^[^$\x00.][^\x00.]{0,200}$")


def validate_name(name: object) -> str:
    """Check that ``name`` is a valid array name and return it.

    Names are 1-128 characters of letters, digits, ``_``, ``-`` and ``.``,
    starting with a letter or digit. They are embedded in collection names and
    queries, so nothing else is accepted (no operators, no separators).

    >>> validate_name("features.v2")
    'features.v2'
    >>> validate_name("$where")
    Traceback (most recent call last):
    ...
    ValueError: invalid array name '$where': use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid array name {name!r}: use 1-128 letters, digits, '_', '-' or "
            "'.', starting with a letter or digit"
        )
    return name


def validate_collection_name(name: object) -> str:
    """Check a user-supplied MongoDB collection name and return it.

    >>> validate_collection_name("events")
    'events'
    >>> validate_collection_name("a$b")
    Traceback (most recent call last):
    ...
    ValueError: invalid collection name 'a$b': no '$' or NUL, not empty, not starting with '.' or 'system.'
    """
    if not isinstance(name, str) or not _COLLECTION_RE.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: no '$' or NUL, not empty, "
            "not starting with '.' or 'system.'"
        )
    return name


def validate_field_name(name: object) -> str:
    """Check a document field name used to read or write a row collection.

    Dotted paths are refused: each field is a top-level numeric field.

    >>> validate_field_name("price")
    'price'
    >>> validate_field_name("$gt")
    Traceback (most recent call last):
    ...
    ValueError: invalid field name '$gt': a top-level field name without '.', '$' prefix or NUL
    """
    if not isinstance(name, str) or not _FIELD_RE.match(name):
        raise ValueError(
            f"invalid field name {name!r}: a top-level field name without '.', "
            "'$' prefix or NUL"
        )
    return name


def check_dtype(dtype: Any, what: str = "array") -> np.dtype:
    """Return ``dtype`` as a numpy dtype if it is numeric (or bool), else raise.

    >>> check_dtype("f4")
    dtype('float32')
    >>> check_dtype(object)
    Traceback (most recent call last):
    ...
    TypeError: cannot store array with dtype object: only bool, integer, float and complex dtypes are supported
    """
    dt = np.dtype(dtype)
    if dt.kind not in NUMERIC_KINDS or dt.fields is not None or dt.subdtype:
        raise TypeError(
            f"cannot store {what} with dtype {dt}: only bool, integer, float and "
            "complex dtypes are supported"
        )
    return dt


def version_id(name: str, version: int) -> str:
    """``_id`` of a version's manifest document.

    >>> version_id("x", 12)
    'x/0000000012'
    """
    return f"{name}/{version:010d}"


def block_group(flat_index: int, blocks_per_collection: int) -> int | None:
    """Which collection group a block belongs to (None: one collection).

    >>> block_group(7, 0) is None, block_group(7, 4)
    (True, 1)
    """
    if blocks_per_collection <= 0:
        return None
    return flat_index // blocks_per_collection


def blocks_collection(name: str, version: int, group: int | None) -> str:
    """Name of the collection holding a version's blocks (or one group of them).

    >>> blocks_collection("x", 3, None), blocks_collection("x", 3, 5)
    ('lepton.blocks.x:3', 'lepton.blocks.x:3:5')
    """
    base = f"{BLOCKS_PREFIX}{name}:{version}"
    return base if group is None else f"{base}:{group}"


def parse_blocks_collection(coll: str) -> tuple[str, int] | None:
    """Inverse of :func:`blocks_collection`: ``(name, version)`` or None.

    >>> parse_blocks_collection("lepton.blocks.a.b:3:1")
    ('a.b', 3)
    >>> parse_blocks_collection("other") is None
    True
    """
    if not coll.startswith(BLOCKS_PREFIX):
        return None
    rest = coll[len(BLOCKS_PREFIX) :].split(":")
    if len(rest) not in (2, 3) or not all(p.isdigit() for p in rest[1:]):
        return None
    return rest[0], int(rest[1])


def part_id(block: Sequence[int], part: int) -> str:
    """Deterministic ``_id`` of one part of one block.

    >>> part_id((3, 0), 1)
    '3.0:1'
    """
    return ".".join(map(str, block)) + f":{part}"


def split_parts(nbytes: int, part_bytes: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of each part of a block of ``nbytes`` bytes.

    Always at least one part, so that an empty block is stored (and its
    existence verified) like any other.

    >>> split_parts(10, 4)
    [(0, 4), (4, 4), (8, 2)]
    >>> split_parts(0, 4)
    [(0, 0)]
    """
    if part_bytes <= 0:
        raise ValueError(f"part_bytes must be positive, got {part_bytes}")
    if nbytes == 0:
        return [(0, 0)]
    return [
        (off, min(part_bytes, nbytes - off)) for off in range(0, nbytes, part_bytes)
    ]


def encode_chunks(chunks: Sequence[Sequence[int]]) -> list[dict[str, list[int]]]:
    """Run-length encode dask chunks (compact manifests for millions of blocks).

    One sub-document per dimension: FerretDB does not store nested arrays.

    >>> encode_chunks(((4, 4, 4, 2), (3,)))
    [{'size': [4, 2], 'count': [3, 1]}, {'size': [3], 'count': [1]}]
    """
    out = []
    for dim in chunks:
        sizes: list[int] = []
        counts: list[int] = []
        for c in dim:
            if sizes and sizes[-1] == c:
                counts[-1] += 1
            else:
                sizes.append(int(c))
                counts.append(1)
        out.append({"size": sizes, "count": counts})
    return out


def decode_chunks(
    runs: Iterable[dict[str, Sequence[int]]],
) -> tuple[tuple[int, ...], ...]:
    """Inverse of :func:`encode_chunks`.

    >>> decode_chunks([{'size': [4, 2], 'count': [3, 1]}, {'size': [3], 'count': [1]}])
    ((4, 4, 4, 2), (3,))
    """
    return tuple(
        tuple(
            s for s, n in zip(dim["size"], dim["count"], strict=False) for _ in range(n)
        )
        for dim in runs
    )


def encode_block(
    block: np.ndarray,
    *,
    name: str,
    version: int,
    index: Sequence[int],
    part_bytes: int,
) -> list[dict[str, Any]]:
    """Part documents for one block.

    >>> docs = encode_block(np.arange(5.0), name="x", version=1, index=(0,),
    ...                     part_bytes=16)
    >>> [(d["_id"], d["offset"], len(d["data"])) for d in docs]
    [('0:0', 0, 16), ('0:1', 16, 16), ('0:2', 32, 8)]
    """
    arr = np.asarray(block)
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would make 0-d arrays 1-d)
        arr = arr.copy(order="C")
    raw = memoryview(arr).cast("B") if arr.size else memoryview(b"")
    parts = split_parts(arr.nbytes, part_bytes)
    common = {
        "name": name,
        "version": int(version),
        "block": [int(i) for i in index],
        "shape": [int(s) for s in arr.shape],
        "dtype": arr.dtype.str,
        "byteorder": _byteorder(arr.dtype),
        "nbytes": int(arr.nbytes),
        "nparts": len(parts),
    }
    docs = []
    for p, (off, length) in enumerate(parts):
        data = bytes(raw[off : off + length])
        docs.append(
            {
                "_id": part_id(index, p),
                **common,
                "part": p,
                "offset": off,
                "crc32": zlib.crc32(data),
                "data": data,
            }
        )
    return docs


def _byteorder(dt: np.dtype) -> str:
    if dt.byteorder == "|":
        return "not-applicable"
    if dt.byteorder == "=":
        return "little" if np.little_endian else "big"
    return "little" if dt.byteorder == "<" else "big"


class BlockCheckError(ValueError):
    """A block's documents do not match what the manifest says (internal)."""


def decode_block(
    docs: Iterable[dict[str, Any]],
    *,
    name: str,
    version: int,
    index: Sequence[int],
    shape: Sequence[int],
    dtype: np.dtype,
) -> np.ndarray:
    """Assemble and verify one block from its part documents.

    Raises :class:`BlockCheckError` naming the problem when a part is missing,
    duplicated or foreign, when the sizes, shape or dtype differ from the
    manifest, or when a checksum does not match.

    >>> docs = encode_block(np.arange(6).reshape(2, 3), name="x", version=1,
    ...                     index=(0, 0), part_bytes=20)
    >>> decode_block(reversed(docs), name="x", version=1, index=(0, 0),
    ...              shape=(2, 3), dtype=np.dtype(int))
    array([[0, 1, 2],
           [3, 4, 5]])
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    index = [int(i) for i in index]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1).view(np.uint8) if out.size else None
    seen: dict[int, tuple[int, int]] = {}
    nparts = None
    for doc in docs:
        p = doc.get("part")
        if (
            doc.get("name") != name
            or doc.get("version") != version
            or doc.get("block") != index
        ):
            raise BlockCheckError(
                f"part {doc.get('_id')!r} belongs to "
                f"{doc.get('name')!r} v{doc.get('version')} block {doc.get('block')}"
            )
        if doc.get("dtype") != dtype.str or list(doc.get("shape", ())) != list(shape):
            raise BlockCheckError(
                f"part {p} has dtype {doc.get('dtype')!r} and shape "
                f"{doc.get('shape')}, expected {dtype.str!r} and {list(shape)}"
            )
        if doc.get("nbytes") != expected:
            raise BlockCheckError(
                f"part {p} says the block has {doc.get('nbytes')} bytes, "
                f"expected {expected}"
            )
        if nparts is None:
            nparts = doc.get("nparts")
        if not isinstance(p, int) or p in seen or doc.get("nparts") != nparts:
            raise BlockCheckError(f"duplicate or inconsistent part {p!r}")
        data = doc.get("data")
        off = doc.get("offset")
        if not isinstance(data, bytes | bytearray) or not isinstance(off, int):
            raise BlockCheckError(f"part {p} has no byte payload")
        if zlib.crc32(data) != doc.get("crc32"):
            raise BlockCheckError(f"part {p} failed its CRC-32 checksum")
        if off < 0 or off + len(data) > expected:
            raise BlockCheckError(
                f"part {p} covers bytes {off}..{off + len(data)} of {expected}"
            )
        if data:
            flat[off : off + len(data)] = np.frombuffer(data, dtype=np.uint8)
        seen[p] = (off, len(data))
    if nparts is None:
        raise BlockCheckError("no parts found")
    if set(seen) != set(range(nparts)):
        missing = sorted(set(range(nparts)) - set(seen))
        raise BlockCheckError(f"missing parts {missing} of {nparts}")
    pos = 0
    for p in range(nparts):
        off, length = seen[p]
        if off != pos:
            raise BlockCheckError(f"part {p} starts at byte {off}, expected {pos}")
        pos += length
    if pos != expected:
        raise BlockCheckError(f"parts hold {pos} bytes, expected {expected}")
    return out
