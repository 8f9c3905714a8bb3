"""Throughput and latency of the prediction service against a FastAPI/uvicorn baseline.

    python -m bench.serve [--rounds 5] [--duration 2] [--rows 1 100] [--workers 2]

Both servers serve the same freshly trained model, on 127.0.0.1, with the same number of
worker processes and no access log; wrk drives each with the same body for each row count.
Before timing, both must give the same predictions for the same rows (a speed-up must not
change the answers). Rounds alternate between the two servers; the table gives medians over
the rounds, and the median of the per-round throughput ratios (rounds that ran side by side),
which stays fair when the machine's load changes during the run. Exits 1 on any failed
request or disagreement.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("post.lua")
SERVERS = ("linreg: Flask on gunicorn", "baseline: FastAPI on uvicorn")
TARGETS = {1: 1.0, 100: 2.0}  # the throughput ratio aimed at, per row count


def train_model(out_dir: Path, n_features: int = 8, seed: int = 42) -> None:
    """Publish an ols model trained on synthetic data, with the pipeline's code (no Prefect)."""
    from linreg.batches import plan_batches
    from linreg.config import DataConfig, HyperParams
    from linreg.executors import SerialExecutor
    from linreg.model_files import publish_model
    from linreg.state import TrainingState
    from linreg.synthetic import write_dataset
    from linreg.training import RoundSpec, model_metadata, train_batches
    from linreg.validation import validate_source

    data_dir = out_dir.parent / "data"
    write_dataset(data_dir, n_rows=20_000, n_features=n_features, shard_rows=20_000, seed=seed)
    data = DataConfig(source=str(data_dir), batch_rows=20_000)
    plan = validate_source(data)
    hyperparams = HyperParams(model="ols")
    state = TrainingState.fresh(data.source, list(plan.features), plan.target, hyperparams.model)
    batches = plan_batches(plan.files, {}, data.batch_rows)
    trained = train_batches(
        state,
        plan,
        batches,
        RoundSpec(hyperparams, data.batch_rows, data.test_fraction),
        SerialExecutor(),
    )
    publish_model(out_dir, trained.estimator, model_metadata(trained, plan, hyperparams))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_servers(model_dir: Path, workers: int, logs: Path) -> dict[str, tuple]:
    """Both servers as subprocesses: {name: (process, port)}."""
    env = {**os.environ, "MODEL_DIR": str(model_dir), "HOST": "127.0.0.1", "ACCESS_LOG": ""}
    ours, baseline = free_port(), free_port()
    commands = {
        SERVERS[0]: (
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "serving/gunicorn.conf.py",
                "serving.wsgi:app",
            ],
            {**env, "PORT": str(ours), "GUNICORN_WORKERS": str(workers), "LOG_LEVEL": "warning"},
            ours,
        ),
        SERVERS[1]: (
            [sys.executable, "-m", "bench.serve.uvicorn_baseline"]
            + ["--port", str(baseline), "--workers", str(workers)],
            env,
            baseline,
        ),
    }
    servers = {}
    for index, (name, (command, environ, port)) in enumerate(commands.items()):
        log = open(logs / f"server-{index}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=log)
        servers[name] = (process, port)
    return servers


def post(port: int, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until_serving(process: subprocess.Popen, port: int, body: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            if post(port, body)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not serving after {timeout} s")


def run_wrk(port: int, body_file: Path, seconds: int, threads: int, connections: int) -> dict:
    """One wrk run; its JSON summary line, plus requests per second."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA)]
    command.append(f"http://127.0.0.1:{port}/predict")
    result = subprocess.run(
        command,
        env={**os.environ, "BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["errors"] = sum(
        summary[key] for key in ("connect", "read", "write", "status", "timeout")
    )
    return summary


def measure(servers: dict[str, tuple], body_file: Path, args: argparse.Namespace) -> dict:
    """Every timed round of each server for one body: {name: [wrk summary, ...]}.

    Rounds alternate between the servers, so round i of each ran side by side in time: a
    change of load on the machine meanwhile hits both, and their ratio stays fair.
    """
    for _, port in servers.values():
        run_wrk(port, body_file, args.warmup, args.threads, args.connections)
    rounds: dict[str, list[dict]] = {name: [] for name in servers}
    for index in range(args.rounds):
        order = list(servers.items())
        for name, (_, port) in order[::-1] if index % 2 else order:  # A B, B A, A B...
            rounds[name].append(
                run_wrk(port, body_file, args.duration, args.threads, args.connections)
            )
    return rounds


def make_body(n_rows: int, n_features: int, seed: int = 0) -> bytes:
    rows = np.random.default_rng(seed).normal(0.0, 10.0, (n_rows, n_features))
    return json.dumps({"instances": rows.tolist()}).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the prediction service with wrk.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (5)")
    parser.add_argument("--duration", type=int, default=2, help="seconds per round (2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed seconds first (2)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100], help="rows per body")
    parser.add_argument("--workers", type=int, default=2, help="processes per server (2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk (make bench-serve does)", file=sys.stderr)
        return 2

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        scratch_dir = Path(scratch)
        model_dir = scratch_dir / "model"
        train_model(model_dir)
        n_features = len(json.loads((model_dir / "model.json").read_text())["features"])
        servers = start_servers(model_dir, args.workers, scratch_dir)
        results = {}
        try:
            check_body = make_body(100, n_features, seed=1)
            for process, port in servers.values():
                wait_until_serving(process, port, check_body, timeout=60)
            answers = [json.loads(post(port, check_body)[1]) for _, port in servers.values()]
            same = np.allclose(
                answers[0]["predictions"], answers[1]["predictions"], rtol=1e-9, atol=1e-9
            )
            print(f"same predictions from both servers on 100 rows: {same}")
            for n_rows in args.rows:
                body_file = scratch_dir / f"body-{n_rows}.json"
                body_file.write_bytes(make_body(n_rows, n_features))
                results[n_rows] = measure(servers, body_file, args)
        finally:
            for process, _ in servers.values():
                process.terminate()
            for process, _ in servers.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    print_table(results, args, load_before)
    errors = sum(r["errors"] for rounds in results.values() for s in rounds.values() for r in s)
    return 1 if errors or not same else 0


def print_table(
    results: dict[int, dict[str, list[dict]]], args: argparse.Namespace, load_before: float
) -> None:
    """One line per case and server: medians over the rounds, and the paired ratio."""
    load_after = os.getloadavg()[0]
    print(
        f"\nwrk -t{args.threads} -c{args.connections}; {args.rounds} alternating rounds of "
        f"{args.duration} s per case and server; {args.workers} worker processes per server; "
        f"127.0.0.1; {os.cpu_count()} CPUs; load average {load_before:.1f} before, "
        f"{load_after:.1f} after\n"
    )
    print("| rows | server | requests/s | p50 ms | p99 ms | errors | vs baseline | rounds, req/s |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for n_rows, rounds in results.items():
        baseline = rounds[SERVERS[1]]
        for name, summaries in rounds.items():
            # Ratio of rounds that ran side by side, then the median: robust to load drift.
            ratios = [
                one["rps"] / other["rps"] for one, other in zip(summaries, baseline, strict=True)
            ]
            target = TARGETS.get(n_rows)
            note = f" (target ≥ {target:g}×)" if name == SERVERS[0] and target else ""
            spread = ", ".join(f"{summary['rps']:,.0f}" for summary in summaries)
            print(
                f"| {n_rows} | {name} | {median(s['rps'] for s in summaries):,.0f} "
                f"| {median(s['p50_us'] for s in summaries) / 1000:.2f} "
                f"| {median(s['p99_us'] for s in summaries) / 1000:.2f} "
                f"| {sum(s['errors'] for s in summaries)} | {median(ratios):.2f}×{note} "
                f"| {spread} |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
