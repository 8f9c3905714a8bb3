"""scikit-learn's own estimator checks, where they apply."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from linreg.estimators import IncrementalLinearRegression, StandardizedSGDRegressor

# Each expected failure with the reason. Exact least squares honours sample weights exactly
# (weight k = the row k times); SGD's steps do not (scikit-learn's SGDRegressor fails the
# same check), though its expected fit is the weighted one.
EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": "SGD: weights scale steps, not rows",
    "check_sample_weight_equivalence_on_sparse_data": "sparse input is not supported",
}


@parametrize_with_checks(
    [
        IncrementalLinearRegression(),
        IncrementalLinearRegression(alpha=1.0),
        StandardizedSGDRegressor(),
    ],
    expected_failed_checks=lambda estimator: (
        EXPECTED_FAILED
        if isinstance(estimator, StandardizedSGDRegressor)
        else {"check_sample_weight_equivalence_on_sparse_data": "sparse input is not supported"}
    ),
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
