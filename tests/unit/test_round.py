"""The training round without any server: strategies, executors, store, publisher, lock."""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from linreg.batches import plan_batches
from linreg.config import DataConfig, HyperParams
from linreg.errors import DataError, StateError
from linreg.executors import DaskExecutor, SerialExecutor
from linreg.state import METRICS_HISTORY_KEPT, InMemoryStateStore
from linreg.strategies import STRATEGIES, strategy_for
from linreg.training import FilePublisher, RoundSpec, run_round
from linreg.validation import validate_source
from tests.conftest import write_csv


@pytest.fixture(scope="module")
def dask_client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _round(
    directory, out, store, model="ols", batch_rows=6_000, executor=None, on_batch=None, **spec
):
    data = DataConfig(source=str(directory), batch_rows=batch_rows)
    plan = validate_source(data)
    return run_round(
        plan,
        RoundSpec(HyperParams(model=model), data.batch_rows, data.test_fraction, **spec),
        executor=executor or SerialExecutor(),
        store=store,
        publisher=FilePublisher(str(out)),
        on_batch=on_batch,
    )


def _snapshot(out: Path, store: InMemoryStateStore) -> tuple[dict[str, bytes], str | None]:
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    state = store.load()
    return files, None if state is None else state.model_dump_json()


@pytest.mark.parametrize("batch_rows", [6_000, 3_000, 1_000, 777])
def test_a_round_in_any_number_of_batches_equals_one_batch(synthetic_dir, tmp_path, batch_rows):
    directory, _ = synthetic_dir
    whole = InMemoryStateStore()
    _round(directory, tmp_path / "whole", whole)
    split = InMemoryStateStore()
    result = _round(directory, tmp_path / "split", split, batch_rows=batch_rows)
    assert result.batches == -(-6_000 // batch_rows)
    one, many = whole.load(), split.load()
    np.testing.assert_allclose(
        json.loads((tmp_path / "split" / "model.json").read_text())["coef"],
        json.loads((tmp_path / "whole" / "model.json").read_text())["coef"],
        rtol=1e-12,
    )
    assert many.rows_trained == one.rows_trained and many.rows_held_out == one.rows_held_out
    assert many.metrics_history[-1]["rmse"] == pytest.approx(
        one.metrics_history[-1]["rmse"], rel=1e-12
    )


@pytest.mark.parametrize("model", ["ols", "sgd"])
def test_serial_and_dask_executors_give_the_same_state(synthetic_dir, tmp_path, dask_client, model):
    directory, _ = synthetic_dir
    serial, dask = InMemoryStateStore(), InMemoryStateStore()
    _round(directory, tmp_path / "s", serial, model, batch_rows=1_000)
    _round(
        directory, tmp_path / "d", dask, model, batch_rows=1_000, executor=DaskExecutor(dask_client)
    )
    a, b = serial.load(), dask.load()
    assert a.cursor == b.cursor and a.rows_trained == b.rows_trained
    np.testing.assert_allclose(
        json.loads((tmp_path / "d" / "model.json").read_text())["coef"],
        json.loads((tmp_path / "s" / "model.json").read_text())["coef"],
        rtol=1e-12,
    )
    assert a.model_dump(exclude={"updated_at"}).keys() == b.model_dump().keys() - {"updated_at"}


@pytest.mark.parametrize("model", ["ols", "sgd"])
def test_a_round_whose_dask_workers_die_mid_round_learns_every_batch_once(
    synthetic_dir, tmp_path, model
):
    # Both worker processes are killed after the third batch: their nannies start new ones,
    # Dask runs the lost work again from what the client holds, and the model must be the
    # one an undisturbed round learns (no batch lost, none learnt twice).
    directory, _ = synthetic_dir
    undisturbed = InMemoryStateStore()
    _round(directory, tmp_path / "serial", undisturbed, model, batch_rows=500)
    store, killed = InMemoryStateStore(), []
    with (
        LocalCluster(
            # ":0": the module's in-process cluster holds the default HTTP port.
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):

        def kill_the_workers(index: int, count: int, summary) -> None:
            if index == 2 and not killed:
                killed.extend(client.run(os.getpid).values())
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)

        _round(
            directory,
            tmp_path / "dask",
            store,
            model,
            batch_rows=500,
            executor=DaskExecutor(client),
            on_batch=kill_the_workers,
        )
        client.wait_for_workers(2, timeout=30)
        assert len(killed) == 2 and not set(client.run(os.getpid).values()) & set(killed)
    expected, got = undisturbed.load(), store.load()
    assert (got.cursor, got.rows_trained) == (expected.cursor, expected.rows_trained)
    np.testing.assert_allclose(
        json.loads((tmp_path / "dask" / "model.json").read_text())["coef"],
        json.loads((tmp_path / "serial" / "model.json").read_text())["coef"],
        rtol=1e-12,
    )


def test_every_state_field_advances_as_documented(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    store = InMemoryStateStore()
    first = _round(directory, tmp_path / "out", store, batch_rows=1_500, max_batches=2)
    state = store.load()
    assert (first.trained, first.version, first.batches) == (True, 1, 2)
    assert state.cursor == {"part-00000.parquet": 2_000, "part-00001.parquet": 1_000}
    assert state.batches_trained == 2
    assert state.rows_trained + state.rows_held_out + state.rows_dropped == 3_000
    assert state.rows_trained == first.rows_trained == first.report.rows_train
    assert [m["version"] for m in state.metrics_history] == [1]
    second = _round(directory, tmp_path / "out", store, batch_rows=1_500)
    state = store.load()
    assert (second.version, second.batches) == (2, 2)
    assert sum(state.cursor.values()) == 6_000 and state.batches_trained == 4
    assert state.rows_trained + state.rows_held_out + state.rows_dropped == 6_000
    assert [m["version"] for m in state.metrics_history] == [1, 2]
    assert state.metrics_history[-1]["n_test"] == state.rows_held_out
    nothing = _round(directory, tmp_path / "out", store, batch_rows=1_500)
    assert (nothing.trained, nothing.version) == (False, 2) and store.load() == state


def test_the_state_keeps_the_newest_versions_metrics_only(synthetic_dir, tmp_path):
    """The state is read and written every step: its metrics history must not grow with the
    model's age (history.jsonl keeps every version)."""
    directory, _ = synthetic_dir
    store = InMemoryStateStore()
    _round(directory, tmp_path / "out", store, batch_rows=1_500, max_batches=1)
    state = store.load()
    old = [{**state.metrics_history[0], "version": v} for v in range(1, METRICS_HISTORY_KEPT + 1)]
    aged = state.model_copy(update={"version": METRICS_HISTORY_KEPT, "metrics_history": old})
    store.save(aged, state.version)
    _round(directory, tmp_path / "out", store, batch_rows=1_500)
    versions = [m["version"] for m in store.load().metrics_history]
    assert versions == list(range(2, METRICS_HISTORY_KEPT + 2))


def test_a_bad_batch_mid_round_leaves_store_and_published_files_untouched(tmp_path):
    directory = tmp_path / "data"
    frame = pd.DataFrame({"x": np.arange(40.0), "target": 2 * np.arange(40.0)})
    write_csv(directory / "a.csv", frame)
    store, out = InMemoryStateStore(), tmp_path / "out"
    _round(directory, out, store, batch_rows=20)
    write_csv(directory / "b.csv", frame)
    write_csv(directory / "c.csv", frame.assign(target=np.nan))  # valid schema, no usable row
    before = _snapshot(out, store)
    with pytest.raises(DataError, match=r"c.csv\[0:20\]: every one of 20 rows .*'target'"):
        _round(directory, out, store, batch_rows=20)
    assert _snapshot(out, store) == before


def test_the_store_refuses_a_stale_save(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    store = InMemoryStateStore()
    _round(directory, tmp_path / "out", store, batch_rows=1_000, max_batches=1)
    stale = store.load()
    _round(directory, tmp_path / "out", store, batch_rows=1_000, max_batches=1)
    with pytest.raises(StateError, match="expected version 1, found 2"):
        store.save(stale.model_copy(update={"version": 2}), expected_version=1)
    assert store.load().version == 2


class Stopped(BaseException):
    """The process dying: nothing after it runs (a BaseException, so no handler catches it)."""


def test_a_run_stopped_between_publish_and_save_is_trained_again_once(
    synthetic_dir, tmp_path, caplog
):
    directory, _ = synthetic_dir
    out = tmp_path / "out"

    class StoppingStore(InMemoryStateStore):
        stop_next_save = False

        def save(self, state, expected_version):
            if self.stop_next_save:
                self.stop_next_save = False
                raise Stopped
            super().save(state, expected_version)

    store = StoppingStore()
    _round(directory, out, store, batch_rows=1_000, max_batches=1)
    store.stop_next_save = True
    with pytest.raises(Stopped):
        _round(directory, out, store, batch_rows=1_000, max_batches=1)
    assert store.load().version == 1
    assert json.loads((out / "model.json").read_text())["version"] == 2  # published, not saved

    with caplog.at_level("WARNING", logger="linreg"):
        _round(directory, out, store, batch_rows=1_000, max_batches=1)
    clean = InMemoryStateStore()  # the same two rounds, neither stopped
    for _ in range(2):
        _round(directory, tmp_path / "clean", clean, batch_rows=1_000, max_batches=1)
    state, expected = store.load(), clean.load()
    assert (state.version, state.cursor, state.rows_trained) == (
        expected.version,
        expected.cursor,
        expected.rows_trained,
    )
    published = json.loads((out / "model.json").read_text())
    assert published["coef"] == json.loads((tmp_path / "clean" / "model.json").read_text())["coef"]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["version"]) for r in history] == [("published", v) for v in (1, 2, 2)]
    assert history[1].get("note") is None
    assert history[2]["note"].startswith("version 2 was published before")
    assert "version 2 was published before" in caplog.text


def test_the_round_holds_the_lock_from_load_to_save(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    events: list[str] = []

    class RecordingStore(InMemoryStateStore):
        def load(self):
            events.append("load")
            return super().load()

        def save(self, state, expected_version):
            events.append("save")
            super().save(state, expected_version)

    @contextmanager
    def lock(name: str):
        events.append(f"lock {name}")
        yield
        events.append("unlock")

    data = DataConfig(source=str(directory))
    run_round(
        validate_source(data),
        RoundSpec(HyperParams(model="ols"), data.batch_rows, data.test_fraction),
        executor=SerialExecutor(),
        store=RecordingStore("block"),
        publisher=FilePublisher(str(tmp_path / "out")),
        lock=lock,
    )
    assert events == ["lock block", "load", "save", "unlock"]


def _sgd_batches(directory, batch_rows):
    """The plan's columns, the sgd strategy, a fresh model and the batches of ``directory``."""
    plan = validate_source(DataConfig(source=str(directory), batch_rows=batch_rows))
    strategy = strategy_for("sgd")
    start = strategy.start(None, HyperParams(model="sgd"))
    return [*plan.features, plan.target], strategy, start, plan_batches(plan.files, {}, batch_rows)


def test_an_sgd_batch_summary_holds_its_holdout_and_no_rows_to_learn(synthetic_dir):
    directory, _ = synthetic_dir
    columns, strategy, start, batches = _sgd_batches(directory, 6_000)
    model, summary = strategy.learn(start, batches[0], columns, 0.2, True)
    assert summary.train is None
    assert summary.holdout.n == summary.report.rows_test == len(summary.y_test) > 0
    assert model.n_samples_seen_ == summary.report.rows_train
    assert model.coef_.shape == (len(columns) - 1,)


def test_an_sgd_step_leaves_the_model_it_was_given_as_it_was(synthetic_dir):
    # Dask may run a step again from the same input (a worker lost): it must learn the batch
    # once, from the model as it was, not from one the first run already moved.
    directory, _ = synthetic_dir
    columns, strategy, start, (first, second, *_) = _sgd_batches(directory, 2_000)
    given, _ = strategy.learn(start, first, columns, 0.2, False)
    before = given.get_state()
    once, _ = strategy.learn(given, second, columns, 0.2, False)
    again, _ = strategy.learn(given, second, columns, 0.2, False)
    assert given.get_state() == before
    assert once.get_state() == again.get_state() != before


@pytest.mark.parametrize("weighted, fit_intercept", [(False, True), (True, True), (False, False)])
def test_sgd_on_read_chunks_equals_partial_fit_on_their_rows(tmp_path, weighted, fit_intercept):
    # The fast path (statistics from the design's columns, rows standardised once) against
    # scikit-learn's StandardScaler.partial_fit + transform on the same rows, chunk by chunk;
    # rows with a missing value and rows of weight zero included.
    from linreg.estimators import StandardizedSGDRegressor
    from linreg.preprocess import BatchReader

    rng = np.random.default_rng(3)
    n = 150_000  # a few reader chunks
    # Far from the origin only with an intercept: without one, SGD on uncentred data of a
    # large mean diverges (whichever path computes it).
    centre = 2_000.0 if fit_intercept else 1.0
    frame = pd.DataFrame({"a": rng.normal(centre, 5.0, n), "b": rng.normal(0.0, 1e-3, n)})
    frame["target"] = 0.5 * frame["a"] - 3e3 * frame["b"] + rng.normal(0, 0.1, n)
    frame.loc[::97, "b"] = np.nan
    frame["w"] = np.where(np.arange(n) % 5 == 0, 0.0, rng.uniform(0.5, 2.0, n))
    frame.to_parquet(tmp_path / "part.parquet")
    data = DataConfig(source=str(tmp_path), batch_rows=n, weight="w" if weighted else None)
    plan = validate_source(data)
    columns = [*plan.features, plan.target]
    reader = BatchReader(
        plan_batches(plan.files, {}, n)[0],
        columns,
        0.2,
        weight=data.weight,
        scale_rows=False,
    )
    fast = StandardizedSGDRegressor(fit_intercept=fit_intercept)
    reference = StandardizedSGDRegressor(fit_intercept=fit_intercept)
    chunks = 0
    for train, _ in reader:
        chunks += 1
        fast.partial_fit_design(train, plan.features)
        x, y = train.rows()
        weights = None if train.weights is None else train.weights[train.valid]
        reference.partial_fit(pd.DataFrame(x, columns=plan.features), y, sample_weight=weights)
    assert chunks > 1
    for name in ("x_scaler_", "y_scaler_"):
        ours, theirs = getattr(fast, name), getattr(reference, name)
        np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-12)
        np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-9)
        np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-9)
        assert float(np.max(ours.n_samples_seen_)) == pytest.approx(
            float(np.max(theirs.n_samples_seen_)), rel=1e-12
        )
    assert fast.n_samples_seen_ == reference.n_samples_seen_
    np.testing.assert_allclose(fast.coef_, reference.coef_, rtol=1e-6)
    assert fast.intercept_ == pytest.approx(reference.intercept_, rel=1e-6, abs=1e-9)
    assert list(fast.feature_names_in_) == list(plan.features)


