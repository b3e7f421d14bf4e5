"""Operations and estimators against numpy / scikit-learn, CPU path."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import sklearn.cluster
import sklearn.decomposition
import sklearn.linear_model
import sklearn.preprocessing
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import NotFittedError

from lepton_dask import ops
from lepton_dask.ops._backend import aligned
from tests.helpers import nanny_cluster

pytestmark = pytest.mark.timeout(180)

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck)
)


@st.composite
def matrices(draw, min_rows=2, max_rows=60, max_cols=6):
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, max_cols))
    x = draw(
        hnp.arrays(
            np.float64,
            (n, d),
            elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
        )
    )
    rows = draw(st.integers(1, n))
    cols = draw(st.integers(1, d))
    return x, (rows, cols)


@SETTINGS
@given(matrices())
def test_moments_match_numpy(case):
    x, chunks = case
    with dask.config.set(scheduler="sync"):
        m = ops.column_moments(da.from_array(x, chunks=chunks)).compute()
    assert m.count == x.shape[0]
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m.var, x.var(axis=0), rtol=1e-7, atol=1e-6)
    np.testing.assert_array_equal(m.min, x.min(axis=0))
    np.testing.assert_array_equal(m.max, x.max(axis=0))


@SETTINGS
@given(matrices())
def test_gram_covariance_correlation_match_numpy(case):
    x, chunks = case
    X = da.from_array(x, chunks=chunks)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_allclose(ops.gram(X).compute(), x.T @ x, rtol=1e-9, atol=1e-6)
        if x.shape[0] > 1:
            np.testing.assert_allclose(
                ops.covariance(X).compute(),
                np.atleast_2d(np.cov(x, rowvar=False)),
                rtol=1e-7,
                atol=1e-6,
            )


@st.composite
def tall_blocks(draw):
    """A block, possibly with NaN/inf, and a fold width small enough to fold it."""
    n = draw(st.integers(1, 200))
    d = draw(st.integers(1, 5))
    x = draw(
        hnp.arrays(
            np.float64,
            (n, d),
            elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
            | st.sampled_from([np.nan, np.inf, -np.inf]),
        )
    )
    width = draw(st.integers(1, 40))
    return x, width


@SETTINGS
@given(tall_blocks())
def test_folded_column_reductions_equal_plain_ones(case):
    """The GPU path's two-stage column reductions (run here on numpy blocks)."""
    from lepton_dask.ops import _backend

    x, width = case
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_backend, "FOLD_WIDTH", width)
        for op in (np.min, np.max):
            np.testing.assert_array_equal(
                _backend.column_reduce(x, op, fold=True), op(x, axis=0)
            )
        for mask in (np.isnan(x), np.isinf(x)):
            got = _backend.column_reduce(mask, np.sum, fold=True)
            assert got.tolist() == mask.sum(axis=0).tolist()
        finite = np.where(np.isfinite(x), x, 0.0)
        np.testing.assert_allclose(
            _backend.column_reduce(finite, np.sum, fold=True),
            finite.sum(axis=0),
            rtol=1e-12,
            atol=1e-9,
        )
        # a view that is not C-contiguous is reduced as is
        np.testing.assert_array_equal(
            _backend.column_reduce(x[::2], np.max, fold=True), x[::2].max(axis=0)
        )


@SETTINGS
@given(tall_blocks())
def test_gpu_moments_kernel_equals_cpu_kernel(case):
    """The whole-block moments used for cupy blocks, run on numpy, against the
    sub-block kernel of the CPU path."""
    from lepton_dask.ops import _backend
    from lepton_dask.ops.moments import _block_moments, _whole_block_moments

    x, width = case
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_backend, "FOLD_WIDTH", width)
        got = _whole_block_moments(x, np, fold=True)
    want = _block_moments(x)
    assert got[0] == want[0]
    names = ["mean", "m2", "min", "max", "nan", "inf"]
    for g, w, name in zip(got[1:], want[1:], names, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-6, err_msg=name)


def test_folded_reductions_at_full_width_on_numpy():
    from tests.ops.folding import check_folded_reductions, tall_block

    check_folded_reductions(np, tall_block())


def test_moments_stable_with_large_offset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, 3)) + 1e9
    m = ops.column_moments(da.from_array(x, chunks=(1000, 3))).compute()
    np.testing.assert_allclose(m.var, x.var(axis=0), rtol=1e-6)


