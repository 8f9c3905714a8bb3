"""``python main.py`` on data in a bucket of a real S3 API (moto_server), publishing to it:
train-all, train-step picking up a new object, and bad objects that change nothing."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from linreg.synthetic import write_dataset
from tasks.state import TrainingStateBlock
from tests.integration.processes import run_main
from tests.storage.conftest import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class TrainedOnS3:
    bucket: str
    data: str
    out: str
    block: str
    env: dict[str, str]
    local: Path
    options: list[str]


def _published(s3_server: S3Server, out: str) -> dict[str, bytes]:
    fs = s3_server.filesystem()
    prefix = out.removeprefix("s3://")
    return {path: fs.cat_file(path) for path in fs.find(prefix)}


def _state(block: str) -> str:
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            block, TrainingStateBlock.get_block_type_slug(), include_secrets=True
        )
    return json.dumps(document.data, sort_keys=True)


def _cli(trained: TrainedOnS3, *args: str):
    return run_main(
        *args,
        "--storage-option",
        trained.options[1],
        "--out",
        trained.out,
        "--state-block",
        trained.block,
        "--model",
        "ols",
        "--batch-rows",
        "1000",
        env=trained.env,
    )


@pytest.fixture(scope="module")
def trained(s3_server: S3Server, prefect_api: str, tmp_path_factory) -> TrainedOnS3:
    """Three 1,000-row objects in a bucket, trained by ``--mode all`` and published there."""
    bucket = f"linreg-cli-{uuid.uuid4().hex[:8]}"
    fs = s3_server.filesystem()
    fs.mkdir(bucket)
    local = tmp_path_factory.mktemp("s3-cli") / "sales"
    write_dataset(local, n_rows=4_000, n_features=3, shard_rows=1_000, seed=3)
    for index in range(3):
        name = f"part-{index:05d}.parquet"
        fs.put_file(str(local / name), f"{bucket}/sales/{name}")
    trained = TrainedOnS3(
        bucket,
        f"s3://{bucket}/sales/",
        f"s3://{bucket}/models/linreg",
        f"s3cli-{uuid.uuid4().hex[:8]}",
        s3_server.env(PREFECT_API_URL=prefect_api),
        local,
        ["--storage-option", f"endpoint_url={s3_server.endpoint}"],
    )
    result = _cli(trained, "--mode", "all", "--data", trained.data)
    assert result.returncode == 0, result.stderr
    assert "model version 1:" in result.stdout
    assert f"model: {trained.out}/model.pkl" in result.stdout
    return trained


def test_train_all_publishes_to_the_bucket_and_train_step_picks_up_a_new_object(
    s3_server: S3Server, trained: TrainedOnS3
) -> None:
    published = _published(s3_server, trained.out)
    metadata = json.loads(published[f"{trained.bucket}/models/linreg/model.json"])
    assert (metadata["version"], metadata["data"]["rows_read"]) == (1, 3_000)
    prefix = f"{trained.bucket}/models/linreg"
    assert set(published) == {
        f"{prefix}/model.pkl",
        f"{prefix}/model.json",
        f"{prefix}/versions/1/model.pkl",
        f"{prefix}/versions/1/model.json",
        f"{prefix}/history.jsonl",
    }
    assert published[f"{prefix}/versions/1/model.json"] == published[f"{prefix}/model.json"]
    s3_server.filesystem().put_file(
        str(trained.local / "part-00003.parquet"), f"{trained.bucket}/sales/part-00003.parquet"
    )
    result = _cli(trained, "--mode", "single", "--data", trained.data)
    assert result.returncode == 0, result.stderr
    assert "model version 2:" in result.stdout
    metadata = json.loads(
        _published(s3_server, trained.out)[f"{trained.bucket}/models/linreg/model.json"]
    )
    assert (metadata["version"], metadata["data"]["rows_read"]) == (2, 4_000)
    assert json.loads(_state(trained.block))["state"]["cursor"] == {
        f"part-{index:05d}.parquet": 1_000 for index in range(4)
    }


def _corrupt(fs, bucket: str, local: Path) -> str:
    fs.put_file(str(local / "part-00000.parquet"), f"{bucket}/corrupt/part-00000.parquet")
    whole = (local / "part-00001.parquet").read_bytes()
    fs.pipe_file(f"{bucket}/corrupt/part-00001.parquet", whole[: len(whole) // 2])
    return f"s3://{bucket}/corrupt/"


def _wrong_schema(fs, bucket: str, local: Path) -> str:
    fs.put_file(str(local / "part-00000.parquet"), f"{bucket}/schema/part-00000.parquet")
    fs.pipe_file(f"{bucket}/schema/part-00001.csv", b"x00,x01,y\n1,2,3\n")
    return f"s3://{bucket}/schema/"


BAD_OBJECTS: dict[str, tuple[Callable[..., str], str]] = {
    "missing-prefix": (
        lambda fs, bucket, local: f"s3://{bucket}/no-such-prefix/",
        "/no-such-prefix/: no such file or directory",
    ),
    "corrupt-parquet": (_corrupt, "part-00001.parquet: not a readable Parquet file"),
    "wrong-schema": (_wrong_schema, "part-00001.csv: columns differ from part-00000.parquet"),
}


@pytest.mark.parametrize("kind", sorted(BAD_OBJECTS))
def test_bad_objects_exit_2_with_one_line_and_change_nothing(
    s3_server: S3Server, trained: TrainedOnS3, kind: str, refused
) -> None:
    build, message = BAD_OBJECTS[kind]
    source = build(s3_server.filesystem(), trained.bucket, trained.local)
    published, state = _published(s3_server, trained.out), _state(trained.block)
    result = _cli(trained, "--mode", "single", "--reset", "--data", source)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert _published(s3_server, trained.out) == published
    assert _state(trained.block) == state
    refused("CLI", f"s3-{kind}")


def test_validate_on_s3_and_its_time_beside_the_same_files_on_disk(
    s3_server: S3Server, trained: TrainedOnS3, figures
) -> None:
    timings = {}
    for where, source in (("s3", trained.data), ("local", str(trained.local))):
        started = time.perf_counter()
        result = run_main("--mode", "validate", "--data", source, *trained.options, env=trained.env)
        timings[where] = time.perf_counter() - started
        assert result.returncode == 0, result.stderr
        assert (
            "file(s)" in result.stdout and "features x00, x01, x02; target target" in result.stdout
        )
    figures.append(
        f"--mode validate: s3 (moto_server, 4 objects) {timings['s3']:.2f} s, "
        f"local (4 files) {timings['local']:.2f} s, ratio {timings['s3'] / timings['local']:.2f}"
    )


def test_missing_credentials_and_backends_are_one_line_exit_2(trained: TrainedOnS3) -> None:
    no_credentials = {
        k: v
        for k, v in trained.env.items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    no_credentials.update(
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent"
    )
    result = run_main(
        "--mode", "validate", "--data", trained.data, *trained.options, env=no_credentials
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no credentials for s3://" in result.stderr
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.stderr
    # gcsfs is in no requirements file (only the gcs extra), so this install lacks it.
    assert importlib.util.find_spec("gcsfs") is None
    result = run_main("--mode", "validate", "--data", "gs://bucket/sales/", env=trained.env)
    assert result.returncode == 2
    assert result.stderr == (
        "error: gs://bucket/sales/: gs:// needs gcsfs, which is not installed: "
        "pip install 'linreg-pipeline[gcs]' (from a clone: pip install '.[gcs]')\n"
    )
