"""Shared fixtures. Telemetry is off before anything imports Prefect."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
# scikit-learn runs its array-API estimator check only when SciPy is imported with this.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from linreg.synthetic import Truth, write_dataset  # noqa: E402


@pytest.fixture
def synthetic_dir(tmp_path: Path) -> tuple[Path, Truth]:
    """6,000 rows in 3 Parquet shards of 2,000 rows (row groups of 500), 4 features."""
    directory = tmp_path / "synthetic"
    truth = write_dataset(
        directory, n_rows=6_000, n_features=4, shard_rows=2_000, row_group_rows=500, seed=7
    )
    return directory, truth


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def prefect_api():
    """A throwaway Prefect server (temp SQLite DB) for the whole session; its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


FIGURES = pytest.StashKey[list]()


@pytest.fixture
def figures(request) -> list[str]:
    """Lines of measured figures a test reports; printed at the end of the run."""
    lines: list[str] = []
    yield lines
    request.config.stash.setdefault(FIGURES, []).extend(lines)


BAD_INPUTS = pytest.StashKey[dict]()


@pytest.fixture
def refused(request) -> Callable[[str, str], None]:
    """Record that a bad input of ``kind`` was refused through ``surface`` (CLI, flow,
    service) with nothing changed; the tally is printed with the figures."""

    def record(surface: str, kind: str) -> None:
        request.config.stash.setdefault(BAD_INPUTS, {}).setdefault(surface, set()).add(kind)

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    lines = list(config.stash.get(FIGURES, []))
    tally = config.stash.get(BAD_INPUTS, {})
    if tally:
        kinds = set().union(*tally.values())
        per_surface = ", ".join(f"{where} {len(found)}" for where, found in sorted(tally.items()))
        lines.append(
            f"bad-input matrix: {len(kinds)} kinds refused ({per_surface}), each with one "
            "clear error and a non-zero exit / failed run / 4xx; state and published files "
            "byte-identical in every case"
        )
    if lines:
        terminalreporter.section("measured figures")
        for line in lines:
            terminalreporter.write_line(line)
