"""LinearRegression, Ridge and multinomial LogisticRegression against scikit-learn."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import sklearn.linear_model

import lepton_dask
from lepton_dask import ops

pytestmark = pytest.mark.timeout(180)


def _regression(n=3000, d=6, t=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, size=d) + rng.normal(size=d)
    w = rng.normal(size=(d,) if t is None else (d, t))
    y = x @ w + 2.0 + rng.normal(size=(n,) if t is None else (n, t))
    return x, y, rng.uniform(0.1, 3.0, size=n)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("targets", [None, 3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("model", ["LinearRegression", "Ridge"])
def test_linear_models_equal_sklearn(model, fit_intercept, targets, weighted):
    """Coefficients to 1e-9 relative on well-conditioned data (documented:
    the normal equations square cond(X)), for Dask and numpy input."""
    x, y, w = _regression(t=targets)
    kw = {"alpha": 3.0} if model == "Ridge" else {}

    def make():
        return getattr(ops, model)(fit_intercept=fit_intercept, **kw)

    ours = make()
    sk = getattr(sklearn.linear_model, model)(fit_intercept=fit_intercept, **kw)
    sw = w if weighted else None
    sk.fit(x, y, sample_weight=sw)
    X = da.from_array(x, chunks=(700, 6))
    Y = da.from_array(y, chunks=(700,) if targets is None else (700, targets))
    W = da.from_array(w, chunks=700) if weighted else None
    ours.fit(X, Y, sample_weight=W)
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=1e-9, atol=1e-12)
    assert np.shape(ours.coef_) == np.shape(sk.coef_)
    assert np.shape(ours.intercept_) == np.shape(sk.intercept_)
    pred = ours.predict(X)
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), sk.predict(x), rtol=1e-9, atol=1e-9)
    assert ours.score(X, Y, sample_weight=W) == pytest.approx(
        sk.score(x, y, sample_weight=sw), abs=1e-12
    )
    numpy_fit = make().fit(x, y, sample_weight=sw)
    np.testing.assert_allclose(numpy_fit.coef_, sk.coef_, rtol=1e-9, atol=1e-12)
    assert numpy_fit.score(x, y, sample_weight=sw) == pytest.approx(
        sk.score(x, y, sample_weight=sw), abs=1e-12
    )


def test_rank_deficient_x_gives_the_minimum_norm_solution_not_nan():
    x, y, _ = _regression(n=500, d=3)
    xd = np.column_stack([x, x[:, 0], 2.0 * x[:, 1], np.full(500, 4.0)])
    sk = sklearn.linear_model.LinearRegression().fit(xd, y)
    ours = ops.LinearRegression().fit(da.from_array(xd, chunks=(100, 6)), y)
    assert np.isfinite(ours.coef_).all()
    np.testing.assert_allclose(ours.coef_, sk.coef_, atol=1e-8)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, atol=1e-8)
    assert ours.rank_ == 3
    # alpha = 0 on a singular Gram: the same least-squares answer
    r0 = ops.Ridge(alpha=0.0).fit(xd, y)
    np.testing.assert_allclose(r0.coef_, sk.coef_, atol=1e-8)


def test_ill_conditioned_x_predicts_like_sklearn():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(2000, 1))
    x = np.column_stack(
        [base, base + 1e-6 * rng.normal(size=(2000, 1)), rng.normal(size=2000)]
    )
    y = x @ [1.0, 2.0, -1.0] + 0.1 * rng.normal(size=2000)
    sk = sklearn.linear_model.LinearRegression().fit(x, y)
    ours = ops.LinearRegression().fit(x, y)
    assert np.isfinite(ours.coef_).all()
    np.testing.assert_allclose(ours.predict(x), sk.predict(x), atol=1e-6)
    assert ours.score(x, y) == pytest.approx(sk.score(x, y), abs=1e-9)


def test_linear_models_are_exported_from_the_root():
    assert lepton_dask.LinearRegression is ops.LinearRegression
    assert lepton_dask.Ridge is ops.Ridge


@pytest.mark.parametrize("C", [0.05, 1.0])
@pytest.mark.parametrize("labels", ["int", "str"])
def test_multinomial_logistic_regression_reaches_sklearn_optimum(C, labels):
    rng = np.random.default_rng(4)
    n, d, k = 3000, 5, 4
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d)
    z = x @ rng.normal(size=(d, k)) + rng.gumbel(size=(n, k))
    y = z.argmax(axis=1)
    if labels == "str":
        y = np.array(["ant", "bee", "cat", "dog"])[y]
    sk = sklearn.linear_model.LogisticRegression(C=C, tol=1e-10, max_iter=1000)
    sk.fit(x, y)
    ours = ops.LogisticRegression(C=C, tol=1e-10, max_iter=1000)
    ours.fit(da.from_array(x, chunks=(700, d)), da.from_array(y, chunks=700))
    assert list(ours.classes_) == list(sk.classes_)
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(x), sk.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(
        ours.decision_function(x), sk.decision_function(x), atol=1e-5
    )
    np.testing.assert_array_equal(ours.predict(x), sk.predict(x))
    assert ours.score(x, y) == pytest.approx(sk.score(x, y), abs=1e-12)


def test_multinomial_default_settings_follow_sklearn_path():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 4))
    y = (x @ rng.normal(size=(4, 3)) + rng.gumbel(size=(2000, 3))).argmax(axis=1)
    sk = sklearn.linear_model.LogisticRegression().fit(x, y)
    ours = ops.LogisticRegression().fit(x, y)
    assert ours.n_iter_[0] == sk.n_iter_[0]
    np.testing.assert_allclose(ours.coef_, sk.coef_, atol=1e-7)
    no_int = ops.LogisticRegression(fit_intercept=False, tol=1e-10).fit(x, y)
    sk0 = sklearn.linear_model.LogisticRegression(fit_intercept=False, tol=1e-10)
    np.testing.assert_allclose(no_int.coef_, sk0.fit(x, y).coef_, atol=1e-6)
    assert (no_int.intercept_ == 0).all()
