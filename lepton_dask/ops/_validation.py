"""Input checks shared by the operations and estimators.

Estimators check in-memory input with scikit-learn's own ``validate_data``
(so its messages, feature names and ``n_features_in_`` come for free) and
Dask input with the same messages here, without computing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from lepton_dask.ops._backend import array_module, to_numpy


def _is_cupy(X: Any) -> bool:
    return type(X).__module__.split(".", 1)[0] == "cupy"


def check_numeric_dtype(dtype: np.dtype, name: str = "X") -> None:
    """``TypeError`` for strings and bytes; ``ValueError`` for complex numbers
    (scikit-learn's message)."""
    if dtype.kind in "USV":
        raise TypeError(
            f"{name} has dtype {dtype}; expected a numeric (bool, integer or "
            "float) array"
        )
    if dtype.kind == "c":
        raise ValueError("Complex data not supported")


def check_shape(shape: tuple, name: str = "X", min_samples: int = 1) -> None:
    """scikit-learn's messages for non-2-D and empty arrays, naming the shape.

    >>> check_shape((0, 3))
    Traceback (most recent call last):
    ...
    ValueError: Found array with 0 sample(s) (shape=(0, 3)) while a minimum of 1 is required.
    """
    if len(shape) != 2:
        raise ValueError(
            f"Expected 2D array, got {len(shape)}D array instead (shape={shape}). "
            f"Reshape your data either using {name}.reshape(-1, 1) if your data "
            f"has a single feature or {name}.reshape(1, -1) if it contains a single "
            "sample."
        )
    if shape[0] < min_samples:
        raise ValueError(
            f"Found array with {shape[0]} sample(s) (shape={shape}) while a "
            f"minimum of {min_samples} is required."
        )
    if shape[1] < 1:
        raise ValueError(
            f"Found array with {shape[1]} feature(s) (shape={shape}) while a "
            "minimum of 1 is required."
        )


def as_dask_2d(X: Any, name: str = "X", min_samples: int = 1) -> tuple[da.Array, bool]:
    """``X`` as a 2-D floating Dask array with one chunk along columns.

    Returns ``(array, was_dask)``. numpy input is wrapped (not copied) in row
    chunks of about 128 MiB. Raises ``TypeError`` for strings, ``ValueError``
    for complex numbers, anything that is not 2-D, and empty arrays.

    >>> a, was_dask = as_dask_2d(np.ones((3, 2), dtype=int))
    >>> a.dtype, a.chunks, was_dask
    (dtype('float64'), ((3,), (2,)), False)
    """
    was_dask = isinstance(X, da.Array)
    if not was_dask:
        if _is_cupy(X):
            X = da.from_array(X, chunks=(-1, -1), asarray=False)
            was_dask = True
        else:
            X = np.asarray(X)
    check_numeric_dtype(X.dtype, name)
    if X.dtype.kind not in "biuf":
        if was_dask:
            raise TypeError(
                f"{name} has dtype {X.dtype}; expected a numeric (bool, integer or "
                "float) array"
            )
        X = X.astype(np.float64)  # object arrays of numbers (TypeError otherwise)
    check_shape(X.shape, name, min_samples)
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


def validate_X(
    est: Any, X: Any, *, reset: bool, min_samples: int = 1
) -> tuple[da.Array, bool]:
    """``X`` checked for ``est`` and as a Dask array: ``(array, was_dask)``.

    In-memory input (numpy, lists, pandas, sparse) goes through scikit-learn's
    ``validate_data`` (its messages; ``feature_names_in_``); Dask or cupy input
    gets the same checks here, lazily. ``reset=True`` (fit) records
    ``n_features_in_``; ``reset=False`` checks it. NaN and infinity are left
    to the kernels, which name the columns.
    """
    if not isinstance(X, da.Array) and not _is_cupy(X):
        from sklearn.utils.validation import validate_data

        dtype = getattr(X, "dtype", None)
        if isinstance(dtype, np.dtype):
            check_numeric_dtype(dtype)
        X = validate_data(
            est,
            X,
            reset=reset,
            accept_sparse=False,
            dtype=[np.float64, np.float32],
            ensure_all_finite=False,
            ensure_min_samples=min_samples,
        )
        return as_dask_2d(X)
    X, was_dask = as_dask_2d(X, min_samples=min_samples)
    if reset:
        est.n_features_in_ = X.shape[1]
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    else:
        check_n_features(est, X)
    return X, was_dask


def as_dask_y(y: Any, X: da.Array, name: str = "y") -> da.Array:
    """``y`` as a 1-D Dask array with exactly ``X``'s row chunks.

    A numpy ``y`` is split like ``X`` (a column vector warns, as in
    scikit-learn); a Dask ``y`` must match its length and chunks
    (``ValueError`` otherwise).

    >>> X, _ = as_dask_2d(np.ones((4, 2)))
    >>> as_dask_y(np.arange(4), X).chunks
    ((4,),)
    """
    if y is None:
        raise ValueError(
            "This estimator requires y to be passed, but the target y is None."
        )
    was_dask = isinstance(y, da.Array)
    if not was_dask:
        from sklearn.utils.validation import column_or_1d

        y = column_or_1d(y, warn=True)
    elif y.ndim == 2 and y.shape[1] == 1:
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


def check_n_features(est: Any, X: Any) -> None:
    """``ValueError`` (scikit-learn's message) when ``X`` has a different
    number of features than at fit."""
    n_expected = est.n_features_in_
    if X.shape[1] != n_expected:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
            f"{n_expected} features as input."
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


def check_block_output(b: Any, out: Any) -> Any:
    """``out`` (a predict/transform kernel's result on block ``b``), after a
    check that it is finite; if not, ``ValueError`` naming the columns of
    ``b`` that hold NaN or infinity. NaN and inf in a row always reach its
    output, so a finite output means a finite block: the full check of the
    input runs only then (an overflow on finite input passes)."""
    xp = array_module(out)
    if not bool(xp.isfinite(out).all()):
        check_finite(to_numpy((~array_module(b).isfinite(b)).sum(axis=0)))
    return out
