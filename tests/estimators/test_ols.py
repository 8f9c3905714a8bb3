"""The exact ols estimator: as accurate as lstsq on ill-conditioned data, in any batching."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge

from linreg.estimators import IncrementalLinearRegression
from linreg.stats import LeastSquaresStats, SingularSystemError, solve_least_squares

# NIST StRD Longley (1967): employment vs six collinear economic series, cond(X) ~ 5e9.
LONGLEY = np.array(
    [
        [83.0, 234289, 2356, 1590, 107608, 1947, 60323],
        [88.5, 259426, 2325, 1456, 108632, 1948, 61122],
        [88.2, 258054, 3682, 1616, 109773, 1949, 60171],
        [89.5, 284599, 3351, 1650, 110929, 1950, 61187],
        [96.2, 328975, 2099, 3099, 112075, 1951, 63221],
        [98.1, 346999, 1932, 3594, 113270, 1952, 63639],
        [99.0, 365385, 1870, 3547, 115094, 1953, 64989],
        [100.0, 363112, 3578, 3350, 116219, 1954, 63761],
        [101.2, 397469, 2904, 3048, 117388, 1955, 66019],
        [104.6, 419180, 2822, 2857, 118734, 1956, 67857],
        [108.4, 442769, 2936, 2798, 120445, 1957, 68169],
        [110.8, 444546, 4681, 2637, 121950, 1958, 66513],
        [112.6, 482704, 3813, 2552, 123366, 1959, 68655],
        [114.2, 502601, 3931, 2514, 125368, 1960, 69564],
        [115.7, 518173, 4806, 2572, 127852, 1961, 69331],
        [116.9, 554894, 4007, 2827, 130081, 1962, 70551],
    ]
)
LONGLEY_CERTIFIED_COEF = np.array(
    [
        15.0618722713733,
        -0.358191792925910e-01,
        -2.02022980381683,
        -1.03322686717359,
        -0.511041056535807e-01,
        1829.15146461355,
    ]
)
LONGLEY_CERTIFIED_INTERCEPT = -3482258.63459582


def _lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """numpy.linalg.lstsq used at its best: on centred, unit-scaled columns."""
    mean, scale = X.mean(axis=0), X.std(axis=0)
    coef = np.linalg.lstsq((X - mean) / scale, y - y.mean(), rcond=None)[0] / scale
    return np.append(coef, y.mean() - mean @ coef)


def _designs():
    rng = np.random.default_rng(0)
    x = np.arange(21.0)
    wampler = np.column_stack([x**k for k in range(1, 6)])  # NIST Wampler1, cond ~ 6e6
    t = np.arange(5_000.0)
    trend = 1_000 + 5 * t + rng.normal(0, 1, 5_000).cumsum()
    economic = np.column_stack(
        [trend, trend * 1.0001 + rng.normal(0, 0.01, 5_000), t, np.log(trend)]
    )
    u = np.linspace(0, 10, 20_000)
    polynomial = np.column_stack([u**k for k in range(1, 7)])
    scales = 10.0 ** rng.uniform(-3, 4, 12)
    badly_scaled = (rng.normal(size=(30_000, 12)) + 3) * scales
    return {
        "longley": (LONGLEY[:, :6], LONGLEY[:, 6]),
        "wampler1": (wampler, 1 + wampler.sum(axis=1)),
        "collinear-economic": (
            economic,
            economic @ [1.0, -2.0, 3.0, 50.0] + rng.normal(0, 1, 5_000),
        ),
        "polynomial-degree-6": (
            polynomial,
            polynomial @ rng.normal(size=6) + rng.normal(0, 1, 20_000),
        ),
        "badly-scaled": (
            badly_scaled,
            badly_scaled @ (rng.normal(size=12) / scales) + 7 + rng.normal(0, 0.1, 30_000),
        ),
    }


DESIGNS = _designs()


@pytest.mark.parametrize("name", DESIGNS)
@pytest.mark.parametrize("n_batches", [1, 3, 8])
def test_coefficients_match_lstsq_to_1e9_relative(name, n_batches):
    X, y = DESIGNS[name]
    model = IncrementalLinearRegression()
    for rows in np.array_split(np.arange(len(y)), n_batches):
        model.partial_fit(X[rows], y[rows])
    expected = _lstsq(X, y)
    np.testing.assert_allclose(model.coef_, expected[:-1], rtol=1e-9, atol=0)
    # The intercept is ȳ - x̄·coef: its rounding error scales with the terms that cancel.
    cancelled = abs(y.mean()) + np.abs(X.mean(axis=0)) @ np.abs(expected[:-1])
    assert abs(model.intercept_ - expected[-1]) <= 1e-9 * cancelled


def test_longley_matches_nist_certified_values():
    model = IncrementalLinearRegression().fit(LONGLEY[:, :6], LONGLEY[:, 6])
    np.testing.assert_allclose(model.coef_, LONGLEY_CERTIFIED_COEF, rtol=1e-10)
    np.testing.assert_allclose(model.intercept_, LONGLEY_CERTIFIED_INTERCEPT, rtol=1e-10)


@pytest.mark.parametrize("chunk", [1, 2, 50, 1_000, 1_042])
def test_partial_fit_over_chunks_equals_fit(chunk):
    X, y = DESIGNS["badly-scaled"]
    X, y = X[:1_000], y[:1_000]
    full = IncrementalLinearRegression().fit(X, y)
    incremental = IncrementalLinearRegression()
    for start in range(0, len(y), chunk):
        incremental.partial_fit(X[start : start + chunk], y[start : start + chunk])
    np.testing.assert_allclose(incremental.coef_, full.coef_, rtol=1e-10)
    assert incremental.n_samples_seen_ == full.n_samples_seen_ == 1_000


def test_merge_order_does_not_change_the_result_beyond_rounding():
    X, y = DESIGNS["collinear-economic"]
    parts = [
        LeastSquaresStats.from_arrays(X[r], y[r]) for r in np.array_split(np.arange(len(y)), 9)
    ]
    forward = IncrementalLinearRegression().merge_stats(LeastSquaresStats.merge_all(parts))
    backward = IncrementalLinearRegression().merge_stats(LeastSquaresStats.merge_all(parts[::-1]))
    np.testing.assert_allclose(forward.coef_, backward.coef_, rtol=1e-9)


@pytest.mark.parametrize("alpha", [0.1, 10.0, 1e4])
def test_ridge_matches_sklearn(alpha):
    X, y = DESIGNS["collinear-economic"]
    model = IncrementalLinearRegression(alpha=alpha)
    for rows in np.array_split(np.arange(len(y)), 4):
        model.partial_fit(X[rows], y[rows])
    reference = Ridge(alpha=alpha, solver="svd").fit(X, y)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-7)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-7)


def test_singular_design_is_a_clear_error_naming_the_features():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 3))
    X = np.column_stack([X, 2 * X[:, 0] - X[:, 2]])
    stats = LeastSquaresStats.from_arrays(X, rng.normal(size=100))
    with pytest.raises(SingularSystemError, match="linearly dependent") as error:
        solve_least_squares(stats, 0.0, ["a", "b", "c", "d"])
    assert "'a'" in str(error.value) and "'d'" in str(error.value)
    assert "'b'" not in str(error.value)
    # The estimator itself follows LinearRegression: rank reported, minimum-norm solution.
    model = IncrementalLinearRegression().fit(X, X @ [1.0, 2.0, 3.0, 0.0])
    assert model.rank_ == 3
    np.testing.assert_allclose(model.predict(X), X @ [1.0, 2.0, 3.0, 0.0], atol=1e-9)
    ridge = IncrementalLinearRegression(alpha=1.0).fit(X, rng.normal(size=100))
    assert ridge.rank_ == 4 and np.all(np.isfinite(ridge.coef_))


def test_constant_feature_is_singular():
    X = np.column_stack([np.arange(10.0), np.ones(10)])
    with pytest.raises(SingularSystemError, match="constant"):
        solve_least_squares(LeastSquaresStats.from_arrays(X, np.arange(10.0)))


def test_underdetermined_system_is_a_clear_error():
    X, y = np.arange(12.0).reshape(4, 3) ** 2, np.arange(4.0)
    with pytest.raises(SingularSystemError, match="underdetermined: 3 training rows"):
        solve_least_squares(LeastSquaresStats.from_arrays(X[:3], y[:3]))
    assert IncrementalLinearRegression().fit(X[:3], y[:3]).rank_ == 2


def test_a_wrong_feature_count_is_refused_and_leaves_the_model_unchanged():
    X, y = np.arange(12.0).reshape(4, 3) ** 2, np.arange(4.0)
    model = IncrementalLinearRegression().fit(DESIGNS["longley"][0], DESIGNS["longley"][1])
    before = model.coef_.copy()
    with pytest.raises(ValueError, match="X has 3 features, but"):
        model.partial_fit(X, y)
    np.testing.assert_array_equal(model.coef_, before)


def test_unfitted_model_cannot_predict():
    with pytest.raises(NotFittedError):
        IncrementalLinearRegression().predict(np.ones((2, 2)))


def test_state_round_trips_through_json_exactly():
    import json

    X, y = DESIGNS["longley"]
    model = IncrementalLinearRegression().fit(X, y)
    restored = IncrementalLinearRegression.from_state(json.loads(json.dumps(model.get_state())))
    np.testing.assert_array_equal(restored.coef_, model.coef_)
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    restored.partial_fit(X, y)
    assert restored.n_samples_seen_ == 32
