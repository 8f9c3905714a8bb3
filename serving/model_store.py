"""The served model and the store that hot-swaps it when the pipeline publishes a new one.

A linear model is a dot product, so the service keeps only the verified estimator's ``coef_``
and ``intercept_`` and predicts with ``X @ coef + intercept``: no scikit-learn input
validation per request.

``MODEL_DIR`` may be an object-store URL (``s3://bucket/models``): the store then polls
``model.json``'s ETag (one HEAD request per check) instead of its inode, so pods read models
without a shared volume. Storage options come from ``MODEL_STORAGE_OPTIONS`` (a JSON object,
e.g. ``{"endpoint_url": "http://minio:9000"}``) besides the backend's standard variables
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter, mul
from pathlib import Path
from typing import Any

import numpy as np

from linreg.categorical import InputColumn, design_features
from linreg.model_files import METADATA_FILE, is_url, join, load_verified_model, remote_fs

logger = logging.getLogger("serving")

# Local: (device, inode, size, mtime): the publisher renames a new file into place, so a
# new version always has a new inode, whatever the file system's mtime resolution.
# Object store: (ETag, size, last modified): every PUT gives the object a new one.
FileSignature = tuple[Any, ...]
STORAGE_OPTIONS_VARIABLE = "MODEL_STORAGE_OPTIONS"


@dataclass(frozen=True)
class LinearModel:
    """A published linear model, reduced to what prediction needs.

    Attributes
    ----------
    version : int
    features : tuple of str
        Feature names in the order of ``coef``.
    coef : ndarray of shape (n_features,)
    intercept : float
    metadata : dict
        The ``model.json`` it was published with.
    inputs : tuple of InputColumn
        The raw columns requests send when some are categorical; empty: rows of features.
    columns : tuple of str
        What a request's columns are: the inputs' names if some are categorical, else the
        features; ``column_noun`` says which ("inputs" or "features").
    """

    version: int
    features: tuple[str, ...]
    coef: np.ndarray
    intercept: float
    metadata: dict[str, Any]
    inputs: tuple[InputColumn, ...] = ()
    feature_set: frozenset[str] = field(init=False, repr=False)
    columns: tuple[str, ...] = field(init=False, repr=False)
    column_set: frozenset[str] = field(init=False, repr=False)
    column_noun: str = field(init=False, repr=False)
    row_values: Callable[[dict[str, Any]], tuple[Any, ...]] = field(init=False, repr=False)
    coef_values: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_set", frozenset(self.features))
        object.__setattr__(self, "coef_values", tuple(self.coef.tolist()))
        columns = tuple(column.name for column in self.inputs) if self.inputs else self.features
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "column_set", frozenset(columns))
        object.__setattr__(self, "column_noun", "inputs" if self.inputs else "features")
        getter = itemgetter(*self.features)
        # itemgetter of one key returns the value, not a 1-tuple.
        values = getter if len(self.features) > 1 else (lambda row: (getter(row),))
        object.__setattr__(self, "row_values", values)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of shape (n_samples,) for ``X`` of shape (n_samples, n_features)."""
        return X @ self.coef + self.intercept

    def predict_rows(self, rows: list[list[float]]) -> list[float]:
        """``predict`` for a few rows of Python numbers, without numpy: its fixed cost per
        call is more than the arithmetic of a small request. The result may differ from
        ``predict``'s in the last bits (the sums run in another order, as they already do
        between numpy's kernels for one row and for many)."""
        coef, intercept = self.coef_values, self.intercept
        return [sum(map(mul, row, coef)) + intercept for row in rows]


def linear_model_from(estimator: Any, metadata: dict[str, Any]) -> LinearModel:
    """Check that ``estimator`` is the linear model ``metadata`` describes; raise ValueError."""
    version = metadata.get("version")
    if type(version) is not int:
        raise ValueError(f"model.json: version must be an integer, got {version!r}")
    features = metadata.get("features")
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(name, str) for name in features)
        or len(set(features)) != len(features)
    ):
        raise ValueError("model.json: features must be a non-empty list of distinct names")
    try:
        coef = np.array(estimator.coef_, dtype=np.float64)
        intercept = np.asarray(estimator.intercept_, dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"model.pkl is not a fitted linear model ({error})") from None
    if coef.shape != (len(features),):
        raise ValueError(
            f"model.pkl: coef_ has shape {coef.shape}, but model.json lists "
            f"{len(features)} features"
        )
    if intercept.size != 1:
        raise ValueError(f"model.pkl: intercept_ has shape {intercept.shape}; expected a scalar")
    intercept_value = float(intercept.reshape(()))
    if not (np.isfinite(coef).all() and math.isfinite(intercept_value)):
        raise ValueError("model.pkl: coef_ or intercept_ is not finite")
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and list(names) != features:
        raise ValueError("model.pkl: feature_names_in_ differ from model.json's features")
    if "coef" in metadata and not np.allclose(metadata["coef"], coef, rtol=1e-9, atol=0.0):
        raise ValueError("model.pkl: coef_ differs from model.json's coef")
    coef.setflags(write=False)
    inputs = categorical_inputs(metadata)
    return LinearModel(version, tuple(features), coef, intercept_value, metadata, inputs)


