"""Helpers for the serving tests: models made by the pipeline's code, a real gunicorn, HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from linreg.batches import plan_batches
from linreg.config import DataConfig, HyperParams
from linreg.executors import SerialExecutor
from linreg.model_files import publish_model, write_atomic
from linreg.state import TrainingState
from linreg.synthetic import write_dataset
from linreg.training import RoundSpec, model_metadata, train_batches
from linreg.validation import validate_source
from serving.metrics import FLUSH_SECONDS
from tests.integration.processes import free_port

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FEATURES = ["x00", "x01", "x02", "x03"]
MAX_ROWS = 10_000
MAX_BODY_BYTES = 1_048_576
BODY_MARKER = "body-marker-must-not-be-echoed"
JSON = "application/json"


def _row(values: str) -> bytes:
    return b'{"instances": [' + values.encode() + b"]}"


ROW = "[1.5, -2, 3e2, 4]"
OBJECT = '{"x00": 1.5, "x01": -2, "x02": 300, "x03": 4}'

# (id, body, content type, status, what the error must say). Each body that could be echoed
# carries BODY_MARKER, which no response may contain.
MALFORMED: list[tuple[str, bytes, str | None, int, str]] = [
    ("not JSON", b'{"instances": [[1, 2, 3, 4]]', JSON, 400, "not valid JSON"),
    ("empty body", b"", JSON, 400, "not valid JSON"),
    ("not UTF-8", b"\xff\xfe" + BODY_MARKER.encode(), JSON, 400, "not valid JSON"),
    ("NaN literal", _row("[NaN, 1, 2, 3]"), JSON, 400, "NaN and Infinity are not JSON numbers"),
    ("Infinity literal", _row("[1, Infinity, 2, 3]"), JSON, 400, "NaN and Infinity"),
    ("-Infinity literal", _row("[1, 2, -Infinity, 3]"), JSON, 400, "NaN and Infinity"),
    ("number that overflows", _row("[1, 2, 3, 1e999]"), JSON, 400, "NaN and Infinity"),
    ("text/plain", _row(ROW), "text/plain", 415, "Content-Type must be application/json"),
    ("no content type", _row(ROW), None, 415, "Content-Type must be application/json"),
    ("form", b"instances=1", "application/x-www-form-urlencoded", 415, "application/json"),
    ("a list, not an object", b"[[1, 2, 3, 4]]", JSON, 422, '{"instances": [row, ...]}'),
    ("no instances key", b'{"rows": [[1, 2, 3, 4]]}', JSON, 422, '{"instances": [row, ...]}'),
    (
        "another key",
        b'{"instances": [[1, 2, 3, 4]], "' + BODY_MARKER.encode() + b'": 1}',
        JSON,
        422,
        'only the key "instances"',
    ),
    ("instances not a list", b'{"instances": {"x00": 1}}', JSON, 422, "must be a list of rows"),
    (
        "instances a string",
        b'{"instances": "' + BODY_MARKER.encode() + b'"}',
        JSON,
        422,
        '"instances" is a string',
    ),
    ("empty instances", b'{"instances": []}', JSON, 422, "empty"),
    ("flat row", b'{"instances": [1, 2, 3, 4]}', JSON, 422, "instances[0] is a number"),
    (
        "too few features",
        _row("[1, 2, 3]"),
        JSON,
        422,
        "instances[0] has 3 values; the model takes 4",
    ),
    ("too many features", _row("[1, 2, 3, 4, 5]"), JSON, 422, "has 5 values"),
    ("ragged rows", _row(ROW + ", [1, 2]"), JSON, 422, "instances[1] has 2 values"),
    ("string value", _row(f'[1, "{BODY_MARKER}", 3, 4]'), JSON, 422, "instances[0][1] is a string"),
    ("numeric string", _row('[1, 2, "3", 4]'), JSON, 422, "instances[0][2] is a string"),
    ("boolean", _row(ROW + ", [1, true, 3, 4]"), JSON, 422, "instances[1][1] is a boolean"),
    ("null", _row("[1, 2, 3, null]"), JSON, 422, "instances[0][3] is null"),
    ("nested list", _row("[1, [2], 3, 4]"), JSON, 422, "instances[0][1] is a list"),
    ("list then object", _row(ROW + ", " + OBJECT), JSON, 422, "instances[1] is an object"),
    ("object missing a feature", _row('{"x00": 1, "x01": 2, "x02": 3}'), JSON, 422, "lacks x03"),
    (
        "object with an unknown key",
        _row(OBJECT[:-1] + f', "{BODY_MARKER}": 5}}'),
        JSON,
        422,
        "has 1 key(s) that are not features",
    ),
    (
        "object with a misspelt key",
        _row('{"x00": 1, "x01": 2, "x02": 3, "x3": 4}'),
        JSON,
        422,
        "lacks x03 and has 1 key(s)",
    ),
    (
        "object with a string",
        _row('{"x00": "1", "x01": 2, "x02": 3, "x03": 4}'),
        JSON,
        422,
        'instances[0]["x00"] is a string',
    ),
    ("object then list", _row(OBJECT + ", " + ROW), JSON, 422, "instances[1] is a list"),
    (
        "too many rows",
        _row(", ".join(["[1, 2, 3, 4]"] * (MAX_ROWS + 1))),
        JSON,
        413,
        f"at most {MAX_ROWS} are accepted",
    ),
    ("prediction overflows", _row("[1e308, 1e308, 1e308, 1e308]"), JSON, 422, "overflows"),
    (
        "body too large",
        b" " * (MAX_BODY_BYTES + 1),
        JSON,
        413,
        f"larger than {MAX_BODY_BYTES} bytes",
    ),
]

# (method, path, status, what the error must say)
WRONG_ROUTES: list[tuple[str, str, int, str]] = [
    ("GET", "/predict", 405, "allowed: OPTIONS, POST"),
    ("PUT", "/predict", 405, "allowed: OPTIONS, POST"),
    ("POST", "/healthz", 405, "allowed: GET, HEAD, OPTIONS"),
    ("DELETE", "/model", 405, "allowed: GET, HEAD, OPTIONS"),
    ("POST", "/metrics", 405, "allowed"),
    ("GET", "/nope", 404, "no such path"),
    ("GET", f"/{BODY_MARKER}", 404, "no such path"),
    ("POST", "/predict/", 404, "no such path"),
]


@dataclass
class TrainedModel:
    """An estimator trained by the pipeline's round, and the metadata it publishes with."""

    estimator: Any
    metadata: dict[str, Any]

    def publish(self, out_dir: Path, version: int) -> dict[str, Any]:
        """Publish as ``version``; the ``model.json`` written."""
        return publish_model(out_dir, self.estimator, {**self.metadata, "version": version})


