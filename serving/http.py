"""The WSGI plumbing shared by every protocol: routes, replies, bodies, and the dispatcher.

A route is a plain function of the WSGI environ that returns a ``Reply`` or raises
``ServiceError``; its protocol decides how an error is written. Flask registers every route
(its url_map answers 404, 405 with ``Allow``, HEAD and OPTIONS, and matches the rules with
variables). ``Dispatcher`` calls the routes whose path is fixed directly, skipping Flask's
request context, which costs more than decoding, checking and predicting a one-row body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson

from serving.errors import ServiceError
from serving.metrics import ServiceMetrics

logger = logging.getLogger("serving")

JSON = "application/json"
ROUTE_KEY = "serving.route"  # the environ key naming the route a request reached
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


@dataclass(frozen=True)
class Reply:
    """A response: status, body, content type, and extra headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[..., Reply]
ErrorWriter = Callable[[ServiceError], Reply]


def json_reply(
    document: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    """``document`` serialised by orjson (numpy arrays included)."""
    return Reply(status, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), JSON, headers)


def error_reply(error: ServiceError) -> Reply:
    """The service's own error form, also the Open Inference Protocol's: ``{"error": "..."}``."""
    return json_reply({"error": error.message}, error.status)


@dataclass(frozen=True)
class Route:
    """One endpoint: a Flask rule, its method, what answers it, and how its errors look.

    ``protocol`` and ``rule`` label the metrics (``rule`` keeps Flask's ``<name>`` syntax out
    of them: ``/v2/models/{name}/infer``).
    """

    rule: str
    method: str
    handler: Handler
    protocol: str
    errors: ErrorWriter = error_reply

    @property
    def label(self) -> str:
        return self.rule.replace("<", "{").replace(">", "}")

    def answer(self, environ: dict[str, Any], **arguments: str) -> Reply:
        environ[ROUTE_KEY] = self
        try:
            return self.handler(environ, **arguments)
        except ServiceError as error:
            return self.errors(error)


def media_type(environ: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The request's Content-Type, lower-cased, and its parameters (``charset``...)."""
    raw = environ.get("CONTENT_TYPE", "")
    if raw == JSON:  # what nearly every client sends
        return JSON, {}
    kind, _, rest = raw.partition(";")
    parameters = {}
    for pair in rest.split(";"):
        key, _, value = pair.partition("=")
        if key.strip():
            parameters[key.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), parameters


def read_body(environ: dict[str, Any], max_bytes: int) -> bytes:
    """The request body; 413 if it is larger than ``max_bytes``, decided before parsing.

    Read straight from ``wsgi.input`` (one call, no stream wrappers on the hot path).
    """
    try:
        length: int | None = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        length = None
    if length is None or length < 0:
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


class Dispatcher:
    """WSGI entry: the fixed-path routes directly, the rest through Flask; every request
    counted and timed by protocol, endpoint and status.

    Paths no route serves are labelled ``other``, so that scanners cannot grow the number of
    time series.
    """

    def __init__(
        self,
        flask_app: Callable[..., Iterable[bytes]],
        routes: list[Route],
        metrics: ServiceMetrics,
        fixed: dict[str, str],
    ) -> None:
        self.flask_app = flask_app
        self.metrics = metrics
        # The paths that are fixed once the variables in ``fixed`` (the served model's name)
        # are filled in: /v2/models/linreg/infer, not /v2/models/<name>/versions/<version>.
        self.direct: dict[tuple[str, str], tuple[Route, dict[str, str]]] = {}
        for route in routes:
            path, arguments = route.rule, {}
            for variable, value in fixed.items():
                if f"<{variable}>" in path:
                    path = path.replace(f"<{variable}>", value)
                    arguments[variable] = value
            if "<" not in path:
                self.direct[(route.method, path)] = (route, arguments)
        # A wrong method on a fixed path still counts under that path (its 405 comes from Flask).
        self.by_path = {path: route for (_, path), (route, _) in self.direct.items()}

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        direct = self.direct.get((environ.get("REQUEST_METHOD", ""), path))
        if direct is None:
            return self._through_flask(environ, start_response, path, started)
        route, arguments = direct
        try:
            reply = route.answer(environ, **arguments)
        except Exception:
            # A bug: logged with its traceback here, and nothing of it in the response.
            logger.exception("unhandled error on %s %s", environ.get("REQUEST_METHOD"), path)
            reply = route.errors(ServiceError(500, "internal error; the service logged it"))
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))]
        headers.extend(reply.headers)
        start_response(_STATUS_LINES.get(reply.status, f"{reply.status} Unknown"), headers)
        self.metrics.observe(
            route.protocol, route.label, str(reply.status), time.perf_counter() - started
        )
        return [reply.body]

    def _through_flask(
        self, environ: dict[str, Any], start_response: Callable, path: str, started: float
    ) -> Iterable[bytes]:
        status = "500"

        def recording_start_response(line: str, headers: list, exc_info: Any = None) -> Any:
            nonlocal status
            status = line[:3]
            return start_response(line, headers, exc_info)

        try:
            return self.flask_app(environ, recording_start_response)
        finally:
            route = environ.get(ROUTE_KEY) or self.by_path.get(path)
            protocol, endpoint = (route.protocol, route.label) if route else ("other", "other")
            self.metrics.observe(protocol, endpoint, status, time.perf_counter() - started)
