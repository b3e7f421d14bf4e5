"""The block cache: a second read comes from the host's disk, verified; damage,
removal, a full or unwritable disk and racing writers never give a wrong
result."""

from __future__ import annotations

import contextlib
import glob
import logging
import multiprocessing
import os
import subprocess
import zlib

import dask
import numpy as np
import pytest

from lepton_dask.store import VersionGoneError
from lepton_dask.store.cache import (
    BlockCache,
    CacheSettings,
    block_cache,
    counts,
    flush,
)


@pytest.fixture
def cache_dir(tmp_path):
    d = str(tmp_path / "blocks")
    with dask.config.set(
        {"lepton.store.cache.directory": d, "lepton.store.cache.max-bytes": "1GiB"}
    ):
        yield d


def _delta(before: dict) -> dict:
    now = counts()
    return {
        k: now[k] - before[k]
        for k in ("hits", "misses", "corrupt", "bytes_cache", "bytes_server")
    }


def _files(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, "*", "*", "*.val")))


def test_second_read_comes_from_the_cache_not_the_server(store, cache_dir):
    x = np.random.default_rng(0).random((400, 5))
    store.put_array("f", x, chunks=(100, 5))
    before = counts()
    np.testing.assert_array_equal(store.get_array("f").compute(scheduler="threads"), x)
    first = _delta(before)
    assert first["misses"] == 4 and first["hits"] == 0
    assert first["bytes_server"] == x.nbytes
    before = counts()
    np.testing.assert_array_equal(store.get_array("f").compute(scheduler="threads"), x)
    second = _delta(before)
    assert second == {
        "hits": 4,
        "misses": 0,
        "corrupt": 0,
        "bytes_cache": x.nbytes,
        "bytes_server": 0,
    }
    assert len(_files(cache_dir)) == 4


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_damaged_cache_file_is_dropped_and_read_again(store, cache_dir, damage):
    x = np.arange(300.0 * 4).reshape(300, 4)
    store.put_array("d", x, chunks=(100, 4))
    store.get_array("d").compute(scheduler="threads")
    flush()  # the cache writes behind the reads
    victim = _files(cache_dir)[1]
    size = os.path.getsize(victim)
    with open(victim, "r+b") as f:
        if damage == "truncate":
            f.truncate(size - 8)
        else:
            f.seek(size - 100)
            b = f.read(1)
            f.seek(size - 100)
            f.write(bytes([b[0] ^ 0xFF]))
    before = counts()
    np.testing.assert_array_equal(store.get_array("d").compute(scheduler="threads"), x)
    d = _delta(before)
    assert d["corrupt"] == 1 and d["hits"] == 2 and d["misses"] == 1
    assert d["bytes_server"] == x.nbytes // 3
    before = counts()  # the block was read again and kept whole
    np.testing.assert_array_equal(store.get_array("d").compute(scheduler="threads"), x)
    assert _delta(before)["hits"] == 3


def test_removed_version_raises_even_when_cached(store, cache_dir):
    store.put_array("r", np.zeros((200, 2)), chunks=(100, 2))
    store.get_array("r", version=1).compute(scheduler="threads")  # now cached
    store.put_array("r", np.ones((200, 2)), chunks=(100, 2))
    store.put_array("r", np.full((200, 2), 2.0), chunks=(100, 2))
    store.gc(grace=0)
    with pytest.raises(VersionGoneError, match="version 1 of array 'r' was removed"):
        store.get_array("r", version=1)
    with pytest.raises(KeyError):  # as before: a KeyError too
        store.get_array("r", version=1)


def test_a_new_version_leaves_the_old_versions_cache_alone(store, cache_dir):
    old = np.zeros((200, 2))
    store.put_array("n", old, chunks=(100, 2))
    store.get_array("n").compute(scheduler="threads")
    flush()
    files = {f: os.path.getmtime(f) for f in _files(cache_dir)}
    store.put_array("n", np.ones((200, 2)), chunks=(100, 2))
    assert {f: os.path.getmtime(f) for f in _files(cache_dir)} == files
    before = counts()
    np.testing.assert_array_equal(
        store.get_array("n", version=1).compute(scheduler="threads"), old
    )
    np.testing.assert_array_equal(
        store.get_array("n").compute(scheduler="threads"), 1.0
    )
    d = _delta(before)
    assert d["hits"] == 2 and d["misses"] == 2


