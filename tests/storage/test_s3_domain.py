"""Sources, validation and model files on a real S3 API (moto_server), without Prefect."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from linreg.config import DataConfig, parse_storage_options
from linreg.errors import DataError, ModelFileError
from linreg.model_files import load_verified_model, publish_model, read_metadata
from linreg.sources import canonical_source, read_rows
from linreg.state import fingerprint
from linreg.synthetic import write_dataset
from linreg.validation import validate_source
from tests.storage.conftest import CREDENTIALS, S3Server

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def local_data(tmp_path: Path) -> Path:
    directory = tmp_path / "sales"
    write_dataset(directory, n_rows=3_000, n_features=3, shard_rows=1_000, seed=5)
    return directory


def _upload(s3_server: S3Server, local: Path, url: str) -> None:
    s3_server.filesystem().put(str(local) + "/", url.removeprefix("s3://"), recursive=True)


def test_validate_and_read_rows_on_s3_match_the_same_files_on_disk(
    s3_server: S3Server, bucket: str, local_data: Path
) -> None:
    _upload(s3_server, local_data, f"s3://{bucket}/sales/2026")
    options = {"endpoint_url": s3_server.endpoint}
    remote = validate_source(DataConfig(source=f"s3://{bucket}/sales/", storage_options=options))
    local = validate_source(DataConfig(source=str(local_data)))
    assert [f.file_id for f in remote.files] == [f"2026/{f.file_id}" for f in local.files]
    assert all(f.url.startswith(f"s3://{bucket}/sales/2026/") for f in remote.files)
    assert (remote.n_rows, remote.features, remote.target) == (3_000, local.features, "target")
    for remote_file, local_file in zip(remote.files, local.files, strict=True):
        np.testing.assert_array_equal(
            read_rows(remote_file, remote.columns, 100, 900),
            read_rows(local_file, local.columns, 100, 900),
        )
    assert "test" not in repr(remote) and "endpoint_url" not in repr(remote.files[0])


def test_a_glob_and_the_s3a_spelling_name_the_same_source(s3_server, bucket, local_data):
    _upload(s3_server, local_data, f"s3://{bucket}/sales")
    options = {"endpoint_url": s3_server.endpoint}
    plan = validate_source(
        DataConfig(source=f"s3://{bucket}/sales/*.parquet", storage_options=options)
    )
    assert len(plan.files) == 3
    assert canonical_source(f"s3a://{bucket}/sales/") == f"s3://{bucket}/sales"
    assert fingerprint(f"s3://{bucket}/sales/", ["x"], "t", "ols") == fingerprint(
        f"s3a://{bucket}/sales", ["x"], "t", "ols"
    )


def test_an_object_added_later_is_found_by_the_next_validation(s3_server, bucket, local_data):
    config = DataConfig(
        source=f"s3://{bucket}/in/", storage_options={"endpoint_url": s3_server.endpoint}
    )
    fs = s3_server.filesystem()
    fs.put_file(str(local_data / "part-00000.parquet"), f"{bucket}/in/part-00000.parquet")
    assert len(validate_source(config).files) == 1
    fs.put_file(str(local_data / "part-00001.parquet"), f"{bucket}/in/part-00001.parquet")
    # Same process, same cached file system: its listing cache must not hide the new object.
    assert [f.file_id for f in validate_source(config).files] == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "no such file or directory"),
        ("corrupt", "part-00001.parquet: not a readable Parquet file"),
        ("wrong schema", "part-00001.csv: columns differ from part-00000.parquet"),
        ("no bucket", "no such file or directory"),
    ],
)
def test_bad_objects_give_one_clear_error_naming_the_object(
    s3_server, bucket, local_data, layout, message
):
    fs = s3_server.filesystem()
    fs.put_file(str(local_data / "part-00000.parquet"), f"{bucket}/d/part-00000.parquet")
    source = f"s3://{bucket}/d/"
    if layout == "missing":
        source = f"s3://{bucket}/nothing-here/"
    elif layout == "corrupt":
        whole = (local_data / "part-00001.parquet").read_bytes()
        fs.pipe_file(f"{bucket}/d/part-00001.parquet", whole[: len(whole) // 2])
    elif layout == "wrong schema":
        fs.pipe_file(f"{bucket}/d/part-00001.csv", b"a,b\n1,2\n")
    else:
        source = "s3://no-such-bucket-linreg/d/"
    config = DataConfig(source=source, storage_options={"endpoint_url": s3_server.endpoint})
    with pytest.raises(DataError, match=message) as raised:
        validate_source(config)
    assert "\n" not in str(raised.value)


def test_a_missing_backend_names_the_extra_to_install(monkeypatch):
    registry = importlib.import_module("fsspec.registry")
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # `import gcsfs` raises ImportError
    monkeypatch.delitem(registry._registry, "gs", raising=False)
    with pytest.raises(DataError) as raised:
        validate_source(DataConfig(source="gs://bucket/sales/"))
    assert str(raised.value) == (
        "gs://bucket/sales/: gs:// needs gcsfs, which is not installed: "
        "pip install 'linreg-pipeline[gcs]' (from a clone: pip install '.[gcs]')"
    )


@pytest.mark.parametrize(
    ("pairs", "options"),
    [
        (["endpoint_url=http://127.0.0.1:9000"], {"endpoint_url": "http://127.0.0.1:9000"}),
        (["anon=true", "max_concurrency=4"], {"anon": True, "max_concurrency": 4}),
        (
            ['client_kwargs={"region_name": "eu-west-1"}'],
            {"client_kwargs": {"region_name": "eu-west-1"}},
        ),
        (["a=x=y"], {"a": "x=y"}),
    ],
)
def test_storage_option_pairs_parse_json_values_or_text(pairs, options):
    assert parse_storage_options(pairs) == options


@pytest.mark.parametrize("pair", ["endpoint_url", "=value", ""])
def test_a_storage_option_without_key_or_equals_is_refused(pair):
    with pytest.raises(ValueError, match="--storage-option expects KEY=VALUE"):
        parse_storage_options([pair])


def test_publishing_to_a_bucket_is_one_put_per_file_model_json_last(s3_server, bucket):
    from sklearn.linear_model import LinearRegression

    estimator = LinearRegression().fit(np.arange(6.0).reshape(3, 2), [1.0, 2.0, 3.0])
    out = f"s3://{bucket}/models/linreg"
    options = {"endpoint_url": s3_server.endpoint}
    assert read_metadata(out, options) is None
    written = publish_model(out, estimator, {"version": 7}, options)
    loaded, metadata = load_verified_model(out, options)
    assert metadata == written and metadata["version"] == 7
    np.testing.assert_array_equal(loaded.coef_, estimator.coef_)
    assert s3_server.requests("PUT", f"/{bucket}/models/linreg/model.pkl") == 1
    assert s3_server.requests("PUT", f"/{bucket}/models/linreg/model.json") == 1
    log = s3_server.log.read_text()
    assert log.index(f"PUT /{bucket}/models/linreg/model.pkl") < log.index(
        f"PUT /{bucket}/models/linreg/model.json"
    )
    fs = s3_server.filesystem()
    assert (
        json.loads(fs.cat_file(f"{bucket}/models/linreg/model.json"))["sha256"]
        == (written["sha256"])
    )
    fs.pipe_file(f"{bucket}/models/linreg/model.pkl", b"not the published model")
    with pytest.raises(ModelFileError, match="sha256 does not match model.json"):
        load_verified_model(out, options)


class NoCredentialsError(Exception):
    """Named as botocore's: the SDKs' errors are recognised by name (each SDK is optional)."""


class EndpointConnectionError(Exception):
    """Named as botocore's."""


