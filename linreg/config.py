"""Run configuration: what to read, how to train, and environment-driven defaults.

Importing this module has no side effects; ``Settings.from_env()`` reads the environment
when it is called.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linreg.defaults import AVERAGE_FROM

ModelKind = Literal["sgd", "ols"]


class DataConfig(BaseModel):
    """Where the data is and how it is cut into batches."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="A CSV or Parquet file, a directory, a glob, or an fsspec URL.",
    )
    target: str = Field("target", min_length=1, description="The column to predict.")
    features: list[str] | None = Field(
        None, description="Feature columns; default: every numeric column but the target."
    )
    weight: str | None = Field(
        None, description="Column of sample weights (finite, >= 0): weighted least squares."
    )
    categorical: list[str] = Field(
        default_factory=list,
        description="Columns one-hot encoded (treatment coding: the first level in sorted "
        "order is the reference); features whether or not `features` names them.",
    )
    batch_rows: int = Field(100_000, ge=1, description="Rows per training batch.")
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of rows held out for evaluation."
    )
    csv_delimiter: str | None = Field(
        None, description="CSV field delimiter; default: detected from the header line."
    )
    csv_decimal: str = Field(".", min_length=1, max_length=1, description="CSV decimal mark.")
    csv_thousands: str | None = Field(
        None, max_length=1, description="CSV thousands separator in numbers, e.g. ','."
    )
    csv_encoding: str | None = Field(
        None,
        description="CSV text encoding, e.g. 'cp1252'; default: UTF-8, or UTF-16 when the "
        "file starts with its byte-order mark.",
    )
    na_values: list[str] = Field(
        default_factory=list,
        description="More CSV tokens meaning missing (beyond empty, NA, N/A, NaN, null).",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage_options of s3://, gs://, az:// sources and outputs, "
        "e.g. {'endpoint_url': 'http://127.0.0.1:9000'}. Not for secrets (run parameters "
        "are shown in the UI): credentials come from the standard variables.",
    )


def parse_storage_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``--storage-option``) as fsspec storage_options.

    A value that is JSON (``true``, ``8``, ``{"region_name": "eu-west-1"}``) is taken as
    such, anything else as text (``endpoint_url=http://127.0.0.1:9000``).
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        options[key.strip()] = value
    return options


class HyperParams(BaseModel):
    """The estimator and its hyper-parameters."""

    model_config = ConfigDict(extra="forbid")

    model: ModelKind = Field("sgd", description="sgd: SGDRegressor; ols: exact least squares.")
    alpha: float = Field(0.0, ge=0.0, description="L2 penalty (ridge for ols).")
    fit_intercept: bool = Field(
        True, description="False fits through the origin (no intercept), both models."
    )
    learning_rate: Literal["invscaling", "constant", "adaptive", "optimal"] = Field(
        "invscaling", description="SGD learning-rate schedule."
    )
    eta0: float = Field(0.01, gt=0.0, description="SGD initial learning rate.")
    power_t: float = Field(0.25, ge=0.0, description="SGD inverse-scaling exponent.")
    average: int = Field(
        AVERAGE_FROM,
        ge=0,
        description="Averaged SGD: the mean of the iterates from this training row on "
        "(0 or false: plain SGD, the last iterate; true: from the first row).",
    )
    random_state: int = Field(0, ge=0, description="Seed of SGD's in-batch shuffling.")

    @model_validator(mode="after")
    def _optimal_needs_alpha(self) -> HyperParams:
        if self.model == "sgd" and self.learning_rate == "optimal" and self.alpha <= 0:
            raise ValueError("learning_rate 'optimal' needs alpha > 0 (it sets the step size)")
        return self


@dataclass(frozen=True)
class Settings:
    """Defaults that the environment may override (``LINREG_*`` variables). Where batches
    run (Dask, locks) is the runtime's business, not the domain's: see ``tasks.runtime``."""

    out_dir: str = "artifacts"
    state_block: str = "linreg-state"
    sample_dir: str = "data/sample"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            out_dir=env.get("LINREG_OUT_DIR", cls.out_dir),
            state_block=env.get("LINREG_STATE_BLOCK", cls.state_block),
            sample_dir=env.get("LINREG_SAMPLE_DIR", cls.sample_dir),
        )