def test_unwritable_cache_directory_turns_caching_off_with_one_warning(
    store, tmp_path, caplog
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    x = np.arange(40.0).reshape(20, 2)
    store.put_array("u", x, chunks=(10, 2))
    with (
        dask.config.set({"lepton.store.cache.directory": str(blocker / "blocks")}),
        caplog.at_level(logging.WARNING, "lepton_dask.store.cache"),
    ):
        for _ in range(3):
            np.testing.assert_array_equal(
                store.get_array("u").compute(scheduler="threads"), x
            )
    warnings = [r for r in caplog.records if "block cache turned off" in r.getMessage()]
    assert len(warnings) == 1


@contextlib.contextmanager
def _small_disk(path: str, size: str = "2m"):
    """A real full disk: a 2 MiB tmpfs (needs mount rights, as on CI)."""
    os.makedirs(path)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def test_full_cache_disk_turns_caching_off_and_reads_go_on(store, tmp_path, caplog):
    x = np.random.default_rng(1).random((4, 2**17))  # 4 blocks of 1 MiB
    store.put_array("full", x, chunks=(1, 2**17))
    with (
        _small_disk(str(tmp_path / "tiny")) as d,
        dask.config.set(
            {"lepton.store.cache.directory": d, "lepton.store.cache.max-bytes": "1GiB"}
        ),
        caplog.at_level(logging.WARNING, "lepton_dask.store.cache"),
    ):
        for _ in range(2):
            np.testing.assert_array_equal(
                store.get_array("full").compute(scheduler="sync"), x
            )
        flush()
        assert block_cache(CacheSettings.from_config()) is None  # off now
    msgs = [r.getMessage() for r in caplog.records if "turned off" in r.getMessage()]
    assert len(msgs) == 1 and "No space left" in msgs[0]


def _fill(directory: str, key: str, seed: int, n: int) -> None:
    block = np.full(n, float(seed))
    cache = BlockCache(directory, max_bytes=2**30)
    for _ in range(5):
        cache.put(
            key, block, crcs=[zlib.crc32(block.tobytes())], part_bytes=block.nbytes
        )
    cache.close()


def test_two_processes_filling_one_key_leave_one_whole_entry(tmp_path):
    d, n = str(tmp_path / "race"), 2**21  # 16 MiB values
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fill, args=(d, "same", s, n)) for s in (1, 2)]
    for p in procs:
        p.start()
    cache = BlockCache(d, max_bytes=2**30)
    seen = set()
    while any(p.is_alive() for p in procs):  # read while they write
        got = cache.get("same", (n,), "f8")
        if got is not None:
            assert got.min() == got.max()  # never torn: all one writer's bytes
            seen.add(got[0])
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = cache.get("same", (n,), "f8")
    assert got is not None and got[0] in (1.0, 2.0) and got.min() == got.max()
    assert cache.info()["entries"] == 1
    assert len(_files(d)) == 1  # the loser's file is gone too
    cache.close()


def test_memory_tier_serves_without_the_disk(tmp_path):
    cache = BlockCache(str(tmp_path / "m"), max_bytes=2**30, memory_bytes=2**20)
    block = np.arange(10.0)
    cache.put("k", block, crcs=[zlib.crc32(block.tobytes())], part_bytes=80)
    block[0] = 99  # the caller's copy; the cache kept its own
    cache._disk.clear()
    hit = cache.get("k", (10,), "f8")
    assert hit[0] == 0.0 and not hit.flags.writeable
    cache.close()


def test_cache_keys_hold_no_credentials_and_no_address(store, cache_dir):
    store.put_array("c", np.ones((10, 2)), chunks=(5, 2))
    store.get_array("c").compute(scheduler="threads")
    flush()
    keys = list(block_cache()._disk)
    assert len(keys) == 2
    host = store.uri.split("://")[1].split("/")[0]
    assert not any(host in k or store.database in k for k in keys)


def test_cli_cache_info_and_clear(store, cache_dir):
    import json
    import sys

    store.put_array("cli", np.ones((30, 2)), chunks=(10, 2))
    store.get_array("cli").compute(scheduler="threads")
    flush()
    cli = [sys.executable, "-m", "lepton_dask.cli", "store", "cache"]
    out = subprocess.run(
        [*cli, "info", "--json", "--directory", cache_dir],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["entries"] == 3 and info["bytes"] >= 3 * 160
    out = subprocess.run(
        [*cli, "clear", "--directory", cache_dir],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("removed 3 cached blocks")
    before = counts()
    store.get_array("cli").compute(scheduler="threads")
    assert _delta(before)["misses"] == 3  # read from the server again


def test_empty_blocks_round_trip_through_the_cache(tmp_path):
    """A block with no elements is a valid entry, not a damaged one."""
    cache = BlockCache(str(tmp_path / "e"), max_bytes=2**20)
    empty = np.empty((0, 3))
    before = counts()
    assert cache.put("e", empty, crcs=[zlib.crc32(b"")], part_bytes=100)
    flush()
    got = cache.get("e", (0, 3), "f8")
    assert got is not None and got.shape == (0, 3)
    assert _delta(before)["corrupt"] == 0
    cache.close()
