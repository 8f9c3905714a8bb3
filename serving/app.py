"""The Flask app: ``create_app`` wires settings, the model store, metrics and the endpoints.

Three protocols over one model store, one set of checks and one set of metrics:

- native: ``POST /predict``, ``GET /model``, ``/model/history``, ``/healthz``, ``/readyz``,
  ``/metrics``, ``/openapi.json``;
- MLflow's scoring protocol: ``POST /invocations`` (``serving/mlflow_scoring.py``), and its
  server's ``GET /ping``, ``/health`` and ``/version``;
- the Open Inference Protocol (V2): ``/v2``, ``/v2/health/{live,ready}``,
  ``/v2/models/{name}[/versions/{version}][/ready|/infer]`` (``serving/open_inference.py``).

Every error, Flask's own 404/405 included, is JSON: ``{"error": "..."}``, or MLflow's
``{"error_code", "message"}`` on ``/invocations``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from linreg.errors import ModelFileError
from linreg.model_files import HISTORY_FILE, ModelDirectory
from serving import mlflow_scoring, open_inference
from serving.errors import ServiceError
from serving.http import JSON, Dispatcher, Reply, Route, json_reply, media_type, read_body
from serving.metrics import ServiceMetrics
from serving.model_store import LinearModel, ModelStore
from serving.openapi import openapi_document
from serving.payload import parse_instances, predict_checked
from serving.settings import ServingSettings

logger = logging.getLogger("serving")

NO_MODEL = "no model is loaded yet; waiting for model.json and model.pkl in the model directory"
SERVER_NAME = "linreg-serving"
SERVER_VERSION = "1"
# The newest records /model/history returns unless ?limit says otherwise: the history gains a
# record (~0.9 kB) per version, so a whole one would grow without bound.
HISTORY_LIMIT = 1000


@dataclass(frozen=True)
class Service:
    """What the endpoints share; ``app.extensions["serving"]`` holds it."""

    settings: ServingSettings
    store: ModelStore
    metrics: ServiceMetrics


def create_app(settings: ServingSettings | None = None) -> Flask:
    """The prediction service for ``settings`` (default: from the environment).

    The published model is loaded here (not at import); without one the app still starts
    and answers 503 on readiness and predictions until one is published.
    """
    settings = settings or ServingSettings.from_env()
    logger.setLevel(settings.log_level)
    metrics = ServiceMetrics(settings.metrics_dir)
    metrics.model_version.set(0)

    def loaded(model: LinearModel) -> None:
        metrics.reloads.inc()
        metrics.model_version.set(model.version)
        drift = model.metadata.get("drift") or {}
        metrics.drift_detected.set(1 if drift.get("detected") else 0)
        recent = (model.metadata.get("metrics") or {}).get("rmse_window")
        metrics.recent_rmse.set(recent if isinstance(recent, int | float) else float("nan"))

    store = ModelStore(
        settings.model_dir,
        settings.check_interval_ms / 1000,
        on_loaded=loaded,
        on_failure=lambda _message: metrics.reload_failures.inc(),
    )
    store.refresh()
    service = Service(settings, store, metrics)

    app = Flask(__name__, static_folder=None)
    # Never debug mode, whatever FLASK_DEBUG says: no debugger, no tracebacks to callers.
    app.debug = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["serving"] = service
    routes = native_routes(service) + mlflow_routes(service) + v2_routes(service)
    for route in routes:
        app.add_url_rule(
            route.rule,
            endpoint=f"{route.method} {route.rule}",
            view_func=flask_view(route),
            methods=[route.method],
        )
    register_error_handlers(app, settings)
    app.wsgi_app = Dispatcher(  # type: ignore[method-assign]
        app.wsgi_app, routes, metrics, {"name": settings.model_name}
    )
    return app


def flask_view(route: Route) -> Any:
    """The Flask view of ``route``: the same handler, reached through Flask's routing."""

    def view(**arguments: str) -> Response:
        reply = route.answer(request.environ, **arguments)
        return Response(
            reply.body, reply.status, headers=list(reply.headers), content_type=reply.content_type
        )

    return view


