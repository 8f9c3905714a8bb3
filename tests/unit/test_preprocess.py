"""Cleaning and the stable train/test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linreg.batches import plan_batches
from linreg.config import DataConfig
from linreg.errors import DataError
from linreg.preprocess import holdout_mask, prepare_batch
from linreg.validation import validate_source
from tests.conftest import write_csv


def test_split_depends_only_on_row_identity():
    rows = np.arange(100_000)
    whole = holdout_mask("part-0.parquet", rows, 0.2)
    pieces = np.concatenate(
        [holdout_mask("part-0.parquet", chunk, 0.2) for chunk in np.array_split(rows, 7)]
    )
    np.testing.assert_array_equal(whole, pieces)
    assert abs(whole.mean() - 0.2) < 0.01
    assert not np.array_equal(whole, holdout_mask("part-1.parquet", rows, 0.2))


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 0.9])
def test_split_fraction(fraction):
    mask = holdout_mask("f", np.arange(50_000), fraction)
    assert abs(mask.mean() - fraction) < 0.01
    if fraction == 0.0:
        assert not mask.any()


def test_held_out_rows_stay_held_out_across_batch_sizes(synthetic_dir):
    directory, _ = synthetic_dir
    plan = validate_source(DataConfig(source=str(directory)))

    def test_targets(batch_rows):
        batches = plan_batches(plan.files, {}, batch_rows)
        return np.sort(
            np.concatenate([prepare_batch(b, plan.columns, 0.2).y_test for b in batches])
        )

    np.testing.assert_array_equal(test_targets(700), test_targets(6_000))


def test_rows_with_missing_or_non_finite_values_are_dropped_and_counted(tmp_path):
    frame = pd.DataFrame(
        {"x": [1.0, np.nan, 3.0, np.inf, 5.0, 6.0], "target": [1.0, 2.0, -np.inf, 4.0, np.nan, 6.0]}
    )
    write_csv(tmp_path / "d.csv", frame)
    plan = validate_source(DataConfig(source=str(tmp_path / "d.csv")))
    prepared = prepare_batch(plan_batches(plan.files, {}, 10)[0], plan.columns, 0.0)
    assert prepared.report.rows_read == 6
    assert prepared.report.rows_dropped == 4
    assert prepared.report.dropped_by_column == {"x": 2, "target": 2}
    np.testing.assert_array_equal(prepared.x_train.ravel(), [1.0, 6.0])
    assert prepared.x_test.shape == (0, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_batch_with_no_usable_row_is_an_error_naming_the_column(tmp_path, bad):
    write_csv(tmp_path / "d.csv", pd.DataFrame({"x": [1.0, 2.0], "target": [bad, bad]}))
    plan = validate_source(DataConfig(source=str(tmp_path / "d.csv")))
    with pytest.raises(DataError, match=r"d.csv\[0:2\]: every one of 2 rows .* 'target'"):
        prepare_batch(plan_batches(plan.files, {}, 10)[0], plan.columns, 0.2)
