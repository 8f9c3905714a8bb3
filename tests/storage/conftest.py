"""A real S3 API for the object-storage tests: moto's server (``moto_server``) on a free
127.0.0.1 port, started once for the session and stopped by its PID."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3fs

from tests.integration.processes import BIN, clean_env, free_port, healthy, start, stop, wait_until

# moto accepts any credentials; these only make botocore sign its requests.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    log: Path

    def filesystem(self) -> s3fs.S3FileSystem:
        """A client of the server; no listing cache, so each call sees the store as it is."""
        return s3fs.S3FileSystem(
            key="test", secret="test", endpoint_url=self.endpoint, skip_instance_cache=True
        )

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment (no Prefect or AWS settings of this machine) with the test
        credentials; the endpoint is given by each caller."""
        base = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
        return {**base, **CREDENTIALS, "AWS_EC2_METADATA_DISABLED": "true", **extra}

    def requests(self, method: str, path: str) -> int:
        """How many ``method`` requests for ``path`` the server has logged."""
        pattern = re.compile(rf'"{method} {re.escape(path)}(\?[^ ]*)? HTTP/1\.1"')
        return len(pattern.findall(self.log.read_text(errors="replace")))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = root / "moto.log"
    process = start(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], clean_env(), log
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(f"{endpoint}/moto-api/"), 60, "moto_server")
        yield S3Server(endpoint, log)
    finally:
        stop(process)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A new, empty bucket for one test."""
    name = f"linreg-{uuid.uuid4().hex[:12]}"
    s3_server.filesystem().mkdir(name)
    return name
