"""numpy/cupy dispatch: one code path, the array namespace of each block.

cupy is never imported at module import; a block that is a cupy array makes
its computation run on the GPU. Tasks on cupy blocks are annotated with the
worker resource ``GPU`` (``lepton.ops.gpu-resource``) when asked for.
"""

from __future__ import annotations

import sys
from typing import Any

import dask
import dask.array as da
import numpy as np

from lepton_dask._client import current_client


def array_module(x: Any):
    """numpy, or cupy when ``x`` is a cupy array (without importing cupy otherwise).

    >>> array_module(np.ones(2)) is np
    True
    """
    if type(x).__module__.split(".", 1)[0] == "cupy":
        return sys.modules["cupy"]
    return np


def aligned(x: Any) -> Any:
    """``x`` itself, or an aligned contiguous copy if it is a misaligned numpy array.

    numpy arrays deserialized by distributed after a transfer (worker to
    worker, scatter, gather) can start at an odd address (seen: ``addr % 64 ==
    33``, not even 8-byte aligned); numpy then cannot hand them to BLAS and
    its matrix products run about 10x slower. Block kernels call this first.

    >>> a = np.ones(3)
    >>> aligned(a) is a
    True
    """
    if isinstance(x, np.ndarray) and not (
        x.flags.aligned and (x.flags.c_contiguous or x.flags.f_contiguous)
    ):
        return np.require(x, requirements=["A", "C"])
    return x


def sub_block_rows(b: Any) -> int:
    """Rows per sub-block for kernels that make several passes over a block:
    cache-sized on CPU (``lepton.ops.sub-block-rows``), the whole block on GPU.

    >>> sub_block_rows(np.ones((10, 2))) == dask.config.get("lepton.ops.sub-block-rows")
    True
    """
    if array_module(b) is not np:
        return max(1, b.shape[0])
    return int(dask.config.get("lepton.ops.sub-block-rows"))


#: Outputs of the first stage of a folded column reduction (see column_reduce).
FOLD_WIDTH = 32_768


def column_reduce(b: Any, op, *, fold: bool | None = None) -> Any:
    """``op(b, axis=0)`` for a 2-D block (``op``: ``xp.sum``, ``xp.min``, ``xp.max``...),
    in two stages on the GPU.

    A column reduction of a tall C-ordered block has only ``d`` outputs, and
    cupy's reduction kernel gives each group of 32 outputs one thread block:
    for 64 columns, two blocks of threads on a GPU with 132 multiprocessors
    (measured on an H100: 0.55 s for the moments of a 3.75M x 64 block). So
    the rows are first folded, as a view, into wide rows of ``r`` original
    rows (``r * d`` ~ :data:`FOLD_WIDTH` values), which are reduced with
    enough outputs to fill the device and coalesced reads; then the ``(r, d)``
    partials and the leftover rows are reduced. ``op`` must be associative
    and commutative (sums of integers and booleans, min, max; float sums
    change only the order of additions).

    ``fold``: None folds cupy blocks only (numpy's own column reduction is
    already one streaming pass); True or False forces it.

    >>> b = np.arange(20.0).reshape(10, 2)
    >>> column_reduce(b, np.sum, fold=True).tolist()
    [90.0, 100.0]
    """
    if fold is None:
        fold = array_module(b) is not np
    n, d = b.shape
    r = FOLD_WIDTH // d if d else 0
    m = n // r if r > 1 else 0
    if not fold or m < 2 or not b.flags.c_contiguous:
        return op(b, axis=0)
    head = op(b[: m * r].reshape(m, r * d), axis=0).reshape(r, d)
    if m * r < n:
        head = array_module(b).concatenate([head, b[m * r :]])
    return op(head, axis=0)


def to_numpy(x: Any) -> np.ndarray:
    """A host (numpy) copy of ``x``; numpy input is returned as is.

    >>> to_numpy(np.arange(3))
    array([0, 1, 2])
    """
    if type(x).__module__.split(".", 1)[0] == "cupy":
        return x.get()
    return np.asarray(x)


def is_gpu_array(x: da.Array) -> bool:
    """Whether a Dask array's blocks are cupy arrays (from its ``_meta``).

    >>> is_gpu_array(da.ones(3))
    False
    """
    return type(x._meta).__module__.split(".", 1)[0] == "cupy"


def gpu_available() -> bool:
    """Whether cupy imports and sees at least one CUDA device.

    >>> isinstance(gpu_available(), bool)
    True
    """
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except (ImportError, RuntimeError, OSError):  # no cupy, no driver, no device
        return False


def _cupy():
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError(
            "GPU arrays need cupy: pip install 'lepton-dask[gpu]' (cupy-cuda13x) "
            "or the cupy build for your CUDA version"
        ) from e
    return cupy


def _gpu_annotations() -> dict[str, Any]:
    resource = dask.config.get("lepton.ops.gpu-resource")
    return {"resources": {resource: 1}} if resource else {}


def persist_on(x: Any, resources: dict[str, float] | None, client: Any = None) -> Any:
    """Persist ``x`` on the workers that advertise ``resources``.

    dask applies resource restrictions given when a graph is *submitted*;
    restrictions attached while it is built are silently ignored (dask/dask#10937).
    So placement is a persist step: on a mixed cluster, CPU workers read and
    decode, then each block moves once to a GPU worker::

        X = persist_on(store.get_array("features"), {"CPU": 1})
        Xg = persist_on(to_gpu(X), {"GPU": 1})
        ops.gram(Xg).compute()      # runs where the blocks are: the GPU workers

    Without a distributed client this is ``x.persist()``.

    >>> persist_on(da.ones(3), None).compute()
    array([1., 1., 1.])
    """
    if client is None:
        client = current_client()
    if client is None:
        return x.persist()
    if not resources:
        return client.persist(x)
    with dask.annotate(resources=dict(resources)):
        return client.persist(x)


def to_gpu(x: da.Array) -> da.Array:
    """Move a Dask array's blocks to the GPU (cupy), lazily.

    Lazy: where the conversion runs is decided when the graph is submitted.
    Use :func:`persist_on` with ``{"GPU": 1}`` (``lepton.ops.gpu-resource``)
    to place the cupy blocks on GPU workers; operations on them then run
    there (where their data is), and :class:`RowBlocks`-based estimators ask
    for that resource explicitly.

    >>> x = da.ones((4, 2), chunks=2)
    >>> y = to_gpu(x) if gpu_available() else x  # runs on the GPU when there is one
    >>> float(y.sum().compute())
    8.0
    """
    cupy = _cupy()
    if is_gpu_array(x):
        return x
    meta = cupy.empty((0,) * x.ndim, dtype=x.dtype)
    return x.map_blocks(cupy.asarray, dtype=x.dtype, meta=meta)


def to_cpu(x: da.Array) -> da.Array:
    """Move a Dask array's blocks back to host memory (numpy), lazily.

    >>> to_cpu(da.ones(3)).compute()
    array([1., 1., 1.])
    """
    if not is_gpu_array(x):
        return x
    meta = np.empty((0,) * x.ndim, dtype=x.dtype)
    return x.map_blocks(to_numpy, dtype=x.dtype, meta=meta)
