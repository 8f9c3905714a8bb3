"""Both flows end to end against a real (test) Prefect server: on a local Dask cluster, and
in-process for rounds too small to be worth one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.artifacts import Artifact

from flows import train_all, train_step
from linreg.batches import plan_batches
from linreg.config import DataConfig, HyperParams
from linreg.errors import DataError, StateError
from linreg.model_files import load_verified_model, sha256_file
from linreg.preprocess import prepare_batch
from linreg.validation import validate_source
from tasks.publish import artifact_key
from tasks.runtime import RuntimeConfig
from tasks.state import PrefectBlockStateStore, TrainingStateBlock
from tests.conftest import write_csv


def _snapshot(out_dir: Path, state_block: str) -> tuple[dict[str, bytes], str | None]:
    files = {
        str(p.relative_to(out_dir)): p.read_bytes()
        for p in sorted(out_dir.rglob("*"))
        if p.is_file()
    }
    state = PrefectBlockStateStore(state_block).load()
    return files, None if state is None else state.model_dump_json()


def test_three_steps_give_versions_1_2_3_and_advance_the_cursor(
    synthetic_dir, tmp_path, state_block
):
    directory, _ = synthetic_dir
    data = DataConfig(source=str(directory), batch_rows=1_500)
    out = tmp_path / "out"
    cursors = []
    for expected_version in (1, 2, 3):
        result = train_step(
            data=data,
            hyperparams=HyperParams(model="ols"),
            out_dir=str(out),
            state_block=state_block,
        )
        assert result.trained and result.version == expected_version
        state = TrainingStateBlock.load(state_block).state
        assert state.version == expected_version
        cursors.append(sum(state.cursor.values()))
        metadata = json.loads((out / "model.json").read_text())
        assert metadata["version"] == expected_version
        assert metadata["sha256"] == sha256_file(out / "model.pkl")
    assert cursors == [1_500, 3_000, 4_500]
    assert state.cursor == {
        "part-00000.parquet": 2_000,
        "part-00001.parquet": 2_000,
        "part-00002.parquet": 500,
    }
    assert [entry["version"] for entry in state.metrics_history] == [1, 2, 3]
    assert state.rows_trained == metadata["rows_trained"] > 0
    json.dumps(state.model_dump())  # plain data only: no pickle, no numpy objects


def test_train_all_ols_equals_lstsq_on_the_same_training_rows(synthetic_dir, tmp_path, state_block):
    directory, _ = synthetic_dir
    data = DataConfig(source=str(directory), batch_rows=1_000, test_fraction=0.25)
    result = train_all(
        data=data,
        hyperparams=HyperParams(model="ols"),
        out_dir=str(tmp_path / "out"),
        state_block=state_block,
        runtime=RuntimeConfig(executor="dask"),
    )
    assert result.trained and result.batches == 6 and result.version == 1
    plan = validate_source(data)
    prepared = [prepare_batch(b, plan.columns, 0.25) for b in plan_batches(plan.files, {}, 6_000)]
    X = np.concatenate([p.x_train for p in prepared])
    y = np.concatenate([p.y_train for p in prepared])
    mean, scale = X.mean(axis=0), X.std(axis=0)
    coef = np.linalg.lstsq((X - mean) / scale, y - y.mean(), rcond=None)[0] / scale
    model, metadata = load_verified_model(tmp_path / "out")
    np.testing.assert_allclose(metadata["coef"], coef, rtol=1e-9)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-9)
    assert metadata["rows_trained"] == len(y)
    assert metadata["features"] == list(plan.features)
    assert metadata["data"]["rows_dropped"] == sum(p.report.rows_dropped for p in prepared) > 0


def test_train_all_sgd_converges_and_reports_artifacts(synthetic_dir, tmp_path, state_block):
    directory, truth = synthetic_dir
    data = DataConfig(source=str(directory), batch_rows=500)
    result = train_all(
        data=data,
        hyperparams=HyperParams(model="sgd"),
        out_dir=str(tmp_path / "out"),
        state_block=state_block,
        runtime=RuntimeConfig(executor="dask"),
    )
    assert result.trained and result.batches == 12
    assert result.metrics["r2"] >= 0.999
    metadata = json.loads((tmp_path / "out" / "model.json").read_text())
    assert metadata["model"] == "sgd" and metadata["version"] == 1
    table = Artifact.get(artifact_key(state_block, "metrics"))
    assert table is not None and table.type == "table"
    summary = Artifact.get(artifact_key(state_block, "model"))
    assert summary is not None and "Model version 1 (sgd)" in summary.data


def test_train_all_with_n_iter_and_delay_publishes_each_batch(synthetic_dir, tmp_path, state_block):
    directory, _ = synthetic_dir
    data = DataConfig(source=str(directory), batch_rows=1_000)
    result = train_all(
        data=data,
        hyperparams=HyperParams(model="ols"),
        out_dir=str(tmp_path / "out"),
        state_block=state_block,
        n_iter=3,
        delay=0.1,
    )
    assert result.batches == 3 and result.rounds == 3 and result.version == 3
    state = TrainingStateBlock.load(state_block).state
    assert sum(state.cursor.values()) == 3_000
    again = train_all(
        data=data,
        hyperparams=HyperParams(model="ols"),
        out_dir=str(tmp_path / "out"),
        state_block=state_block,
    )
    assert again.batches == 3 and again.version == 4
    done = train_step(
        data=data,
        hyperparams=HyperParams(model="ols"),
        out_dir=str(tmp_path / "out"),
        state_block=state_block,
    )
    assert done.trained is False and done.version == 4
    assert done.rows_trained == again.rows_trained


def test_new_files_are_picked_up_by_the_next_step(synthetic_dir, tmp_path, state_block):
    directory, _ = synthetic_dir
    data = DataConfig(source=str(directory), batch_rows=10_000)
    kwargs = {
        "hyperparams": HyperParams(model="ols"),
        "out_dir": str(tmp_path / "out"),
        "state_block": state_block,
    }
    assert train_step(data=data, **kwargs).version == 1
    assert train_step(data=data, **kwargs).trained is False
    frame = pd.read_parquet(directory / "part-00000.parquet")
    frame.iloc[:300].to_parquet(directory / "part-00009.parquet")
    result = train_step(data=data, **kwargs)
    assert result.trained and result.version == 2
    assert TrainingStateBlock.load(state_block).state.cursor["part-00009.parquet"] == 300


def _artifacts_of(state_block: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = [artifact_key(state_block, kind) for kind in ("metrics", "model")]
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )


def test_a_budgeted_step_drains_the_backlog_in_one_round_then_is_a_no_op(
    synthetic_dir, tmp_path, state_block
):
    """The cron deployment after an outage: the first run trains every batch that arrived
    in one round and one publish; a run queued behind it publishes and saves nothing."""
    directory, _ = synthetic_dir
    data = DataConfig(source=str(directory), batch_rows=1_000)
    out = tmp_path / "out"
    kwargs = {
        "data": data,
        "hyperparams": HyperParams(model="ols"),
        "out_dir": str(out),
        "state_block": state_block,
        "max_batches": 1_000,
        "max_seconds": 600.0,
    }
    first = train_step(**kwargs)
    state = TrainingStateBlock.load(state_block).state
    assert (first.trained, first.version, first.batches) == (True, 1, 6)
    assert sum(state.cursor.values()) == 6_000 and state.batches_trained == 6
    assert [path.name for path in (out / "versions").iterdir()] == ["1"]
    files, stored = _snapshot(out, state_block)
    artifacts = _artifacts_of(state_block)
    assert artifacts  # the round published its metrics and model artifacts
    queued = train_step(**kwargs)
    assert (queued.trained, queued.version, queued.batches) == (False, 1, 0)
    assert _snapshot(out, state_block) == (files, stored)
    assert len(_artifacts_of(state_block)) == len(artifacts)


def test_a_different_schema_is_refused_unless_reset(synthetic_dir, tmp_path, state_block):
    directory, _ = synthetic_dir
    out = tmp_path / "out"
    train_step(
        data=DataConfig(source=str(directory)),
        hyperparams=HyperParams(model="ols"),
        out_dir=str(out),
        state_block=state_block,
    )
    before = _snapshot(out, state_block)
    narrower = DataConfig(source=str(directory), features=["x00", "x01"])
    with pytest.raises(StateError, match="Pass --reset to start a new model"):
        train_step(
            data=narrower,
            hyperparams=HyperParams(model="ols"),
            out_dir=str(out),
            state_block=state_block,
        )
    assert _snapshot(out, state_block) == before
    result = train_step(
        data=narrower,
        hyperparams=HyperParams(model="ols"),
        out_dir=str(out),
        state_block=state_block,
        reset=True,
    )
    assert result.version == 2  # versions keep rising across a reset
    assert json.loads((out / "model.json").read_text())["features"] == ["x00", "x01"]


def _bad_sources(tmp_path: Path) -> dict[str, tuple[str, str, dict]]:
    good = pd.DataFrame(
        {"x": np.arange(20.0), "z": np.arange(20.0) ** 2, "target": np.arange(20.0)}
    )
    cases: dict[str, tuple[str, str, dict]] = {}

    def csv(name: str, frame: pd.DataFrame) -> str:
        return str(write_csv(tmp_path / "bad" / name / "data.csv", frame).parent)

    cases["missing-target"] = (csv("mt", good.drop(columns="target")), "target column", {})
    cases["non-numeric-feature"] = (
        csv("nn", good.assign(name=["a"] * 20)),
        "feature column 'name' is not numeric",
        {"features": ["x", "name"]},
    )
    cases["empty-source"] = (csv("es", good.iloc[:0]), "no data rows", {})
    cases["all-nan"] = (csv("an", good.assign(target=np.nan)), "missing or non-finite", {})
    schema = tmp_path / "bad" / "schema"
    write_csv(schema / "a.csv", good)
    write_csv(schema / "b.csv", good.rename(columns={"z": "w"}))
    cases["schema-differs"] = (str(schema), "b.csv: columns differ from a.csv", {})
    corrupt = tmp_path / "bad" / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "part.parquet").write_bytes(b"PAR1 definitely not parquet PAR1")
    cases["corrupt-parquet"] = (str(corrupt), "part.parquet: not a readable Parquet file", {})
    cases["missing-path"] = (str(tmp_path / "nowhere"), "no such file or directory", {})
    return cases


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
    ],
)
def test_bad_input_fails_the_run_and_changes_nothing(
    synthetic_dir, tmp_path, state_block, kind, refused
):
    directory, _ = synthetic_dir
    out = tmp_path / "out"
    hyperparams = HyperParams(model="ols")
    train_step(
        data=DataConfig(source=str(directory)),
        hyperparams=hyperparams,
        out_dir=str(out),
        state_block=state_block,
    )
    before = _snapshot(out, state_block)
    source, message, extra = _bad_sources(tmp_path)[kind]
    state = train_step(
        data=DataConfig(source=source, **extra),
        hyperparams=hyperparams,
        out_dir=str(out),
        state_block=state_block,
        reset=True,
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(DataError, match=message):
        state.result()
    assert _snapshot(out, state_block) == before
    refused("flow", kind)


def test_a_step_never_asks_the_server_for_its_default_result_storage(
    synthetic_dir, tmp_path, state_block, monkeypatch
):
    """Flow results are not persisted; the flows say so, which spares each run the server
    reads that look for a default result storage (three per train-step)."""
    import prefect.results

    reads = []
    original = prefect.results._read_server_default_result_storage_block_id

    def counted():
        reads.append(1)
        return original()

    monkeypatch.setattr(prefect.results, "_read_server_default_result_storage_block_id", counted)
    directory, _ = synthetic_dir
    result = train_step(
        data=DataConfig(source=str(directory), batch_rows=1_500),
        hyperparams=HyperParams(model="ols"),
        out_dir=str(tmp_path / "out"),
        state_block=state_block,
    )
    assert result.trained
    assert reads == []


def test_the_model_card_reports_rows_dropped_and_columns_left_out(tmp_path, state_block):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a|b": rng.normal(size=300), "c": rng.normal(size=300)})
    frame["y"] = 2 * frame["a|b"] - frame["c"] + 0.01 * rng.normal(size=300)
    frame.loc[[5, 17, 40], "c"] = np.nan
    frame["note"] = "text"
    source = write_csv(tmp_path / "data" / "part.csv", frame)
    result = train_step(
        data=DataConfig(source=str(source.parent), target="y", batch_rows=300),
        hyperparams=HyperParams(model="ols"),
        out_dir=str(tmp_path / "out"),
        state_block=state_block,
    )
    assert result.trained
    card = Artifact.get(artifact_key(state_block, "model")).data
    assert "## Data quality" in card
    assert "| c | 3 | |" in card
    assert "| `a\\|b` | " in card  # a '|' in a name does not split the table's cell
    assert "| note | 0 | " in card
    assert Artifact.get(artifact_key(state_block, "data-quality")) is None


def test_flows_send_their_heartbeats_themselves_when_prefect_does_not(
    synthetic_dir, tmp_path, state_block
):
    """As the CLI runs them, with Prefect's own heartbeats off (its sync engine joins their
    thread, which sleeps in 1-s steps, at the end of every run): training, scoring and
    lifecycle flows send the heartbeat events a zombie-detection automation watches
    themselves, as Prefect's own would (the run; the flow related), and no thread outlives
    the run."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows import promote, score

    directory, _ = synthetic_dir
    data = DataConfig(source=str(directory), batch_rows=1_500)
    out = str(tmp_path / "out")
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        runs = {
            "train-step": train_step(
                data=data, out_dir=out, state_block=state_block, return_state=True
            ),
            "score": score(
                data=data, predictions=str(tmp_path / "scores"), out_dir=out, return_state=True
            ),
            "promote": promote(out_dir=out, return_state=True),
        }
    assert not [t for t in threading.enumerate() if t.name == "heartbeat" and t.is_alive()]
    with get_client(sync_client=True) as client:
        for flow_name, state in runs.items():
            assert state.is_completed(), (flow_name, state)
            run_id = state.state_details.flow_run_id
            heartbeats = EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            )
            events = []
            for _ in range(60):  # the server persists events in batches
                events = client.read_events(heartbeats, limit=50).events
                if events:
                    break
                time.sleep(0.5)
            assert events, f"no heartbeat event for the {flow_name} run {run_id}"
            assert [(r.role, r.name) for r in events[0].related if r.role == "flow"] == [
                ("flow", flow_name)
            ]
