"""Cutting a source into batches, and the cursor that records which rows are done.

The cursor maps ``file_id`` to the number of leading rows of that file already trained on.
Files are taken in ``file_id`` order; a batch may span files, so small files still make
full batches, and files that appear later are picked up by the next plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from linreg.sources import DataFile


@dataclass(frozen=True)
class Segment:
    """Rows ``[start, stop)`` of one file."""

    data_file: DataFile
    start: int
    stop: int

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class BatchSpec:
    """One training batch: consecutive segments holding at most ``batch_rows`` rows."""

    segments: tuple[Segment, ...]

    @property
    def n_rows(self) -> int:
        return sum(segment.n_rows for segment in self.segments)

    def describe(self) -> str:
        return ", ".join(
            f"{segment.data_file.file_id}[{segment.start}:{segment.stop}]"
            for segment in self.segments
        )


def plan_batches(
    files: Sequence[DataFile],
    cursor: Mapping[str, int],
    batch_rows: int,
    max_batches: int | None = None,
) -> list[BatchSpec]:
    """The next batches after ``cursor``, in file order, at most ``max_batches`` of them."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    batches: list[BatchSpec] = []
    current: list[Segment] = []
    room = batch_rows
    for data_file in sorted(files, key=lambda item: item.file_id):
        position = min(cursor.get(data_file.file_id, 0), data_file.n_rows)
        while position < data_file.n_rows:
            stop = min(position + room, data_file.n_rows)
            current.append(Segment(data_file, position, stop))
            room -= stop - position
            position = stop
            if room == 0:
                batches.append(BatchSpec(tuple(current)))
                if max_batches is not None and len(batches) >= max_batches:
                    return batches
                current, room = [], batch_rows
    if current:
        batches.append(BatchSpec(tuple(current)))
    return batches if max_batches is None else batches[:max_batches]


def advance_cursor(cursor: Mapping[str, int], batches: Sequence[BatchSpec]) -> dict[str, int]:
    """A new cursor with the rows of ``batches`` marked done."""
    advanced = dict(cursor)
    for batch in batches:
        for segment in batch.segments:
            file_id = segment.data_file.file_id
            advanced[file_id] = max(advanced.get(file_id, 0), segment.stop)
    return dict(sorted(advanced.items()))


def split_batch(batch: BatchSpec, parts: int, min_rows: int) -> list[BatchSpec]:
    """``batch`` cut into at most ``parts`` consecutive pieces of about equal rows, each of at
    least ``min_rows`` (fewer pieces when the batch is small; the batch itself for one)."""
    parts = max(1, min(parts, batch.n_rows // max(1, min_rows)))
    if parts == 1:
        return [batch]
    bounds = [batch.n_rows * index // parts for index in range(1, parts)] + [batch.n_rows]
    pieces: list[BatchSpec] = []
    current: list[Segment] = []
    done = 0  # rows of the batch before the current position
    target = iter(bounds)
    bound = next(target)
    for segment in batch.segments:
        start = segment.start
        while start < segment.stop:
            stop = min(segment.stop, start + bound - done)
            current.append(Segment(segment.data_file, start, stop))
            done += stop - start
            start = stop
            if done == bound:
                pieces.append(BatchSpec(tuple(current)))
                current = []
                bound = next(target, batch.n_rows + 1)
    return pieces