def test_nan_and_inf_are_counted():
    x = np.array([[1.0, np.nan], [np.inf, 2.0], [3.0, 4.0]])
    m = ops.column_moments(x).compute()
    assert m.nan_count.tolist() == [0, 1] and m.inf_count.tolist() == [1, 0]


def test_correlation_constant_column_is_nan():
    x = np.column_stack([np.arange(10.0), np.ones(10)])
    c = ops.correlation(x).compute()
    assert c[0, 0] == 1.0 and np.isnan(c[1, 1]) and np.isnan(c[0, 1])


def test_standardize_and_scaler_match_sklearn():
    x = np.random.default_rng(1).normal(3, 2, size=(500, 4))
    x[:, 2] = 7.0  # constant column
    sk = sklearn.preprocessing.StandardScaler().fit(x)
    ours = ops.StandardScaler().fit(da.from_array(x, chunks=(64, 4)))
    np.testing.assert_allclose(ours.mean_, sk.mean_)
    np.testing.assert_allclose(ours.scale_, sk.scale_)
    Z = ours.transform(da.from_array(x, chunks=(64, 4)))
    assert isinstance(Z, da.Array)
    np.testing.assert_allclose(Z.compute(), sk.transform(x), atol=1e-12)
    np.testing.assert_allclose(
        ops.standardize(x).compute(), sk.transform(x), atol=1e-12
    )
    np.testing.assert_allclose(ours.inverse_transform(sk.transform(x)), x, atol=1e-10)
    assert isinstance(ours.transform(x), np.ndarray)  # numpy in, numpy out


@SETTINGS
@given(matrices(min_rows=8, max_rows=80, max_cols=5), st.integers(1, 5))
def test_pca_matches_sklearn(case, k):
    x, chunks = case
    k = min(k, *x.shape)
    assume(x.var(axis=0).sum() > 1e-9)  # scikit-learn divides 0/0 on constant data
    sk = sklearn.decomposition.PCA(k, svd_solver="full").fit(x)
    with dask.config.set(scheduler="sync"):
        ours = ops.PCA(k).fit(da.from_array(x, chunks=(chunks[0], x.shape[1])))
    scale = max(1.0, float(np.abs(x).max()))
    np.testing.assert_allclose(
        ours.explained_variance_,
        sk.explained_variance_,
        rtol=1e-6,
        atol=1e-9 * scale**2,
    )
    # components up to sign (equal-variance components may rotate: compare
    # only well-separated ones)
    ev = sk.explained_variance_
    for j in range(k):
        gaps = np.abs(np.delete(np.r_[ev, sk.noise_variance_], j) - ev[j])
        if ev[j] > 1e-6 * scale**2 and gaps.min() > 1e-3 * ev[j]:
            c_ours, c_sk = ours.components_[j], sk.components_[j]
            sign = np.sign(c_ours @ c_sk) or 1.0
            np.testing.assert_allclose(c_ours * sign, c_sk, atol=1e-6)


def test_pca_components_equal_sklearn_including_sign_and_transform():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 6))
    sk = sklearn.decomposition.PCA(3, svd_solver="full").fit(x)
    ours = ops.PCA(3).fit(da.from_array(x, chunks=(500, 6)))
    np.testing.assert_allclose(ours.components_, sk.components_, atol=1e-10)
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-10
    )
    np.testing.assert_allclose(ours.transform(x), sk.transform(x), atol=1e-9)
    np.testing.assert_allclose(
        ours.inverse_transform(ours.transform(x)),
        sk.inverse_transform(sk.transform(x)),
        atol=1e-9,
    )
    frac = ops.PCA(0.9).fit(x)
    assert (
        frac.n_components_
        == sklearn.decomposition.PCA(0.9, svd_solver="full").fit(x).n_components_
    )
    w = ops.PCA(2, whiten=True).fit(x)
    np.testing.assert_allclose(w.transform(x).std(axis=0, ddof=1), 1.0, rtol=1e-9)


def _logistic_data(n=4000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d)
    y = (x @ rng.normal(size=d) + 0.5 + rng.normal(size=n) > 0).astype(int)
    return x, y


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_logistic_regression_reaches_sklearn_optimum(solver, C):
    x, y = _logistic_data()
    sk = sklearn.linear_model.LogisticRegression(C=C, tol=1e-10, max_iter=1000).fit(
        x, y
    )
    X = da.from_array(x, chunks=(700, 5))
    Y = da.from_array(y, chunks=(700,))
    ours = ops.LogisticRegression(C=C, solver=solver, tol=1e-10, max_iter=1000).fit(
        X, Y
    )
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(x), sk.predict_proba(x), atol=1e-6)
    assert abs(ours.score(X, Y) - sk.score(x, y)) < 0.005
    assert isinstance(ours.predict(X), da.Array)
    np.testing.assert_array_equal(ours.predict(x), sk.predict(x))