def current_model(store: ModelStore) -> LinearModel:
    """The model to serve now; 503 while none is loaded."""
    model = store.current()
    if model is None:
        raise ServiceError(503, NO_MODEL)
    return model


def version_header(model: LinearModel) -> tuple[tuple[str, str], ...]:
    return (("X-Model-Version", str(model.version)),)


def native_routes(service: Service) -> list[Route]:
    """``/predict``, ``/model``, the probes, ``/metrics`` and ``/openapi.json``."""
    settings, store, metrics = service.settings, service.store, service.metrics
    openapi = orjson.dumps(openapi_document(settings))

    def predict(environ: dict[str, Any]) -> Reply:
        """Predictions for ``{"instances": [...]}``."""
        if media_type(environ)[0] != JSON:
            raise ServiceError(415, f"Content-Type must be {JSON}")
        body = read_body(environ, settings.max_body_bytes)
        # One model for the whole request: a swap meanwhile cannot mix two versions.
        model = current_model(store)
        X = parse_instances(body, model, settings.max_rows)
        predictions = predict_checked(model, X)
        return json_reply(
            {"predictions": predictions, "model_version": model.version},
            headers=version_header(model),
        )

    def model_json(environ: dict[str, Any]) -> Reply:
        return json_reply(current_model(store).metadata)

    def model_history(environ: dict[str, Any]) -> Reply:
        """The newest records of the pipeline's history.jsonl beside model.json (read from
        its end per request: rarely asked for)."""
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        limit = HISTORY_LIMIT
        if "limit" in query:
            raw = query["limit"][-1]
            if not raw.isdigit() or int(raw) < 1:
                raise ServiceError(400, f"limit must be a positive integer, got {raw!r}")
            limit = int(raw)
        try:
            records = ModelDirectory(store.model_dir, store.storage_options).read_last_lines(
                limit, HISTORY_FILE
            )
        except (ModelFileError, OSError) as error:
            logger.error("cannot read the model history: %s", error)
            raise ServiceError(503, "the model history cannot be read") from None
        return json_reply({"history": records})

    def healthz(environ: dict[str, Any]) -> Reply:
        return json_reply({"status": "ok"})

    def readyz(environ: dict[str, Any]) -> Reply:
        # Readiness probes also drive the reload check, so an idle pod still sees new models.
        return json_reply({"status": "ready", "model_version": current_model(store).version})

    def prometheus(environ: dict[str, Any]) -> Reply:
        body, content_type = metrics.exposition()
        return Reply(200, body, content_type)

    def openapi_json(environ: dict[str, Any]) -> Reply:
        return Reply(200, openapi)

    return [
        Route("/predict", "POST", predict, "native"),
        Route("/model", "GET", model_json, "native"),
        Route("/model/history", "GET", model_history, "native"),
        Route("/healthz", "GET", healthz, "native"),
        Route("/readyz", "GET", readyz, "native"),
        Route("/metrics", "GET", prometheus, "native"),
        Route("/openapi.json", "GET", openapi_json, "native"),
    ]


