"""The OpenAPI 3.1 description of the service, served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

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
                                "(GET /model), or objects with exactly those features as keys."
                            ),
                            "items": {
                                "oneOf": [
                                    {"type": "array", "items": number, "minItems": 1},
                                    {
                                        "type": "object",
                                        "additionalProperties": number,
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
            }
        },
    }