def test_logistic_regression_default_settings_follow_sklearn_path():
    x, y = _logistic_data(seed=3)
    sk = sklearn.linear_model.LogisticRegression().fit(x, y)
    ours = ops.LogisticRegression().fit(da.from_array(x, chunks=(1000, 5)), y)
    assert ours.n_iter_[0] == sk.n_iter_[0]
    np.testing.assert_allclose(ours.coef_, sk.coef_, atol=1e-8)


def test_logistic_regression_string_labels_and_no_intercept():
    x, y = _logistic_data()
    labels = np.where(y == 1, "spam", "ham")
    ours = ops.LogisticRegression(fit_intercept=False, tol=1e-10).fit(x, labels)
    sk = sklearn.linear_model.LogisticRegression(fit_intercept=False, tol=1e-10).fit(
        x, labels
    )
    assert list(ours.classes_) == ["ham", "spam"]
    np.testing.assert_allclose(ours.coef_, sk.coef_, atol=1e-6)
    assert ours.intercept_[0] == 0.0
    np.testing.assert_array_equal(ours.predict(x), sk.predict(x))


def _blobs(n=3000, k=4, d=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, size=(k, d))
    lab = rng.integers(k, size=n)
    return centers[lab] + rng.normal(size=(n, d)), centers


def test_kmeans_finds_the_clusters_and_matches_sklearn_inertia():
    x, centers = _blobs()
    ours = ops.KMeans(4, random_state=0).fit(da.from_array(x, chunks=(500, 3)))
    sk = sklearn.cluster.KMeans(4, n_init=10, random_state=0).fit(x)
    # same local optimum, converged to the tol=1e-4 center-shift criterion
    assert ours.inertia_ == pytest.approx(sk.inertia_, rel=1e-4)
    # every true center has a fitted center next to it
    dist = np.linalg.norm(ours.cluster_centers_[:, None] - centers[None], axis=2)
    assert dist.min(axis=0).max() < 0.5
    labels = ours.labels_.compute()
    np.testing.assert_array_equal(labels, ours.predict(x))
    assert ours.score(x) == pytest.approx(-ours.inertia_)
    np.testing.assert_allclose(
        ours.transform(x[:5]),
        np.linalg.norm(x[:5, None] - ours.cluster_centers_[None], axis=2),
    )


def test_kmeans_lloyd_matches_sklearn_from_same_init():
    x, _ = _blobs(n=2000, k=5, d=4, seed=5)
    init = x[:5]
    sk = sklearn.cluster.KMeans(
        5, init=init, n_init=1, tol=1e-8, max_iter=300, algorithm="lloyd"
    ).fit(x)
    ours = ops.KMeans(5, init=init, tol=1e-8, max_iter=300).fit(
        da.from_array(x, chunks=(300, 4))
    )
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, atol=1e-8)
    assert ours.inertia_ == pytest.approx(sk.inertia_, rel=1e-10)


def test_estimators_on_arrays_read_from_the_store(store, client):
    rng = np.random.default_rng(7)
    x, _ = _blobs(n=6000, k=3, d=4, seed=7)
    y = (x[:, 0] + rng.normal(size=6000) > 0).astype(np.int64)
    store.put_array("feat", x, chunks=(1000, 4))
    store.put_array("label", y, chunks=(1000,))
    X = store.get_array("feat")
    Y = store.get_array("label")
    Z = ops.StandardScaler().fit_transform(X)
    pca = ops.PCA(2).fit(Z)
    sk_pca = sklearn.decomposition.PCA(2, svd_solver="full").fit(
        sklearn.preprocessing.StandardScaler().fit_transform(x)
    )
    np.testing.assert_allclose(pca.components_, sk_pca.components_, atol=1e-8)
    clf = ops.LogisticRegression().fit(Z, Y)
    sk = sklearn.linear_model.LogisticRegression().fit(
        sklearn.preprocessing.StandardScaler().fit_transform(x), y
    )
    assert (
        abs(
            clf.score(Z, Y)
            - sk.score(sklearn.preprocessing.StandardScaler().fit_transform(x), y)
        )
        < 0.005
    )
    km = ops.KMeans(3, random_state=1).fit(X)
    assert km.labels_.chunks == X.chunks[:1]


