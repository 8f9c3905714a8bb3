"""The CLI's progress bar: batches, rows/s and time left, on a terminal only."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RoundProgress:
    """A ``batch_listener`` callback drawing one bar per round of batches."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]training[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches · {task.fields[rows]:,} rows · {task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = None
        self.rows = 0
        self.started = time.monotonic()

    def __enter__(self) -> RoundProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def __call__(self, index: int, count: int, summary) -> None:
        if self.task is None or index == 0:
            total = count if self.task is None else self.progress.tasks[0].total + count
            if self.task is None:
                self.task = self.progress.add_task("train", total=total, rows=0, rate="")
            else:
                self.progress.update(self.task, total=total)
        self.rows += summary.report.rows_read
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.progress.update(
            self.task, advance=1, rows=self.rows, rate=f"{self.rows / elapsed:,.0f} rows/s"
        )
