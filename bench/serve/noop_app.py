"""The ceiling: a WSGI app that reads the body and answers a fixed JSON line, doing nothing
else, run on the service's own gunicorn settings (serving/gunicorn.conf.py). What it reaches
is what gunicorn itself allows on this machine: no app on it can serve faster."""

from __future__ import annotations

from collections.abc import Callable, Iterable

ANSWER = b'{"predictions": [0.0]}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    start_response("200 OK", HEADERS)
    return [ANSWER]
