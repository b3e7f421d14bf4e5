"""scikit-learn's own conformance suite (``check_estimator``) on every estimator.

numpy input; no distributed client is active in these tests, so the
estimators run their in-process path (the same kernels as on a cluster).
No check is marked as an expected failure, none is skipped.
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from lepton_dask import ops

pytestmark = [
    pytest.mark.timeout(120),
    # the checks' own data triggers these on purpose
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

ESTIMATORS = [
    ops.StandardScaler(),
    ops.PCA(),
    ops.LogisticRegression(),
    ops.KMeans(n_clusters=3, random_state=0),
    ops.LinearRegression(),
    ops.Ridge(),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_check(estimator, check, monkeypatch):
    # check_array_api_input (numpy under array-API dispatch) runs only with
    # the variable that scikit-learn's CI sets; read when the check runs
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)