def test_every_model_kind_has_a_strategy():
    assert {strategy_for(kind).kind for kind in STRATEGIES} == {"ols", "sgd"}
    with pytest.raises(ValueError, match="unknown model 'tree'"):
        strategy_for("tree")


def test_the_runtime_reads_the_scheduler_address_when_the_run_starts(monkeypatch):
    from tasks.runtime import RuntimeConfig

    monkeypatch.delenv("LINREG_DASK_ADDRESS", raising=False)
    runtime = RuntimeConfig()
    assert runtime.scheduler() is None and not runtime.use_dask(1_000)
    assert runtime.use_dask(runtime.serial_max_rows + 1)
    monkeypatch.setenv("LINREG_DASK_ADDRESS", "tcp://scheduler:8786")
    assert runtime.scheduler() == "tcp://scheduler:8786" and runtime.use_dask(1_000)
    assert RuntimeConfig(dask_address="tcp://other:1").scheduler() == "tcp://other:1"
    assert not RuntimeConfig(executor="serial").use_dask(10**9)


class FakeClock:
    """A clock the test moves: each folded batch "takes" ``per_batch`` seconds."""

    def __init__(self, per_batch: float = 10.0) -> None:
        self.now = 1_000.0
        self.per_batch = per_batch

    def __call__(self) -> float:
        return self.now

    def on_batch(self, index: int, count: int, summary) -> None:  # noqa: ARG002 - an OnBatch
        self.now += self.per_batch


