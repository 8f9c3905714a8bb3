"""The OpenAPI 3.1 description of the service, served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

from serving.open_inference import DATATYPES
from serving.settings import ServingSettings


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(settings: ServingSettings) -> dict[str, Any]:
    """The API as served with ``settings`` (its row and body limits included)."""
    number = {"type": "number"}
    value = {"type": ["number", "string"]}  # strings: levels of categorical inputs
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    common = {"404": _error("Unknown path."), "405": _error("Method not allowed on this path.")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "linreg prediction service",
            "version": "1",
            "description": (
                "Predictions of the linear model the training pipeline publishes "
                "(model.pkl + model.json); a newly published version is picked up without "
                'a restart. Every error is JSON: {"error": "..."}.'
            ),
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Predict the target for rows of features.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/PredictRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            "One prediction per row, and the model version that made them.",
                            {"$ref": "#/components/schemas/PredictResponse"},
                        ),
                        "400": _error("The body is not JSON (NaN and Infinity are not JSON)."),
                        "413": _error(
                            f"The body exceeds {settings.max_body_bytes} bytes, or has more "
                            f"than {settings.max_rows} rows."
                        ),
                        "415": _error("Content-Type is not application/json."),
                        "422": _error(
                            "Not rows of numbers with the model's features: wrong shape, "
                            "feature count or names, a string, boolean or null, a value so "
                            "large that the prediction overflows."
                        ),
                        "503": _error("No model is loaded yet."),
                        **common,
                    },
                }
            },
            "/model": {
                "get": {
                    "summary": "The served model's model.json (version, features, coef...).",
                    "responses": {
                        "200": _json("The metadata.", {"type": "object"}),
                        "503": _error("No model is loaded yet."),
                        **common,
                    },
                }
            },
            "/model/history": {
                "get": {
                    "summary": "The newest changes of the live model version (history.jsonl), "
                    "oldest first: time, reason (published, rollback, promote, gated, "
                    "skipped), version, previous version, flow run, data covered, metrics.",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "The newest records, at most this many (default 1000).",
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    ],
                    "responses": {
                        "200": _json(
                            "The records.",
                            {
                                "type": "object",
                                "properties": {
                                    "history": {"type": "array", "items": {"type": "object"}}
                                },
                            },
                        ),
                        "400": _error("limit is not a positive integer."),
                        "503": _error("The history file cannot be read."),
                        **common,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers.",
                    "responses": {"200": _json("Alive.", status), **common},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: a model is loaded.",
                    "responses": {
                        "200": _json("Ready, with the model version.", status),
                        "503": _error("No model is loaded yet."),
                        **common,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics, summed over the worker processes.",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **common,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"}), **common},
                }
            },
            "/invocations": {"post": _invocations(settings, common)},
            **_mlflow_server_paths(common),
            **_v2_paths(settings, common),
        },
        "components": {
            "schemas": {
                "PredictRequest": {
                    "type": "object",
                    "required": ["instances"],
                    "additionalProperties": False,
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_rows,
                            "description": (
                                "Rows: lists of numbers in the order of the model's features "
                                "(GET /model), or objects with exactly those features as keys. "
                                "A model with categorical inputs (model.json inputs) takes "
                                "rows of those instead, levels as strings."
                            ),
                            "items": {
                                "oneOf": [
                                    {"type": "array", "items": value, "minItems": 1},
                                    {
                                        "type": "object",
                                        "additionalProperties": value,
                                        "minProperties": 1,
                                    },
                                ]
                            },
                        }
                    },
                },
                "PredictResponse": {
                    "type": "object",
                    "required": ["predictions", "model_version"],
                    "properties": {
                        "predictions": {"type": "array", "items": number},
                        "model_version": {"type": "integer"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "MlflowError": {
                    "type": "object",
                    "required": ["error_code", "message"],
                    "properties": {
                        "error_code": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "InferRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": "#/components/schemas/Tensor"},
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                    },
                },
                "InferResponse": {
                    "type": "object",
                    "required": ["model_name", "outputs"],
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Tensor"},
                        },
                    },
                },
                "Tensor": {
                    "type": "object",
                    "required": ["name", "shape", "datatype", "data"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {"enum": sorted(DATATYPES)},
                        "parameters": {"type": "object"},
                        "data": {"type": "array", "description": "Row-major, flat or nested."},
                    },
                },
                "ModelMetadata": {
                    "type": "object",
                    "required": ["name", "versions", "platform", "inputs", "outputs"],
                    "properties": {
                        "name": {"type": "string"},
                        "versions": {"type": "array", "items": {"type": "string"}},
                        "platform": {"type": "string"},
                        "inputs": {"type": "array", "items": {"type": "object"}},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
            }
        },
    }


def _mlflow_error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/MlflowError"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _invocations(settings: ServingSettings, common: dict[str, Any]) -> dict[str, Any]:
    """``POST /invocations``: MLflow's scoring protocol."""
    rows = {"type": "array", "minItems": 1, "maxItems": settings.max_rows}
    formats = {
        "dataframe_split": {
            "type": "object",
            "required": ["columns", "data"],
            "properties": {"columns": {"type": "array"}, "data": rows, "index": {"type": "array"}},
        },
        "dataframe_records": rows,
        "instances": rows,
        "inputs": {"oneOf": [rows, {"type": "object"}]},
    }
    return {
        "summary": "MLflow scoring protocol: predictions for a data frame or tensor input.",
        "description": (
            "Exactly one of dataframe_split, dataframe_records, instances, inputs (and "
            "optionally params, ignored); or text/csv with a header line of the features. "
            "Columns are matched to the model's features by name; a model with categorical "
            "inputs (model.json inputs) takes those raw inputs instead, levels as strings."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": [key],
                                "properties": {key: schema, "params": {"type": "object"}},
                                "additionalProperties": False,
                            }
                            for key, schema in formats.items()
                        ]
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": _json(
                "One prediction per row (the model version is in X-Model-Version).",
                {
                    "type": "object",
                    "required": ["predictions"],
                    "properties": {"predictions": {"type": "array", "items": {"type": "number"}}},
                },
            ),
            "400": _mlflow_error("The body is not JSON, or not UTF-8 CSV."),
            "413": _mlflow_error(
                f"More than {settings.max_body_bytes} bytes or {settings.max_rows} rows."
            ),
            "415": _mlflow_error("Content-Type is not application/json or text/csv (UTF-8)."),
            "422": _mlflow_error(
                "Not the model's columns: features as numbers; or raw inputs, numbers and "
                "known levels as strings."
            ),
            "503": _mlflow_error("No model is loaded yet."),
            **common,
        },
    }


