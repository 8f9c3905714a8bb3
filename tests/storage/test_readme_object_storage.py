"""The README's "Object storage" section, run as written against the tests' S3 server.

The one change made to its text: the documented ports (moto 9000, the service 8000) become
free ports, so the test runs beside anything else on the machine. The section's first command
starts moto's server; the test starts that same command itself, to stop it by its PID.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.processes import (
    BIN,
    PROJECT,
    clean_env,
    free_port,
    healthy,
    start,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MOTO_LINE = ".venv/bin/moto_server -H 127.0.0.1 -p 9000 > moto.log 2>&1 &"


def _section() -> str:
    text = (PROJECT / "README.md").read_text()
    start_at = text.index("\n## Object storage\n")
    return text[start_at : text.index("\n## ", start_at + 1)]


def _bash_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def _expected_output(block: str) -> list[tuple[str, list[str]]]:
    """(command, fragments) for each ``main.py`` command followed by ``# output`` comments:
    the fragments between the comments' ``...`` must appear in its output, in order."""
    expected, command, comments = [], None, []
    joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines joined
    for line in [*joined.splitlines(), ""]:
        if line.startswith("# ") and command:
            comments.append(line[2:])
            continue
        if command and comments:
            expected.append(
                (command, [p.strip() for c in comments for p in c.split("...") if p.strip()])
            )
        command, comments = (line if "main.py" in line else None), []
    return expected


def _env(tmp_path: Path, block: str, prefect_api: str) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    exported = re.search(r"^export (.*)$", block, flags=re.MULTILINE)
    assert exported, "the section exports the credentials it uses"
    env.update(pair.split("=", 1) for pair in exported.group(1).split())
    # The embedded Prefect server and mktemp's directory under the test's own directory.
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        TMPDIR=str(tmp_path),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def test_the_readme_object_storage_section_works_as_written(
    tmp_path: Path, prefect_api: str
) -> None:
    section = _section()
    train, serve = _bash_blocks(section)
    assert train.splitlines()[0] == MOTO_LINE
    moto_port, service_port = free_port(), free_port()
    env = _env(tmp_path, train, prefect_api)
    moto = start(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
        clean_env(),
        tmp_path / "moto.log",
    )
    service = None
    try:
        wait_until(lambda: healthy(f"http://127.0.0.1:{moto_port}/moto-api/"), 60, "moto_server")
        script = "\n".join(train.splitlines()[1:]).replace(
            "127.0.0.1:9000", f"127.0.0.1:{moto_port}"
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert result.stderr == "", result.stderr
        position = 0
        for command, fragments in _expected_output(train):
            for fragment in fragments:
                found = result.stdout.find(fragment, position)
                assert found >= 0, f"{command!r} should print {fragment!r}:\n{result.stdout}"
                position = found
        assert len(_expected_output(train)) == 3

        serve_line, curl_line = (line for line in serve.splitlines() if line.strip())
        service = start(
            ["bash", "-c", serve_line.replace("127.0.0.1:9000", f"127.0.0.1:{moto_port}")],
            {**env, "PORT": str(service_port)},
            tmp_path / "service.log",
        )
        wait_until(
            lambda: healthy(f"http://127.0.0.1:{service_port}/readyz"), 120, "the service's /readyz"
        )
        command, answer = curl_line.split("#", 1)
        curl = subprocess.run(
            ["bash", "-c", command.replace("127.0.0.1:8000", f"127.0.0.1:{service_port}")],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(curl.stdout) == json.loads(answer)
    finally:
        if service is not None:
            stop(service)
        stop(moto)
