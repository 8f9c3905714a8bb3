"""Batch scoring with the data, the published model and the predictions in a bucket of a
real S3 API (moto_server): the same shards as on disk, one PUT per shard."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from linreg.scoring import load_scorer, plan_scoring, run_scoring
from tests.scoring.support import read_predictions, train
from tests.storage.conftest import CREDENTIALS, S3Server

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def test_scoring_from_and_into_a_bucket_gives_the_local_shards(
    s3_server: S3Server,
    bucket: str,
    synthetic_dir,
    tmp_path,
):
    directory, _ = synthetic_dir
    out = tmp_path / "model"
    train(directory, out)
    fs = s3_server.filesystem()
    fs.put(str(directory) + "/", f"{bucket}/data", recursive=True)
    fs.put(str(out) + "/", f"{bucket}/model", recursive=True)
    options = {"endpoint_url": s3_server.endpoint}
    remote = f"s3://{bucket}/predictions"

    scorer = load_scorer(f"s3://{bucket}/model", storage_options=options)
    plan = plan_scoring(f"s3://{bucket}/data", scorer, ["target"], 2_500, storage_options=options)
    summary = run_scoring(plan, scorer, remote, options)
    local = load_scorer(out)
    local_summary = run_scoring(
        plan_scoring(str(directory), local, ["target"], 2_500), local, str(tmp_path / "local")
    )

    assert summary.shards == local_summary.shards and len(summary.shards) == 3
    assert (summary.rows, summary.rows_null) == (local_summary.rows, local_summary.rows_null)
    assert sorted(name.rsplit("/", 1)[-1] for name in fs.ls(f"{bucket}/predictions")) == [
        "_scoring.json",
        *summary.shards,
    ]
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name in summary.shards:
        table = pq.read_table(io.BytesIO(fs.cat_file(f"{bucket}/predictions/{name}")))
        pq.write_table(table, downloaded / name)
        assert s3_server.requests("PUT", f"/{bucket}/predictions/{name}") == 1
    assert read_predictions(downloaded).equals(read_predictions(tmp_path / "local"))
    # A second run replaces the first one's shards in the bucket.
    fs.pipe_file(f"{bucket}/predictions/part-00009.parquet", b"stale")
    again = run_scoring(plan, scorer, remote, options)
    assert not fs.exists(f"{bucket}/predictions/part-00009.parquet")
    assert (again.rows, again.shards) == (summary.rows, summary.shards)