def categorical_inputs(metadata: dict[str, Any]) -> tuple[InputColumn, ...]:
    """``model.json`` ``inputs`` if some are categorical (checked to give its features in
    order), else (): a model of numbers only takes rows of its features."""
    raw = metadata.get("inputs")
    if not isinstance(raw, list) or not any(
        isinstance(entry, dict) and entry.get("kind") == "categorical" for entry in raw
    ):
        return ()
    inputs = []
    for entry in raw:
        name, kind, levels = entry.get("name"), entry.get("kind"), entry.get("levels", [])
        if (
            not isinstance(name, str)
            or kind not in ("numeric", "categorical")
            or not isinstance(levels, list)
            or not all(isinstance(level, str) for level in levels)
            or (kind == "categorical" and not levels)
        ):
            raise ValueError(f"model.json: inputs entry {entry!r} is not a valid input")
        inputs.append(InputColumn(name, kind, tuple(levels)))
    if list(design_features(inputs)) != metadata.get("features"):
        raise ValueError("model.json: inputs do not encode to the listed features")
    return tuple(inputs)


def file_signature(path: Path) -> FileSignature | None:
    """What identifies one published ``model.json``; None if there is none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def object_signature(url: str, storage_options: Mapping[str, Any]) -> FileSignature | None:
    """What identifies one ``model.json`` in an object store (one HEAD); None if absent."""
    try:
        info = remote_fs(url, storage_options).info(url)
    except FileNotFoundError:
        return None
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    modified = info.get("LastModified") or info.get("last_modified") or info.get("updated")
    return (etag, info.get("size"), str(modified))


def storage_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``MODEL_STORAGE_OPTIONS`` as a dict (empty when unset); ValueError if it is not a
    JSON object."""
    raw = (os.environ if environ is None else environ).get(STORAGE_OPTIONS_VARIABLE, "")
    if not raw.strip():
        return {}
    try:
        options = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{STORAGE_OPTIONS_VARIABLE} is not valid JSON ({error})") from None
    if not isinstance(options, dict):
        raise ValueError(f"{STORAGE_OPTIONS_VARIABLE} must be a JSON object, got {raw!r}")
    return options


class ModelStore:
    """The model a worker serves, reloaded when a new ``model.json`` is published.

    ``current()`` costs a clock read per call and at most one ``stat`` of ``model.json`` per
    ``check_interval_s``. When the file changed, the new pair is loaded (sha256 verified)
    and swapped in with one reference assignment, so a request that took the old model
    finishes with it. A model that fails to load is refused, logged and reported to
    ``on_failure`` once, and the last good one keeps serving.

    Parameters
    ----------
    model_dir : str or Path
        A directory, or an object-store URL.
    check_interval_s : float
    on_loaded, on_failure : callable, optional
        Told about each model swapped in, and each refused one.
    clock : callable
        Monotonic seconds (a fake in tests).
    storage_options : mapping, optional
        fsspec options of a URL ``model_dir``; default: ``MODEL_STORAGE_OPTIONS``.
    """

    def __init__(
        self,
        model_dir: str | Path,
        check_interval_s: float,
        on_loaded: Callable[[LinearModel], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        remote = is_url(model_dir)
        self.model_dir: str | Path = str(model_dir).rstrip("/") if remote else Path(model_dir)
        self.storage_options = dict(
            storage_options_from_env() if storage_options is None else storage_options
        )
        self._metadata_path = join(self.model_dir, METADATA_FILE)
        self._signature_of: Callable[[], FileSignature | None] = (
            (lambda: object_signature(str(self._metadata_path), self.storage_options))
            if remote
            else (lambda: file_signature(self._metadata_path))  # type: ignore[arg-type]
        )
        self.check_interval_s = check_interval_s
        self._on_loaded = on_loaded
        self._on_failure = on_failure
        self._clock = clock
        self._model: LinearModel | None = None
        self._signature: FileSignature | None = None
        self._next_check = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> LinearModel | None:
        """The model to serve (None until one loads), checking for a new one when due."""
        if self._clock() >= self._next_check:
            self.refresh()
        return self._model

    def refresh(self) -> None:
        """Load the published model if ``model.json`` changed since the last attempt."""
        # Another thread already checking means the check is in hand: serve what we have.
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = self._clock() + self.check_interval_s
            try:
                signature = self._signature_of()
            # An object store that does not answer is a transient fault: keep serving.
            except Exception as error:
                logger.warning("cannot check %s: %s", self._metadata_path, error)
                return
            if signature == self._signature:
                return
            # Remembered before loading: a broken model is refused (and counted) once, and a
            # model.json replaced while we read gets a new signature, so it is read again.
            self._signature = signature
            if signature is None:
                if self._model is not None:
                    logger.warning(
                        "%s disappeared; still serving version %d",
                        self._metadata_path,
                        self._model.version,
                    )
                return
            self._load()
        finally:
            self._lock.release()

    def _load(self) -> None:
        try:
            estimator, metadata = load_verified_model(self.model_dir, self.storage_options)
            model = linear_model_from(estimator, metadata)
        # Anything can come out of a bad pickle (EOFError, UnpicklingError, ImportError...);
        # whatever it is, the new model is refused and the last good one keeps serving.
        except Exception as error:
            serving = f"version {self._model.version}" if self._model else "no model"
            message = f"refused the model published in {self.model_dir}: {error}"
            logger.error("%s; still serving %s", message, serving)
            if self._on_failure is not None:
                self._on_failure(message)
            return
        previous = self._model
        self._model = model
        logger.info(
            "serving model version %d from %s (sha256 %s)%s",
            model.version,
            self.model_dir,
            str(metadata.get("sha256"))[:12],
            f", replacing version {previous.version}" if previous else "",
        )
        if self._on_loaded is not None:
            self._on_loaded(model)
