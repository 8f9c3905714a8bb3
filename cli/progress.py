"""The CLI's progress bar: batches, rows/s and time left, on a terminal only."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RoundProgress:
    """A ``batch_listener`` callback drawing one bar per round of batches, in a line of the
    terminal's width (80 columns hold it all; the bar takes what is left):

        training ━━━━━━━━━━━━━━━  7/10 batches · 140k rows · 234k rows/s · 0:00:01 left
    """

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]training[/]"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("batches · {task.fields[rows]} rows · {task.fields[rate]} ·"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=console,
            expand=True,
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
                self.task = self.progress.add_task("train", total=total, rows="0", rate="–")
            else:
                self.progress.update(self.task, total=total)
        self.rows += summary.report.rows_read
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.progress.update(
            self.task,
            advance=1,
            rows=compact(self.rows),
            rate=f"{compact(self.rows / elapsed)} rows/s",
        )


def compact(count: float) -> str:
    """A count in three significant digits: 950, 12.3k, 2.24M, 1.5G."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.3g}{suffix}"
    return f"{count:.0f}"