# -- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "est", [ops.StandardScaler(), ops.PCA(1), ops.KMeans(2), ops.LogisticRegression()]
)
def test_nan_or_inf_raises_naming_the_column(est):
    x = np.random.default_rng(0).normal(size=(50, 3))
    x[7, 2] = np.nan
    x[9, 2] = np.inf
    y = np.arange(50) % 2
    with pytest.raises(ValueError, match=r"column 2 \(2 values\)"):
        est.fit(da.from_array(x, chunks=(10, 3)), y) if isinstance(
            est, ops.LogisticRegression
        ) else est.fit(x)


@pytest.mark.parametrize(
    "est", [ops.StandardScaler(), ops.PCA(1), ops.KMeans(2), ops.LogisticRegression()]
)
def test_predict_before_fit_raises_not_fitted(est):
    method = getattr(est, "predict", None) or est.transform
    with pytest.raises(NotFittedError):
        method(np.ones((3, 2)))


@pytest.mark.parametrize(
    "est", [ops.StandardScaler(), ops.PCA(1), ops.KMeans(2), ops.LogisticRegression()]
)
def test_wrong_number_of_features_at_predict(est):
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    est.fit(x, y)
    method = getattr(est, "predict", None) or est.transform
    with pytest.raises(
        ValueError,
        match=f"X has 4 features, but {type(est).__name__} is expecting 3 features",
    ):
        method(np.ones((5, 4)))
    with pytest.raises(ValueError, match="X has 4 features"):  # Dask input: eager
        method(da.ones((5, 4), chunks=(2, 4)))


def test_non_numeric_input_raises_type_error():
    with pytest.raises(TypeError, match="expected a numeric"):
        ops.StandardScaler().fit(np.array([["a", "b"]]))
    with pytest.raises(TypeError):
        ops.gram(da.from_array(np.array([["a"]], dtype=object), chunks=1))


def test_y_mismatch_raises_value_error():
    x = np.ones((10, 2))
    with pytest.raises(ValueError, match="y has 9 rows, X has 10"):
        ops.LogisticRegression().fit(x, np.arange(9) % 2)
    X = da.ones((10, 2), chunks=(5, 2))
    Y = da.from_array(np.arange(10) % 2, chunks=3)
    with pytest.raises(ValueError, match="do not match X's row chunks"):
        ops.LogisticRegression().fit(X, Y)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        ops.LogisticRegression().fit(x, np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="only one class"):
        ops.LogisticRegression().fit(x, np.zeros(10))


@pytest.mark.parametrize("dask_input", [False, True])
def test_empty_input_raises_value_error_naming_the_shape(dask_input):
    ests = [ops.StandardScaler(), ops.PCA(1), ops.KMeans(1), ops.LogisticRegression()]
    for x in (np.ones((0, 3)), np.ones((3, 0))):
        X = da.from_array(x, chunks=(2, 3)) if dask_input else x
        for est in ests:
            with pytest.raises(
                ValueError, match=rf"shape=\({x.shape[0]}, {x.shape[1]}\)"
            ):
                est.fit(X, np.zeros(x.shape[0]))


def test_nan_at_predict_raises_for_numpy_and_dask_input():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = np.arange(60) % 3
    bad = x.copy()
    bad[5, 1] = np.nan
    for est in [
        ops.StandardScaler(),
        ops.PCA(2),
        ops.KMeans(2),
        ops.LogisticRegression(),
    ]:
        est.fit(x, y)
        method = getattr(est, "predict", None) or est.transform
        with pytest.raises(ValueError, match=r"NaN or infinite values in column 1"):
            method(bad)
        lazy = method(da.from_array(bad, chunks=(20, 3)))  # Dask: at compute
        with pytest.raises(ValueError, match=r"NaN or infinite values in column 1"):
            lazy.compute()


def test_invalid_parameters():
    with pytest.raises(ValueError, match="C must be"):
        ops.LogisticRegression(C=-1).fit(np.ones((4, 1)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="n_components"):
        ops.PCA(5).fit(np.random.default_rng(0).random((10, 3)))
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=4"):
        ops.KMeans(4).fit(np.ones((3, 2)))


def test_get_set_params_and_clone():
    from sklearn.base import clone

    est = ops.LogisticRegression(C=0.5, solver="newton")
    assert est.get_params()["C"] == 0.5
    est.set_params(C=2.0)
    assert clone(est).C == 2.0 and clone(est).solver == "newton"
    assert ops.KMeans(3).get_params()["n_clusters"] == 3


def test_misaligned_blocks_are_realigned():
    buf = np.zeros(8 * 100 + 1, dtype=np.uint8)
    x = np.frombuffer(buf.data, dtype=np.float64, count=100, offset=1).reshape(50, 2)
    assert not x.flags.aligned
    y = aligned(x)
    assert y.flags.aligned and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x)