def train(data_dir: Path, seed: int) -> TrainedModel:
    """An ols model on 3,000 synthetic rows of 4 features (x00..x03), without Prefect."""
    write_dataset(data_dir, n_rows=3_000, n_features=4, shard_rows=3_000, seed=seed)
    data = DataConfig(source=str(data_dir), batch_rows=5_000)
    plan = validate_source(data)
    hyperparams = HyperParams(model="ols")
    state = TrainingState.fresh(data.source, list(plan.features), plan.target, hyperparams.model)
    spec = RoundSpec(hyperparams, data.batch_rows, 0.2)
    batches = plan_batches(plan.files, {}, data.batch_rows)
    trained = train_batches(state, plan, batches, spec, SerialExecutor())
    return TrainedModel(trained.estimator, model_metadata(trained, plan, hyperparams))


def publish_mismatched(out_dir: Path, model: TrainedModel, version: int) -> None:
    """A new model.pkl and a model.json whose sha256 is not that of model.pkl, written as a
    publisher writes (model.pkl, then model.json, each by rename): no valid pair of this
    version is ever visible, even for an instant."""
    with tempfile.TemporaryDirectory() as staging:
        publish_model(Path(staging), model.estimator, {**model.metadata, "version": version})
        document = json.loads((Path(staging) / "model.json").read_text())
        document["sha256"] = "0" * 64
        write_atomic(out_dir / "model.pkl", (Path(staging) / "model.pkl").read_bytes())
        write_atomic(out_dir / "model.json", json.dumps(document).encode())


