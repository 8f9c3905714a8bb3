"""Versions, rollback and promote, history and the quality gate, without any server."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from linreg.batches import plan_batches
from linreg.config import DataConfig, HyperParams
from linreg.errors import ModelFileError
from linreg.lifecycle import GateRefused, format_table, history_rows, promote, rollback
from linreg.model_files import ModelDirectory, load_verified_model
from linreg.preprocess import prepare_batch
from linreg.state import InMemoryStateStore
from linreg.training import RoundSpec, skip_round
from linreg.validation import validate_source
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
def data(tmp_path):
    directory = tmp_path / "data"
    for index in range(5):
        write_part(directory, index)
    return directory


def test_each_publish_keeps_its_version_byte_for_byte_and_only_the_newest_are_kept(data, tmp_path):
    out, store = tmp_path / "out", InMemoryStateStore()
    for version in range(1, 6):
        result = train_round(data, out, store, keep_versions=3)
        assert result.version == version
        kept = out / "versions" / str(version)
        assert (kept / "model.json").read_bytes() == (out / "model.json").read_bytes()
        assert (kept / "model.pkl").read_bytes() == (out / "model.pkl").read_bytes()
    assert sorted(int(p.name) for p in (out / "versions").iterdir()) == [3, 4, 5]
    assert ModelDirectory(out).versions() == [3, 4, 5]
    _, metadata = load_verified_model(out / "versions" / "4")
    assert metadata["version"] == 4 and live(out)["version"] == 5


def test_rollback_pins_an_older_version_until_promote(data, tmp_path):
    out, store = tmp_path / "out", InMemoryStateStore()
    for _ in range(3):
        train_round(data, out, store)
    record = rollback(ModelDirectory(out))
    assert (record["version"], record["previous_version"]) == (2, 3)
    assert (out / "model.json").read_bytes() == (out / "versions/2/model.json").read_bytes()
    assert (out / "model.pkl").read_bytes() == (out / "versions/2/model.pkl").read_bytes()
    assert json.loads((out / "pin.json").read_text())["version"] == 2
    state_before = store.load()

    result = train_round(data, out, store)  # training continues, out of service
    assert result.version == 4 and store.load().version == 4
    assert live(out)["version"] == 2
    assert (out / "versions/4/model.json").exists()
    assert state_before.version == 3  # rollback did not touch the state

    # A second rollback steps further back (the version live before 2 that is older: 1).
    assert rollback(ModelDirectory(out))["version"] == 1
    record = promote(ModelDirectory(out))
    assert (record["version"], record["previous_version"]) == (4, 1)
    assert not (out / "pin.json").exists()
    assert (out / "model.json").read_bytes() == (out / "versions/4/model.json").read_bytes()
    train_round(data, out, store)
    assert live(out)["version"] == 5
    reasons = [(r["reason"], r["version"], r["live_version"]) for r in history(out)]
    assert reasons == [
        ("published", 1, 1),
        ("published", 2, 2),
        ("published", 3, 3),
        ("rollback", 2, 2),
        ("published", 4, 2),
        ("rollback", 1, 1),
        ("promote", 4, 4),
        ("published", 5, 5),
    ]
    assert [r["live_changed"] for r in history(out)] == [True] * 4 + [False] + [True] * 3


def test_rollback_with_to_and_pruning_spares_the_pinned_version(data, tmp_path):
    out, store = tmp_path / "out", InMemoryStateStore()
    for _ in range(2):
        train_round(data, out, store, keep_versions=2)
    rollback(ModelDirectory(out), to=1)
    for _ in range(3):
        train_round(data, out, store, keep_versions=2)
    assert ModelDirectory(out).versions() == [1, 4, 5]
    assert live(out)["version"] == 1


@pytest.mark.parametrize(
    ("operation", "to", "damage", "message"),
    [
        (rollback, 7, None, r"version 7 is not kept under .*versions/7 \(kept: 1, 2, 3\)"),
        (promote, 9, None, r"version 9 is not kept"),
        (promote, None, "pkl", r"versions/3/model.pkl: sha256 does not match"),
        (rollback, 2, "pkl", r"versions/2/model.pkl: sha256 does not match"),
        (promote, 2, "json", r"versions/2/model.json: not valid JSON"),
        (rollback, 1, "missing", r"versions/1/model.pkl: missing"),
    ],
)
def test_refused_rollbacks_and_promotes_change_nothing(
    data, tmp_path, operation, to, damage, message
):
    out, store = tmp_path / "out", InMemoryStateStore()
    for _ in range(3):
        train_round(data, out, store)
    target = out / "versions" / str(to or 3)
    if damage == "pkl":
        (target / "model.pkl").write_bytes((target / "model.pkl").read_bytes()[:-8])
    elif damage == "json":
        (target / "model.json").write_text("{not json")
    elif damage == "missing":
        (target / "model.pkl").unlink()
    before = snapshot(out)
    with pytest.raises(ModelFileError, match=message):
        operation(ModelDirectory(out), to)
    assert snapshot(out) == before


def test_rollback_needs_something_older(data, tmp_path):
    out, store = tmp_path / "out", InMemoryStateStore()
    with pytest.raises(ModelFileError, match="nothing is published yet"):
        rollback(ModelDirectory(out))
    train_round(data, out, store)
    before = snapshot(out)
    with pytest.raises(ModelFileError, match="no kept version older than the live version 1"):
        rollback(ModelDirectory(out))
    assert snapshot(out) == before


def test_history_records_data_and_metrics_and_prints_as_a_table(data, tmp_path):
    out, store = tmp_path / "out", InMemoryStateStore()
    train_round(data, out, store)
    train_round(data, out, store)
    first, second = history(out)
    assert second["previous_version"] == 1 and first["previous_version"] is None
    assert second["data"]["rows_read"] == 2 * BATCH_ROWS
    assert second["data"]["rows_trained"] == store.load().rows_trained
    assert second["metrics"] == live(out)["metrics"]
    assert second["sha256"] == live(out)["sha256"]
    assert second["flow_run_id"] is None and second["gate"]["passed"] is True
    table = format_table(history_rows(history(out))).splitlines()
    assert table[0].split() == [
        "time", "reason", "version", "live", "previous", "rmse", "rows", "run", "note"
    ]  # fmt: skip
    assert table[2].split()[1:5] == ["published", "2", "2", "1"]
    assert f"{live(out)['metrics']['rmse']:.6g}" in table[2]


def _held_out_rmse(directory, cursor_batches: int, coef, intercept) -> float:
    """RMSE of a model on the held-out rows of the first ``cursor_batches`` batches, from
    the rows themselves (not from the statistics the gate uses)."""
    plan = validate_source(DataConfig(source=str(directory), batch_rows=BATCH_ROWS))
    batches = plan_batches(plan.files, {}, BATCH_ROWS, cursor_batches)
    parts = [prepare_batch(batch, plan.columns, 0.2) for batch in batches]
    x = np.concatenate([p.x_test for p in parts])
    y = np.concatenate([p.y_test for p in parts])
    return math.sqrt(np.mean((y - x @ np.asarray(coef) - intercept) ** 2))


def test_the_gate_refuses_a_worse_model_changing_nothing_until_forced(tmp_path):
    directory, out, store = tmp_path / "data", tmp_path / "out", InMemoryStateStore()
    for index in range(3):
        write_part(directory, index)
    for _ in range(3):
        train_round(directory, out, store)
    write_part(directory, 3, coef=-COEF, rows=3 * BATCH_ROWS)  # the relationship flips
    files, state = snapshot(out, without=("history.jsonl",)), store.load()
    with pytest.raises(GateRefused) as refused:
        train_round(directory, out, store, max_batches=3)
    assert snapshot(out, without=("history.jsonl",)) == files and store.load() == state
    gated = history(out)[-1]
    assert (gated["reason"], gated["version"], gated["live_version"]) == ("gated", 4, 3)
    gate = gated["gate"]
    # The live model's RMSE on those rows is the one it was published with.
    assert gate["live_rmse"] == pytest.approx(live(out)["metrics"]["rmse"], rel=1e-9)
    assert gate["n_test"] == live(out)["metrics"]["n_test"]
    assert gate["candidate_rmse"] > 1.1 * gate["live_rmse"]
    message = str(refused.value)
    assert f"{gate['candidate_rmse']:.6g} vs {gate['live_rmse']:.6g}" in message
    assert "--force" in message and "--mode skip" in message

    forced = train_round(directory, out, store, max_batches=3, force=True)
    assert forced.version == 4 and live(out)["version"] == 4
    assert live(out)["gate"]["forced"] is True
    # The candidate's figure is exact: the same RMSE from the held-out rows themselves.
    new = live(out)
    assert gate["candidate_rmse"] == pytest.approx(
        _held_out_rmse(directory, 3, new["coef"], new["intercept"]), rel=1e-9
    )
    assert history(out)[-1]["reason"] == "published"


def test_skip_moves_past_a_refused_batch_and_the_next_round_passes(tmp_path):
    directory, out, store = tmp_path / "data", tmp_path / "out", InMemoryStateStore()
    for index in range(2):
        write_part(directory, index)
    train_round(directory, out, store, max_batches=2)
    write_part(directory, 2, coef=COEF * 10)
    write_part(directory, 3)
    with pytest.raises(GateRefused):
        train_round(directory, out, store)
    plan = validate_source(DataConfig(source=str(directory), batch_rows=BATCH_ROWS))
    spec = RoundSpec(HyperParams(model="ols"), BATCH_ROWS, 0.2, 1)
    skipped = skip_round(plan, spec, store=store, out_dir=str(out))
    assert (skipped.batch, skipped.rows, skipped.version) == ("part-002.csv[0:500]", 500, 1)
    state = store.load()
    assert state.cursor["part-002.csv"] == 500 and state.version == 1
    assert [entry["batch"] for entry in state.skipped] == ["part-002.csv[0:500]"]
    result = train_round(directory, out, store)
    assert result.version == 2 and live(out)["data"]["last_batches"] == ["part-003.csv[0:500]"]
    assert [r["reason"] for r in history(out)] == ["published", "gated", "skipped", "published"]
    done = skip_round(plan, spec, store=store, out_dir=str(out))
    assert done.batch is None


def test_the_gate_passes_every_round_of_stationary_data(data, tmp_path):
    out, store = tmp_path / "out", InMemoryStateStore()
    for model in ("ols",):
        for _ in range(5):
            train_round(data, out, store, model=model)
    gates = [r["gate"] for r in history(out)[1:]]
    assert len(gates) == 4 and all(g["passed"] and not g["forced"] for g in gates)
    assert max(g["candidate_rmse"] / g["live_rmse"] - 1 for g in gates) < 0.01


def test_a_version_directory_left_by_a_failed_publish_is_not_a_version(data, tmp_path):
    out, store = tmp_path / "out", InMemoryStateStore()
    train_round(data, out, store)
    (out / "versions" / "2").mkdir()  # a full disk stopped the publish of version 2 here
    assert ModelDirectory(out).versions() == [1]
    assert promote(ModelDirectory(out))["version"] == 1


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("count", [1, 3, 40, 1_000])
def test_the_newest_history_records_are_read_from_the_end(tmp_path, monkeypatch, where, count):
    """As a whole read would give them: blank lines skipped, lines longer than a block,
    fewer records than asked for, a missing file (no records)."""
    import linreg.model_files

    monkeypatch.setattr(linreg.model_files, "_TAIL_BLOCK", 16)  # many blocks, long lines
    location = str(tmp_path) if where == "local" else f"memory://history-{count}"
    directory = ModelDirectory(location)
    assert directory.read_last_lines(count, "history.jsonl") == []
    lines = [json.dumps({"version": v, "note": "x" * (v % 7) * 10}) for v in range(1, 301)]
    lines.insert(150, "")
    directory.write(("\n".join(lines) + "\n").encode(), "history.jsonl")
    assert (
        directory.read_last_lines(count, "history.jsonl")
        == (directory.read_lines("history.jsonl")[-count:])
    )


def test_a_broken_history_line_near_the_end_is_named(tmp_path):
    directory = ModelDirectory(str(tmp_path))
    directory.write(b'{"version": 1}\n{"version": 2\n{"version": 3}\n', "history.jsonl")
    with pytest.raises(ModelFileError, match="history.jsonl: line 2 from the end is not valid"):
        directory.read_last_lines(5, "history.jsonl")
