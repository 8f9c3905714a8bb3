"""Where one request's time goes in the service, by stage, under bench/serve's wrk load.

    python -m bench.serve.profile [--rows 1 100] [--seconds 12] [-- extra gunicorn args]

Starts the service as ``make bench-serve`` does (the same model, 2 workers, no access log),
drives it with the same wrk load, and samples one worker with ``py-spy record --gil``: only
the thread holding the GIL, so the shares are of the Python work a worker does (time in
system calls with the GIL released, ``sendall``'s copy to the client included, is not in
them). Each sample goes to the first stage its stack names, from the innermost frame out.
Prints, per body size, the worker CPU per request and each stage's share of the samples.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil

from bench.serve.__main__ import (
    LUA,
    ROOT,
    free_port,
    make_body,
    train_model,
    tree_seconds,
    wait_until_serving,
)

# (what a frame contains, stage), tried innermost frame first: our code and gunicorn's
# HTTP code, then the gthread worker's machinery around them.
STAGES = (
    ("serving/metrics.py", "metrics (prometheus_client, multiprocess files)"),
    ("prometheus_client", "metrics (prometheus_client, multiprocess files)"),
    ("gunicorn_logging.py", "access log"),
    ("glogging.py", "access log"),
    ("ModelStore.current", "model reload check"),
    ("ModelStore.refresh", "model reload check"),
    ("predict_checked", "predict"),
    ("json_reply", "encode (orjson)"),
    ("serving/payload.py", "decode and check the body"),
    ("serving/mlflow_scoring.py", "decode and check the body"),
    ("serving/open_inference.py", "decode and check the body"),
    ("gunicorn/http/body.py", "gunicorn: HTTP parsing (request line, headers, body)"),
    ("gunicorn/http/message.py", "gunicorn: HTTP parsing (request line, headers, body)"),
    ("gunicorn/http/parser.py", "gunicorn: HTTP parsing (request line, headers, body)"),
    ("gunicorn/http/unreader.py", "gunicorn: HTTP parsing (request line, headers, body)"),
    ("Response.", "gunicorn: response (status line, headers, sendall)"),
    ("gunicorn/util.py", "gunicorn: response (status line, headers, sendall)"),
    ("gunicorn/http/wsgi.py", "gunicorn: WSGI environ"),
    ("flask/", "Flask/werkzeug"),
    ("werkzeug/", "Flask/werkzeug"),
    ("serving/http.py", "our dispatch (Dispatcher, Route, Content-Type)"),
    ("serving/app.py", "our dispatch (Dispatcher, Route, Content-Type)"),
)
MACHINERY = (
    ("PollableMethodQueue", "gthread: wake-up pipe and callback queue"),
    ("finish_request", "gthread: keep-alive bookkeeping, poller (re)registration"),
    ("on_client_socket_readable", "gthread: keep-alive bookkeeping, poller (re)registration"),
    ("enqueue_req", "gthread: thread-pool handoff (submit, futures)"),
    ("concurrent/futures", "gthread: thread-pool handoff (submit, futures)"),
    ("threading.py", "gthread: thread-pool handoff (submit, futures)"),
    ("wait_for_and_dispatch_events", "gthread: selector (epoll)"),
    ("gthread.py", "gthread: handle_request and the rest of the worker"),
)


def stage(stack: str) -> str:
    """The stage of one collapsed py-spy stack ('outer;...;inner')."""
    frames = stack.split(";")[::-1]
    for table in (STAGES, MACHINERY):
        for frame in frames:
            for needle, name in table:
                if needle in frame:
                    return name
    return "other"


def stage_shares(raw: Path) -> Counter:
    """Samples per stage in py-spy's raw output, one 'stack count' per line."""
    totals: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            totals[stage(stack)] += int(count)
    return totals


def profile(rows: int, seconds: int, scratch: Path, gunicorn_args: list[str]) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    port = free_port()
    env = {
        **os.environ,
        "MODEL_DIR": str(scratch / "model"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ACCESS_LOG": "",
        "LOG_LEVEL": "warning",
        "GUNICORN_WORKERS": "2",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py"]
    command += [*gunicorn_args, "serving.wsgi:app"]
    log = open(scratch / f"gunicorn-{rows}.log", "wb")  # noqa: SIM115 (closed with the process)
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    body_file = scratch / f"body-{rows}.json"
    body_file.write_bytes(make_body(rows, 8))
    wrk = ["wrk", "-t2", "-c16", "--timeout", "30s", "-s", str(LUA)]
    url = f"http://127.0.0.1:{port}/predict"
    wrk_env = {**os.environ, "BODY_FILE": str(body_file)}
    try:
        wait_until_serving(server, port, make_body(1, 8), timeout=60)
        subprocess.run([*wrk, "-d2s", url], env=wrk_env, check=True, capture_output=True)
        worker = psutil.Process(server.pid).children()[0].pid
        raw = scratch / f"profile-{rows}.txt"
        spy = subprocess.Popen(
            [py_spy, "record", "--gil", "--nonblocking", "-r", "200", "-f", "raw"]
            + ["-p", str(worker), "-d", str(seconds - 1), "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cpu = tree_seconds(server.pid)
        out = subprocess.run(
            [*wrk, f"-d{seconds}s", url], env=wrk_env, check=True, capture_output=True, text=True
        ).stdout
        cpu = tree_seconds(server.pid) - cpu
        spy.wait()
    finally:
        server.terminate()
        server.wait(timeout=30)
    summary = json.loads(out.strip().splitlines()[-1])
    shares = stage_shares(raw)
    total = sum(shares.values()) or 1
    print(
        f"\n{rows} row(s): {summary['requests'] / (summary['duration_us'] / 1e6):,.0f} req/s, "
        f"worker CPU {cpu / max(summary['requests'], 1) * 1e6:,.0f} µs/request, "
        f"{total} GIL samples of one worker; load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| stage | share of the GIL samples |\n|---|---:|")
    for name, count in shares.most_common():
        print(f"| {name} | {count / total:.1%} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--seconds", type=int, default=12, help="sampled seconds per case")
    parser.add_argument("gunicorn_args", nargs="*", help="after --: extra gunicorn arguments")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-serve-profile-") as directory:
        scratch = Path(directory)
        train_model(scratch / "model")
        for rows in args.rows:
            profile(rows, args.seconds, scratch, args.gunicorn_args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
