"""``python main.py`` as users run it: exit codes, one-line errors, nothing changed on failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.crash_detection import crash_detection
from tasks.state import TrainingStateBlock
from tests.conftest import write_csv
from tests.integration.processes import free_port

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


@pytest.mark.slow
def test_a_local_server_is_started_once_reused_by_later_calls_and_stopped(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    home = tmp_path / "prefect-home"
    env = {"PREFECT_HOME": str(home), "PREFECT_PORT": str(free_port())}
    started = run_cli("--mode", "server-start", env=env)
    assert started.returncode == 0, started.stderr
    record = json.loads((home / "linreg-server.json").read_text())
    try:
        assert "started: the local Prefect server at http://127.0.0.1:" in started.stdout
        assert record["setup_done"] == ["crash-detection"]
        name = crash_detection().name
        with temporary_settings({PREFECT_API_URL: record["api_url"]}):
            with get_client(sync_client=True) as client:
                (automation,) = client.read_automations_by_name(name)
                # A server whose record lacks it (started by an older version) gets the
                # automation at its next server-start, once.
                client.delete_automation(automation.id)
                (home / "linreg-server.json").write_text(
                    json.dumps({k: v for k, v in record.items() if k != "setup_done"})
                )
                for _ in range(2):
                    again = run_cli("--mode", "server-start", env=env)
                    assert "already running" in again.stdout, again.stderr
                assert len(client.read_automations_by_name(name)) == 1
        assert json.loads((home / "linreg-server.json").read_text())["setup_done"] == [
            "crash-detection"
        ]
        for version in (1, 2):
            result = run_cli(
                "--mode", "single", "--data", str(directory), "--batch-rows", "1000",
                "--out", str(tmp_path / "out"), env=env,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert f"Prefect server: the local one at {record['api_url']}" in result.stdout
            assert f"model version {version}:" in result.stdout
    finally:
        stopped = run_cli("--mode", "server-stop", env=env)
    assert stopped.stdout.strip() == f"stopped the local Prefect server (pid {record['pid']})"
    for pid in (record["pid"], record["runner"]["pid"]):  # the server and its warm runner
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not (home / "linreg-server.json").exists()
    after = run_cli("--mode", "validate", "--data", str(directory), env=env)
    assert after.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-rows", "0"], "--batch-rows must be at least 1 (got 0)"),
        (["--test-fraction", "1.5"], "--test-fraction must be in [0, 1) (got 1.5)"),
        (["--alpha", "-1"], "--alpha must not be negative (got -1.0)"),
        (["--average", "-1"], "--average must be >= 0 (got -1)"),
        (["--n-iter", "0"], "--n-iter must be at least 1 (got 0)"),
        (["--max-batches", "0"], "--max-batches must be at least 1 (got 0)"),
        (["--max-seconds", "0"], "--max-seconds must be a positive number of seconds (got 0.0)"),
        (["--max-seconds", "nan"], "--max-seconds must be a positive number of seconds (got nan)"),
        (["--csv-encoding", "klingon"], "--csv-encoding: unknown encoding 'klingon'"),
        (["--csv-decimal", ",,"], "--csv-decimal must be one character (got ',,')"),
        (
            ["--dask-address", "tcp://127.0.0.1:1"],
            "--dask-address tcp://127.0.0.1:1: cannot connect within 3 s (Connection refused)",
        ),
    ],
)
def test_option_ranges_are_one_line_naming_the_option(synthetic_dir, args, message):
    directory, _ = synthetic_dir
    result = run_cli("--mode", "single", "--data", str(directory), *args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert "Prefect server" not in result.stdout  # refused before Prefect started


def test_an_out_path_that_is_a_file_fails_fast(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("--mode", "single", "--data", str(directory), "--out", str(blocker))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --out {blocker}: exists and is not a directory"
    assert "Prefect server" not in result.stdout


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


GOOD = pd.DataFrame(
    {"x": np.arange(30.0), "z": np.sqrt(np.arange(30.0)), "target": np.arange(30.0)}
)


def _in_dir(root: Path, **files: pd.DataFrame | str) -> Path:
    """``root`` holding CSV files (a frame) or raw text files (a string), by name."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name.replace("_", ".")
        if isinstance(content, str):
            path.write_text(content)
        else:
            write_csv(path, content)
    return root