def test_rowblocks_on_the_cluster_are_aligned_and_grouped(client):
    from lepton_dask.ops._blocks import RowBlocks

    X = da.random.default_rng(0).random((4000, 3), chunks=(500, 3))
    rb = RowBlocks(X)
    try:
        flags = client.gather(
            [client.submit(lambda b: b.flags.aligned, b[0]) for b in rb.blocks]
        )
        assert all(flags)
        assert len(rb._groups) <= 2  # one task per worker per pass
        np.testing.assert_allclose(
            rb.map_reduce(lambda b: b.sum(axis=0)), X.sum(axis=0).compute()
        )
    finally:
        rb.release()


def test_estimators_on_the_cluster_match_local(client):
    x, _ = _blobs(n=4000, k=3, d=3, seed=11)
    X = da.from_array(x, chunks=(500, 3))
    local = ops.KMeans(3, random_state=0).fit(x)
    dist = ops.KMeans(3, random_state=0).fit(X)
    np.testing.assert_allclose(
        np.sort(local.cluster_centers_, axis=0),
        np.sort(dist.cluster_centers_, axis=0),
        atol=1e-8,
    )


def test_persist_on_places_reads_on_the_workers_with_the_resource(store):
    """Resource restrictions apply at submission (dask/dask#10937): persist_on
    puts the reads on the CPU-resource worker of a two-kind cluster."""
    from dask.utils import key_split
    from distributed import get_task_stream, wait

    store.put_array("placed", np.ones((6000, 4)), chunks=(1000, 4))
    with nanny_cluster(cpu={"resources": {"CPU": 1}}, other={}) as (client, names):
        with get_task_stream(client) as ts:
            X = ops.persist_on(store.get_array("placed"), {"CPU": 1})
            wait(X)
        ran = {
            names[r["worker"]]
            for r in ts.data
            if key_split(r["key"]) == "lepton-read-placed"
        }
        assert ran == {"cpu"}
        np.testing.assert_array_equal(X.sum(axis=0).compute(), [6000.0] * 4)


def _copy_block(b):
    return np.array(b)


def test_two_kind_cluster_reads_on_one_kind_computes_on_the_other(store):
    """test_gpu's mixed-cluster check with numpy blocks (the resource name is
    only a label to the scheduler)."""
    from tests.ops.placement import check_two_kind_placement

    x = np.random.default_rng(0).normal(size=(12_000, 8))
    check_two_kind_placement(
        store, x, lambda X: X.map_blocks(_copy_block, dtype=X.dtype), "copy_block"
    )


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_verbose_logistic_regression_prints_one_line_per_iteration(solver, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = (x @ [1.0, -2.0, 0.5] + rng.normal(size=400) > 0).astype(int)
    ops.LogisticRegression(solver=solver).fit(x, y)
    assert capsys.readouterr().out == ""
    clf = ops.LogisticRegression(solver=solver, verbose=1).fit(x, y)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == clf.n_iter_[0]
    assert all(ln.startswith(f"{solver} iteration ") for ln in lines)
    # the objective decreases; the last gradient is within tol
    objectives = [float(ln.split("objective ")[1].split(",")[0]) for ln in lines]
    assert objectives == sorted(objectives, reverse=True)
    if solver == "newton":  # stops at the first iterate within tol
        assert float(lines[-1].split("max |gradient| ")[1].split(" ")[0]) <= 1e-4


def test_verbose_kmeans_prints_inertia_per_iteration(capsys):
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(c, 1.0, size=(200, 2)) for c in (0, 6, 12)])
    km = ops.KMeans(3, random_state=0, verbose=1).fit(x)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Initialization complete"
    assert len(lines) == 1 + km.n_iter_
    inertias = [float(ln.split("inertia ")[1].split(",")[0]) for ln in lines[1:]]
    assert inertias == sorted(inertias, reverse=True)  # Lloyd never increases it
    assert inertias[-1] == pytest.approx(km.inertia_, rel=1e-9)  # converged: same
