"""A warm runner beside the local server: CLI calls run without paying for their imports.

A ``--mode single`` call spends most of its time importing Prefect, scikit-learn, pandas and
Dask (~3-5 s of CPU), not training. ``--mode server-start`` therefore also starts this
runner: one process that imports all of it once and then waits on a Unix socket in the
Prefect home. A training call (``--mode all``, ``single``, ``skip``) that finds it sends its
arguments, working directory, environment and its stdin/stdout/stderr (as file descriptors,
``SCM_RIGHTS``); the runner forks, and the child runs ``main.main`` exactly as the call's
own process would, writing straight to the caller's terminal or pipes; the caller waits for
the exit code and forwards SIGINT/SIGTERM to the child.

The runner refuses, and the call runs in its own process as before, when the fork could
differ from a fresh process:

- settings read at import: the call's ``PREFECT_*`` or ``DASK_*`` variables differ from the
  runner's (Prefect and Dask read theirs when imported);
- code: a ``.py`` file of the project, or the installed packages, changed since the runner
  started (a fingerprint of paths, sizes and modification times);
- interpreter: another Python executable.

The runner is single-threaded when it forks (checked), and a child that loses its caller
(the connection closes) terminates itself. ``--mode server-stop`` stops the runner with the
server, by PID. Only the user who owns the socket can connect (``SO_PEERCRED``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import sysconfig
import threading
import traceback
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
SOCKET_NAME = "linreg-runner.sock"
CHILD_FLAG = "LINREG_WARM_CHILD"  # set in a forked child: it must not call the runner again
# Imported once in the runner: everything a training call would import on its way.
PRELOAD = (
    "main",
    "flows",
    "tasks.runtime",
    "cli.progress",
    "linreg.training",
    "linreg.preprocess",
    "linreg.sources",
    "sklearn.linear_model",
    "pandas",
    "pyarrow.parquet",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.client.orchestration",
    "prefect.logging.handlers",
    "prefect_dask",
    "distributed",
    # What a flow run imports on its way (found by listing a child's new sys.modules).
    "prefect.utilities.visualization",
    "fastapi",
    "starlette.applications",
    "anyio._backends._asyncio",
    "opentelemetry.metrics",
    "rich._emoji_codes",
    "pydantic.color",
    "fsspec.implementations.chained",
    "linreg.synthetic",
    "cli.local_server",
)
_MAX_REQUEST = 1 << 20


def socket_path(home: Path) -> Path:
    """In the Prefect home when the path fits a Unix socket's 107 bytes, else in a private
    directory under the temporary directory, named after the home."""
    path = home / SOCKET_NAME
    if len(os.fsencode(path)) < 100:
        return path
    private = Path(f"/tmp/linreg-{os.getuid()}")  # nosec B108 - mode 0700, owner checked
    private.mkdir(mode=0o700, exist_ok=True)
    if private.stat().st_uid != os.getuid():
        raise RuntimeError(f"{private} belongs to another user")
    digest = hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:16]
    return private / f"{digest}.sock"


def code_fingerprint() -> str:
    """Changes when a project source file or the installed packages change."""
    digest = hashlib.sha256(sys.executable.encode())
    files = [PROJECT_DIR / "main.py"]
    for package in ("linreg", "tasks", "flows", "cli"):
        files += sorted((PROJECT_DIR / package).rglob("*.py"))
    for path in files:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    for library in sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}):
        digest.update(f"{library}:{os.stat(library).st_mtime_ns};".encode())
    return digest.hexdigest()


# PREFECT_* variables that Prefect does not read: PREFECT_PORT is server-start's own (make run
# sets it for that call only).
NOT_PREFECT_SETTINGS = frozenset({"PREFECT_PORT"})


def import_settings(environ: dict[str, str]) -> dict[str, str]:
    """The variables that Prefect and Dask read when they are imported."""
    return {
        key: value
        for key, value in environ.items()
        if key.startswith(("PREFECT_", "DASK_")) and key not in NOT_PREFECT_SETTINGS
    }


def refusal(request: dict[str, Any], settings: dict[str, str], fingerprint: str) -> str | None:
    """Why the runner must not run this request (None: it may)."""
    if request.get("executable") != sys.executable:
        return f"another Python ({request.get('executable')})"
    if request.get("fingerprint") != fingerprint:
        return "the code or the installed packages changed since it started"
    theirs = import_settings(request.get("env", {}))
    differing = sorted(
        key for key in theirs.keys() | settings.keys() if theirs.get(key) != settings.get(key)
    )
    if differing:
        verb = "differs" if len(differing) == 1 else "differ"
        return f"this call's {', '.join(differing[:3])} {verb} from the runner's"
    return None


# --- the caller's side ---------------------------------------------------------------


def run_in_runner(argv: list[str], environ: dict[str, str], path: Path) -> int | None:
    """Run ``argv`` in the warm runner listening on ``path``, with the call's environment
    ``environ`` (as configured for the local server); its exit code, or None (after a line
    on stdout saying why) if the runner cannot take it: the call then runs here."""
    request = {
        "argv": argv,
        "cwd": os.getcwd(),
        "env": environ,
        "executable": sys.executable,
        "fingerprint": code_fingerprint(),
    }
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
        socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        reader = connection.makefile("rb")
        connection.settimeout(30.0)  # the fork answers at once; a hung runner must not hang us
        first = json.loads(reader.readline() or b"{}")
        connection.settimeout(None)
    except (OSError, ValueError) as error:
        connection.close()
        _say(argv, f"warm runner not used: {error}")
        return None
    if "pid" not in first:
        connection.close()
        _say(argv, f"warm runner not used: {first.get('refused', 'no answer')}")
        return None
    child = int(first["pid"])
    forwarded = (signal.SIGINT, signal.SIGTERM)
    previous = {
        sig: signal.signal(sig, lambda number, _: _signal(child, number)) for sig in forwarded
    }
    try:
        last = json.loads(reader.readline() or b"{}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        connection.close()
    if "exit" not in last:
        print(
            f"error: the warm runner's process {child} ended without an exit code (killed?)",
            file=sys.stderr,
        )
        return 1
    return int(last["exit"])


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _say(argv: list[str], line: str) -> None:
    if "--quiet" not in argv and "--json" not in argv:
        print(line, flush=True)


# --- the runner's side ---------------------------------------------------------------


def serve(home: Path, api_url: str) -> None:
    """The runner's loop: import everything once, then fork a child per accepted call."""
    os.chdir(PROJECT_DIR)
    sys.path.insert(0, str(PROJECT_DIR))
    fingerprint = code_fingerprint()  # before the imports: an edit meanwhile counts as one
    import main

    main.share_one_malloc_arena()  # before the imports start threads; forks inherit it
    # The environment of a call that uses the local server, as main.py configures it.
    os.environ.update(main.call_environment(dict(os.environ), home, api_url))
    for module in PRELOAD:
        __import__(module)
    if threading.active_count() != 1:
        raise RuntimeError(f"threads after the imports, unsafe to fork: {threading.enumerate()}")
    settings = import_settings(dict(os.environ))
    path = socket_path(home)
    listening = path.with_name(f".{path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(listening))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    os.replace(listening, path)  # the path appears only once calls can connect
    listener.settimeout(1.0)
    stopping = False

    def stop(_number: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"ready": str(path), "pid": os.getpid()}), flush=True)
    try:
        while not stopping:
            _reap()
            try:
                connection, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            try:
                _handle(connection, listener, settings, fingerprint)
            except Exception:  # noqa: BLE001 - one bad call must not end the runner
                traceback.print_exc()
                connection.close()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _handle(
    connection: socket.socket, listener: socket.socket, settings: dict[str, str], fingerprint: str
) -> None:
    connection.settimeout(10.0)
    fds: list[int] = []
    try:
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        _pid, uid, _gid = struct.unpack("3i", credentials)
        if uid != os.getuid():
            raise PermissionError(f"uid {uid} is not the runner's")
        data, fds, _flags, _address = socket.recv_fds(connection, _MAX_REQUEST, 3)
        while not data.endswith(b"\n") and len(data) < _MAX_REQUEST:
            chunk = connection.recv(_MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        request = json.loads(data)
        if not (
            isinstance(request, dict)
            and isinstance(request.get("argv"), list)
            and isinstance(request.get("cwd"), str)
            and isinstance(request.get("env"), dict)
        ):
            raise ValueError("not a call (argv, cwd, env)")
        reason = refusal(request, settings, fingerprint) if len(fds) == 3 else "no stdio received"
    except (OSError, ValueError) as error:
        reason = f"bad request: {error}"
    if reason:
        try:
            connection.sendall(json.dumps({"refused": reason}).encode() + b"\n")
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        connection.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
        code = 1
        try:
            listener.close()
            code = _child(connection, fds, request)
        except BaseException:  # noqa: BLE001 - the child must never return into the loop
            traceback.print_exc()
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    connection.close()


def _child(connection: socket.socket, fds: list[int], request: dict[str, Any]) -> int:
    """In the forked child: become the caller's process, run main.main, report the code."""
    connection.settimeout(None)
    for sig in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"], **{CHILD_FLAG: "1"})
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=os.isatty(stream.fileno()), write_through=unbuffered)
    sys.argv = [str(PROJECT_DIR / "main.py"), *request["argv"]]
    try:
        connection.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    except OSError:
        return 1
    threading.Thread(target=_end_with_caller, args=(connection,), daemon=True).start()
    import main

    try:
        code = main.main(request["argv"])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported to the caller as an uncaught error would be
        traceback.print_exc()
        code = 1
    _finish(connection, code)
    return code


def run_exit_handlers() -> None:
    """What CPython's exit does before it tears the interpreter down: join the non-daemon
    threads, run the atexit handlers (Prefect's log and event workers drain there); then
    flush the standard streams. A process that ends with ``os._exit`` calls this first."""
    import atexit

    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _finish(connection: socket.socket, code: int) -> None:
    """The exit handlers (:func:`run_exit_handlers`), then the code to the caller. The child
    ends with ``os._exit``, since unwinding would run the runner's ``finally`` (which removes
    its socket)."""
    run_exit_handlers()
    try:
        connection.sendall(json.dumps({"exit": code}).encode() + b"\n")
    except OSError:
        pass


def _end_with_caller(connection: socket.socket) -> None:
    """The caller is gone (killed, its terminal closed): end as its own process would."""
    try:
        while connection.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])
