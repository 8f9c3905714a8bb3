"""``python main.py --mode predict`` as users run it: shards equal to the model's predict,
the JSON summary, and bad input as one line on stderr with exit 2 and nothing written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from linreg.synthetic import write_dataset
from tests.scoring.support import estimator, read_predictions, source_rows, train

PROJECT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environment.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
    return subprocess.run(
        [sys.executable, str(PROJECT / "main.py"), "--mode", "predict", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_predict_writes_shards_equal_to_model_predict(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    train(directory, out, model="sgd")

    result = run_cli(
        *("--data", str(directory), "--out", str(out), "--predictions", str(predictions)),
        *("--keep-columns", "target", "--batch-rows", "2500", "--json"),
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = source_rows(directory)
    features = json.loads((out / "model.json").read_text())["features"]
    complete = ~rows[features].isna().any(axis=1).to_numpy()
    assert summary["model_version"] == 1
    assert summary["rows"] == len(rows) == 6_000
    assert summary["rows_null"] == int((~complete).sum())
    assert summary["shards"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    scored = read_predictions(predictions)
    assert scored.columns.tolist() == ["file", "row", "prediction", "target"]
    assert scored[["file", "row"]].equals(rows[["file", "row"]])
    expected = estimator(out).predict(rows.loc[complete, features])
    np.testing.assert_allclose(scored["prediction"].to_numpy()[complete], expected, rtol=1e-12)
    assert scored["prediction"].isna().to_numpy().tolist() == (~complete).tolist()


def test_bad_input_exits_2_with_one_line_and_writes_nothing(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    train(directory, out)
    common = ("--data", str(directory), "--out", str(out), "--predictions", str(predictions))

    unknown = run_cli(*common, "--keep-columns", "target,order_id")
    no_version = run_cli(*common, "--version", "4")

    for result, message in (
        (unknown, "--keep-columns: part-00000.parquet has no column(s) ['order_id']"),
        (no_version, "--version 4: no such version in"),
    ):
        assert result.returncode == 2, result.stdout
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not predictions.exists()


def test_a_run_killed_mid_shard_leaves_whole_shards_and_the_next_run_completes(tmp_path):
    """SIGKILL as soon as a shard is being written: every shard there is whole, none is
    half-written under its final name, no summary claims the set complete; a rerun
    replaces it all."""
    data, out, predictions = tmp_path / "data", tmp_path / "model", tmp_path / "predictions"
    write_dataset(data, n_rows=2_000_000, n_features=4, shard_rows=500_000, seed=3)
    write_dataset(tmp_path / "train", n_rows=2_000, n_features=4, shard_rows=2_000, seed=3)
    train(tmp_path / "train", out)
    command = [sys.executable, str(PROJECT / "main.py"), "--mode", "predict", "--quiet"]
    command += ["--data", str(data), "--out", str(out), "--predictions", str(predictions)]
    command += ["--batch-rows", "250000", "--executor", "serial"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}

    process = subprocess.Popen(command, env=environment)
    try:
        deadline = time.monotonic() + 240
        # The second shard being written: the first is whole by then.
        while not list(predictions.glob(".part-00001.parquet.tmp-*")):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shard was written within 240 s"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()

    shards = sorted(predictions.glob("part-*.parquet"))
    assert shards and not (predictions / "_scoring.json").exists()
    for index, shard in enumerate(shards):
        rows = pq.read_table(shard, columns=["row"]).column("row").to_numpy()
        np.testing.assert_array_equal(rows, np.arange(250_000) + 250_000 * (index % 2))
    assert list(predictions.glob(".part-*.tmp-*"))  # the killed shard, hidden from readers
    rerun = run_cli(*command[4:])  # the same options
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in predictions.iterdir()) == sorted(
        ["_scoring.json", *(f"part-{index:05d}.parquet" for index in range(8))]
    )