def _mlflow_server_paths(common: dict[str, Any]) -> dict[str, Any]:
    """MLflow's scoring server's ``/ping``, ``/health`` and ``/version``."""
    ready = {
        "type": "object",
        "required": ["status", "model_version"],
        "properties": {"status": {"type": "string"}, "model_version": {"type": "integer"}},
    }
    probe = {
        "get": {
            "summary": "MLflow's health probe: 200 once a model is loaded (as /readyz).",
            "responses": {
                "200": _json("Ready, with the model version.", ready),
                "503": _mlflow_error("No model is loaded yet."),
                **common,
            },
        }
    }
    version = {
        "type": "object",
        "required": ["name", "version"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
    }
    return {
        "/ping": probe,
        "/health": probe,
        "/version": {
            "get": {
                "summary": "The server's name and version (MLflow's gives its release).",
                "responses": {"200": _json("Name and version.", version), **common},
            }
        },
    }


def _v2_paths(settings: ServingSettings, common: dict[str, Any]) -> dict[str, Any]:
    """The Open Inference Protocol's REST paths."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    unknown = _error(
        f"No model of that name (this server serves {settings.model_name}) or version."
    )
    not_ready = _error("No model is loaded yet.")
    flag = {"type": "object", "additionalProperties": {"type": "boolean"}}
    metadata = {
        "summary": (
            "Model metadata: the input tensors (one per feature, or per raw input with the "
            "categorical ones BYTES), output and version."
        ),
        "responses": {
            "200": _json("The metadata.", {"$ref": "#/components/schemas/ModelMetadata"}),
            "404": unknown,
            "503": not_ready,
            "405": common["405"],
        },
    }
    ready = {
        "summary": "Readiness of the model.",
        "responses": {"200": _json("Ready.", flag), "404": unknown, "503": not_ready},
    }
    infer = {
        "summary": (
            "Predictions for typed tensors: one [n, n_features] tensor or one per feature; "
            "for a model with categorical inputs, one per raw input (BYTES for categories)."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}
            },
        },
        "responses": {
            "200": _json("One FP64 tensor.", {"$ref": "#/components/schemas/InferResponse"}),
            "400": _error("The body is not JSON."),
            "404": unknown,
            "413": _error(
                f"More than {settings.max_body_bytes} bytes or {settings.max_rows} rows."
            ),
            "415": _error("Content-Type is not application/json."),
            "422": _error("Not tensors of the model's features: shape, datatype, range, names."),
            "503": not_ready,
            "405": common["405"],
        },
    }
    paths: dict[str, Any] = {
        "/v2": {
            "get": {
                "summary": "Server metadata.",
                "responses": {"200": _json("Name, version, extensions.", {"type": "object"})},
            }
        },
        "/v2/health/live": {
            "get": {"summary": "Liveness.", "responses": {"200": _json("Alive.", flag)}}
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness: a model is loaded.",
                "responses": {"200": _json("Ready.", flag), "503": not_ready},
            }
        },
    }
    for prefix, parameters in (
        ("/v2/models/{name}", [name]),
        ("/v2/models/{name}/versions/{version}", [name, version]),
    ):
        paths[prefix] = {"get": {**metadata, "parameters": parameters}}
        paths[f"{prefix}/ready"] = {"get": {**ready, "parameters": parameters}}
        paths[f"{prefix}/infer"] = {"post": {**infer, "parameters": parameters}}
    return paths
