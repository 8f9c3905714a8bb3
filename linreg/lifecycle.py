"""The model lifecycle under one ``--out``: kept versions, rollback and promote, the history of
what was live, and the quality gate a new version must pass before it goes live.

    --out/
      model.pkl, model.json     the live pair (the service watches model.json)
      versions/<N>/             every kept version's pair, byte for byte as published
      pin.json                  present while a rollback holds a version live
      history.jsonl             one record per change of the live version (and per refusal)

Every change of the live pair, the pin and the history happens under the directory's lock
(:meth:`ModelDirectory.lock`), so a rollback and a publishing round never interleave. Domain
code: no Prefect import; a flow passes its run id in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from linreg.errors import DataError, ModelFileError
from linreg.evaluation import regression_metrics
from linreg.model_files import (
    HISTORY_FILE,
    METADATA_FILE,
    MODEL_FILE,
    PIN_FILE,
    VERSIONS_DIR,
    ModelDirectory,
    encode_model,
    sha256_bytes,
)
from linreg.stats import LeastSquaresStats

if TYPE_CHECKING:
    from linreg.state import TrainingState
    from linreg.training import TrainedRound

DEFAULT_KEEP_VERSIONS = 20
# A new version may be at most 10 % worse (RMSE) than the live one on the rows the live one
# was judged on. Exact refits on more rows of the same relationship move RMSE by far less
# (well under 1 % from batch to batch on the sample data); 10 % is a broken batch: wrong
# units, a shifted column, labels from another target.
DEFAULT_GATE_RMSE_INCREASE = 0.10

# The history's note, and the round's warning, when a version is published a second time.
REPUBLISHED = (
    "version {version} was published before, and the state not saved after it (that run "
    "stopped, or lost the state's compare-and-swap, or this is a retried publish): published "
    "again from the same batches, none counted twice"
)


class LifecycleConfig(BaseModel):
    """How a training round publishes: versions kept, and the quality gate."""

    model_config = ConfigDict(extra="forbid")

    keep_versions: int = Field(
        DEFAULT_KEEP_VERSIONS, ge=1, description="Newest versions kept under out_dir/versions."
    )
    gate_rmse_increase: float | None = Field(
        DEFAULT_GATE_RMSE_INCREASE,
        ge=0.0,
        description="Refuse a new version whose held-out RMSE exceeds the live model's by more "
        "than this fraction (on the rows the live model was judged on); null: no gate.",
    )
    force: bool = Field(False, description="Publish even if the quality gate refuses.")


class GateRefused(DataError):
    """The quality gate refused a new version: state and live model are unchanged."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def history_record(
    reason: str,
    *,
    version: int | None,
    live_version: int | None,
    previous_version: int | None,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One line of ``history.jsonl``.

    ``version`` is the version the event is about (the one published, refused, rolled back
    or promoted to; None for a skipped batch), ``live_version`` the one live after it and
    ``previous_version`` the one live before it.
    """
    record: dict[str, Any] = {
        "time": now(),
        "reason": reason,
        "version": version,
        "live_version": live_version,
        "previous_version": previous_version,
        "live_changed": live_version != previous_version,
        "flow_run_id": run_id,
    }
    if metadata is not None:
        data = metadata.get("data") or {}
        record["data"] = {
            "source": data.get("source"),
            "rows_trained": metadata.get("rows_trained"),
            "rows_read": data.get("rows_read"),
            "batches_trained": data.get("batches_trained"),
            "last_batches": data.get("last_batches"),
        }
        record["metrics"] = metadata.get("metrics")
        record["sha256"] = metadata.get("sha256")
    record.update(extra)
    return record


def read_history(directory: ModelDirectory, newest: int | None = None) -> list[dict[str, Any]]:
    """Every record of the history, oldest first, or the ``newest`` ones (read from the
    file's end)."""
    if newest is None:
        return directory.read_lines(HISTORY_FILE)
    return directory.read_last_lines(newest, HISTORY_FILE)


def read_pin(directory: ModelDirectory) -> dict[str, Any] | None:
    return directory.read_json(PIN_FILE)


def live_version(directory: ModelDirectory) -> int | None:
    live = directory.read_json(METADATA_FILE)
    return None if live is None else live.get("version")


def publish_version(
    directory: ModelDirectory,
    estimator: Any,
    metadata: dict[str, Any],
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Write ``versions/<N>/``, make it live unless a version is pinned, record it, and keep
    the newest ``keep_versions`` versions (never the live or pinned one); the metadata, with
    ``republished`` true if version N had been published already (see below)."""
    payload, encoded, document = encode_model(estimator, metadata)
    version = document["version"]
    with directory.lock():
        # The state is saved after the publish: a run that stopped in between (killed, or
        # refused by the state's compare-and-swap) left version N published and the state at
        # N - 1, so the next run trains the same batches again as N and replaces it here.
        republished = directory.read(VERSIONS_DIR, str(version), METADATA_FILE) is not None
        directory.write_pair((VERSIONS_DIR, str(version)), payload, encoded)
        previous = live_version(directory)
        pin = read_pin(directory)
        if pin is None:
            directory.write_pair((), payload, encoded)
            live = version
        else:
            live = previous
        notes = []
        if republished:
            notes.append(REPUBLISHED.format(version=version))
        if pin is not None:
            notes.append(f"kept out of service: version {pin['version']} is pinned")
        note = "; ".join(notes) or None
        directory.append_line(
            history_record(
                "published",
                version=version,
                live_version=live,
                previous_version=previous,
                run_id=run_id,
                metadata=document,
                gate=metadata.get("gate"),
                note=note,
            ),
            HISTORY_FILE,
        )
        protected = {live, None if pin is None else pin["version"]}
        kept = directory.versions()
        for old in kept[: max(len(kept) - keep_versions, 0)]:
            if old not in protected:
                directory.remove_version(old)
    return {**document, "live": live == version, "republished": republished}


def verified_version(directory: ModelDirectory, version: int) -> tuple[bytes, bytes]:
    """``versions/<version>/``'s model.pkl and model.json bytes, if the pkl's sha256 matches."""
    where = directory.path(VERSIONS_DIR, str(version))
    encoded = directory.read(VERSIONS_DIR, str(version), METADATA_FILE)
    if encoded is None:
        kept = ", ".join(map(str, directory.versions())) or "none"
        raise ModelFileError(f"version {version} is not kept under {where} (kept: {kept})")
    try:
        metadata = json.loads(encoded)
    except ValueError:
        raise ModelFileError(f"{where}/{METADATA_FILE}: not valid JSON; not using it") from None
    payload = directory.read(VERSIONS_DIR, str(version), MODEL_FILE)
    if payload is None:
        raise ModelFileError(f"{where}/{MODEL_FILE}: missing; not using version {version}")
    if sha256_bytes(payload) != metadata.get("sha256") or metadata.get("version") != version:
        raise ModelFileError(
            f"{where}/{MODEL_FILE}: sha256 does not match its {METADATA_FILE}; "
            f"version {version} is corrupt, not making it live"
        )
    return payload, encoded


def previous_live_version(directory: ModelDirectory, current: int) -> int:
    """The newest version that was live before ``current`` and is older than it (from the
    history), else the newest kept version older than it."""
    live_ones = [
        record["live_version"]
        for record in read_history(directory)
        if record.get("live_changed") and record.get("live_version") is not None
    ]
    kept = set(directory.versions())
    for version in reversed(live_ones):
        if version < current and version in kept:
            return version
    older = [version for version in kept if version < current]
    if not older:
        raise ModelFileError(
            f"no kept version older than the live version {current} to roll back to"
        )
    return max(older)


def rollback(
    directory: ModelDirectory, to: int | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Make version ``to`` (default: the one live before the current) live and pin it, so
    later rounds publish into ``versions/`` only; the history record. Training state is not
    touched. A missing or corrupt version is refused (ModelFileError) with nothing changed."""
    with directory.lock():
        current = live_version(directory)
        if current is None:
            raise ModelFileError(f"{directory.path(METADATA_FILE)}: nothing is published yet")
        target = previous_live_version(directory, current) if to is None else to
        payload, encoded = verified_version(directory, target)
        # The pin first: should the process die before the live pair is written, the next
        # round still keeps its version out of service, and a rerun completes the rollback.
        pin = {"version": target, "reason": "rollback", "time": now(), "flow_run_id": run_id}
        directory.write((json.dumps(pin, indent=2) + "\n").encode(), PIN_FILE)
        directory.write_pair((), payload, encoded)
        record = history_record(
            "rollback",
            version=target,
            live_version=target,
            previous_version=current,
            run_id=run_id,
            metadata=json.loads(encoded),
            note=f"pinned: later versions are kept in {VERSIONS_DIR}/ until a promote",
        )
        directory.append_line(record, HISTORY_FILE)
    return record


def promote(
    directory: ModelDirectory, to: int | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Make version ``to`` (default: the newest kept) live and remove the pin, so later rounds
    go live again; the history record. A missing or corrupt version is refused."""
    with directory.lock():
        kept = directory.versions()
        if to is None and not kept:
            raise ModelFileError(f"no versions kept under {directory.path(VERSIONS_DIR)}")
        target = max(kept) if to is None else to
        payload, encoded = verified_version(directory, target)
        current = live_version(directory)
        directory.write_pair((), payload, encoded)
        directory.remove(PIN_FILE)
        record = history_record(
            "promote",
            version=target,
            live_version=target,
            previous_version=current,
            run_id=run_id,
            metadata=json.loads(encoded),
        )
        directory.append_line(record, HISTORY_FILE)
    return record


def rmse_on(holdout: LeastSquaresStats, coef: Sequence[float], intercept: float) -> float:
    """Exact RMSE of ``X @ coef + intercept`` over the rows ``holdout`` summarises."""
    sse = holdout.residual_sum_of_squares(np.asarray(coef, dtype=np.float64), float(intercept))
    return math.sqrt(max(sse, 0.0) / holdout.n)


@dataclass
class QualityGate:
    """Refuses a round whose model is worse than the live one on the same held-out rows.

    The rows are every held-out row before this round (the state's held-out statistics), on
    which the live model was judged; both RMSEs are exact from those statistics. No live
    model, no earlier held-out rows, or a live model of other features: nothing to compare,
    the round passes.
    """

    max_rmse_increase: float
    directory: ModelDirectory
    force: bool = False
    run_id: str | None = None

    def judge(self, previous: TrainingState, trained: TrainedRound) -> dict[str, Any] | None:
        live = self.directory.read_json(METADATA_FILE)
        if live is None or previous.holdout is None:
            return None
        if live.get("features") != list(trained.state.features):
            return None
        holdout = LeastSquaresStats.from_dict(previous.holdout)
        if holdout.n == 0:
            return None
        live_rmse = rmse_on(holdout, live["coef"], live["intercept"])
        estimator = trained.estimator
        candidate_rmse = rmse_on(holdout, estimator.coef_, float(estimator.intercept_))
        limit = live_rmse * (1.0 + self.max_rmse_increase)
        return {
            "passed": candidate_rmse <= limit,
            "live_version": live["version"],
            "live_rmse": live_rmse,
            "candidate_rmse": candidate_rmse,
            "n_test": holdout.n,
            "max_rmse_increase": self.max_rmse_increase,
        }

    def check(self, previous: TrainingState, trained: TrainedRound) -> dict[str, Any] | None:
        """The gate's figures if it ran; raises GateRefused (and records it) if refused."""
        decision = self.judge(previous, trained)
        if decision is None:
            return None
        if decision["passed"] or self.force:
            return {**decision, "forced": not decision["passed"]}
        version = trained.state.version
        increase = decision["candidate_rmse"] / decision["live_rmse"] - 1.0
        message = (
            f"quality gate refused version {version}: held-out RMSE "
            f"{decision['candidate_rmse']:.6g} vs {decision['live_rmse']:.6g} for the live "
            f"version {decision['live_version']} on the same {decision['n_test']:,} rows "
            f"({increase:+.1%}, more than the {self.max_rmse_increase:.1%} allowed); the state "
            "and the live model are unchanged. Fix the data, rerun with --force, or skip the "
            "batch (--mode skip)"
        )
        with self.directory.lock():
            self.directory.append_line(
                history_record(
                    "gated",
                    version=version,
                    live_version=decision["live_version"],
                    previous_version=decision["live_version"],
                    run_id=self.run_id,
                    metadata={
                        "rows_trained": trained.state.rows_trained,
                        "metrics": trained.metrics,
                        "data": {
                            "source": trained.state.source,
                            "rows_read": sum(trained.state.cursor.values()),
                            "batches_trained": trained.state.batches_trained,
                            "last_batches": trained.report.segments,
                        },
                    },
                    gate=decision,
                    note=message,
                ),
                HISTORY_FILE,
            )
        raise GateRefused(message)


DEFAULT_WINDOW_BATCHES = 10
# Page-Hinkley on log(batch RMSE): scale-free, so a doubling of the error is +0.69 whatever
# the target's units. DELTA tolerates a slow 5 % rise per batch; THRESHOLD is the
# cumulative excess (in log units) that fires: a lasting doubling of the error fires within
# two batches, and batch-to-batch noise of a few % stays far below it.
DEFAULT_DRIFT_DELTA = 0.05
DEFAULT_DRIFT_THRESHOLD = 1.0


@dataclass
class PageHinkley:
    """The Page-Hinkley test for an increase in the mean of a series (Page 1954; Hinkley
    1971): ``m_t = sum(x_i - mean_i - delta)``, ``statistic = m_t - min(m_1..m_t)``; it fires
    while the statistic exceeds ``threshold``. Plain numbers, so it lives in the state."""

    delta: float = DEFAULT_DRIFT_DELTA
    threshold: float = DEFAULT_DRIFT_THRESHOLD
    n: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0

    def update(self, value: float) -> float:
        """Add one observation; the statistic after it."""
        self.n += 1
        self.mean += (value - self.mean) / self.n
        self.cumulative += value - self.mean - self.delta
        self.minimum = min(self.minimum, self.cumulative)
        return self.statistic

    @property
    def statistic(self) -> float:
        return self.cumulative - self.minimum

    @property
    def detected(self) -> bool:
        return self.statistic > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "threshold": self.threshold,
            "n": self.n,
            "mean": self.mean,
            "cumulative": self.cumulative,
            "minimum": self.minimum,
        }


@dataclass
class DriftMonitor:
    """Windowed metrics and drift of each round, before it is published.

    - Windowed: R² and RMSE of the new model over the held-out rows of the newest ``window``
      batches (exact, from their statistics, kept in the state), beside the cumulative ones.
    - Drift: the live model's RMSE on each new batch's held-out rows, before it trains on
      them (prequential), feeds a Page-Hinkley test kept in the state. While it fires,
      ``model.json`` says ``drift: {detected: true, statistic, since_version}``.
    """

    directory: ModelDirectory
    window: int = DEFAULT_WINDOW_BATCHES
    delta: float = DEFAULT_DRIFT_DELTA
    threshold: float = DEFAULT_DRIFT_THRESHOLD

    def observe(self, previous: TrainingState, trained: TrainedRound) -> None:
        estimator = trained.estimator
        recent = [*previous.recent_holdouts, *(s.to_dict() for s in trained.batch_holdouts)]
        recent = [part for part in recent if part["n"] > 0][-self.window :]
        windowed = {"window_batches": len(recent), "rmse_window": None, "r2_window": None}
        if recent:
            merged = LeastSquaresStats.merge_all([LeastSquaresStats.from_dict(p) for p in recent])
            figures = regression_metrics(merged, estimator.coef_, float(estimator.intercept_))
            windowed.update(
                rmse_window=figures["rmse"], r2_window=figures["r2"], n_test_window=merged.n
            )
        trained.metrics.update(windowed)
        history = [*trained.state.metrics_history]
        history[-1] = {**history[-1], **windowed}

        test = PageHinkley(self.delta, self.threshold)
        known = previous.drift or {}
        if "test" in known:
            test = PageHinkley(**known["test"])
        batch_rmse = self._live_errors(trained)
        for value in batch_rmse:
            if value > 0:
                test.update(math.log(value))
        detected = test.detected
        since = known.get("since_version") if known.get("detected") else None
        drift = {
            "detected": detected,
            "statistic": test.statistic,
            "threshold": test.threshold,
            "since_version": (since or trained.state.version) if detected else None,
            "batch_rmse_live": batch_rmse,
            "batches_observed": test.n,
        }
        trained.drift = drift
        trained.state = trained.state.model_copy(
            update={
                "recent_holdouts": recent,
                "drift": {**drift, "test": test.to_dict()},
                "metrics_history": history,
            }
        )

    def _live_errors(self, trained: TrainedRound) -> list[float]:
        """The live model's RMSE on each batch's held-out rows (none without a live model of
        these features)."""
        live = self.directory.read_json(METADATA_FILE)
        if live is None or live.get("features") != list(trained.state.features):
            return []
        return [
            rmse_on(holdout, live["coef"], live["intercept"])
            for holdout in trained.batch_holdouts
            if holdout.n > 0
        ]


HISTORY_COLUMNS = ("time", "reason", "version", "live", "previous", "rmse", "rows", "run", "note")


def history_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history as flat rows (a table artifact, the CLI's table)."""
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        gate = record.get("gate") or {}
        rmse = gate.get("candidate_rmse") if record["reason"] == "gated" else metrics.get("rmse")
        rows.append(
            {
                "time": record.get("time"),
                "reason": record.get("reason"),
                "version": record.get("version"),
                "live": record.get("live_version"),
                "previous": record.get("previous_version"),
                "rmse": rmse,
                "rows": (record.get("data") or {}).get("rows_trained"),
                "run": (record.get("flow_run_id") or "")[:8] or None,
                "note": _short_note(record),
            }
        )
    return rows


def _short_note(record: dict[str, Any]) -> str | None:
    gate = record.get("gate") or {}
    if record["reason"] == "gated":
        return f"live RMSE {gate['live_rmse']:.6g}, candidate {gate['candidate_rmse']:.6g}"
    if gate.get("forced"):
        return f"forced past the gate (live RMSE {gate['live_rmse']:.6g})"
    if record["reason"] == "skipped":
        return f"skipped {record.get('rows')} rows: {record.get('batch')}"
    return record.get("note")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = HISTORY_COLUMNS) -> str:
    """A plain-text table, one line per row."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value)

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[index]) for line in cells)])
        for index, column in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(columns), *(line(values) for values in cells)])
