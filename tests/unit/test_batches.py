"""Batch planning and the cursor."""

from __future__ import annotations

import pytest

from linreg.batches import advance_cursor, plan_batches, split_batch
from linreg.sources import DataFile


def _file(file_id: str, n_rows: int) -> DataFile:
    return DataFile(
        file_id,
        f"file:///{file_id}",
        "parquet",
        n_rows,
        ("x", "target"),
        frozenset({"x", "target"}),
    )


FILES = [_file("b", 7), _file("a", 5), _file("c", 0)]


def _spans(batches):
    return [[(s.data_file.file_id, s.start, s.stop) for s in b.segments] for b in batches]


def test_batches_follow_file_order_and_span_files():
    assert _spans(plan_batches(FILES, {}, 4)) == [
        [("a", 0, 4)],
        [("a", 4, 5), ("b", 0, 3)],
        [("b", 3, 7)],
    ]


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 5, 12, 100])
def test_batches_cover_every_row_once(batch_rows):
    batches = plan_batches(FILES, {}, batch_rows)
    assert all(0 < b.n_rows <= batch_rows for b in batches)
    assert advance_cursor({}, batches) == {"a": 5, "b": 7}
    assert plan_batches(FILES, advance_cursor({}, batches), batch_rows) == []


def test_cursor_resumes_and_max_batches_limits():
    first = plan_batches(FILES, {}, 3, max_batches=1)
    assert _spans(first) == [[("a", 0, 3)]]
    cursor = advance_cursor({}, first)
    assert cursor == {"a": 3}
    assert _spans(plan_batches(FILES, cursor, 3, max_batches=2)) == [
        [("a", 3, 5), ("b", 0, 1)],
        [("b", 1, 4)],
    ]


def test_new_files_are_picked_up_and_unknown_cursor_entries_ignored():
    cursor = {"a": 5, "b": 7, "gone": 10}
    assert plan_batches(FILES, cursor, 10) == []
    grown = [*FILES, _file("d", 2), _file("0-early", 1)]
    assert _spans(plan_batches(grown, cursor, 10)) == [[("0-early", 0, 1), ("d", 0, 2)]]


def test_batch_rows_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        plan_batches(FILES, {}, 0)


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_a_batch_splits_into_consecutive_pieces_of_about_equal_rows(parts):
    files = [_file("a", 700), _file("b", 301), _file("c", 999)]
    batch = plan_batches(files, {"a": 100}, 10_000)[0]
    pieces = split_batch(batch, parts, min_rows=100)
    assert len(pieces) == parts
    rows = [
        (s.data_file.file_id, row)
        for p in pieces
        for s in p.segments
        for row in range(s.start, s.stop)
    ]
    expected = [
        (s.data_file.file_id, row) for s in batch.segments for row in range(s.start, s.stop)
    ]
    assert rows == expected  # every row once, in order
    sizes = [piece.n_rows for piece in pieces]
    assert max(sizes) - min(sizes) <= 1


def test_a_small_batch_is_not_split_below_the_minimum_piece():
    batch = plan_batches([_file("a", 500)], {}, 10_000)[0]
    assert split_batch(batch, 4, min_rows=200) == split_batch(batch, 2, min_rows=200)
    assert len(split_batch(batch, 4, min_rows=200)) == 2
    assert split_batch(batch, 4, min_rows=501) == [batch]
