"""The JSON access logger, in-process: what each kind of handler receives."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from gunicorn.config import Config

from serving.gunicorn_logging import JsonLogger

ENVIRON = {
    "REMOTE_ADDR": "127.0.0.1",
    "REQUEST_METHOD": "POST",
    "PATH_INFO": '/predict"\n{"forged": 1}',
    "HTTP_USER_AGENT": "wrk",
}


class Collecting(logging.Handler):
    """A handler without a stream, as syslog's is."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def access_logger(path: Path) -> JsonLogger:
    config = Config()
    config.set("accesslog", str(path))
    return JsonLogger(config)


def log_one(logger: JsonLogger, status: str = "422 Unprocessable Entity") -> None:
    response = SimpleNamespace(status=status, sent=57)
    logger.access(response, None, ENVIRON, timedelta(microseconds=1500))


def test_a_file_gets_one_json_line_per_request_with_the_path_escaped(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    logger = access_logger(path)
    log_one(logger)
    log_one(logger, "200 OK")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["path"] == ENVIRON["PATH_INFO"]
    assert (first["status"], first["bytes"], first["duration_ms"]) == (422, 57, 1.5)
    assert json.loads(lines[1])["status"] == 200


def test_a_file_that_gunicorn_reopens_keeps_getting_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    logger = access_logger(path)
    log_one(logger)
    path.rename(tmp_path / "access.log.1")  # logrotate, then USR1
    logger.reopen_files()
    log_one(logger, "200 OK")
    assert json.loads((tmp_path / "access.log.1").read_text())["status"] == 422
    assert json.loads(path.read_text())["status"] == 200


def test_handlers_without_a_stream_get_the_same_line_and_levels_are_respected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "access.log"
    logger = access_logger(path)
    collecting, quiet = Collecting(), Collecting()
    quiet.setLevel(logging.WARNING)
    logger.access_log.addHandler(collecting)
    logger.access_log.addHandler(quiet)
    try:
        log_one(logger)
    finally:
        logger.access_log.removeHandler(collecting)
        logger.access_log.removeHandler(quiet)
    assert collecting.messages == [path.read_text().rstrip("\n")]
    assert quiet.messages == []
