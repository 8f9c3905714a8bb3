"""Evaluation on held-out rows.

R² and RMSE are exact over every held-out row seen so far, computed from merged QR statistics
(:class:`~linreg.stats.LeastSquaresStats`) without keeping the rows. MAE is not a function of
such statistics, so it is measured on the held-out rows of the newest batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from linreg.stats import LeastSquaresStats


def regression_metrics(
    holdout: LeastSquaresStats | None,
    coef: np.ndarray,
    intercept: float,
    x_latest: np.ndarray | None = None,
    y_latest: np.ndarray | None = None,
) -> dict[str, Any]:
    """R², RMSE over all held-out rows; MAE over the newest batch's held-out rows.

    Values that cannot be computed (no held-out rows, a constant target) are ``None``.
    """
    metrics: dict[str, Any] = {
        "r2": None,
        "rmse": None,
        "mae": None,
        "n_test": 0,
        "n_test_latest": 0,
    }
    if holdout is not None and holdout.n > 0:
        sse = holdout.residual_sum_of_squares(coef, intercept)
        sst = holdout.total_sum_of_squares()
        metrics["n_test"] = holdout.n
        weight_sum = holdout.weight_sum or holdout.n
        metrics["rmse"] = math.sqrt(max(sse, 0.0) / weight_sum)
        metrics["r2"] = 1.0 - sse / sst if sst > 0.0 else None
    if x_latest is not None and y_latest is not None and len(y_latest):
        metrics["mae"] = float(np.mean(np.abs(y_latest - (x_latest @ coef + intercept))))
        metrics["n_test_latest"] = len(y_latest)
    return metrics
