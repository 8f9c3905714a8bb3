"""The one-pass decoder of rows of numbers, unit by unit: what it takes, and every near miss
it leaves to the full checks (which then give the one precise error)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.payload import fast_rows

KEYS = frozenset({"instances"})


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2.5, -3e2, 4]]}',
        b' {\n "instances" : [ [0,0,0,0] , [1E3,2,3,18446744073709551615] ] } ',
    ],
)
def test_rows_of_numbers_are_read_in_one_pass(body: bytes) -> None:
    X = fast_rows(body, KEYS, 4, max_rows=10)
    assert X is not None and X.dtype == np.float64
    expected = np.array(json.loads(body)["instances"], dtype=np.float64)
    np.testing.assert_array_equal(X, expected)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2, 3, "4"]]}',  # a string
        b'{"instances": [[1, 2, 3, true]]}',
        b'{"instances": [[1, 2, 3, null]]}',
        b'{"instances": [[1, 2, 3, {}]]}',
        b'{"instances": [[1, 2, 3, [4]]]}',
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
