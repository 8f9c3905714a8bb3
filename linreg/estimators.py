"""Incremental linear regressors following scikit-learn's estimator contract.

Both learn batch by batch with ``partial_fit``, expose ``coef_``/``intercept_`` in the raw
units of the features, and round-trip their learned state through plain JSON-ready data
(``get_state``/``from_state``), so training state can be stored without pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import SGDRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from linreg.defaults import AVERAGE_FROM
from linreg.stats import LeastSquaresStats, solve_least_squares

if TYPE_CHECKING:
    from linreg.preprocess import Design


def _set_feature_names(estimator: BaseEstimator, names: Sequence[str] | None) -> None:
    if names is not None:
        estimator.feature_names_in_ = np.asarray(list(names), dtype=object)


class IncrementalLinearRegression(RegressorMixin, BaseEstimator):
    """Exact least squares (optionally ridge) from mergeable QR statistics.

    One pass over the data, in any number of batches, in any partition of the rows: the
    result equals an in-memory least-squares fit on all rows seen (see
    :mod:`linreg.stats`). Memory is ``O(n_features²)``, independent of the row count.

    Parameters
    ----------
    alpha : float, default=0.0
        L2 penalty on the coefficients (not the intercept), as in ``Ridge``.
    fit_intercept : bool, default=True
        False fits through the origin (``intercept_`` is 0.0), exactly, from the same
        statistics.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Only when fitted on a DataFrame or given ``feature_names``.
    n_samples_seen_ : int
    rank_ : int
        Rank of the centred design; below ``n_features_in_`` the solution is not unique and
        the minimum-norm one is returned, as ``LinearRegression`` does (see
        :func:`linreg.stats.solve_least_squares` with ``strict=True`` to refuse it).
    stats_ : LeastSquaresStats
        The merged statistics of every row seen.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(12.0).reshape(6, 2) ** 1.5
    >>> y = X @ [2.0, -1.0] + 3.0
    >>> model = IncrementalLinearRegression().partial_fit(X[:3], y[:3]).partial_fit(X[3:], y[3:])
    >>> np.round(model.coef_, 6).tolist(), round(model.intercept_, 6)
    ([2.0, -1.0], 3.0)
    """

    def __init__(self, *, alpha: float = 0.0, fit_intercept: bool = True) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept

    def _reset(self) -> None:
        for name in (
            "stats_",
            "coef_",
            "intercept_",
            "rank_",
            "n_samples_seen_",
            "n_features_in_",
            "feature_names_in_",
        ):
            self.__dict__.pop(name, None)

    def fit(self, X, y, sample_weight=None) -> IncrementalLinearRegression:
        """Fit on ``X`` (n_samples, n_features) and ``y`` (n_samples,) from scratch."""
        self._reset()
        return self.partial_fit(X, y, sample_weight)

    def partial_fit(self, X, y, sample_weight=None) -> IncrementalLinearRegression:
        """Add the rows of ``X``, ``y`` to what has been seen and re-solve."""
        first_call = not hasattr(self, "stats_")
        X, y = validate_data(self, X, y, reset=first_call, dtype=np.float64, y_numeric=True)
        if sample_weight is not None:
            sample_weight = _checked_weights(sample_weight, len(X))
        return self.merge_stats(LeastSquaresStats.from_arrays(X, y, sample_weight))

    def merge_stats(
        self, stats: LeastSquaresStats, feature_names: Sequence[str] | None = None
    ) -> IncrementalLinearRegression:
        """Add precomputed statistics (from another process or partition) and re-solve."""
        if hasattr(self, "stats_"):
            if stats.n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {stats.n_features} features, but {type(self).__name__} is "
                    f"expecting {self.n_features_in_} features as input."
                )
            merged = self.stats_.merge(stats)
        else:
            merged = stats
        names = feature_names
        if names is None and hasattr(self, "feature_names_in_"):
            names = list(self.feature_names_in_)
        coef, intercept, rank = solve_least_squares(
            merged, self.alpha, names, strict=False, fit_intercept=self.fit_intercept
        )
        self.stats_ = merged
        self.coef_, self.intercept_, self.rank_ = coef, intercept, rank
        self.n_samples_seen_ = merged.n
        self.n_features_in_ = merged.n_features
        _set_feature_names(self, feature_names)
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions of shape (n_samples,)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_ + self.intercept_

    def get_state(self) -> dict[str, Any]:
        check_is_fitted(self)
        return {"kind": "ols", "stats": self.stats_.to_dict(), **_names_state(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any], **params: Any) -> IncrementalLinearRegression:
        model = cls(**params)
        return model.merge_stats(
            LeastSquaresStats.from_dict(state["stats"]), state.get("feature_names")
        )


class _Frame(NamedTuple):
    """Where standardised values sit in raw units: ``x = x_mean + x_scale * z``."""

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float

    def to_raw(
        self, weights: np.ndarray, intercept: float, centred: bool
    ) -> tuple[np.ndarray, float]:
        """The raw-unit coefficients and intercept of standardised weights (intercept 0.0
        without centring)."""
        coef = np.ravel(weights) * self.y_scale / self.x_scale
        if not centred:
            return coef, 0.0
        return coef, float(self.y_mean + self.y_scale * intercept - coef @ self.x_mean)

    def from_raw(
        self, coef: np.ndarray, intercept: float, centred: bool
    ) -> tuple[np.ndarray, float]:
        """The standardised weights and intercept of a raw-unit model: :meth:`to_raw` undone."""
        weights = coef * self.x_scale / self.y_scale
        if not centred:
            return weights, 0.0
        return weights, (intercept - self.y_mean + coef @ self.x_mean) / self.y_scale


class StandardizedSGDRegressor(RegressorMixin, BaseEstimator):
    """``SGDRegressor.partial_fit`` on features and target standardised with running statistics.

    Raw features of very different scales make plain SGD diverge or crawl; here each batch
    first updates running means and variances (``StandardScaler.partial_fit``, the update of
    Chan, Golub and LeVeque, 1983), then SGD steps on the standardised batch. ``coef_`` and
    ``intercept_`` are reported in raw units: ``coef = w * s_y / s_x`` and
    ``intercept = m_y + s_y * b - coef @ m_x``. When the statistics move, the SGD weights
    are re-expressed in the new frame, so the raw-unit model moves only by learning.

    By default the model is averaged SGD (Polyak and Juditsky, 1992): ``coef_`` is the mean
    of the iterates from the ``average``-th training row on, which cancels most of SGD's
    noise at its final step size (on 10M rows of the benchmark, coefficient error 1.1e-4,
    that of exact least squares, against 4.2e-3 for the last iterate). The first rows are left
    out of the mean because the iterates start far from the solution.

    Parameters
    ----------
    alpha : float, default=0.0
        L2 penalty, on the standardised problem.
    fit_intercept : bool, default=True
        False fits through the origin: features and target are scaled but not centred,
        and ``intercept_`` is 0.0.
    average : int, default=10_000
        Average the iterates from this many training rows on (``SGDRegressor``'s ``average``
        as an int; True is 1, from the first row). 0 or False: plain SGD, whose last iterate
        follows drifting data faster than a mean over all of them does.
    learning_rate, eta0, power_t, random_state
        As in ``SGDRegressor``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
    n_samples_seen_ : int
    x_scaler_, y_scaler_ : StandardScaler
    sgd_ : SGDRegressor
    """

    def __init__(
        self,
        *,
        alpha: float = 0.0,
        learning_rate: str = "invscaling",
        eta0: float = 0.01,
        power_t: float = 0.25,
        average: int = AVERAGE_FROM,
        random_state: int = 0,
        fit_intercept: bool = True,
    ) -> None:
        self.fit_intercept = fit_intercept
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.average = average
        self.random_state = random_state

    def _new_sgd(self) -> SGDRegressor:
        return SGDRegressor(
            loss="squared_error",
            penalty="l2",
            alpha=self.alpha,
            learning_rate=self.learning_rate,
            eta0=self.eta0,
            power_t=self.power_t,
            average=int(self.average) or False,  # scikit-learn refuses the int 0
            random_state=self.random_state,
            shuffle=True,
            fit_intercept=self.fit_intercept,
        )

    def _reset(self) -> None:
        for name in (
            "x_scaler_",
            "y_scaler_",
            "sgd_",
            "coef_",
            "intercept_",
            "n_samples_seen_",
            "n_features_in_",
            "feature_names_in_",
        ):
            self.__dict__.pop(name, None)

    def fit(self, X, y, sample_weight=None) -> StandardizedSGDRegressor:
        """One SGD epoch over ``X`` (n_samples, n_features), ``y`` (n_samples,), from scratch."""
        self._reset()
        return self.partial_fit(X, y, sample_weight)

    def partial_fit(self, X, y, sample_weight=None) -> StandardizedSGDRegressor:
        """Update the running statistics, then take SGD steps over this batch."""
        first_call = not hasattr(self, "sgd_")
        X, y = validate_data(self, X, y, reset=first_call, dtype=np.float64, y_numeric=True)
        if first_call:
            self._start_learning()
        if len(X) == 0:
            return self
        targets = y.reshape(-1, 1)
        if sample_weight is not None:
            sample_weight = _checked_weights(sample_weight, len(X))
        frame = self._frame()
        self.x_scaler_.partial_fit(X, sample_weight=sample_weight)
        self.y_scaler_.partial_fit(targets, sample_weight=sample_weight)
        self._keep_model_in_new_frame(frame)
        return self._sgd_steps(
            self.x_scaler_.transform(X),
            self.y_scaler_.transform(targets).ravel(),
            sample_weight,
            len(X),
        )

    def _start_learning(self) -> None:
        centre = self.fit_intercept
        self.x_scaler_ = StandardScaler(with_mean=centre)
        self.y_scaler_ = StandardScaler(with_mean=centre)
        self.sgd_ = None
        self.n_samples_seen_ = 0

    def _sgd_steps(
        self, features: np.ndarray, target: np.ndarray, weights: np.ndarray | None, n_rows: int
    ) -> StandardizedSGDRegressor:
        """SGD steps over standardised rows, then the raw-unit coefficients."""
        sgd = self.sgd_ if self.sgd_ is not None else self._new_sgd()
        sgd.set_params(
            alpha=self.alpha, learning_rate=self.learning_rate, eta0=self.eta0, power_t=self.power_t
        )
        sgd.partial_fit(features, target, sample_weight=weights)
        self.sgd_ = sgd
        self.n_samples_seen_ += n_rows
        self._update_raw_coefficients()
        return self

    def partial_fit_design(
        self, design: Design, feature_names: Sequence[str] | None = None
    ) -> StandardizedSGDRegressor:
        """:meth:`partial_fit` on one chunk as :class:`~linreg.preprocess.BatchReader` lays it
        out, without the two copies scikit-learn's scaler makes of every row.

        ``design.matrix`` is Fortran-ordered ``[1, X - x_shift, y - y_shift]`` with unusable
        rows zeroed; ``design.weights`` (if any) are the rows' sample weights, kept beside
        the rows. The running means and variances come from the matrix's columns (the same
        update as ``StandardScaler.partial_fit``, to rounding), then the usable rows are
        standardised once, in the row order ``SGDRegressor`` reads.
        """
        matrix = design.matrix
        n_features = matrix.shape[1] - 2
        if not hasattr(self, "sgd_"):
            self.n_features_in_ = n_features
            _set_feature_names(self, feature_names)
            self._start_learning()
        elif n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        usable = np.flatnonzero(matrix[:, 0]) if design.n_valid < len(matrix) else None
        weights = design.weights
        if usable is not None and weights is not None:
            weights = weights[usable]
        if design.n_valid == 0 or (weights is not None and not weights.any()):
            return self  # nothing to learn from: no usable row, or every weight zero
        shift = np.append(design.x_shift, design.y_shift)
        frame = self._frame()
        mean, scale = self._update_running_statistics(matrix[:, 1:], shift, design)
        self._keep_model_in_new_frame(frame)
        # z = (x - mean) / scale, from the shifted values x - shift; without centring, x / scale.
        offset = (mean if self.fit_intercept else 0.0) - shift
        rows = matrix[:, 1:-1] if usable is None else matrix[usable, 1:-1]
        features = np.ascontiguousarray(rows)
        features -= offset[:-1]
        features /= scale[:-1]
        target = matrix[:, -1] if usable is None else matrix[usable, -1]
        target = (target - offset[-1]) / scale[-1]
        return self._sgd_steps(features, target, weights, design.n_valid)

    def _update_running_statistics(
        self, values: np.ndarray, shift: np.ndarray, design: Design
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merge the chunk's column means and variances into both scalers (Chan, Golub and
        LeVeque's pairwise update); return the features' and target's means and scales.

        ``values`` are the shifted columns (features, then target) with unusable rows zeroed,
        so those rows add nothing to any sum; the shift keeps ``Σv² - n·mean²`` exact enough.
        """
        if design.weights is None:
            count = float(design.n_valid)
            sums = values.sum(axis=0)
            squares = np.einsum("ij,ij->j", values, values)
        else:
            weights = np.where(design.matrix[:, 0] != 0.0, design.weights, 0.0)
            count = float(weights.sum())
            sums = weights @ values
            squares = np.einsum("i,ij,ij->j", weights, values, values)
        chunk_mean = sums / count
        chunk_m2 = np.maximum(squares - count * chunk_mean**2, 0.0)
        chunk_mean += shift
        x_scaler, y_scaler = self.x_scaler_, self.y_scaler_
        if hasattr(x_scaler, "mean_"):
            seen = float(np.max(x_scaler.n_samples_seen_))
            old_mean = np.append(x_scaler.mean_, y_scaler.mean_)
            old_m2 = np.append(x_scaler.var_, y_scaler.var_) * seen
        else:
            seen, old_mean, old_m2 = 0.0, np.zeros_like(chunk_mean), np.zeros_like(chunk_mean)
        total = seen + count
        delta = chunk_mean - old_mean
        mean = old_mean + delta * (count / total)
        var = (old_m2 + chunk_m2 + delta**2 * (seen * count / total)) / total
        # scikit-learn's test for a feature indistinguishable from a constant (scale 1).
        eps = np.finfo(np.float64).eps
        constant = var <= total * eps * var + (total * mean * eps) ** 2
        scale = np.where(constant, 1.0, np.sqrt(var))
        n_seen: Any = np.int64(total) if design.weights is None else np.float64(total)
        for scaler, columns in ((x_scaler, slice(None, -1)), (y_scaler, slice(-1, None))):
            scaler.mean_, scaler.var_ = mean[columns].copy(), var[columns].copy()
            scaler.scale_ = scale[columns].copy()
            scaler.n_samples_seen_ = n_seen
            scaler.n_features_in_ = len(scaler.mean_)
        return mean, scale

    def _frame(self) -> _Frame | None:
        """The scalers' means and scales the SGD weights are expressed in (None before any)."""
        if getattr(self, "sgd_", None) is None:
            return None
        x, y = self.x_scaler_, self.y_scaler_
        return _Frame(x.mean_.copy(), x.scale_.copy(), float(y.mean_[0]), float(y.scale_[0]))

    def _keep_model_in_new_frame(self, old: _Frame | None) -> None:
        """Re-express the SGD weights in the scalers' new frame so that the model in raw
        units is the one learnt so far: without this, every update of the running means and
        scales would move the model a little, and the iterates that averaged SGD keeps would
        each be in a different frame (at 10M rows that bias is 25x the coefficients' error)."""
        if old is None:
            return
        new = self._frame()
        sgd = self.sgd_

        def moved(weights: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            raw = old.to_raw(weights, intercept[0], self.fit_intercept)
            new_weights, new_intercept = new.from_raw(*raw, self.fit_intercept)
            return new_weights, np.array([new_intercept])

        if not self.average:
            sgd.coef_, sgd.intercept_ = moved(sgd.coef_, sgd.intercept_)
            return
        sgd._standard_coef, sgd._standard_intercept = moved(
            sgd._standard_coef, sgd._standard_intercept
        )
        sgd._average_coef, sgd._average_intercept = moved(sgd._average_coef, sgd._average_intercept)
        # scikit-learn's rule for which of the two coef_ shows.
        averaging = sgd.average <= sgd.t_ - 1
        sgd.coef_ = sgd._average_coef if averaging else sgd._standard_coef
        sgd.intercept_ = sgd._average_intercept if averaging else sgd._standard_intercept

    def _update_raw_coefficients(self) -> None:
        self.coef_, self.intercept_ = self._frame().to_raw(
            self.sgd_.coef_, self.sgd_.intercept_[0], self.fit_intercept
        )

    def predict(self, X) -> np.ndarray:
        """Predictions of shape (n_samples,), in the target's raw units."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_ + self.intercept_

    def get_state(self) -> dict[str, Any]:
        check_is_fitted(self, "coef_")
        sgd = self.sgd_
        state = {
            "kind": "sgd",
            "n_samples_seen": int(self.n_samples_seen_),
            "x_scaler": _scaler_state(self.x_scaler_),
            "y_scaler": _scaler_state(self.y_scaler_),
            "sgd": {
                "coef": np.ravel(sgd.coef_).tolist(),
                "intercept": float(sgd.intercept_[0]),
                "t": float(sgd.t_),
            },
            **_names_state(self),
        }
        if self.average:
            state["sgd"].update(
                standard_coef=np.ravel(sgd._standard_coef).tolist(),
                standard_intercept=float(sgd._standard_intercept[0]),
                average_coef=np.ravel(sgd._average_coef).tolist(),
                average_intercept=float(sgd._average_intercept[0]),
                average_from=int(sgd.average),
            )
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], **params: Any) -> StandardizedSGDRegressor:
        model = cls(**params)
        model.x_scaler_ = _scaler_from_state(state["x_scaler"], model.fit_intercept)
        model.y_scaler_ = _scaler_from_state(state["y_scaler"], model.fit_intercept)
        sgd = model._new_sgd()
        coef = np.asarray(state["sgd"]["coef"], dtype=np.float64)
        sgd.coef_ = coef.copy()
        sgd.intercept_ = np.array([state["sgd"]["intercept"]])
        sgd.t_ = float(state["sgd"]["t"])
        sgd.n_features_in_ = len(coef)
        if model.average and "average_coef" in state["sgd"]:
            sgd._standard_coef = np.asarray(state["sgd"]["standard_coef"], dtype=np.float64)
            sgd._standard_intercept = np.array([state["sgd"]["standard_intercept"]])
            sgd._average_coef = np.asarray(state["sgd"]["average_coef"], dtype=np.float64)
            sgd._average_intercept = np.array([state["sgd"]["average_intercept"]])
            sgd.average = int(state["sgd"].get("average_from", sgd.average))
        elif model.average:
            # A state learnt without averaging: the mean starts now. From the configured row
            # instead, scikit-learn would count the saved weights as the mean of every step
            # since then, and the model would hardly move again.
            sgd._standard_coef, sgd._standard_intercept = sgd.coef_, sgd.intercept_
            sgd._average_coef = sgd.coef_.copy()
            sgd._average_intercept = sgd.intercept_.copy()
            sgd.average = max(sgd.average, int(sgd.t_))
        model.sgd_ = sgd
        model.n_samples_seen_ = int(state["n_samples_seen"])
        model.n_features_in_ = len(coef)
        _set_feature_names(model, state.get("feature_names"))
        model._update_raw_coefficients()
        return model


def _checked_weights(sample_weight, n_samples: int) -> np.ndarray:
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.ndim == 0:
        weights = np.full(n_samples, float(weights))
    if weights.shape != (n_samples,):
        raise ValueError(f"sample_weight.shape == {weights.shape}, expected ({n_samples},)")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    if n_samples and not np.any(weights):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return weights


def _names_state(estimator: BaseEstimator) -> dict[str, Any]:
    if hasattr(estimator, "feature_names_in_"):
        return {"feature_names": [str(name) for name in estimator.feature_names_in_]}
    return {}


def _scaler_state(scaler: StandardScaler) -> dict[str, Any]:
    # With sample weights the count is their sum, which need not be whole.
    seen = float(np.max(scaler.n_samples_seen_))
    return {
        "n": int(seen) if seen.is_integer() else seen,
        "mean": scaler.mean_.tolist(),
        "var": scaler.var_.tolist(),
        "scale": scaler.scale_.tolist(),
    }


def _scaler_from_state(state: dict[str, Any], centre: bool = True) -> StandardScaler:
    scaler = StandardScaler(with_mean=centre)
    scaler.mean_ = np.asarray(state["mean"], dtype=np.float64)
    scaler.var_ = np.asarray(state["var"], dtype=np.float64)
    seen = state["n"]
    scaler.n_samples_seen_ = np.int64(seen) if isinstance(seen, int) else np.float64(seen)
    scaler.n_features_in_ = len(scaler.mean_)
    scaler.scale_ = np.asarray(state["scale"], dtype=np.float64)
    return scaler


def make_estimator(
    kind: str, **params: Any
) -> IncrementalLinearRegression | StandardizedSGDRegressor:
    """A fresh estimator of ``kind`` ("sgd" or "ols") with the given hyper-parameters."""
    if kind == "ols":
        return IncrementalLinearRegression(
            alpha=params.get("alpha", 0.0), fit_intercept=params.get("fit_intercept", True)
        )
    if kind == "sgd":
        return StandardizedSGDRegressor(**params)
    raise ValueError(f"unknown model '{kind}' (expected 'sgd' or 'ols')")


def estimator_from_state(
    state: dict[str, Any], **params: Any
) -> IncrementalLinearRegression | StandardizedSGDRegressor:
    """Rebuild a fitted estimator from :meth:`get_state` data with current hyper-parameters."""
    kind = state.get("kind")
    if kind == "ols":
        return IncrementalLinearRegression.from_state(
            state, alpha=params.get("alpha", 0.0), fit_intercept=params.get("fit_intercept", True)
        )
    if kind == "sgd":
        return StandardizedSGDRegressor.from_state(state, **params)
    raise ValueError(f"saved estimator state has unknown kind {kind!r}")
