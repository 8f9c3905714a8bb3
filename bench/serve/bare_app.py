"""The bare app: what answering ``/predict`` cannot do without, and nothing else, run on the
service's own gunicorn settings. It decodes the body's rows (orjson, packed into float64 by
struct as the service does), predicts as the service does (a small request in plain Python, a
larger one with numpy) and encodes the answer; no routing, checks,
error handling, metrics or reloads. Between it and the no-op app lies the cost of the work
itself; between the service and it, the cost of everything the service adds.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from itertools import chain
from operator import mul

import numpy as np
import orjson

from linreg.model_files import load_verified_model
from serving.payload import SMALL_REQUEST_VALUES

_estimator, _metadata = load_verified_model(os.environ["MODEL_DIR"])
COEF = np.asarray(_estimator.coef_, dtype=np.float64)
INTERCEPT = float(np.asarray(_estimator.intercept_).reshape(()))
VERSION = _metadata["version"]
COEF_VALUES = tuple(COEF.tolist())


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    rows = orjson.loads(body)["instances"]
    if len(rows) * len(COEF) <= SMALL_REQUEST_VALUES:
        predictions = [sum(map(mul, row, COEF_VALUES)) + INTERCEPT for row in rows]
    else:
        doubles = struct.pack(f"{len(rows) * len(COEF)}d", *chain.from_iterable(rows))
        predictions = np.frombuffer(doubles).reshape(len(rows), len(COEF)) @ COEF + INTERCEPT
    answer = orjson.dumps(
        {"predictions": predictions, "model_version": VERSION}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]
    )
    return [answer]
