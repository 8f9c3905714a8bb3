"""``python main.py`` as users run it: exit codes, one-line errors, nothing changed on failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.state import PrefectBlockStateStore
from tests.conftest import write_csv

PROJECT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environment.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(PROJECT / "main.py"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_three_single_runs_on_embedded_prefect_give_versions_1_2_3(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home")}
    out = tmp_path / "out"
    rows_read = []
    for version in (1, 2, 3):
        result = run_cli(
            "--mode",
            "single",
            "--data",
            str(directory),
            "--batch-rows",
            "1000",
            "--model",
            "ols",
            "--out",
            str(out),
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert f"model version {version}:" in result.stdout
        metadata = json.loads((out / "model.json").read_text())
        assert metadata["version"] == version
        rows_read.append(metadata["data"]["rows_read"])
    assert rows_read == [1_000, 2_000, 3_000]
    assert (tmp_path / "prefect-home" / "prefect.db").exists()


@pytest.fixture
def trained(prefect_api, synthetic_dir, tmp_path):
    """A model trained once through the CLI against the test server."""
    directory, _ = synthetic_dir
    env = {"PREFECT_API_URL": prefect_api}
    block = f"cli-{tmp_path.name[-12:].lower().replace('_', '-')}"
    out = tmp_path / "out"
    result = run_cli(
        "--mode",
        "all",
        "--data",
        str(directory),
        "--out",
        str(out),
        "--state-block",
        block,
        "--model",
        "sgd",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return env, block, out


def _bad_input(tmp_path: Path, kind: str) -> tuple[list[str], str]:
    good = pd.DataFrame(
        {"x": np.arange(30.0), "z": np.sqrt(np.arange(30.0)), "target": np.arange(30.0)}
    )
    root = tmp_path / "bad"
    if kind == "missing-target":
        return [
            "--data",
            str(write_csv(root / "a.csv", good.drop(columns="target"))),
        ], "a.csv: target column 'target' not found"
    if kind == "non-numeric-feature":
        path = write_csv(root / "a.csv", good.assign(name=["n"] * 30))
        return [
            "--data",
            str(path),
            "--features",
            "x,name",
        ], "a.csv: feature column 'name' is not numeric"
    if kind == "empty-source":
        root.mkdir()
        return ["--data", str(root)], "no CSV or Parquet files found"
    if kind == "all-nan":
        return [
            "--data",
            str(write_csv(root / "a.csv", good.assign(target=np.nan))),
        ], "every one of 30 rows has a missing or non-finite value (column 'target'"
    if kind == "schema-differs":
        write_csv(root / "a.csv", good)
        write_csv(root / "b.csv", good.drop(columns="z"))
        return ["--data", str(root)], "b.csv: columns differ from a.csv"
    if kind == "corrupt-parquet":
        root.mkdir()
        (root / "x.parquet").write_bytes(b"PAR1\x00\x01garbage")
        return ["--data", str(root)], "x.parquet: not a readable Parquet file"
    if kind == "missing-path":
        return ["--data", str(tmp_path / "absent.csv")], "absent.csv: no such file or directory"
    if kind == "bad-state-block":
        return [
            "--data",
            str(write_csv(root / "a.csv", good)),
            "--state-block",
            "Bad_Name",
        ], "state block name 'Bad_Name' is invalid"
    if kind == "bad-test-fraction":
        return [
            "--data",
            str(write_csv(root / "a.csv", good)),
            "--test-fraction",
            "1.5",
        ], "test_fraction"
    raise AssertionError(kind)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "missing-target",
        "non-numeric-feature",
        "empty-source",
        "all-nan",
        "schema-differs",
        "corrupt-parquet",
        "missing-path",
        "bad-test-fraction",
        "bad-state-block",
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(trained, tmp_path, kind):
    env, block, out = trained
    files_before = {p.name: p.read_bytes() for p in out.iterdir()}
    state_before = PrefectBlockStateStore(block).load().model_dump_json()
    args, message = _bad_input(tmp_path, kind)
    result = run_cli(
        "--mode",
        "single",
        "--model",
        "sgd",
        "--out",
        str(out),
        "--state-block",
        block,
        "--reset",
        *args,
        env=env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files_before
    assert PrefectBlockStateStore(block).load().model_dump_json() == state_before