def _truncated_parquet(root: Path) -> Path:
    root.mkdir(parents=True)
    GOOD.to_parquet(root / "a.parquet")
    whole = (root / "a.parquet").read_bytes()
    (root / "a.parquet").write_bytes(whole[: len(whole) // 2])
    return root


def _dangling_symlink(root: Path) -> Path:
    _in_dir(root, a_csv=GOOD)
    (root / "b.csv").symlink_to(root / "gone.csv")
    return root


def _corrupt_parquet(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "x.parquet").write_bytes(b"PAR1\x00\x01garbage")
    return root


# kind -> (arguments for a data set written under root, the message the one error line holds)
BAD_INPUTS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing-target": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD.drop(columns="target")))],
        "a.csv: target column 'target' not found",
    ),
    "non-numeric-feature": (
        lambda root: (
            ["--data", str(_in_dir(root, a_csv=GOOD.assign(name=["n"] * 30)))]
            + ["--features", "x,name"]
        ),
        "a.csv: feature column 'name' is not numeric",
    ),
    "unknown-feature": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD)), "--features", "x,w"],
        "a.csv: feature column 'w' not found",
    ),
    "extra-column": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD, b_csv=GOOD.assign(w=1.0)))],
        "b.csv: columns differ from a.csv (missing [], extra ['w'])",
    ),
    "renamed-column": (
        lambda root: [
            "--data",
            str(_in_dir(root, a_csv=GOOD, b_csv=GOOD.rename(columns={"z": "w"}))),
        ],
        "b.csv: columns differ from a.csv (missing ['z'], extra",
    ),
    "schema-differs": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD, b_csv=GOOD.drop(columns="z")))],
        "b.csv: columns differ from a.csv",
    ),
    "empty-source": (
        lambda root: ["--data", str(_in_dir(root))],
        "no CSV or Parquet files found",
    ),
    "empty-file": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD, b_csv=""))],
        "b.csv: empty file (no header)",
    ),
    "header-only": (
        lambda root: ["--data", str(_in_dir(root, a_csv="x,z,target\n"))],
        "no data rows (every file is empty or header only)",
    ),
    "all-nan": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD.assign(target=np.nan)))],
        "every one of 30 rows has a missing or non-finite value (column 'target'",
    ),
    "inf-target": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD.assign(target=np.inf)))],
        "every one of 30 rows has a missing or non-finite value (column 'target'",
    ),
    "corrupt-parquet": (
        lambda root: ["--data", str(_corrupt_parquet(root))],
        "x.parquet: not a readable Parquet file",
    ),
    "truncated-parquet": (
        lambda root: ["--data", str(_truncated_parquet(root))],
        "a.parquet: not a readable Parquet file",
    ),
    "ragged-csv": (
        lambda root: ["--data", str(_in_dir(root, a_csv="x,z,target\n1,2,3\n4,5,6,7\n7,8,9\n"))],
        "a.csv: not a readable CSV file (CSV parse error: Expected 3 columns, got 4: 4,5,6,7",
    ),
    "unreadable-file": (
        lambda root: ["--data", str(_dangling_symlink(root))],
        "b.csv: file not found",
    ),
    "missing-path": (
        lambda root: ["--data", str(root / "absent.csv")],
        "absent.csv: no such file or directory",
    ),
    "bad-test-fraction": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD)), "--test-fraction", "1.5"],
        "--test-fraction must be in [0, 1) (got 1.5)",
    ),
    "bad-state-block": (
        lambda root: ["--data", str(_in_dir(root, a_csv=GOOD)), "--state-block", "Bad_Name"],
        "state block name 'Bad_Name' is invalid",
    ),
    "foreign-state-block": (
        lambda root: (
            ["--data", str(_in_dir(root, a_csv=GOOD))]
            + ["--state-block", _foreign_state_block(f"foreign-{uuid.uuid4().hex[:8]}")]
        ),
        "does not hold linreg training state",
    ),
}