def mlflow_routes(service: Service) -> list[Route]:
    """``POST /invocations``, MLflow's scoring protocol, and its server's probes."""
    settings, store = service.settings, service.store

    def ping(environ: dict[str, Any]) -> Reply:
        """MLflow's ``/ping`` and ``/health``: 200 once a model is loaded (503 before, where
        MLflow, which never starts without one, would say 404: here that means no such path).
        MLflow's body is a bare newline; this one is JSON, as every answer here is, and
        MLflow's clients (``wait_server_ready``, SageMaker's probe) read only the status."""
        return json_reply({"status": "ready", "model_version": current_model(store).version})

    def version(environ: dict[str, Any]) -> Reply:
        """MLflow's ``/version`` gives its own release; this one the service's."""
        return json_reply({"name": SERVER_NAME, "version": SERVER_VERSION})

    def invocations(environ: dict[str, Any]) -> Reply:
        mimetype, parameters = media_type(environ)
        if mimetype not in (JSON, mlflow_scoring.CSV):
            raise ServiceError(415, f"Content-Type must be {JSON} or {mlflow_scoring.CSV}")
        body = read_body(environ, settings.max_body_bytes)
        model = current_model(store)
        X = mlflow_scoring.parse_invocation(body, mimetype, parameters, model, settings.max_rows)
        predictions = predict_checked(model, X, "row {}".format)
        return json_reply({"predictions": predictions}, headers=version_header(model))

    error = mlflow_scoring.mlflow_error
    return [
        Route("/invocations", "POST", invocations, "mlflow", error),
        Route("/ping", "GET", ping, "mlflow", error),
        Route("/health", "GET", ping, "mlflow", error),
        Route("/version", "GET", version, "mlflow", error),
    ]


def v2_routes(service: Service) -> list[Route]:
    """The Open Inference Protocol's REST endpoints."""
    settings, store = service.settings, service.store

    def served(name: str, version: str | None) -> LinearModel:
        if name != settings.model_name:
            raise ServiceError(
                404, f"no model of that name here; this server serves {settings.model_name}"
            )
        model = current_model(store)
        if version is not None and version != str(model.version):
            raise ServiceError(404, f"that version is not served; version {model.version} is")
        return model

    def server_metadata(environ: dict[str, Any]) -> Reply:
        return json_reply({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []})

    def live(environ: dict[str, Any]) -> Reply:
        return json_reply({"live": True})

    def ready(environ: dict[str, Any]) -> Reply:
        current_model(store)
        return json_reply({"ready": True})

    def metadata(environ: dict[str, Any], name: str, version: str | None = None) -> Reply:
        return json_reply(open_inference.model_metadata(served(name, version), name))

    def model_ready(environ: dict[str, Any], name: str, version: str | None = None) -> Reply:
        served(name, version)
        return json_reply({"name": name, "ready": True})

    def infer(environ: dict[str, Any], name: str, version: str | None = None) -> Reply:
        mimetype = media_type(environ)[0]
        if mimetype not in (JSON, ""):  # V2 clients do not all send a Content-Type
            raise ServiceError(415, f"Content-Type must be {JSON}")
        body = read_body(environ, settings.max_body_bytes)
        model = served(name, version)
        X, echo = open_inference.parse_infer(body, model, settings.max_rows)
        predictions = predict_checked(model, X, "row {}".format)
        return json_reply(
            open_inference.infer_response(model, name, predictions, echo),
            headers=version_header(model),
        )

    models = "/v2/models/<name>"
    versions = "/v2/models/<name>/versions/<version>"
    return [
        Route("/v2", "GET", server_metadata, "v2"),
        Route("/v2/health/live", "GET", live, "v2"),
        Route("/v2/health/ready", "GET", ready, "v2"),
        Route(models, "GET", metadata, "v2"),
        Route(versions, "GET", metadata, "v2"),
        Route(f"{models}/ready", "GET", model_ready, "v2"),
        Route(f"{versions}/ready", "GET", model_ready, "v2"),
        Route(f"{models}/infer", "POST", infer, "v2"),
        Route(f"{versions}/infer", "POST", infer, "v2"),
    ]


def register_error_handlers(app: Flask, settings: ServingSettings) -> None:
    """Answer every error as JSON: Flask's HTTP errors, and (never expected) bugs."""

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
        reply = json_reply({"error": message}, status)
        response = Response(reply.body, status, content_type=JSON)
        if allowed:
            response.headers["Allow"] = allowed
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        # A bug: logged with its traceback here, and nothing of it in the response.
        logger.exception("unhandled error on %s %s", request.method, request.path)
        reply = json_reply({"error": "internal error; the service logged it"}, 500)
        return Response(reply.body, 500, content_type=JSON)