def _budget_round(directory, out, store, clock, executor=None, model="ols", lock=None, **spec):
    data = DataConfig(source=str(directory), batch_rows=1_000)
    return run_round(
        validate_source(data),
        RoundSpec(HyperParams(model=model), data.batch_rows, data.test_fraction, **spec),
        executor=executor or SerialExecutor(),
        store=store,
        publisher=FilePublisher(str(out)),
        on_batch=clock.on_batch,
        clock=clock,
        **({} if lock is None else {"lock": lock}),
    )


def _versions(out: Path) -> list[int]:
    return sorted(int(path.name) for path in (out / "versions").iterdir())


def test_a_time_budget_stops_starting_batches_and_the_next_round_takes_the_rest(
    synthetic_dir, tmp_path
):
    directory, _ = synthetic_dir
    store, clock, out = InMemoryStateStore(), FakeClock(per_batch=10.0), tmp_path / "out"
    # Batches start at t = 0, 10, 20 (< 25); at t = 30 the budget is spent.
    first = _budget_round(directory, out, store, clock, max_seconds=25.0)
    state = store.load()
    assert (first.trained, first.version, first.batches) == (True, 1, 3)
    assert state.cursor == {"part-00000.parquet": 2_000, "part-00001.parquet": 1_000}
    assert state.batches_trained == 3 and _versions(out) == [1]  # one round, one publish
    assert state.rows_trained + state.rows_held_out + state.rows_dropped == 3_000

    bounded = InMemoryStateStore()
    _round(directory, tmp_path / "bounded", bounded, batch_rows=1_000, max_batches=3)
    assert bounded.load().cursor == state.cursor
    np.testing.assert_allclose(
        json.loads((out / "model.json").read_text())["coef"],
        json.loads((tmp_path / "bounded" / "model.json").read_text())["coef"],
        rtol=1e-12,
    )
    assert json.loads((out / "model.json").read_text())["metrics"] == pytest.approx(
        json.loads((tmp_path / "bounded" / "model.json").read_text())["metrics"], rel=1e-12
    )

    second = _budget_round(directory, out, store, clock, max_seconds=1_000.0)
    state = store.load()
    assert (second.version, second.batches) == (2, 3) and _versions(out) == [1, 2]
    assert sum(state.cursor.values()) == 6_000 and state.batches_trained == 6
    assert state.rows_trained + state.rows_held_out + state.rows_dropped == 6_000
    whole = InMemoryStateStore()
    _round(directory, tmp_path / "whole", whole, batch_rows=1_000)
    assert state.rows_trained == whole.load().rows_trained  # no row lost, none twice
    np.testing.assert_allclose(
        json.loads((out / "model.json").read_text())["coef"],
        json.loads((tmp_path / "whole" / "model.json").read_text())["coef"],
        rtol=1e-12,
    )


