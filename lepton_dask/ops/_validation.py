"""Input checks shared by the operations and estimators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np


def as_dask_2d(X: Any, name: str = "X") -> tuple[da.Array, bool]:
    """``X`` as a 2-D floating Dask array with one chunk along columns.

    Returns ``(array, was_dask)``. numpy input is wrapped (not copied) in row
    chunks of about 128 MiB. Raises ``TypeError`` for non-numeric dtypes and
    ``ValueError`` for anything that is not 2-D.

    >>> a, was_dask = as_dask_2d(np.ones((3, 2), dtype=int))
    >>> a.dtype, a.chunks, was_dask
    (dtype('float64'), ((3,), (2,)), False)
    """
    was_dask = isinstance(X, da.Array)
    if not was_dask:
        if type(X).__module__.split(".", 1)[0] == "cupy":
            X = da.from_array(X, chunks=(-1, -1), asarray=False)
            was_dask = True
        else:
            X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {X.dtype}; expected a numeric (bool, integer or "
            "float) array"
        )
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (samples x features), got shape {X.shape}; "
            "reshape a single feature with X.reshape(-1, 1)"
        )
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    if not was_dask:
        X = da.from_array(X, chunks=("auto", -1))
    elif X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes()"
        )
    return X, was_dask


def as_dask_y(y: Any, X: da.Array, name: str = "y") -> da.Array:
    """``y`` as a 1-D Dask array with exactly ``X``'s row chunks.

    A numpy ``y`` is split like ``X``; a Dask ``y`` must match its length and
    chunks (``ValueError`` otherwise).

    >>> X, _ = as_dask_2d(np.ones((4, 2)))
    >>> as_dask_y(np.arange(4), X).chunks
    ((4,),)
    """
    was_dask = isinstance(y, da.Array)
    if not was_dask:
        y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{name} has {y.shape[0]} rows, X has {X.shape[0]}")
    if not was_dask:
        return da.from_array(y, chunks=(X.chunks[0],))
    if y.chunks[0] != X.chunks[0]:
        raise ValueError(
            f"{name}'s chunks {y.chunks[0]} do not match X's row chunks "
            f"{X.chunks[0]}; rechunk one of them (e.g. y.rechunk(X.chunks[0]))"
        )
    return y


def check_n_features(n_expected: int, X: da.Array) -> None:
    """``ValueError`` when ``X`` has a different number of features than at fit."""
    if X.shape[1] != n_expected:
        raise ValueError(
            f"X has {X.shape[1]} features, but this estimator was fitted with "
            f"{n_expected} features"
        )


def check_finite(
    nonfinite: np.ndarray, feature_names: Sequence[str] | None = None, what="X"
):
    """Raise ``ValueError`` naming the columns that hold NaN or infinity.

    >>> check_finite(np.array([0, 2, 0]))
    Traceback (most recent call last):
    ...
    ValueError: X holds NaN or infinite values in column 1 (2 values); lepton_dask estimators do not impute: drop or fill them first (e.g. X = da.nan_to_num(X))
    """
    bad = np.flatnonzero(np.asarray(nonfinite))
    if bad.size == 0:
        return
    names = [
        (repr(feature_names[j]) if feature_names is not None else str(j))
        + f" ({int(nonfinite[j])} values)"
        for j in bad[:5]
    ]
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    raise ValueError(
        f"{what} holds NaN or infinite values in column{'s' if bad.size > 1 else ''} "
        f"{', '.join(names)}{more}; lepton_dask estimators do not impute: drop or "
        "fill them first (e.g. X = da.nan_to_num(X))"
    )
