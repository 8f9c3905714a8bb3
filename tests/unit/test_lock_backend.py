"""Which lock a round takes: the host's file lock for SQLite servers on this host (none set,
or the local server of ``--mode server-start``), Prefect's global limit for any other server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from cli.local_server import STATE_FILE
from tasks.runtime import LOCAL_SERVER_RECORD, _file_lock, _host_local_server


def test_the_record_read_is_the_one_the_local_server_writes():
    assert LOCAL_SERVER_RECORD == STATE_FILE


def test_no_api_url_means_the_embedded_server(tmp_path):
    assert _host_local_server(None, tmp_path)


def test_the_recorded_local_server_counts_as_local(tmp_path):
    url = "http://127.0.0.1:4411/api"
    (tmp_path / STATE_FILE).write_text(json.dumps({"pid": 1, "api_url": url}))
    assert _host_local_server(url, tmp_path)
    assert _host_local_server(url + "/", tmp_path)


@pytest.mark.parametrize(
    "record",
    [None, "not json", json.dumps({"pid": 1, "api_url": "http://127.0.0.1:4999/api"}), "[]"],
)
def test_any_other_server_uses_the_prefect_lock(tmp_path, record):
    if record is not None:
        (tmp_path / STATE_FILE).write_text(record)
    assert not _host_local_server("http://127.0.0.1:4411/api", tmp_path)


def test_the_file_lock_excludes_a_second_holder_until_released(tmp_path: Path):
    path = tmp_path / "locks" / "x.lock"
    with _file_lock(path, 5.0):
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with _file_lock(path, 0.3):
                    pass
            except TimeoutError as error:
                errors.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert len(errors) == 1 and "holds" in str(errors[0])
    with _file_lock(path, 0.3):
        pass
