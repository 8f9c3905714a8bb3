"""The one-pass decoder of rows of numbers, unit by unit: what it takes, and every near miss
it leaves to the full checks (which then give the one precise error)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.errors import ServiceError
from serving.model_store import LinearModel
from serving.payload import SMALL_REQUEST_VALUES, fast_rows, predict_checked

KEYS = frozenset({"instances"})


ROW = b"[1, 2.5, -3e2, 4], "
LARGE = b'{"instances": [' + ROW * (SMALL_REQUEST_VALUES // 4) + b"[0, 0, 0, 0]]}"


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2.5, -3e2, 4]]}',
        b' {\n "instances" : [ [0,0,0,0] , [1E3,2,3,18446744073709551615] ] } ',
        LARGE,
    ],
)
def test_rows_of_numbers_are_read_in_one_pass(body: bytes) -> None:
    X = fast_rows(body, KEYS, 4, max_rows=100)
    expected = json.loads(body)["instances"]
    if len(expected) * 4 <= SMALL_REQUEST_VALUES:
        assert X == expected  # the lists as they are, for LinearModel.predict_rows
    else:
        assert isinstance(X, np.ndarray) and X.dtype == np.float64
        np.testing.assert_array_equal(X, np.array(expected, dtype=np.float64))


def test_a_small_request_is_predicted_as_numpy_predicts_it() -> None:
    rng = np.random.default_rng(3)
    coef = np.abs(rng.normal(size=8)) + 1.0
    model = LinearModel(1, tuple(f"x{i}" for i in range(8)), coef, 0.25, {})
    X = rng.normal(0.0, 10.0, (30, 8))
    np.testing.assert_allclose(
        predict_checked(model, X.tolist()), model.predict(X), rtol=1e-14, atol=0.0
    )
    X[7] = 1e308
    with pytest.raises(ServiceError, match=r"instances\[7\]: the prediction overflows float64"):
        predict_checked(model, X.tolist())


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2, 3, "4"]]}',  # a string
        b'{"instances": [[1, 2, 3, true]]}',
        b'{"instances": [[1, 2, 3, null]]}',
        b'{"instances": [[1, 2, 3, {}]]}',
        b'{"instances": [[1, 2, 3, [4]]]}',
        b'{"instances": [[1, 2, [3], 4]]}',
        LARGE.replace(b"[0, 0, 0, 0]", b"[0, 0, [0], 0]"),
        b'{"instances": [[1, 2, 3]]}',  # a short row
        b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}',
        b'{"instances": [1, 2, 3, 4]}',  # flat
        b'{"instances": []}',
        b'{"instances": [[1, 2, 3, 4]], "x": 1}',
        b'{"rows": [[1, 2, 3, 4]]}',  # another key
        b'{"instancez": [[1, 2, 3, 4]]}',
        b'{"instances": [[1, 2, 3, NaN]]}',  # not JSON
        b'{"instances": [[1, 2, 3, 4]]',
        b'{"instances": [[1, 2, 3, 1e999]]}',
        b"[[1, 2, 3, 4]]",
        b"",
        b'{"instances": [' + b"[1, 2, 3, 4], " * 10 + b"[1, 2, 3, 4]]}",  # 11 rows > 10
    ],
)
def test_near_misses_are_left_to_the_full_checks(body: bytes) -> None:
    assert fast_rows(body, KEYS, 4, max_rows=10) is None


def test_a_large_request_refuses_an_overflow_and_keeps_huge_finite_predictions() -> None:
    model = LinearModel(1, ("a", "b"), np.array([1.0, 1.0]), 0.0, {})
    X = np.full((SMALL_REQUEST_VALUES, 2), 1e200)  # squares of the predictions overflow
    np.testing.assert_array_equal(predict_checked(model, X), np.full(SMALL_REQUEST_VALUES, 2e200))
    X[5] = 1e308
    with pytest.raises(ServiceError, match=r"instances\[5\]: the prediction overflows float64"):
        predict_checked(model, X)
