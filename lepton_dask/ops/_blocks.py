"""Row blocks that stay on the workers, and map-reduce over them.

Iterative algorithms (L-BFGS, Newton, Lloyd) make many passes over the same
data. Building a Dask graph per pass costs more than the pass itself on small
problems, so :class:`RowBlocks` computes the row blocks once (on the cluster,
as futures; or in this process without a distributed client) and each pass is
one ``client.map`` of a block function plus a tree reduction on the cluster:
only the small reduced result travels to the client.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from lepton_dask._client import current_client
from lepton_dask.ops._backend import _gpu_annotations, aligned, is_gpu_array, to_numpy


def _add(*parts: Any) -> Any:
    """Elementwise sum of results (arrays, scalars, or tuples of them)."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(_add(*[p[i] for p in parts]) for i in range(len(first)))
    total = first
    for p in parts[1:]:
        total = total + p
    return total


def _host(result: Any) -> Any:
    if isinstance(result, tuple):
        return tuple(_host(r) for r in result)
    if hasattr(result, "shape"):
        return to_numpy(result)
    return result


def _apply(fn: Callable, blocks: Sequence[Any], *args: Any) -> Any:
    return fn(*map(aligned, blocks), *args)


def _run_group(fn: Callable, blocks: list, args: tuple, merge: Callable) -> Any:
    """Apply ``fn`` to a worker's local blocks and merge on the worker."""
    return _host(merge(*[fn(*map(aligned, b), *args) for b in blocks]))


