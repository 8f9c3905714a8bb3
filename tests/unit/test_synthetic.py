"""The sample data set and the rows appended to it (the README's continuous-training loop)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from linreg.synthetic import append_rows, main, read_truth, write_dataset


def test_appended_rows_are_new_shards_of_the_same_model(tmp_path):
    write_dataset(tmp_path, n_rows=30_000, n_features=3, shard_rows=20_000, seed=1)
    before = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert main(["--out", str(tmp_path), "--rows", "25000", "--append"]) == 0
    after = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert after == [*before, "part-00002.parquet", "part-00003.parquet"]
    truth = read_truth(tmp_path)
    table = pq.read_table(tmp_path / "part-00003.parquet").to_pandas().dropna()
    assert len(pq.read_table(tmp_path / "part-00002.parquet")) == 20_000 and len(table) <= 5_000
    x = table[truth.features].to_numpy()
    residual = table["target"].to_numpy() - (x @ truth.coef + truth.intercept)
    assert abs(residual.std() - truth.noise) < 0.02
    again = append_rows(tmp_path, 100)
    assert [p.name for p in again] == ["part-00004.parquet"]
    assert not np.array_equal(pq.read_table(again[0])["target"], table["target"][:100])
