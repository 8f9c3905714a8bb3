"""The Flask app: ``create_app`` wires settings, the model store, metrics and the endpoints.

Blueprints, one per concern: ``health`` (``/healthz``, ``/readyz``), ``predictions``
(``/predict``, ``/model``) and ``operations`` (``/metrics``, ``/openapi.json``). Every error,
Flask's own 404/405/413 included, is answered as ``{"error": "..."}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from serving.errors import ServiceError
from serving.metrics import ServiceMetrics
from serving.model_store import LinearModel, ModelStore
from serving.openapi import openapi_document
from serving.payload import parse_instances, predict_checked
from serving.settings import ServingSettings

logger = logging.getLogger("serving")

JSON = "application/json"
NO_MODEL = "no model is loaded yet; waiting for model.json and model.pkl in the model directory"


@dataclass(frozen=True)
class Service:
    """What the endpoints share; ``app.extensions["serving"]`` holds it."""

    settings: ServingSettings
    store: ModelStore
    metrics: ServiceMetrics


def create_app(settings: ServingSettings | None = None) -> Flask:
    """The prediction service for ``settings`` (default: from the environment).

    The published model is loaded here (not at import); without one the app still starts
    and answers 503 on ``/readyz`` and ``/predict`` until one is published.
    """
    settings = settings or ServingSettings.from_env()
    logger.setLevel(settings.log_level)
    metrics = ServiceMetrics(settings.metrics_dir)
    metrics.model_version.set(0)

    def loaded(model: LinearModel) -> None:
        metrics.reloads.inc()
        metrics.model_version.set(model.version)

    store = ModelStore(
        settings.model_dir,
        settings.check_interval_ms / 1000,
        on_loaded=loaded,
        on_failure=lambda _message: metrics.reload_failures.inc(),
    )
    store.refresh()

    app = Flask(__name__, static_folder=None)
    # Never debug mode, whatever FLASK_DEBUG says: no debugger, no tracebacks to callers.
    app.debug = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["serving"] = Service(settings, store, metrics)
    app.register_blueprint(health_blueprint(store))
    app.register_blueprint(predictions_blueprint(store, settings))
    app.register_blueprint(operations_blueprint(metrics, settings))
    register_error_handlers(app, settings)
    paths = frozenset(rule.rule for rule in app.url_map.iter_rules())
    app.wsgi_app = Instrumented(app.wsgi_app, metrics, paths)  # type: ignore[method-assign]
    return app


def json_response(document: Any, status: int = 200) -> Response:
    """``document`` serialised by orjson (numpy arrays included)."""
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status=status, mimetype=JSON)


def read_body(max_bytes: int) -> bytes:
    """The request body; 413 if it is larger than ``max_bytes``, decided before parsing.

    Read straight from ``wsgi.input`` (one call, no stream wrappers on the hot path).
    """
    environ = request.environ
    length = request.content_length
    if length is None:
        if not environ.get("wsgi.input_terminated"):
            return b""  # no length and no end marker: nothing can be read safely (as Werkzeug)
        # Chunked, so no length up front: read one byte past the limit to tell "too large".
        length = max_bytes + 1
    elif length > max_bytes:
        raise ServiceError(413, f"the body is larger than {max_bytes} bytes")
    body = environ["wsgi.input"].read(length)
    if len(body) > max_bytes:
        raise ServiceError(413, f"the body is larger than {max_bytes} bytes")
    return body


def health_blueprint(store: ModelStore) -> Blueprint:
    """``/healthz`` (the process answers) and ``/readyz`` (a model is loaded)."""
    blueprint = Blueprint("health", __name__)

    @blueprint.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @blueprint.get("/readyz")
    def readyz() -> Response:
        """:raise 503: no model loaded yet."""
        # Readiness probes also drive the reload check, so an idle pod still sees new models.
        model = store.current()
        if model is None:
            raise ServiceError(503, NO_MODEL)
        return json_response({"status": "ready", "model_version": model.version})

    return blueprint


def predictions_blueprint(store: ModelStore, settings: ServingSettings) -> Blueprint:
    """``POST /predict`` and ``GET /model``."""
    blueprint = Blueprint("predictions", __name__)

    @blueprint.post("/predict")
    def predict() -> Response:
        """Predictions for ``{"instances": [...]}``.

        :raise 415: Content-Type is not application/json.
        :raise 413: the body or the row count exceeds the limits.
        :raise 400, 422: not JSON; not rows of numbers with the model's features.
        :raise 503: no model loaded yet.
        """
        if request.mimetype != JSON:
            raise ServiceError(415, f"Content-Type must be {JSON}")
        body = read_body(settings.max_body_bytes)
        # One model for the whole request: a swap meanwhile cannot mix two versions.
        model = store.current()
        if model is None:
            raise ServiceError(503, NO_MODEL)
        X = parse_instances(body, model, settings.max_rows)
        predictions = predict_checked(model, X)
        return json_response({"predictions": predictions, "model_version": model.version})

    @blueprint.get("/model")
    def model_metadata() -> Response:
        """The served model's ``model.json``.

        :raise 503: no model loaded yet.
        """
        model = store.current()
        if model is None:
            raise ServiceError(503, NO_MODEL)
        return json_response(model.metadata)

    return blueprint


def operations_blueprint(metrics: ServiceMetrics, settings: ServingSettings) -> Blueprint:
    """``GET /metrics`` (Prometheus) and ``GET /openapi.json``."""
    blueprint = Blueprint("operations", __name__)
    openapi = orjson.dumps(openapi_document(settings))

    @blueprint.get("/metrics")
    def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @blueprint.get("/openapi.json")
    def openapi_json() -> Response:
        return Response(openapi, mimetype=JSON)

    return blueprint


def register_error_handlers(app: Flask, settings: ServingSettings) -> None:
    """Answer every error as JSON: ours, Flask's HTTP errors, and (never expected) bugs."""

    @app.errorhandler(ServiceError)
    def service_error(error: ServiceError) -> Response:
        return json_response({"error": error.message}, error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
        if status == 404:
            message = "no such path; GET /openapi.json lists the endpoints"
        elif isinstance(error, MethodNotAllowed):
            message = f"method not allowed here; allowed: {allowed}"
        elif status == 413:
            message = f"the body is larger than {settings.max_body_bytes} bytes"
        else:
            message = error.name.lower()
        response = json_response({"error": message}, status)
        if allowed:
            response.headers["Allow"] = allowed
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        # A bug: logged with its traceback here, and nothing of it in the response.
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"error": "internal error; the service logged it"}, 500)


class Instrumented:
    """WSGI middleware counting and timing each request by endpoint and status.

    Paths the app does not serve are labelled ``other``, so that scanners cannot grow the
    number of time series.
    """

    def __init__(
        self, wsgi_app: Callable[..., Iterable[bytes]], metrics: ServiceMetrics, paths: frozenset
    ) -> None:
        self.wsgi_app = wsgi_app
        self.metrics = metrics
        self.paths = paths

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        status = "500"

        def recording_start_response(line: str, headers: list, exc_info: Any = None) -> Any:
            nonlocal status
            status = line[:3]
            return start_response(line, headers, exc_info)

        try:
            return self.wsgi_app(environ, recording_start_response)
        finally:
            path = environ.get("PATH_INFO", "")
            endpoint = path if path in self.paths else "other"
            self.metrics.observe(endpoint, status, time.perf_counter() - started)
