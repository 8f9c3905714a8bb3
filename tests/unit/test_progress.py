"""The CLI's progress bar (cli.progress), drawn on a recorded terminal of 80 columns."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from cli.progress import RoundProgress, compact


def _summary(rows: int) -> SimpleNamespace:
    return SimpleNamespace(report=SimpleNamespace(rows_read=rows))


@pytest.mark.parametrize("rows_per_batch", [1_000, 3_000_000])
def test_the_bar_shows_batches_rows_rate_and_time_left_within_80_columns(rows_per_batch):
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=80, color_system=None)
    with RoundProgress(console) as progress:
        for index in range(7):
            progress(index, 300, _summary(rows_per_batch))
        progress.progress.refresh()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.getvalue())  # cursor controls
    last = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line][-1]
    assert len(last) <= 80, last
    assert "7/300 batches" in last
    assert f"{compact(7 * rows_per_batch)} rows" in last
    assert "rows/s" in last and last.endswith("left"), last
    assert "…" not in last  # nothing cut to fit


def test_counts_are_compact():
    assert [compact(n) for n in (0, 950, 12_345, 2_240_000, 30_000_000, 1.5e9)] == [
        "0", "950", "12.3k", "2.24M", "30M", "1.5G",
    ]  # fmt: skip