def _files(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (versions/ included), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(trained, tmp_path, kind, refused):
    env, block, out = trained
    build, message = BAD_INPUTS[kind]
    args = build(tmp_path / "bad")
    files_before = _files(out)
    state_before = _block_documents()
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
    assert _files(out) == files_before
    assert _block_documents() == state_before
    refused("CLI", kind)


def _block_documents() -> dict[str, str]:
    """Every saved training-state block document, as its stored JSON."""
    with get_client(sync_client=True) as client:
        documents = client.read_block_documents_by_type(
            TrainingStateBlock.get_block_type_slug(), include_secrets=True
        )
    return {document.name: json.dumps(document.data, sort_keys=True) for document in documents}


def _foreign_state_block(name: str) -> str:
    """A block of the training-state type whose document is not linreg state (an older or
    unrelated schema, written straight through the API)."""
    TrainingStateBlock.register_type_and_schema(_sync=True)
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug(TrainingStateBlock.get_block_type_slug())
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        client.create_block_document(
            BlockDocumentCreate(
                name=name,
                data={"state": {"weights": [1.0, 2.0], "format": "v0"}},
                block_type_id=block_type.id,
                block_schema_id=schema.id,
            )
        )
    return name


def test_validate_reads_a_spreadsheet_export_as_its_options_say(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("Preis;Fläche m²;Zimmer;y\n1.234,5;10,25;-;1\n2.000,0;3,5;2;2\n")
    result = run_cli(
        "--mode", "validate", "--data", str(source), "--target", "y",
        "--csv-decimal", ",", "--csv-thousands", ".", "--na-values", "-",
        "--feature", "Preis", "--feature", "Fläche m²", "--feature", "Zimmer",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "features Preis, Fläche m², Zimmer; target y" in result.stdout
    plain = run_cli("--mode", "validate", "--data", str(source), "--target", "y")
    assert plain.returncode == 2
    # Each text column's sample says which options would read it as numbers.
    assert (
        "'Preis' is text (e.g. '1.234,5'; read as numbers with --csv-decimal , "
        "--csv-thousands .)" in plain.stderr
    )
    assert "'Zimmer' is text (e.g. '-')" in plain.stderr


def test_json_prints_one_summary_object_and_quiet_prints_nothing(
    prefect_api, synthetic_dir, tmp_path
):
    directory, _ = synthetic_dir
    env = {"PREFECT_API_URL": prefect_api}
    block = f"json-{uuid.uuid4().hex[:8]}"
    common = ["--data", str(directory), "--out", str(tmp_path / "out"), "--state-block", block]
    result = run_cli("--mode", "all", "--model", "ols", "--json", *common, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON object
    metadata = json.loads((tmp_path / "out" / "model.json").read_text())
    assert summary["trained"] is True and summary["version"] == metadata["version"] == 1
    assert summary["rows_trained"] == metadata["rows_trained"]
    assert summary["sha256"] == metadata["sha256"]
    assert summary["metadata"] == str((tmp_path / "out" / "model.json").resolve())
    quiet = run_cli("--mode", "single", "--model", "ols", "--quiet", *common, env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_average_reaches_the_model_and_its_metadata(prefect_api, synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    out = tmp_path / "out"
    result = run_cli(
        "--mode", "all", "--data", str(directory), "--out", str(out),
        "--state-block", f"avg-{uuid.uuid4().hex[:8]}", "--average", "0", "--quiet",
        env={"PREFECT_API_URL": prefect_api},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metadata = json.loads((out / "model.json").read_text())
    assert metadata["hyperparameters"]["average"] == 0
    assert joblib.load(out / "model.pkl").average == 0
