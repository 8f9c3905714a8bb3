"""scikit-learn's own estimator checks, where they apply."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from linreg.estimators import IncrementalLinearRegression, StandardizedSGDRegressor

# Each skipped check with the reason it does not apply.
EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": "sample weights are not supported",
    "check_sample_weight_equivalence_on_sparse_data": "sample weights are not supported",
}


@parametrize_with_checks(
    [
        IncrementalLinearRegression(),
        IncrementalLinearRegression(alpha=1.0),
        StandardizedSGDRegressor(),
    ],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
