"""The baseline: a minimal FastAPI app serving the same published model, run on uvicorn.

Written as such an app usually is: a pydantic body, the estimator's own ``predict``.
"""

from __future__ import annotations

import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from linreg.model_files import load_verified_model

estimator, metadata = load_verified_model(os.environ.get("MODEL_DIR", "artifacts"))
app = FastAPI()


class PredictRequest(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
async def predict(request: PredictRequest) -> dict:
    predictions = estimator.predict(np.asarray(request.instances, dtype=np.float64))
    return {"predictions": predictions.tolist(), "model_version": metadata["version"]}
