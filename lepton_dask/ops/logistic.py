"""Binary logistic regression with an L2 penalty, trained over Dask arrays."""

from __future__ import annotations

import warnings
from typing import Any

import dask.array as da
import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning

from lepton_dask.ops._backend import (
    aligned,
    array_module,
    column_reduce,
    sub_block_rows,
    to_numpy,
)
from lepton_dask.ops._blocks import RowBlocks
from lepton_dask.ops._estimator import finish, fitted_input, map_rows
from lepton_dask.ops._validation import as_dask_2d, as_dask_y, check_finite


def _nonfinite(b: Any, yb: Any) -> np.ndarray:
    b = aligned(b)
    xp = array_module(b)
    return to_numpy(column_reduce(~xp.isfinite(b), xp.sum)), int(
        to_numpy((~xp.isfinite(yb)).sum())
    )


def _softplus(z, xp):
    # log(1 + exp(z)) without overflow
    return xp.logaddexp(0.0, z)


def _sigmoid(z, xp):
    # 1 / (1 + exp(-z)) without overflow warnings
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


def _loss_grad(b: Any, yb: Any, w: np.ndarray, intercept: float) -> tuple:
    """Sum over a block of the half-binomial loss and its gradient.

    Fused over cache-sized sub-blocks: ``X_s w`` and ``X_s^T r`` read each
    sub-block from memory once.
    """
    b = aligned(b)
    xp = array_module(b)
    wx = xp.asarray(w)
    loss = 0.0
    g = xp.zeros(b.shape[1])
    gb = 0.0
    step = sub_block_rows(b)
    for s in range(0, b.shape[0], step):
        xs, ys = b[s : s + step], yb[s : s + step]
        z = xs @ wx + intercept
        loss += float(_softplus(z, xp).sum() - ys @ z)
        r = _sigmoid(z, xp) - ys
        g += xs.T @ r
        gb += float(r.sum())
    return loss, to_numpy(g), gb


def _hessian(b: Any, yb: Any, w: np.ndarray, intercept: float) -> tuple:
    """Block sums of loss, gradient and Hessian (features and intercept)."""
    b = aligned(b)
    xp = array_module(b)
    wx = xp.asarray(w)
    d = b.shape[1]
    loss, gb, hbb = 0.0, 0.0, 0.0
    g, hwb, hww = xp.zeros(d), xp.zeros(d), xp.zeros((d, d))
    step = sub_block_rows(b)
    abuf = xp.empty((min(step, b.shape[0]), d), dtype=b.dtype)  # reused (see moments)
    for s in range(0, b.shape[0], step):
        xs, ys = b[s : s + step], yb[s : s + step]
        z = xs @ wx + intercept
        p = _sigmoid(z, xp)
        r = p - ys
        sw = p * (1.0 - p)
        a = xp.multiply(xs, xp.sqrt(sw)[:, None], out=abuf[: xs.shape[0]])
        loss += float(_softplus(z, xp).sum() - ys @ z)
        g += xs.T @ r
        gb += float(r.sum())
        hww += a.T @ a
        hwb += xs.T @ sw
        hbb += float(sw.sum())
    return loss, to_numpy(g), gb, to_numpy(hww), to_numpy(hwb), hbb


def _decision_block(b: Any, coef: np.ndarray, intercept: float) -> Any:
    b = aligned(b)
    xp = array_module(b)
    return b @ xp.asarray(coef) + intercept


def _proba_block(b: Any, coef: np.ndarray, intercept: float) -> Any:
    b = aligned(b)
    xp = array_module(b)
    p = _sigmoid(b @ xp.asarray(coef) + intercept, xp)
    return xp.stack([1.0 - p, p], axis=1)


