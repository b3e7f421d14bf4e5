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


def array_module(x: Any):
    """numpy, or cupy when ``x`` is a cupy array (without importing cupy otherwise).

    >>> array_module(np.ones(2)) is np
    True
    """
    if type(x).__module__.split(".", 1)[0] == "cupy":
        return sys.modules["cupy"]
    return np


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


def to_gpu(x: da.Array) -> da.Array:
    """Move a Dask array's blocks to the GPU (cupy), lazily.

    The conversion tasks ask for the worker resource named by
    ``lepton.ops.gpu-resource`` (default ``GPU``; null: no annotation), so on a
    mixed cluster CPU workers read and decode blocks and only GPU workers hold
    cupy blocks; everything computed from them runs there too.

    >>> x = to_gpu(da.ones((4, 2), chunks=2))  # doctest: +SKIP
    >>> type(x._meta).__module__  # doctest: +SKIP
    'cupy'
    """
    cupy = _cupy()
    if is_gpu_array(x):
        return x
    meta = cupy.empty((0,) * x.ndim, dtype=x.dtype)
    with dask.annotate(**_gpu_annotations()):
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