def expected_predictions(metadata: dict[str, Any], rows: Any) -> np.ndarray:
    """``X @ coef + intercept`` from model.json."""
    X = np.asarray(rows, dtype=np.float64)
    return X @ np.asarray(metadata["coef"]) + metadata["intercept"]


def categorical_predictions(metadata: dict[str, Any], rows: Any) -> np.ndarray:
    """Predictions of the categorical model (``categorical_model_dir``) for rows of
    ``(x, colour)``: treatment coding written out, features x, colour=green, colour=red."""
    assert metadata["features"] == ["x", "colour=green", "colour=red"]
    X = np.array(
        [[float(x), colour.strip() == "green", colour.strip() == "red"] for x, colour in rows],
        dtype=np.float64,
    )
    with np.errstate(all="ignore"):
        return X @ np.asarray(metadata["coef"]) + metadata["intercept"]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """A keep-alive HTTP/1.1 client for one loopback port (the standard library's)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.retries = 0  # requests sent again after the server closed the connection
        self._connection: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Response:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout
                )
            try:
                payload = iter([body]) if chunked and body is not None else body
                self._connection.request(
                    method, path, payload, headers or {}, encode_chunked=chunked
                )
                response = self._connection.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return Response(response.status, dict(response.getheaders()), data)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed an idle keep-alive connection: one retry on a new one.
                self.close()
                if attempt == 2:
                    raise
                self.retries += 1
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def predict(self, document: Any) -> Response:
        return self.request(
            "POST", "/predict", json.dumps(document).encode(), {"Content-Type": "application/json"}
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class GunicornServer:
    """``gunicorn -c serving/gunicorn.conf.py serving.wsgi:app`` on a free loopback port."""

    model_dir: Path
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "gunicorn.log"

    def start(self, timeout: float = 60.0) -> GunicornServer:
        self.port = free_port()
        metrics_dir = self.workdir / "prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PROMETHEUS_", "GUNICORN_"))
        }
        env.update(
            {
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "MODEL_DIR": str(self.model_dir),
                "GUNICORN_WORKERS": "2",
                "GUNICORN_THREADS": "4",
                "MODEL_CHECK_INTERVAL_MS": "50",
                "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                **self.extra_env,
            }
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.wsgi:app"],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        client = HttpClient(self.port, timeout=2)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
                try:
                    if client.request("GET", "/healthz").status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"gunicorn did not answer in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to gunicorn's master (by PID; its session holds the workers); exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def scrape(client: HttpClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` as {(sample name, sorted labels): value}."""
    response = client.request("GET", "/metrics")
    assert response.status == 200, response.body
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def settled_scrape(
    client: HttpClient, timeout: float = 20.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A scrape that counts every request answered before it: each worker writes its counts
    out once a second (serving.metrics), so it is two scrapes more than that apart that agree
    on every request series (but the scrapes' own)."""

    def requests(samples: dict) -> dict:
        return {
            key: value
            for key, value in samples.items()
            if key[0] == "linreg_serving_requests_total" and ("endpoint", "/metrics") not in key[1]
        }

    deadline = time.monotonic() + timeout
    previous = scrape(client)
    while True:
        time.sleep(1.5 * FLUSH_SECONDS)
        current = scrape(client)
        if requests(current) == requests(previous):
            return current
        assert time.monotonic() < deadline, f"request counts still changing after {timeout} s"
        previous = current


def labels(endpoint: str, status: str, protocol: str = "native") -> tuple[tuple[str, str], ...]:
    """The sorted labels of one request series."""
    return (("endpoint", endpoint), ("protocol", protocol), ("status", status))


def requests_counted(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    endpoint: str,
    status: str,
    protocol: str = "native",
) -> float:
    key = ("linreg_serving_requests_total", labels(endpoint, status, protocol))
    return samples.get(key, 0.0)