def test_max_batches_bounds_a_round_within_its_time_budget(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    store, clock = InMemoryStateStore(), FakeClock(per_batch=1.0)
    result = _budget_round(
        directory, tmp_path / "out", store, clock, max_batches=4, max_seconds=1_000.0
    )
    assert result.batches == 4 and sum(store.load().cursor.values()) == 4_000


def test_a_budget_spent_before_the_first_batch_still_trains_one(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    store, clock = InMemoryStateStore(), FakeClock()

    @contextmanager
    def slow_lock(name: str):  # noqa: ARG001 - a Lock
        clock.now += 3_600.0  # waited an hour for another run to finish
        yield

    result = _budget_round(directory, tmp_path / "out", store, clock, lock=slow_lock, max_seconds=5)
    assert (result.trained, result.batches) == (True, 1)
    assert sum(store.load().cursor.values()) == 1_000


class CountingPublisher(FilePublisher):
    def __init__(self, out_dir: str) -> None:
        super().__init__(out_dir)
        self.calls = 0

    def publish(self, trained, plan, hyperparams):
        self.calls += 1
        return super().publish(trained, plan, hyperparams)


def test_a_round_with_nothing_new_publishes_and_saves_nothing(synthetic_dir, tmp_path):
    """A queued run after a catch-up: loads the state under the lock, finds no new rows,
    and leaves at once: no publish, no save, the lock released."""
    directory, _ = synthetic_dir
    out = tmp_path / "out"
    saves: list[int] = []

    class RecordingStore(InMemoryStateStore):
        def save(self, state, expected_version):
            saves.append(state.version)
            super().save(state, expected_version)

    store = RecordingStore("block")
    _round(directory, out, store, batch_rows=1_000, max_batches=100)
    assert saves == [1]
    before = _snapshot(out, store)
    held: list[str] = []

    @contextmanager
    def lock(name: str):
        held.append(name)
        yield
        held.remove(name)

    data = DataConfig(source=str(directory), batch_rows=1_000)
    publisher = CountingPublisher(str(out))
    result = run_round(
        validate_source(data),
        RoundSpec(HyperParams(model="ols"), 1_000, data.test_fraction, 100, max_seconds=60.0),
        executor=SerialExecutor(),
        store=store,
        publisher=publisher,
        lock=lock,
    )
    assert (result.trained, result.version, result.batches) == (False, 1, 0)
    assert publisher.calls == 0 and saves == [1] and held == []
    assert _snapshot(out, store) == before


class Allow:
    """``more()`` that says yes ``times`` times, then no; counts the questions."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked <= self.times


@pytest.mark.parametrize("model", ["ols", "sgd"])
@pytest.mark.parametrize(("window", "allowed"), [(3, 1), (3, 2), (2, 4), (1, 0)])
def test_the_dask_window_finishes_batches_in_flight_and_starts_none_after_the_stop(
    synthetic_dir, dask_client, model, window, allowed
):
    """Stopping with batches in flight: those submitted are folded (for sgd each is already
    chained into the model), none is dropped or folded twice, and the accumulator covers
    exactly the batches reported, as a serial round of that many batches does."""
    from linreg.batches import plan_batches

    directory, _ = synthetic_dir
    plan = validate_source(DataConfig(source=str(directory), batch_rows=1_000))
    batches = plan_batches(plan.files, {}, 1_000)
    strategy = strategy_for(model)
    hyper = HyperParams(model=model)

    def run(executor, more, count=None):
        reported: list[int] = []
        accumulator = executor.map_batches(
            strategy,
            strategy.start(None, hyper),
            batches if count is None else batches[:count],
            plan.columns,
            0.2,
            lambda index, summary: reported.append(index),
            more,
        )
        return strategy.finish(accumulator, plan.features), reported

    more = Allow(allowed)
    dask_model, reported = run(DaskExecutor(dask_client, window=window), more)
    started = allowed + 1  # the first batch never asks
    assert reported == list(range(started))
    assert more.asked == allowed + 1  # one "no", then no more questions
    serial_model, _ = run(SerialExecutor(), None, count=started)
    assert dask_model.n_samples_seen_ == serial_model.n_samples_seen_
    np.testing.assert_allclose(dask_model.coef_, serial_model.coef_, rtol=1e-12)


def test_ols_read_by_several_threads_equals_one_reader(tmp_path, monkeypatch):
    from linreg import strategies

    monkeypatch.setattr(strategies, "MIN_READER_ROWS", 1_000)
    rng = np.random.default_rng(5)
    n = 9_000
    frame = pd.DataFrame(rng.normal(0, 1, (n, 3)), columns=["a", "b", "c"])
    frame["target"] = frame @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.1, n)
    # The first third is unusable: a piece of the batch with no usable row is no error.
    frame.loc[: n // 3, "a"] = np.nan
    frame.to_parquet(tmp_path / "part.parquet", row_group_size=2_000)
    data = DataConfig(source=str(tmp_path), batch_rows=n)
    plan = validate_source(data)
    batch = plan_batches(plan.files, {}, n)[0]
    columns = [*plan.features, plan.target]
    strategy = strategy_for("ols")
    one = strategy.summarise(batch, columns, 0.2, True, readers=1)
    three = strategy.summarise(batch, columns, 0.2, True, readers=3)
    assert three.report == one.report
    from linreg.stats import solve_least_squares

    np.testing.assert_allclose(
        solve_least_squares(three.train)[0], solve_least_squares(one.train)[0], rtol=1e-12
    )
    assert three.holdout.n == one.holdout.n == one.report.rows_test
    np.testing.assert_allclose(three.y_test, one.y_test, rtol=1e-12)  # shifted per chunk
    frame["a"] = np.nan
    frame.to_parquet(tmp_path / "part.parquet", row_group_size=2_000)
    with pytest.raises(DataError, match=r"part.parquet\[0:9000\]: every one of 9000 rows"):
        strategy.summarise(batch, columns, 0.2, True, readers=3)
