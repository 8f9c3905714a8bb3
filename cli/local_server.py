"""A long-lived local Prefect server for the CLI, so that calls do not each pay for one.

Without ``PREFECT_API_URL``, every ``python main.py`` call used to start a temporary server
(migrations, block registration, services: ~6-10 s) and stop it at exit. ``start`` runs one
``prefect server start`` in the background instead, on 127.0.0.1 with SQLite under the
project's Prefect home and analytics off, and records it in ``linreg-server.json`` there;
later calls find it (:func:`running_server`) and use it, as does the UI that ``make run``
points to; ``stop`` ends it by its PID. With nothing running, calls fall back to Prefect's
temporary server, as before. (The one command it runs is a fixed ``prefect server start``
without a shell: bandit's subprocess warnings are answered in place.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess  # nosec B404
import sys
import time
import urllib.request
from pathlib import Path

STATE_FILE = "linreg-server.json"


def _state_path(home: Path) -> Path:
    return home / STATE_FILE


def _healthy(api_url: str, timeout: float = 0.5) -> bool:
    try:
        # Only http://127.0.0.1:<port>/api URLs this module wrote reach here.
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:  # nosec B310
            return response.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_server(home: Path) -> str | None:
    """The API URL of the local server recorded under ``home`` if it answers, else None
    (a stale record is removed)."""
    path = _state_path(home)
    try:
        record = json.loads(path.read_text())
        pid, api_url = int(record["pid"]), str(record["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _alive(pid) and _healthy(api_url):
        return api_url
    if not _alive(pid):
        path.unlink(missing_ok=True)
    return None


def start(home: Path, port: int, timeout: float = 120.0) -> tuple[str, bool]:
    """Start the local server (or find the running one): its API URL, and whether it was
    started now. Raises RuntimeError, with the log's path, if it does not come up."""
    existing = running_server(home)
    if existing:
        return existing, False
    home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    if _healthy(api_url):
        raise RuntimeError(
            f"port {port} already serves a Prefect API not started from {home}; set "
            f"PREFECT_API_URL={api_url} to use it, or pick another port with PREFECT_PORT"
        )
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(  # nosec B603
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--analytics-off",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this call; stopped by `stop`
        )
    deadline = time.monotonic() + timeout
    while not _healthy(api_url):
        if process.poll() is not None or time.monotonic() > deadline:
            _terminate(process.pid)
            raise RuntimeError(f"the local Prefect server did not start; see {log}")
        time.sleep(0.3)
    _state_path(home).write_text(json.dumps({"pid": process.pid, "api_url": api_url}) + "\n")
    return api_url, True


def stop(home: Path, timeout: float = 30.0) -> int | None:
    """Stop the local server recorded under ``home``; its PID, or None if none ran."""
    path = _state_path(home)
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stopped = pid if _alive(pid) else None
    if stopped:
        _terminate(pid, timeout)
    path.unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, timeout: float = 30.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)  # the server and the workers it spawned
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