class LogisticRegression(ClassifierMixin, BaseEstimator):
    """Binary logistic regression with an L2 penalty, over Dask arrays.

    Minimizes scikit-learn's objective exactly::

        mean_i [log(1 + exp(z_i)) - y_i z_i] + ||w||^2 / (2 C n),   z = X w + b

    (the intercept is not penalized), so it converges to the same optimum as
    ``sklearn.linear_model.LogisticRegression``. ``solver="lbfgs"`` drives
    SciPy's L-BFGS-B with scikit-learn's settings; ``solver="newton"`` takes
    full Newton steps with a backtracking line search (fewer, heavier passes).
    Each loss/gradient evaluation is one parallel pass over row blocks kept in
    the workers' memory.

    NaN or infinite features raise ``ValueError`` naming the columns.

    Parameters
    ----------
    C : float
        Inverse regularization strength.
    fit_intercept : bool
    tol : float
        Stop when the largest gradient component is below ``tol``.
    max_iter : int
    solver : {"lbfgs", "newton"}
    verbose : int
        With ``verbose >= 1``, one line per iteration on stdout (objective and
        largest gradient component), like scikit-learn's ``verbose``.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    classes_ : ndarray of shape (2,)
    n_iter_ : ndarray of shape (1,)
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 3))
    >>> y = (X @ [2.0, -1.0, 0.0] + rng.normal(size=2000) > 0).astype(int)
    >>> clf = LogisticRegression().fit(X, y)
    >>> from sklearn.linear_model import LogisticRegression as SkLR
    >>> sk = SkLR().fit(X, y)
    >>> bool(np.allclose(clf.coef_, sk.coef_, atol=1e-3)), round(clf.score(X, y), 2)
    (True, 0.87)
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        fit_intercept: bool = True,
        tol: float = 1e-4,
        max_iter: int = 100,
        solver: str = "lbfgs",
        verbose: int = 0,
    ):
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.verbose = verbose

    def _validate_params_(self) -> None:
        if not (isinstance(self.C, int | float) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        if self.solver not in ("lbfgs", "newton"):
            raise ValueError(f"solver must be 'lbfgs' or 'newton', got {self.solver!r}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")

    def fit(self, X: Any, y: Any) -> LogisticRegression:
        """Fit on ``X`` (samples x features) and binary labels ``y``."""
        self._validate_params_()
        X, _ = as_dask_2d(X)
        y = as_dask_y(y, X)
        classes = np.unique(to_numpy(y.compute()) if isinstance(y, da.Array) else y)
        if classes.size != 2:
            raise ValueError(
                f"LogisticRegression is binary: y must hold exactly 2 classes, got "
                f"{classes.size} ({classes[:5]})"
            )
        y01 = (y == classes[1]).astype(X.dtype)
        rb = RowBlocks(X, y01)
        try:
            bad_x, _bad_y = rb.map_reduce(_nonfinite)
            check_finite(bad_x)
            n, d = X.shape
            reg = 1.0 / (self.C * n)
            w0 = np.zeros(d + 1)
            if self.solver == "lbfgs":
                w, n_iter = self._lbfgs(rb, w0, n, reg)
            else:
                w, n_iter = self._newton(rb, w0, n, reg)
        finally:
            rb.release()
        self.classes_ = classes
        self.coef_ = w[None, :d]
        self.intercept_ = np.array([w[d] if self.fit_intercept else 0.0])
        self.n_iter_ = np.array([n_iter])
        self.n_features_in_ = d
        return self

    def _objective(self, rb: RowBlocks, w: np.ndarray, n: int, reg: float):
        d = w.size - 1
        b = w[d] if self.fit_intercept else 0.0
        loss, gw, gb = rb.map_reduce(_loss_grad, w[:d], b)
        f = loss / n + 0.5 * reg * float(w[:d] @ w[:d])
        g = np.empty_like(w)
        g[:d] = gw / n + reg * w[:d]
        g[d] = gb / n if self.fit_intercept else 0.0
        return f, g

    def _report(self, it: int, f: float, g: np.ndarray) -> None:
        if self.verbose:
            print(
                f"{self.solver} iteration {it}: objective {f:.10g}, "
                f"max |gradient| {np.max(np.abs(g)):.3g} (tol {self.tol:g})",
                flush=True,
            )

    def _lbfgs(self, rb, w0, n, reg):
        last: dict[str, Any] = {}

        def objective(w):
            last["f"], last["g"] = self._objective(rb, w, n, reg)
            return last["f"], last["g"]

        def callback(intermediate_result):
            # (called after each iteration's line search: the last evaluation
            # is at the new iterate)
            last["it"] = last.get("it", 0) + 1
            self._report(last["it"], last["f"], last["g"])

        # scikit-learn's L-BFGS-B settings (sklearn/linear_model/_logistic.py)
        res = scipy.optimize.minimize(
            objective,
            w0,
            method="L-BFGS-B",
            jac=True,
            callback=callback if self.verbose else None,
            options={
                "maxiter": self.max_iter,
                "maxls": 50,
                "gtol": self.tol,
                "ftol": 64 * np.finfo(float).eps,
            },
        )
        if res.status == 1:
            warnings.warn(
                f"lbfgs did not converge in max_iter={self.max_iter} iterations; "
                "increase max_iter or scale the data",
                ConvergenceWarning,
                stacklevel=3,
            )
        return res.x, int(res.nit)

    def _newton(self, rb, w, n, reg):
        d = w.size - 1
        for it in range(1, self.max_iter + 1):
            b = w[d] if self.fit_intercept else 0.0
            loss, gw, gb, hww, hwb, hbb = rb.map_reduce(_hessian, w[:d], b)
            f = loss / n + 0.5 * reg * float(w[:d] @ w[:d])
            g = np.concatenate([gw / n + reg * w[:d], [gb / n]])
            H = np.empty((d + 1, d + 1))
            H[:d, :d] = hww / n + reg * np.eye(d)
            H[:d, d] = H[d, :d] = hwb / n
            H[d, d] = hbb / n
            if not self.fit_intercept:
                g[d] = 0.0
                H[d, :] = H[:, d] = 0.0
                H[d, d] = 1.0
            if it > 1:  # the iterate after it - 1 steps
                self._report(it - 1, f, g)
            if np.max(np.abs(g)) <= self.tol:
                return w, it - 1
            step = np.linalg.solve(H, g)
            t = 1.0
            while t > 1e-10:  # backtracking (Armijo)
                cand = w - t * step
                fc, _ = self._objective(rb, cand, n, reg)
                if fc <= f - 1e-4 * t * float(g @ step):
                    break
                t *= 0.5
            w = cand
        warnings.warn(
            f"newton did not converge in max_iter={self.max_iter} iterations",
            ConvergenceWarning,
            stacklevel=3,
        )
        return w, self.max_iter

    def decision_function(self, X: Any) -> Any:
        """Signed distance to the decision boundary (lazy for Dask input)."""
        X, was_dask = fitted_input(self, X)
        out = map_rows(
            X,
            _decision_block,
            self.coef_[0],
            float(self.intercept_[0]),
            drop_axis=1,
            dtype=X.dtype,
        )
        return finish(out, was_dask)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, columns ordered as ``classes_``."""
        X, was_dask = fitted_input(self, X)
        out = map_rows(
            X,
            _proba_block,
            self.coef_[0],
            float(self.intercept_[0]),
            chunks=(X.chunks[0], (2,)),
            dtype=X.dtype,
        )
        return finish(out, was_dask)

    def predict(self, X: Any) -> Any:
        """Predicted class labels."""
        scores = self.decision_function(X)
        classes = self.classes_
        if isinstance(scores, da.Array):
            return scores.map_blocks(
                lambda s: classes[(to_numpy(s) > 0).astype(int)], dtype=classes.dtype
            )
        return classes[(scores > 0).astype(int)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on ``X``, ``y``."""
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported")
        pred = self.predict(X)
        if isinstance(pred, da.Array):
            Xd, _ = as_dask_2d(X)
            yd = as_dask_y(y, Xd)
            return float((pred == yd).mean().compute())
        return float(np.mean(pred == np.asarray(y)))