class RowBlocks:
    """The row blocks of ``X`` (and ``y``), resident where they are computed.

    Parameters
    ----------
    X : dask.array.Array
        2-D; rechunked to one chunk along columns if it is not already.
    y : dask.array.Array, optional
        1-D, same row chunks as ``X``.

    Examples
    --------
    >>> X = da.ones((10, 3), chunks=(4, 3))
    >>> rb = RowBlocks(X)
    >>> rb.map_reduce(lambda xb: xb.sum(axis=0))
    array([10., 10., 10.])
    """

    split_every = 8

    def __init__(self, X: da.Array, y: da.Array | None = None):
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array, got {X.ndim}-D")
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        self.n_samples, self.n_features = X.shape
        self.gpu = is_gpu_array(X)
        self.row_chunks = X.chunks[0]
        parts = [X.to_delayed().ravel()]
        if y is not None:
            parts.append(y.to_delayed().ravel())
        self.client = current_client()
        self._annotations = _gpu_annotations() if self.gpu else {}
        if self.client is not None:
            from distributed import wait

            futures = self.client.compute(
                [b for p in parts for b in p], **self._annotations
            )
            n = len(parts[0])
            self.blocks = [
                tuple(futures[i + k * n] for k in range(len(parts))) for i in range(n)
            ]
            wait(futures)
            self._group_by_worker()
        else:
            computed = dask.compute(*[b for p in parts for b in p])
            n = len(parts[0])
            self.blocks = [
                tuple(computed[i + k * n] for k in range(len(parts))) for i in range(n)
            ]

    def _group_by_worker(self) -> None:
        """Pin each block (``X`` and ``y`` parts) to the worker holding its
        ``X`` part, as aligned copies made there, and group blocks by worker:
        one task per worker and pass, so the per-task overhead does not grow
        with the number of blocks, and no pass transfers data."""
        from distributed import wait

        client = self.client
        who = client.who_has([b[0] for b in self.blocks])
        res = self._annotations.get("resources")
        if self.gpu:  # cupy blocks are aligned: group them where they are
            groups: dict[str, list[tuple]] = {}
            for b in self.blocks:
                w = sorted(who.get(b[0].key, ()))[:1]
                groups.setdefault(w[0] if w else "", []).append(b)
            self._groups = list(groups.items())
            return
        pinned, holders = [], []
        for b in self.blocks:
            w = sorted(who.get(b[0].key, ()))[:1]
            holders.append(w[0] if w else "")
            pinned.append(
                tuple(
                    client.submit(
                        aligned,
                        f,
                        workers=w or None,
                        allow_other_workers=True,
                        pure=False,
                        resources=res,
                    )
                    for f in b
                )
            )
        wait([f for b in pinned for f in b])
        old, self.blocks = self.blocks, pinned
        for b in old:
            for f in b:
                f.release()
        groups = {}
        for w, b in zip(holders, self.blocks, strict=False):
            groups.setdefault(w, []).append(b)
        self._groups = list(groups.items())

    def __len__(self) -> int:
        return len(self.blocks)

    def map(self, fn: Callable, *args: Any) -> list[Any]:
        """``fn(*block, *args)`` for every block: futures (cluster) or values."""
        if self.client is None:
            workers = min(len(self.blocks), os.cpu_count() or 1)
            with concurrent.futures.ThreadPoolExecutor(workers) as ex:
                return list(ex.map(lambda b: fn(*b, *args), self.blocks))
        n = len(self.blocks)
        return self.client.map(
            _apply,
            [fn] * n,
            self.blocks,
            *[[a] * n for a in args],
            pure=False,
            resources=self._annotations.get("resources"),
        )

    def reduce(self, parts: list[Any], merge: Callable = _add) -> Any:
        """Merge per-block results in a tree (on the cluster) and bring the
        result to the host."""
        if self.client is None:
            return _host(merge(*parts))
        res = self._annotations.get("resources")
        level = parts
        while len(level) > 1:
            level = [
                self.client.submit(
                    merge, *level[i : i + self.split_every], pure=False, resources=res
                )
                for i in range(0, len(level), self.split_every)
            ]
        return _host(level[0].result())

    def gather(self, parts: list[Any]) -> list[Any]:
        """Bring per-block results to the host, in block order."""
        if self.client is None:
            return [_host(p) for p in parts]
        return [_host(p) for p in self.client.gather(parts)]

    def map_reduce(self, fn: Callable, *args: Any, merge: Callable = _add) -> Any:
        """``merge(fn(*block, *args) for block in blocks)`` on the host.

        ``fn`` receives a block's arrays (``X_b`` or ``X_b, y_b``) and ``args``
        and returns an array, a scalar or a tuple of them; by default results
        are summed elementwise. On a cluster each worker merges the results of
        the blocks it holds in one task; those partial results are merged on
        the client when there are few, else in a tree on the cluster.
        """
        if self.client is None:
            return self.reduce(self.map(fn, *args), merge)
        res = self._annotations.get("resources")
        parts = [
            self.client.submit(
                _run_group,
                fn,
                blocks,
                args,
                merge,
                workers=[w] if w else None,
                allow_other_workers=True,
                pure=False,
                resources=res,
            )
            for w, blocks in self._groups
        ]
        if len(parts) <= 4 * self.split_every:
            return _host(merge(*self.client.gather(parts)))
        return self.reduce(parts, merge)

    def map_blocks(
        self, fn: Callable, *args: Any, dtype: Any, ncols: int | None
    ) -> da.Array:
        """A Dask array of ``fn(*block, *args)`` per block (rows kept)."""
        if self.client is None:
            out = [fn(*b, *args) for b in self.blocks]
            return da.concatenate([da.from_array(o, chunks=o.shape) for o in out])
        res = self._annotations.get("resources")
        futs = self.client.map(
            _apply,
            [fn] * len(self.blocks),
            self.blocks,
            *[[a] * len(self.blocks) for a in args],
            pure=False,
            resources=res,
        )
        shape0 = (0,) * (1 if ncols is None else 2)
        if self.gpu:
            import cupy

            meta = cupy.empty(shape0, dtype=dtype)
        else:
            meta = np.empty(shape0, dtype=dtype)
        arrays = [
            da.from_delayed(
                f, shape=(n,) if ncols is None else (n, ncols), dtype=dtype, meta=meta
            )
            for f, n in zip(futs, self.row_chunks, strict=False)
        ]
        return da.concatenate(arrays)

    def release(self) -> None:
        """Forget the blocks (the cluster frees them when nobody else holds them)."""
        if self.client is not None:
            for b in self.blocks:
                for f in b:
                    f.release()
        self.blocks = []
