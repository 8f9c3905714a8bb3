"""The lifecycle through ``python main.py`` and the flows, on the session's test Prefect server."""

from __future__ import annotations

import json
import uuid

import pytest
from prefect.artifacts import Artifact

from flows import promote, rollback, skip_batch, train_step
from linreg.config import DataConfig, HyperParams
from linreg.errors import ModelFileError
from linreg.lifecycle import GateRefused, LifecycleConfig
from linreg.state import InMemoryStateStore
from tasks.publish import artifact_key
from tasks.state import PrefectBlockStateStore
from tests.cli.test_main import run_cli
from tests.lifecycle.support import (
    BATCH_ROWS,
    COEF,
    history,
    live,
    snapshot,
    train_round,
    write_part,
)


@pytest.fixture
def published(tmp_path):
    """Three versions published by the domain code (no Prefect): data, out."""
    directory, out, store = tmp_path / "data", tmp_path / "out", InMemoryStateStore()
    for index in range(3):
        write_part(directory, index)
        train_round(directory, out, store)
    return directory, out


def test_cli_rollback_promote_and_history_without_prefect(published):
    _, out = published
    rolled = run_cli("--mode", "rollback", "--out", str(out))
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.startswith(f"rollback: model version 2 is live in {out} (was 3)")
    assert "Prefect server" not in rolled.stdout
    assert live(out)["version"] == 2 and (out / "pin.json").exists()
    promoted = run_cli("--mode", "promote", "--to", "3", "--out", str(out))
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == f"promote: model version 3 is live in {out} (was 2)"
    assert live(out)["version"] == 3 and not (out / "pin.json").exists()
    shown = run_cli("--mode", "history", "--out", str(out))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:5] == ["time", "reason", "version", "live", "previous"]
    assert [line.split()[1:5] for line in lines[1:]] == [
        ["published", "1", "1", "-"],
        ["published", "2", "2", "1"],
        ["published", "3", "3", "2"],
        ["rollback", "2", "2", "3"],
        ["promote", "3", "3", "2"],
    ]


@pytest.mark.parametrize(
    ("args", "damage", "message"),
    [
        (["--mode", "rollback", "--to", "9"], None, "version 9 is not kept under"),
        (["--mode", "promote"], "pkl", "versions/3/model.pkl: sha256 does not match"),
        (["--mode", "promote", "--to", "0"], None, "--to must be a version number"),
    ],
)
def test_cli_refusals_exit_2_and_change_nothing(published, refused, args, damage, message):
    _, out = published
    if damage:
        pkl = out / "versions" / "3" / "model.pkl"
        pkl.write_bytes(pkl.read_bytes() + b"tampered")
    before = snapshot(out)
    result = run_cli(*args, "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before
    refused("CLI", f"lifecycle {' '.join(args[:2])} {damage or message[:12]}")


def test_cli_gate_refuses_then_skip_passes_the_batch(prefect_api, tmp_path, refused):
    directory, out = tmp_path / "data", tmp_path / "out"
    block = f"gate-{uuid.uuid4().hex[:8]}"
    env = {"PREFECT_API_URL": prefect_api}
    common = ["--data", str(directory), "--out", str(out), "--state-block", block,
              "--model", "ols", "--batch-rows", str(BATCH_ROWS)]  # fmt: skip
    for index in range(2):
        write_part(directory, index)
    first = run_cli("--mode", "all", *common, env=env)
    assert first.returncode == 0, first.stderr
    write_part(directory, 2, coef=-COEF)
    before = snapshot(out, without=("history.jsonl",))
    state = PrefectBlockStateStore(block).load()
    gated = run_cli("--mode", "single", *common, env=env)
    assert gated.returncode == 2, gated.stdout[-2000:]
    gate = history(out)[-1]["gate"]
    assert history(out)[-1]["reason"] == "gated"
    assert f"{gate['candidate_rmse']:.6g} vs {gate['live_rmse']:.6g}" in gated.stderr
    assert snapshot(out, without=("history.jsonl",)) == before
    assert PrefectBlockStateStore(block).load() == state
    refused("CLI", "quality gate")

    skipped = run_cli("--mode", "skip", *common, env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped part-002.csv[0:500] (500 rows) untrained; model version 1 stays" in (
        skipped.stdout
    )
    write_part(directory, 3)
    after = run_cli("--mode", "single", *common, env=env)
    assert after.returncode == 0, after.stderr
    assert live(out)["version"] == 2
    assert live(out)["data"]["last_batches"] == ["part-003.csv[0:500]"]
    assert PrefectBlockStateStore(block).load().skipped[0]["batch"] == "part-002.csv[0:500]"
    assert [r["reason"] for r in history(out)] == ["published", "gated", "skipped", "published"]
    runs = [r["flow_run_id"] for r in history(out)]
    assert all(runs) and len(set(runs)) == 4  # each record names the flow run that wrote it


def test_flows_roll_back_promote_and_report_the_history(prefect_api, published):
    _, out = published
    record = rollback(out_dir=str(out))
    assert (record["live_version"], record["previous_version"]) == (2, 3)
    assert record["flow_run_id"]
    assert live(out)["version"] == 2
    record = promote(out_dir=str(out))
    assert record["live_version"] == 3 and not (out / "pin.json").exists()
    artifact = Artifact.get(artifact_key("model-history", str(out)[-40:]))
    assert artifact is not None and artifact.type == "table"
    rows = json.loads(artifact.data)
    assert [(row["reason"], row["live"]) for row in rows[-2:]] == [("rollback", 2), ("promote", 3)]
    before = snapshot(out)
    with pytest.raises(ModelFileError, match="version 8 is not kept"):
        rollback(out_dir=str(out), to=8)
    assert snapshot(out) == before


def test_train_step_flow_is_gated_and_skip_batch_flow_moves_on(prefect_api, tmp_path):
    directory, out = tmp_path / "data", tmp_path / "out"
    block = f"gflow-{uuid.uuid4().hex[:8]}"
    for index in range(2):
        write_part(directory, index)
    data = DataConfig(source=str(directory), batch_rows=BATCH_ROWS)
    params = {"data": data, "hyperparams": HyperParams(model="ols"), "out_dir": str(out),
              "state_block": block}  # fmt: skip
    train_step(**params, max_batches=2)
    write_part(directory, 2, coef=COEF * 5)
    with pytest.raises(GateRefused, match="quality gate refused version 2"):
        train_step(**params)
    assert live(out)["version"] == 1
    forced = train_step(**params, lifecycle=LifecycleConfig(force=True))
    assert forced.version == 2 and live(out)["gate"]["forced"] is True
    write_part(directory, 3, coef=COEF * 5)
    result = skip_batch(**params)
    assert result.batch == "part-003.csv[0:500]"
    assert PrefectBlockStateStore(block).load().cursor["part-003.csv"] == 500
    assert history(out)[-1]["reason"] == "skipped" and history(out)[-1]["flow_run_id"]
