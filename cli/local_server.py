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

import atexit
import ctypes
import json
import os
import signal
import socket
import subprocess  # nosec B404
import sys
import time
import urllib.request
from pathlib import Path

STATE_FILE = "linreg-server.json"  # also read by tasks.runtime (LOCAL_SERVER_RECORD)


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
    runner, socket_file = _start_runner(home, api_url, env)  # imports while the server boots
    deadline = time.monotonic() + timeout
    while not _healthy(api_url):
        if process.poll() is not None or time.monotonic() > deadline:
            _terminate(process.pid)
            _terminate(runner.pid)
            raise RuntimeError(f"the local Prefect server did not start; see {log}")
        time.sleep(0.3)
    record: dict = {"pid": process.pid, "api_url": api_url}
    _state_path(home).write_text(json.dumps(record) + "\n")
    while not socket_file.exists():
        if runner.poll() is not None or time.monotonic() > deadline:
            # Calls then run in their own processes; the reason is in runner.log.
            _terminate(runner.pid)
            return api_url, True
        time.sleep(0.05)
    record["runner"] = {"pid": runner.pid, "socket": str(socket_file)}
    _state_path(home).write_text(json.dumps(record) + "\n")
    return api_url, True


def setup_done(home: Path, step: str) -> bool:
    """Whether ``step`` (a one-time set-up of the server, such as an automation) is recorded
    as done for the local server recorded under ``home``."""
    try:
        return step in json.loads(_state_path(home).read_text()).get("setup_done", [])
    except (OSError, ValueError, AttributeError):
        return False


def record_setup_done(home: Path, step: str) -> None:
    """Record ``step`` as done for this server; a later start of another server forgets it."""
    path = _state_path(home)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    record["setup_done"] = sorted({*record.get("setup_done", []), step})
    path.write_text(json.dumps(record) + "\n")


def _start_runner(home: Path, api_url: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """The warm runner (``cli.warm``) beside the server, and the socket it will listen on."""
    from cli.warm import PROJECT_DIR, socket_path

    path = socket_path(home)
    path.unlink(missing_ok=True)
    with open(home / "runner.log", "ab") as output:
        process = subprocess.Popen(  # nosec B603 - a fixed command, no shell
            [sys.executable, "-m", "cli.warm", str(home), api_url],
            cwd=PROJECT_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this call; stopped by `stop`
        )
    return process, path


def running_runner(home: Path) -> tuple[str, Path] | None:
    """The local server's API URL and its warm runner's socket, if both are up."""
    api_url = running_server(home)
    if not api_url:
        return None
    try:
        runner = json.loads(_state_path(home).read_text())["runner"]
        pid, path = int(runner["pid"]), Path(runner["socket"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (api_url, path) if _alive(pid) and path.exists() else None


def stop(home: Path, timeout: float = 30.0) -> int | None:
    """Stop the local server recorded under ``home``; its PID, or None if none ran."""
    path = _state_path(home)
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    runner = record.get("runner") or {}
    if runner.get("pid") and _alive(int(runner["pid"])):
        _terminate(int(runner["pid"]), timeout)  # and the calls it is running
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


class CallServer:
    """A Prefect server for one CLI call when none runs: what Prefect's temporary server does
    (the same app, SQLite in the Prefect home, ephemeral services, no UI), started as the
    call's first step, so it boots on the other core while the call imports its own modules,
    instead of after them; and this process never imports the server's code (Prefect's client
    does, to start its temporary server: ~4 s of CPU). Stopped at exit; on Linux the kernel
    also stops it if this process dies first (``PR_SET_PDEATHSIG``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        port = _free_port()
        self.api_url = f"http://127.0.0.1:{port}/api"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        self.log = home / "call-server.log"
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(  # nosec B603 - a fixed command, no shell
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_stop_with_parent,  # noqa: PLW1509 - only calls prctl
            )
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Return once the server answers; RuntimeError, with the log's path, if it exits or
        does not answer within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not _healthy(self.api_url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the Prefect server for this call did not start; see {self.log}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
