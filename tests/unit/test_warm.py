"""The warm runner's rules for which calls it may take (cli.warm), without a server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cli import warm
from main import CALL_DEFAULTS, call_environment


def _request(**changes) -> dict:
    request = {
        "executable": sys.executable,
        "fingerprint": "f1",
        "env": {"PREFECT_API_URL": "http://127.0.0.1:1/api", "DASK_X": "1", "HOME": "/h"},
    }
    return {**request, **changes}


def test_a_request_from_the_same_interpreter_code_and_settings_is_taken():
    settings = warm.import_settings(_request()["env"])
    assert settings == {"PREFECT_API_URL": "http://127.0.0.1:1/api", "DASK_X": "1"}
    # Nor does one that only server-start reads (make run sets it for that call alone).
    assert warm.import_settings({"PREFECT_PORT": "4200"}) == {}
    assert warm.refusal(_request(), settings, "f1") is None
    # Variables that neither Prefect nor Dask reads at import may differ.
    other_home = _request(env={**_request()["env"], "HOME": "/elsewhere"})
    assert warm.refusal(other_home, settings, "f1") is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"executable": "/other/python"}, "another Python (/other/python)"),
        ({"fingerprint": "f2"}, "the code or the installed packages changed since it started"),
        (
            {"env": {"PREFECT_API_URL": "http://127.0.0.1:1/api", "DASK_X": "2"}},
            "this call's DASK_X differs from the runner's",
        ),
        (
            {"env": {"PREFECT_API_URL": "http://127.0.0.1:1/api"}},
            "this call's DASK_X differs from the runner's",
        ),
    ],
)
def test_a_request_that_could_differ_from_a_fresh_process_is_refused(changes, reason):
    settings = warm.import_settings(_request()["env"])
    assert warm.refusal(_request(**changes), settings, "f1") == reason


def test_the_fingerprint_follows_the_project_sources(tmp_path, monkeypatch):
    project = tmp_path / "project"
    for package in ("linreg", "tasks", "flows", "cli"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
    (project / "main.py").write_text("")
    monkeypatch.setattr(warm, "PROJECT_DIR", project)
    before = warm.code_fingerprint()
    assert warm.code_fingerprint() == before
    (project / "linreg" / "__init__.py").write_text("x = 1\n")
    assert warm.code_fingerprint() != before


def test_the_socket_leaves_a_long_home_for_a_private_directory(tmp_path):
    assert warm.socket_path(Path("/h")) == Path("/h") / warm.SOCKET_NAME
    long_home = tmp_path / ("x" * 120)
    path = warm.socket_path(long_home)
    assert len(os.fsencode(path)) < 100
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path == warm.socket_path(long_home)  # the same home, the same socket


def test_the_runner_compares_the_environment_a_call_would_configure():
    environ = call_environment({"HOME": "/h"}, Path("/p"), "http://127.0.0.1:9/api")
    assert environ == {
        **CALL_DEFAULTS,
        "HOME": "/h",
        "PREFECT_HOME": "/p",
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
    }
    mine = call_environment({"DO_NOT_TRACK": "0"}, Path("/p"), "http://127.0.0.1:9/api")
    assert mine["DO_NOT_TRACK"] == "0"  # the caller's own choice is kept
