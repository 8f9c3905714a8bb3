"""CSV as spreadsheets and other tools write it: delimiters, decimal commas, thousands
separators, missing-value tokens, odd column names, and bad cells far into a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linreg.batches import plan_batches
from linreg.config import DataConfig
from linreg.errors import DataError
from linreg.preprocess import prepare_batch
from linreg.validation import validate_source


def _rows(plan) -> tuple[np.ndarray, np.ndarray]:
    prepared = prepare_batch(plan_batches(plan.files, {}, 10**9)[0], plan.columns, 0.0)
    return prepared.x_train, prepared.y_train


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_detected_from_the_header(tmp_path, delimiter):
    lines = [delimiter.join(["x1", "x 2", "y"])] + [
        delimiter.join([str(i), str(2 * i), str(3 * i)]) for i in range(5)
    ]
    source = _write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    plan = validate_source(DataConfig(source=source, target="y"))
    assert plan.features == ("x1", "x 2")
    x, y = _rows(plan)
    np.testing.assert_array_equal(y, [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(x[:, 1], [0, 2, 4, 6, 8])


def test_an_explicit_delimiter_wins_over_detection(tmp_path):
    # The header has more commas than semicolons, but the file is semicolon-delimited.
    source = _write(tmp_path / "d.csv", '"a,b,c";y\n1;2\n3;4\n')
    plan = validate_source(DataConfig(source=source, target="y", csv_delimiter=";"))
    assert plan.features == ("a,b,c",)


def test_decimal_comma_and_thousands_separator(tmp_path):
    text = "price;area;y\n1.234,5;10,25;1\n2.000,0;3,5;2\n999,75;0,5;3\n"
    source = _write(tmp_path / "d.csv", text)
    config = DataConfig(source=source, target="y", csv_decimal=",", csv_thousands=".")
    plan = validate_source(config)
    assert plan.features == ("price", "area")
    x, _ = _rows(plan)
    np.testing.assert_array_equal(x, [[1234.5, 10.25], [2000.0, 3.5], [999.75, 0.5]])


def test_without_the_separator_option_the_column_is_excluded_with_its_reason(tmp_path):
    source = _write(tmp_path / "d.csv", 'a,b,y\n"1,234",1,1\n"2,500",2,2\n')
    plan = validate_source(DataConfig(source=source, target="y"))
    assert plan.features == ("b",)
    assert plan.excluded_columns == {
        "a": "text (e.g. '1,234'; read as numbers with --csv-thousands ,)"
    }
    with_option = validate_source(DataConfig(source=source, target="y", csv_thousands=","))
    assert with_option.features == ("a", "b") and with_option.excluded_columns == {}


def test_na_values_turn_placeholder_tokens_into_missing_values(tmp_path):
    source = _write(tmp_path / "d.csv", "x,z,y\n1,?,1\n-,2,2\n3,3,3\n4,4,4\n")
    with pytest.raises(DataError, match=r"'x' is text \(e.g. '-'\); 'z' is text \(e.g. '\?'\)"):
        validate_source(DataConfig(source=source, target="y"))
    plan = validate_source(DataConfig(source=source, target="y", na_values=["?", "-"]))
    assert plan.features == ("x", "z")
    prepared = prepare_batch(plan_batches(plan.files, {}, 10)[0], plan.columns, 0.0)
    assert prepared.report.dropped_by_column == {"x": 1, "z": 1}
    np.testing.assert_array_equal(prepared.y_train, [3, 4])


def test_a_bad_cell_far_into_a_used_column_names_file_line_column_and_value(tmp_path):
    rows = "\n".join(f"{i},{i},{i}" for i in range(150_000))
    source = _write(tmp_path / "big.csv", f"a,b,y\n{rows}\n7,oops,7\n")
    plan = validate_source(DataConfig(source=source, target="y"))
    assert plan.n_rows == 150_001
    with pytest.raises(
        DataError, match=r"^big.csv line 150002: column 'b' has a non-numeric value 'oops'"
    ):
        _rows(plan)


def test_a_bad_cell_in_a_column_the_run_does_not_use_is_harmless(tmp_path):
    rows = "\n".join(f"{i},{i},{i}" for i in range(150_000))
    source = _write(tmp_path / "big.csv", f"a,b,y\n{rows}\n7,oops,7\n")
    plan = validate_source(DataConfig(source=source, target="y", features=["a"]))
    x, y = _rows(plan)
    assert len(y) == 150_001 and x[-1, 0] == 7.0


def test_a_feature_named_with_a_comma_is_requested_by_name(tmp_path):
    source = _write(tmp_path / "d.csv", '"rate, %",y\n1,2\n3,4\n')
    plan = validate_source(DataConfig(source=source, target="y", features=["rate, %"]))
    assert plan.columns == ("rate, %", "y")


def test_a_requested_text_column_says_why_it_is_not_numeric(tmp_path):
    source = _write(tmp_path / "d.csv", "name,y\nann,1\nbob,2\n")
    with pytest.raises(
        DataError, match=r"feature column 'name' is not numeric: text \(e.g. 'ann'\)"
    ):
        validate_source(DataConfig(source=source, target="y", features=["name"]))


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_excel_exports_bom_crlf_sep_line_and_decimal_comma(tmp_path):
    # Excel's "CSV UTF-8": a byte-order mark and CRLF; its European exports often start with
    # a "sep=;" line, which Excel itself writes and reads.
    bom = _write_bytes(tmp_path / "bom.csv", "\ufeffx,y\r\n1,2\r\n3,4\r\n".encode())
    plan = validate_source(DataConfig(source=bom, target="y"))
    assert plan.features == ("x",)
    np.testing.assert_array_equal(_rows(plan)[1], [2, 4])
    sep = _write(tmp_path / "sep.csv", "sep=;\nx;y\n1,5;3\n2,5;4\n")
    plan = validate_source(DataConfig(source=sep, target="y", csv_decimal=","))
    assert plan.files[0].csv.delimiter == ";" and plan.files[0].csv.skip_rows == 1
    np.testing.assert_array_equal(_rows(plan)[0][:, 0], [1.5, 2.5])
    # A bad cell's line (past the block whose types were inferred) counts the sep= line, as
    # an editor shows it.
    rows = "".join(f"{i};{i}\n" for i in range(150_000))
    bad = _write(tmp_path / "bad.csv", f"sep=;\nx;y\n{rows}oops;7\n")
    with pytest.raises(DataError, match=r"^bad.csv line 150003: column 'x' has a non-numeric"):
        _rows(validate_source(DataConfig(source=bad, target="y")))


def test_encodings_utf16_by_its_mark_and_others_by_option(tmp_path):
    text = "préx\tflag\ty\n1\tTRUE\t2\n3\tfalse\t4\n"
    utf16 = _write_bytes(tmp_path / "unicode.tsv", text.encode("utf-16"))  # Excel's Unicode text
    plan = validate_source(DataConfig(source=utf16, target="y"))
    assert plan.features == ("préx", "flag")
    x, y = _rows(plan)
    np.testing.assert_array_equal(x, [[1, 1], [3, 0]])  # booleans are 0/1 features
    cp1252 = _write_bytes(tmp_path / "windows.csv", text.replace("\t", ",").encode("cp1252"))
    with pytest.raises(DataError, match=r"windows.csv: not UTF-8 text \(byte 0xe9 at offset 2\)"
                       r": give the file's encoding with --csv-encoding"):  # fmt: skip
        validate_source(DataConfig(source=cp1252, target="y"))
    plan = validate_source(DataConfig(source=cp1252, target="y", csv_encoding="cp1252"))
    assert plan.features == ("préx", "flag")
    np.testing.assert_array_equal(_rows(plan)[0], [[1, 1], [3, 0]])
    # A byte far past the decoded head: the read that meets it names the option too.
    rows = "".join(f"{i},{i}\n" for i in range(150_000))
    late = _write_bytes(tmp_path / "late.csv", f"x,y\n{rows}1,\u00e9\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"late.csv .*give the file's encoding with --csv-enc"):
        _rows(validate_source(DataConfig(source=late, target="y")))


def test_row_indexes_unnamed_and_empty_columns_are_not_default_features(tmp_path):
    # pandas' to_csv writes its index as an unnamed first column, a second round trip as
    # "Unnamed: 0"; spreadsheets leave empty columns and trailing delimiters.
    text = ",Unnamed: 0,x,empty,y,\n0,0,1,,2,\n1,1,3,,4,\n"
    source = _write(tmp_path / "d.csv", text)
    plan = validate_source(DataConfig(source=source, target="y"))
    assert plan.features == ("x",)
    assert plan.excluded_columns == {
        "": "unnamed (a row index, as pandas' to_csv writes one, or a trailing delimiter)",
        "Unnamed: 0": "a row index written by pandas",
        "empty": "empty (no value in its first 2 rows)",
    }
    # Named, they are features as any numeric column.
    assert validate_source(DataConfig(source=source, target="y", features=["x", "Unnamed: 0"]))


def test_an_all_null_parquet_column_is_left_out_by_its_statistics(tmp_path):
    table = pa.table({"x": [1.0, 2.0], "gone": pa.array([None, None], pa.float64()), "y": [1, 2]})
    pq.write_table(table, tmp_path / "d.parquet")
    plan = validate_source(DataConfig(source=str(tmp_path / "d.parquet"), target="y"))
    assert plan.features == ("x",)
    assert plan.excluded_columns == {"gone": "empty (every one of its 2 values missing)"}


def test_duplicate_names_and_names_with_spaces_are_one_clear_error(tmp_path):
    duplicated = _write(tmp_path / "dup.csv", "x,x,y\n1,2,3\n")
    with pytest.raises(DataError, match=r"dup.csv: duplicate column names \['x'\]"):
        validate_source(DataConfig(source=duplicated, target="y"))
    table = pa.Table.from_arrays(
        [pa.array([1.0]), pa.array([2.0]), pa.array([3.0])], ["x", "x", "y"]
    )
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"dup.parquet: duplicate column names \['x'\]"):
        validate_source(DataConfig(source=str(tmp_path / "dup.parquet"), target="y"))
    spaced = _write(tmp_path / "spaced.csv", " x , y \n1,2\n")
    with pytest.raises(
        DataError,
        match=r"target column 'y' not found \(columns: ' x ', ' y '\); did you mean ' y '\?",
    ):
        validate_source(DataConfig(source=spaced, target="y"))


@pytest.mark.parametrize(
    "kind",
    [pa.float32(), pa.float16(), pa.int8(), pa.uint64(), pa.decimal128(12, 4), pa.bool_()],
    ids=str,
)
def test_parquet_columns_of_any_numeric_type_train_as_float64(tmp_path, kind):
    # Other writers than ours: Spark's FloatType is float32, pandas writes int8 and bool.
    import decimal

    values = [0.0, 1.0, 1.0, 0.0, 1.0] * 20
    column = [decimal.Decimal(v) for v in values] if pa.types.is_decimal(kind) else values
    table = pa.table({"x": pa.array(column).cast(kind), "y": np.arange(100.0)})
    pq.write_table(table, tmp_path / "d.parquet")
    plan = validate_source(DataConfig(source=str(tmp_path / "d.parquet"), target="y"))
    assert plan.features == ("x",)
    # A held-out share takes the rows by index, the path that once refused float32.
    prepared = prepare_batch(plan_batches(plan.files, {}, 100)[0], plan.columns, 0.3)
    assert 0 < prepared.x_train.shape[0] < 100
    assert prepared.x_train.dtype == np.float64
    assert set(np.unique(prepared.x_train)) == {0.0, 1.0}
