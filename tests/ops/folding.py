"""A check of the folded (GPU) column reductions at their real width, shared
by the numpy test (tests/ops/test_ops.py) and the device test (test_gpu.py)."""

from __future__ import annotations

import numpy as np

from lepton_dask.ops._backend import FOLD_WIDTH, column_reduce, to_numpy
from lepton_dask.ops.moments import _block_moments, _whole_block_moments


def tall_block(rows: int = 200_003, cols: int = 8) -> np.ndarray:
    """Rows that fold (several folds plus leftover rows), a large offset, one
    NaN and one infinity in their own columns."""
    x = np.random.default_rng(3).normal(size=(rows, cols)) * 10 + 1e4
    x[17, 2] = np.nan
    x[rows - 2, 5] = np.inf
    return x


def check_folded_reductions(xp, x: np.ndarray) -> None:
    """``column_reduce`` and the whole-block moments on ``xp`` blocks (numpy
    or cupy, folded) equal numpy's plain reductions and the CPU kernel."""
    n, d = x.shape
    r = FOLD_WIDTH // d
    assert n // r >= 2 and n % r, "the block must fold, with leftover rows"
    b = xp.asarray(x)
    for name in ("sum", "min", "max"):
        got = to_numpy(column_reduce(b, getattr(xp, name), fold=True))
        np.testing.assert_allclose(got, getattr(np, name)(x, axis=0), rtol=1e-12)
    counts = to_numpy(column_reduce(xp.isnan(b), xp.sum, fold=True))
    assert counts.tolist() == np.isnan(x).sum(axis=0).tolist()
    got = _whole_block_moments(b, xp, fold=True)
    want = _block_moments(x)
    assert got[0] == want[0] == n
    for g, w, name in zip(
        got[1:], want[1:], ["mean", "m2", "min", "max", "nan", "inf"], strict=True
    ):
        np.testing.assert_allclose(g, w, rtol=1e-9, err_msg=name)
    assert got[5].tolist() == [0, 0, 1, 0, 0, 0, 0, 0][:d]
    assert got[6].tolist() == [0, 0, 0, 0, 0, 1, 0, 0][:d]
