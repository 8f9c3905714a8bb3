"""Mergeable least-squares statistics: the R factor of a QR decomposition.

For a block of rows, keep ``R`` from ``QR([1, X - c, y - d])`` (``c``, ``d`` are shifts that
keep the columns well centred). Two blocks merge exactly by re-shifting one R to the other's
centre (a change to its first row only, since ``X - c = (X - a) + (a - c) 1``) and taking the
R factor of the two stacked R's: the tall-skinny QR (TSQR) reduction of Demmel et al. (2012),
here with the centring of Chan, Golub and LeVeque (1983). Solving from R is as accurate as a
QR of all rows at once, and far better conditioned than the normal equations ``XᵀX``, whose
condition number is the square of ``X``'s. The trailing block ``R[1:, 1:]`` is the R factor of
the exactly mean-centred data, which gives the intercept-free ridge system and the residual
sum of squares of any linear model without another pass over the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dgeqrf


@dataclass(frozen=True)
class LeastSquaresStats:
    """Sufficient statistics of a linear least-squares problem over some rows.

    Attributes
    ----------
    n : int
        Number of rows summarised.
    x_shift : ndarray of shape (n_features,)
        Centre subtracted from the features before the decomposition.
    y_shift : float
        Centre subtracted from the target.
    r : ndarray of shape (n_features + 2, n_features + 2)
        Upper-triangular R factor of ``[1, X - x_shift, y - y_shift]``.
    """

    n: int
    x_shift: np.ndarray
    y_shift: float
    r: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.x_shift)

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        block_rows: int = 65_536,
    ) -> LeastSquaresStats:
        """Statistics of the rows of ``x`` (n_samples, n_features) and ``y`` (n_samples,),
        each row scaled by √w when ``sample_weight`` is given (weighted least squares).

        The rows are taken ``block_rows`` at a time, each block centred on its own mean and
        factored in place (:meth:`from_matrix`), and the blocks merged as a pairwise tree
        (TSQR), so the whole augmented matrix is never built in memory.
        """
        n, p = x.shape
        if n == 0:
            return cls._empty(p)
        blocks = []
        for start in range(0, n, block_rows):
            x_block, y_block = x[start : start + block_rows], y[start : start + block_rows]
            x_shift, y_shift = x_block.mean(axis=0), float(y_block.mean())
            matrix = np.empty((len(x_block), p + 2), order="F")
            matrix[:, 0] = 1.0
            np.subtract(x_block, x_shift, out=matrix[:, 1 : p + 1])
            np.subtract(y_block, y_shift, out=matrix[:, p + 1])
            if sample_weight is not None:
                matrix *= np.sqrt(sample_weight[start : start + block_rows])[:, None]
            blocks.append(cls.from_matrix(matrix, len(x_block), x_shift, y_shift))
        return cls.merge_all(blocks)

    @classmethod
    def from_matrix(
        cls, matrix: np.ndarray, n: int, x_shift: np.ndarray, y_shift: float
    ) -> LeastSquaresStats:
        """Statistics of the ``n`` rows of ``matrix`` = ``[1, X - x_shift, y - y_shift]``
        (Fortran order; extra all-zero rows allowed), which is overwritten.

        One LAPACK ``dgeqrf`` in place: a tall-skinny Householder QR with no copy of the
        rows, several times faster than ``numpy.linalg.qr`` (which copies and transposes).
        """
        k = len(x_shift) + 2
        if n == 0:
            return cls._empty(k - 2)
        if not matrix.flags.f_contiguous:
            matrix = np.asfortranarray(matrix)
        factored, _, _, info = dgeqrf(matrix, overwrite_a=True)
        if info != 0:
            raise ValueError(f"LAPACK dgeqrf failed (info={info})")
        return cls(n, np.asarray(x_shift, dtype=np.float64), float(y_shift), _upper(factored, k))

    @classmethod
    def _empty(cls, p: int) -> LeastSquaresStats:
        return cls(0, np.zeros(p), 0.0, np.zeros((p + 2, p + 2)))

    def shifted(self, x_shift: np.ndarray, y_shift: float) -> np.ndarray:
        """R of the same rows centred at ``x_shift``, ``y_shift`` instead."""
        r = self.r.copy()
        r[0, 1:-1] += r[0, 0] * (self.x_shift - x_shift)
        r[0, -1] += r[0, 0] * (self.y_shift - y_shift)
        return r

    def merge(self, other: LeastSquaresStats) -> LeastSquaresStats:
        """Statistics of the rows of ``self`` and ``other`` together."""
        if other.n_features != self.n_features:
            raise ValueError(
                f"cannot merge statistics of {other.n_features} features into {self.n_features}"
            )
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        x_shift = (self.n * self.x_shift + other.n * other.x_shift) / n
        y_shift = (self.n * self.y_shift + other.n * other.y_shift) / n
        stacked = np.vstack([self.shifted(x_shift, y_shift), other.shifted(x_shift, y_shift)])
        r = _square_r(np.linalg.qr(stacked, mode="r"), self.n_features + 2)
        return LeastSquaresStats(n, x_shift, float(y_shift), r)

    @classmethod
    def merge_all(cls, parts: Sequence[LeastSquaresStats]) -> LeastSquaresStats:
        """Merge in the given order (pairwise tree), so results do not depend on timing."""
        if not parts:
            raise ValueError("nothing to merge")
        level = list(parts)
        while len(level) > 1:
            level = [
                level[i].merge(level[i + 1]) if i + 1 < len(level) else level[i]
                for i in range(0, len(level), 2)
            ]
        return level[0]

    @property
    def means(self) -> tuple[np.ndarray, float]:
        """Exact means of the features and the target."""
        r00 = self.r[0, 0]
        return self.x_shift + self.r[0, 1:-1] / r00, self.y_shift + self.r[0, -1] / r00

    def residual_sum_of_squares(self, coef: np.ndarray, intercept: float) -> float:
        """Sum of squared residuals of ``y ≈ X @ coef + intercept`` over the summarised rows."""
        if self.n == 0:
            return 0.0
        v = np.empty(self.n_features + 2)
        v[0] = self.y_shift - self.x_shift @ coef - intercept
        v[1:-1] = -coef
        v[-1] = 1.0
        return float(np.sum((self.r @ v) ** 2))

    def uncentred_r(self) -> np.ndarray:
        """The (n_features + 1)-square R factor of the raw ``[X, y]`` (no ones column), for
        fits through the origin: ``[X, y] = [1, X - c, y - d] M`` with ``M`` adding the
        shifts back, so the R of ``R M`` is exactly that of ``[X, y]``."""
        p = self.n_features
        m = np.zeros((p + 2, p + 1))
        m[0, :p], m[0, p] = self.x_shift, self.y_shift
        m[1 : p + 1, :p] = np.eye(p)
        m[p + 1, p] = 1.0
        return _square_r(np.linalg.qr(self.r @ m, mode="r"), p + 1)

    @property
    def weight_sum(self) -> float:
        """Σw over the rows (their count when unweighted): ``R[0, 0]²``."""
        return float(self.r[0, 0] ** 2)

    def total_sum_of_squares(self) -> float:
        """Sum of squared deviations of the target from its mean."""
        return float(np.sum(self.r[1:, -1] ** 2))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers (no pickle); the upper triangle of R, row by row."""
        k = self.n_features + 2
        return {
            "n": self.n,
            "x_shift": self.x_shift.tolist(),
            "y_shift": self.y_shift,
            "r_upper": self.r[np.triu_indices(k)].tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeastSquaresStats:
        x_shift = np.asarray(data["x_shift"], dtype=np.float64)
        k = len(x_shift) + 2
        r = np.zeros((k, k))
        r[np.triu_indices(k)] = np.asarray(data["r_upper"], dtype=np.float64)
        return cls(int(data["n"]), x_shift, float(data["y_shift"]), r)


def _square_r(r: np.ndarray, k: int) -> np.ndarray:
    """Pad the R of a short block (fewer rows than columns) to k x k."""
    if r.shape[0] == k:
        return r
    square = np.zeros((k, k))
    square[: r.shape[0]] = r
    return square


def _upper(factored: np.ndarray, k: int) -> np.ndarray:
    """The k x k R factor from ``dgeqrf``'s output (R is its upper triangle)."""
    return _square_r(np.triu(factored[:k]), k)


class SingularSystemError(ValueError):
    """The least-squares problem has no unique solution."""


def solve_least_squares(
    stats: LeastSquaresStats,
    alpha: float = 0.0,
    feature_names: Sequence[str] | None = None,
    strict: bool = True,
    fit_intercept: bool = True,
) -> tuple[np.ndarray, float, int]:
    """Coefficients, intercept and rank minimising ``||y - X b - b0||² + alpha ||b||²``
    (``b0 = 0`` without ``fit_intercept``: a fit through the origin).

    The intercept is not penalised, as in scikit-learn's ``Ridge``. When ``alpha == 0`` and
    the solution is not unique (too few rows, or dependent features), ``strict`` raises
    :class:`SingularSystemError` naming the features involved; otherwise the minimum-norm
    solution is returned, as ``LinearRegression`` does.
    """
    p = stats.n_features
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(p)]
    if stats.n == 0:
        raise SingularSystemError("no training rows")
    if fit_intercept:
        r_xx = stats.r[1 : p + 1, 1 : p + 1]
        r_xy = stats.r[1 : p + 1, -1]
    else:
        r_raw = stats.uncentred_r()
        r_xx, r_xy = r_raw[:p, :p], r_raw[:p, p]
    rank = p
    if alpha > 0.0:
        augmented = np.vstack([r_xx, np.sqrt(alpha) * np.eye(p)])
        rhs = np.concatenate([r_xy, np.zeros(p)])
        q, r_ridge = np.linalg.qr(augmented)
        coef = solve_triangular(r_ridge, q.T @ rhs)
    else:
        # Rank and solution from the column-scaled factor R D⁻¹ (D = the centred columns'
        # norms): a full-rank design is solved however differently its columns are scaled
        # (Filip's ten powers of x span 1e-1 to 1e9), and only a truly dependent or constant
        # column is deficient. Householder QR is column-wise backward stable, so R D⁻¹ is
        # the accurate R of the scaled design.
        norms = np.linalg.norm(r_xx, axis=0)
        scale = np.where(norms > 0.0, norms, 1.0)
        scaled = r_xx / scale
        left, singular_values, right = np.linalg.svd(scaled)
        tolerance = singular_values[0] * max(stats.n, p) * np.finfo(np.float64).eps
        rank = int(np.sum(singular_values > tolerance)) if singular_values[0] > 0 else 0
        if rank == p:
            coef = solve_triangular(scaled, r_xy) / scale
        elif strict:
            raise SingularSystemError(_singular_message(stats.n, p, right[-1], names))
        else:
            kept = slice(0, rank)
            coef = right[kept].T @ ((left[:, kept].T @ r_xy) / singular_values[kept]) / scale
    if not fit_intercept:
        return coef, 0.0, rank
    x_mean, y_mean = stats.means
    return coef, float(y_mean - x_mean @ coef), rank


def _singular_message(n: int, p: int, null_direction: np.ndarray, names: list[str]) -> str:
    if n < p + 1:
        return (
            f"underdetermined: {n} training rows for {p} features and an intercept; "
            "train on more rows (a larger --batch-rows) or set a ridge --alpha"
        )
    involved = [
        names[i] for i in np.argsort(-np.abs(null_direction)) if abs(null_direction[i]) > 1e-3
    ]
    return (
        "singular design: features "
        + ", ".join(f"'{name}'" for name in involved[:6])
        + " are linearly dependent (or constant); drop one or set a ridge --alpha"
    )
