"""The service's side of the lifecycle: GET /model/history, and the X-Model-Version of every
answer while versions are rolled back and promoted under load (a real gunicorn)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from linreg.lifecycle import promote, rollback
from linreg.model_files import ModelDirectory
from linreg.state import InMemoryStateStore
from serving.app import create_app
from serving.settings import ServingSettings
from tests.lifecycle.support import history, train_round, write_part
from tests.serving.support import GunicornServer, HttpClient

ROWS = [[0.5, -1.0, 2.0], [3.0, 0.25, -4.0]]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def model_dir(tmp_path):
    """Three versions of a 3-feature ols model published by the round, none pinned."""
    directory, out, store = tmp_path / "data", tmp_path / "model", InMemoryStateStore()
    for index in range(3):
        write_part(directory, index)
        train_round(directory, out, store)
    return out


@pytest.fixture
def client(model_dir):
    app = create_app(ServingSettings(model_dir=str(model_dir), check_interval_ms=0))
    app.testing = True
    return app.test_client()


def test_model_history_serves_history_jsonl(client, model_dir):
    answer = client.get("/model/history")
    assert answer.status_code == 200
    assert answer.get_json() == {"history": history(model_dir)}
    rollback(ModelDirectory(model_dir))
    latest = client.get("/model/history?limit=2").get_json()["history"]
    assert [record["reason"] for record in latest] == ["published", "rollback"]
    assert latest == history(model_dir)[-2:]


def test_model_history_returns_the_newest_thousand_unless_asked_for_more(client, model_dir):
    record = history(model_dir)[-1]
    with open(model_dir / "history.jsonl", "a") as handle:
        for version in range(100, 1_300):
            handle.write(json.dumps({**record, "version": version}) + "\n")
    newest = client.get("/model/history").get_json()["history"]
    assert [r["version"] for r in newest] == list(range(300, 1_300))
    everything = client.get("/model/history?limit=5000").get_json()["history"]
    assert everything == history(model_dir)


@pytest.mark.parametrize("limit", ["0", "-1", "two", ""])
def test_a_bad_limit_is_a_400_json_error(client, limit, refused):
    answer = client.get(f"/model/history?limit={limit}")
    assert answer.status_code == 400
    assert "limit must be a positive integer" in answer.get_json()["error"]
    refused("service", "history limit")


def test_no_history_is_an_empty_list_and_a_broken_one_a_503(client, model_dir):
    (model_dir / "history.jsonl").unlink()
    assert client.get("/model/history").get_json() == {"history": []}
    (model_dir / "history.jsonl").write_text('{"reason": "published"}\n{torn')
    answer = client.get("/model/history")
    assert answer.status_code == 503
    assert answer.get_json() == {"error": "the model history cannot be read"}


def _expected(model_dir, version: int) -> np.ndarray:
    metadata = json.loads((model_dir / "versions" / str(version) / "model.json").read_text())
    return np.asarray(ROWS) @ np.asarray(metadata["coef"]) + metadata["intercept"]


REQUESTS = {
    "/predict": json.dumps({"instances": ROWS}).encode(),
    "/invocations": json.dumps({"inputs": ROWS}).encode(),
    "/v2/models/linreg/infer": json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": ROWS}]}
    ).encode(),
}


def _predictions(path: str, document: dict) -> list[float]:
    if path == "/v2/models/linreg/infer":
        return document["outputs"][0]["data"]
    return document["predictions"]


@pytest.mark.integration
@pytest.mark.slow
def test_rollback_and_promote_under_load_fail_no_request_and_headers_name_the_model(
    model_dir, tmp_path, figures
):
    expected = {version: _expected(model_dir, version) for version in (1, 2, 3)}
    server = GunicornServer(model_dir, tmp_path).start()
    stop = threading.Event()
    answers: list[tuple[str, int, str | None, list[float] | None]] = []
    lock = threading.Lock()

    def load(path: str) -> None:
        client = HttpClient(server.port)
        try:
            while not stop.is_set():
                response = client.request("POST", path, REQUESTS[path], JSON)
                version = response.headers.get("X-Model-Version")
                values = _predictions(path, response.json()) if response.status == 200 else None
                with lock:
                    answers.append((path, response.status, version, values))
        finally:
            client.close()

    def served_version() -> str | None:
        with lock:
            return answers[-1][2] if answers else None

    threads = [threading.Thread(target=load, args=(path,)) for path in REQUESTS for _ in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        directory = ModelDirectory(model_dir)
        for change, to in [(rollback, None), (rollback, None), (promote, None), (rollback, 2)]:
            target = change(directory, to)["live_version"]
            deadline = time.monotonic() + 20
            while served_version() != str(target) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # every worker and thread has seen it
        promote(directory)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    failed = [answer for answer in answers if answer[1] != 200]
    assert failed == [], server.log()[-3000:]
    for path, _, version, values in answers:
        np.testing.assert_allclose(values, expected[int(version)], rtol=1e-12, err_msg=path)
    seen = {version for _, _, version, _ in answers}
    assert seen == {"1", "2", "3"}
    figures.append(
        f"lifecycle under load: {len(answers):,} answers over /predict, /invocations and V2 "
        f"infer while 5 rollbacks/promotes ran, 0 failed, each answer's X-Model-Version "
        f"matching the coefficients that computed it (versions seen: {sorted(seen)})"
    )