@pytest.mark.parametrize(
    ("location", "error", "message"),
    [
        ("s3://b/x", NoCredentialsError("Unable to locate credentials"), "set AWS_ACCESS_KEY_ID"),
        ("gs://b/x", NoCredentialsError("none"), "set GOOGLE_APPLICATION_CREDENTIALS"),
        ("az://c/x", NoCredentialsError("none"), "set AZURE_STORAGE_CONNECTION_STRING"),
        ("s3://b/x", PermissionError("Access Denied"), "access denied (Access Denied): check"),
        ("/data/x", PermissionError("[Errno 13] denied"), "permission denied ([Errno 13] denied)"),
        ("s3://b/x", EndpointConnectionError("no"), "cannot reach the storage endpoint (no)"),
        ("abfs://c/x", ImportError("Install adlfs"), "pip install 'linreg-pipeline[azure]'"),
    ],
)
def test_storage_set_up_problems_are_told_in_one_line(location, error, message):
    from linreg.sources import _storage_problem

    problem = _storage_problem(location, error)
    assert problem is not None and message in problem and "\n" not in problem
    assert _storage_problem(location, RuntimeError("something else")) is None


def test_a_second_validation_reads_only_objects_new_or_replaced_since(
    s3_server, bucket, local_data, tmp_path
):
    """The inspection cache on S3: an object's ETag and LastModified tell it changed; the
    unchanged ones are not read again (no GET of them in the server's log)."""
    from linreg.inspection_cache import InspectionCache
    from linreg.validation import csv_format

    config = DataConfig(
        source=f"s3://{bucket}/in/", storage_options={"endpoint_url": s3_server.endpoint}
    )
    fs = s3_server.filesystem()
    for index in (0, 1):
        name = f"part-0000{index}.parquet"
        fs.put_file(str(local_data / name), f"{bucket}/in/{name}")

    def validate_counting_gets() -> dict[str, int]:
        before = {
            i: s3_server.requests("GET", f"/{bucket}/in/part-0000{i}.parquet") for i in (0, 1, 2)
        }
        cache = InspectionCache(tmp_path / "cache", config.source, csv_format(config))
        plan = validate_source(config, cache=cache)
        assert plan.n_rows == 1_000 * len(plan.files)
        return {
            i: s3_server.requests("GET", f"/{bucket}/in/part-0000{i}.parquet") - before[i]
            for i in (0, 1, 2)
        }

    first = validate_counting_gets()
    assert first[0] > 0 and first[1] > 0
    assert validate_counting_gets() == {0: 0, 1: 0, 2: 0}
    # part 1 replaced by other content (part 2's), part 2 added.
    fs.put_file(str(local_data / "part-00002.parquet"), f"{bucket}/in/part-00001.parquet")
    fs.put_file(str(local_data / "part-00002.parquet"), f"{bucket}/in/part-00002.parquet")
    third = validate_counting_gets()
    assert third[0] == 0 and third[1] > 0 and third[2] > 0
