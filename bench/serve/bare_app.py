"""The bare app: what answering ``/predict`` cannot do without, and nothing else, run on the
service's own gunicorn settings. It decodes the body's rows (orjson, packed into float64 by
struct as the service does), predicts with the service's ``LinearModel`` (a small request in
plain Python, a larger one with numpy) and encodes the answer; no routing, checks, error
handling, metrics or reloads. Between it and the no-op app lies the cost of the work itself;
between the service and it, the cost of everything the service adds.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from itertools import chain

import numpy as np
import orjson

from linreg.model_files import load_verified_model
from serving.model_store import linear_model_from
from serving.payload import SMALL_REQUEST_VALUES

MODEL = linear_model_from(*load_verified_model(os.environ["MODEL_DIR"]))
N_FEATURES = len(MODEL.features)


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    rows = orjson.loads(body)["instances"]
    if len(rows) * N_FEATURES <= SMALL_REQUEST_VALUES:
        predictions = MODEL.predict_rows(rows)
    else:
        doubles = struct.pack(f"{len(rows) * N_FEATURES}d", *chain.from_iterable(rows))
        predictions = MODEL.predict(np.frombuffer(doubles).reshape(len(rows), N_FEATURES))
    answer = orjson.dumps(
        {"predictions": predictions, "model_version": MODEL.version},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]
    )
    return [answer]
