"""Logistic regression with an L2 penalty (binomial or multinomial), over Dask arrays."""

from __future__ import annotations

import warnings
from typing import Any

import dask
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
from lepton_dask.ops._estimator import finish, fitted_input
from lepton_dask.ops._validation import (
    as_dask_y,
    check_block_output,
    check_finite,
    validate_X,
)


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


def _softmax_loss_grad(b: Any, yb: Any, W: np.ndarray, intercept: np.ndarray):
    """Sum over a block of the multinomial loss ``logsumexp(z) - z_y`` and its
    gradient (``W``: classes x features, ``yb``: class codes), fused over
    cache-sized sub-blocks like :func:`_loss_grad`."""
    b = aligned(b)
    xp = array_module(b)
    Wt = xp.ascontiguousarray(xp.asarray(W).T)
    c = xp.asarray(intercept)
    k, d = W.shape
    loss = 0.0
    g = xp.zeros((k, d))
    gb = xp.zeros(k)
    step = sub_block_rows(b)
    for s in range(0, b.shape[0], step):
        xs, ys = b[s : s + step], yb[s : s + step].astype(np.int64)
        z = xs @ Wt
        z += c
        zmax = z.max(axis=1, keepdims=True)
        e = xp.exp(z - zmax)
        tot = e.sum(axis=1, keepdims=True)
        zy = xp.take_along_axis(z, ys[:, None], axis=1)
        loss += float((xp.log(tot) + zmax - zy).sum())
        e /= tot  # probabilities; minus the one-hot labels: the gradient in z
        e[xp.arange(xs.shape[0]), ys] -= 1.0
        g += e.T @ xs
        gb += e.sum(axis=0)
    return loss, to_numpy(g), to_numpy(gb)


def _encode(yb: Any, classes: np.ndarray) -> np.ndarray:
    """Class codes (index in ``classes``) of a block of labels, as floats."""
    return np.searchsorted(classes, to_numpy(yb)).astype(np.float64)


def _decision_block(b: Any, coef: np.ndarray, intercept: np.ndarray) -> Any:
    """Scores ``X W^T + c``: 1-D for a binary model (one row of ``coef``)."""
    b = aligned(b)
    xp = array_module(b)
    z = b @ xp.asarray(coef).T + xp.asarray(intercept)
    return check_block_output(b, z[:, 0] if coef.shape[0] == 1 else z)


def _proba_block(b: Any, coef: np.ndarray, intercept: np.ndarray) -> Any:
    z = _decision_block(b, coef, intercept)
    xp = array_module(z)
    if z.ndim == 1:
        p = _sigmoid(z, xp)
        return xp.stack([1.0 - p, p], axis=1)
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _predict_block(b: Any, coef: np.ndarray, intercept: np.ndarray, classes) -> Any:
    z = to_numpy(_decision_block(b, coef, intercept))
    return classes[(z > 0).astype(int) if z.ndim == 1 else z.argmax(axis=1)]


def _classes(y: Any) -> np.ndarray:
    """The sorted distinct labels, checked to be classes (scikit-learn's
    ``Unknown label type`` for a continuous target)."""
    from sklearn.utils.multiclass import check_classification_targets

    if isinstance(y, da.Array):
        classes = np.unique(to_numpy(da.unique(y).compute()))
    else:
        classes = np.unique(y)
    check_classification_targets(classes)
    if classes.size < 2:
        raise ValueError(
            "This solver needs samples of at least 2 classes in the data, but the "
            f"data contains only one class: {classes[0]!r}"
        )
    return classes


class LogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression with an L2 penalty, over Dask arrays.

    Minimizes scikit-learn's objective exactly: for two classes the binomial
    loss::

        mean_i [log(1 + exp(z_i)) - y_i z_i] + ||w||^2 / (2 C n),   z = X w + b

    and for more the multinomial (softmax) loss, one row of ``W`` per class::

        mean_i [logsumexp(z_i) - z_i,y_i] + ||W||_F^2 / (2 C n),   z = X W^T + b

    (intercepts are not penalized), with the same parameter layout as
    scikit-learn's lbfgs path, so it converges to the same optimum as
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
        ``"newton"`` is for two classes (its Hessian grows with the square of
        the number of classes); ``"lbfgs"`` takes any number.
    verbose : int
        With ``verbose >= 1``, one line per iteration on stdout (objective and
        largest gradient component), like scikit-learn's ``verbose``.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
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

    def _check_hyperparameters(self) -> None:
        """Refuse a bad ``C``, ``solver`` or ``max_iter`` (checked at fit, as
        scikit-learn checks constructor arguments)."""
        if not (isinstance(self.C, int | float) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        if self.solver not in ("lbfgs", "newton"):
            raise ValueError(f"solver must be 'lbfgs' or 'newton', got {self.solver!r}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")

    def fit(self, X: Any, y: Any) -> LogisticRegression:
        """Fit on ``X`` (samples x features) and class labels ``y`` (any
        number of classes; strings or numbers)."""
        self._check_hyperparameters()
        X, _ = validate_X(self, X, reset=True)
        y = as_dask_y(y, X)
        classes = _classes(y)
        if classes.size > 2 and self.solver == "newton":
            raise ValueError(
                f"solver='newton' fits two classes, y has {classes.size}; use "
                "solver='lbfgs' (multinomial)"
            )
        codes = y.map_blocks(_encode, classes, dtype=np.float64)
        n, d = X.shape
        reg = 1.0 / (self.C * n)
        rb = RowBlocks(X, codes.astype(X.dtype))
        try:
            bad_x, _bad_y = rb.map_reduce(_nonfinite)
            check_finite(bad_x)
            if classes.size > 2:
                w, n_iter = self._lbfgs(rb, n, reg, classes.size, d)
                W = w.reshape((classes.size, -1), order="F")
                coef, intercept = W[:, :d], W[:, d] if self.fit_intercept else None
            else:
                w0 = np.zeros(d + 1)
                if self.solver == "lbfgs":
                    w, n_iter = self._lbfgs(rb, n, reg, 1, d)
                else:
                    w, n_iter = self._newton(rb, w0, n, reg)
                coef, intercept = w[None, :d], w[d:]
        finally:
            rb.release()
        self.classes_ = classes
        self.coef_ = np.ascontiguousarray(coef)
        k = coef.shape[0]
        self.intercept_ = (
            np.array(intercept, dtype=float) if self.fit_intercept else np.zeros(k)
        )
        self.n_iter_ = np.array([n_iter])
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

    def _softmax_objective(self, rb: RowBlocks, w, n: int, reg: float, k: int):
        """Multinomial objective and gradient; ``w``: scikit-learn's layout,
        the (classes x (features + intercept)) matrix raveled in F order."""
        W = w.reshape((k, -1), order="F")
        d = W.shape[1] - int(self.fit_intercept)
        coef = W[:, :d]
        c = W[:, d] if self.fit_intercept else np.zeros(k)
        loss, gw, gb = rb.map_reduce(_softmax_loss_grad, coef, c)
        f = loss / n + 0.5 * reg * float((coef * coef).sum())
        G = np.empty_like(W)
        G[:, :d] = gw / n + reg * coef
        if self.fit_intercept:
            G[:, d] = gb / n
        return f, G.ravel(order="F")

    def _lbfgs(self, rb, n, reg, k, d):
        """L-BFGS-B with scikit-learn's settings; ``k``: 1 for the binomial
        loss (``w``: coefficients then intercept), else the number of classes
        (multinomial)."""
        last: dict[str, Any] = {}
        if k == 1:
            w0 = np.zeros(d + 1)
        else:
            w0 = np.zeros(k * (d + int(self.fit_intercept)))

        def objective(w):
            if k == 1:
                last["f"], last["g"] = self._objective(rb, w, n, reg)
            else:
                last["f"], last["g"] = self._softmax_objective(rb, w, n, reg, k)
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
        """Scores (lazy for Dask input): the signed distance to the decision
        boundary for two classes, one column per class for more."""
        X, was_dask = fitted_input(self, X)
        k = self.coef_.shape[0]
        kw = {"drop_axis": 1} if k == 1 else {"chunks": (X.chunks[0], (k,))}
        out = X.map_blocks(
            _decision_block, self.coef_, self.intercept_, dtype=X.dtype, **kw
        )
        return finish(out, was_dask)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, columns ordered as ``classes_``."""
        X, was_dask = fitted_input(self, X)
        out = X.map_blocks(
            _proba_block,
            self.coef_,
            self.intercept_,
            chunks=(X.chunks[0], (self.classes_.size,)),
            dtype=X.dtype,
        )
        return finish(out, was_dask)

    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba`."""
        p = self.predict_proba(X)
        return da.log(p) if isinstance(p, da.Array) else np.log(p)

    def predict(self, X: Any) -> Any:
        """Predicted class labels."""
        X, was_dask = fitted_input(self, X)
        out = X.map_blocks(
            _predict_block,
            self.coef_,
            self.intercept_,
            self.classes_,
            drop_axis=1,
            dtype=self.classes_.dtype,
            meta=np.empty(0, dtype=self.classes_.dtype),
        )
        return finish(out, was_dask)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on ``X``, ``y`` (weighted by ``sample_weight``)."""
        pred = self.predict(X)
        if not isinstance(pred, da.Array):
            from sklearn.metrics import accuracy_score

            return float(accuracy_score(y, pred, sample_weight=sample_weight))
        yd = as_dask_y(y, pred[:, None])
        hit = (pred == yd).astype(float)
        if sample_weight is None:
            return float(hit.mean().compute())
        w = as_dask_y(sample_weight, pred[:, None], "sample_weight")
        num, den = dask.compute((hit * w).sum(), w.sum())
        return float(num / den)
