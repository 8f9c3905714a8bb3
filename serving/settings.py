"""The service's settings, read from environment variables when asked (never at import)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A model name is one URL path segment: /v2/models/<name>/infer.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ServingSettings:
    """What the service serves and the limits it enforces.

    Attributes
    ----------
    model_dir : str
        Directory holding the published ``model.pkl`` and ``model.json`` (``MODEL_DIR``).
    max_rows : int
        Rows accepted in one ``POST /predict`` (``MAX_ROWS``).
    max_body_bytes : int
        Largest request body, refused with 413 before it is read (``MAX_BODY_BYTES``).
    log_level : str
        Level of the ``serving`` logger (``LOG_LEVEL``).
    check_interval_ms : int
        How often, at most, a worker stats ``model.json`` for a new version
        (``MODEL_CHECK_INTERVAL_MS``).
    metrics_dir : str or None
        prometheus_client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``); set under
        gunicorn so that ``/metrics`` adds up every worker.
    model_name : str
        The model's name in the Open Inference Protocol's paths, ``/v2/models/<name>``
        (``MODEL_NAME``).
    """

    model_dir: str = "artifacts"
    max_rows: int = 10_000
    max_body_bytes: int = 10 * 1024 * 1024
    log_level: str = "INFO"
    check_interval_ms: int = 1_000
    metrics_dir: str | None = None
    model_name: str = "linreg"

    def __post_init__(self) -> None:
        if not self.model_dir:
            raise ValueError("MODEL_DIR must name the directory of model.pkl and model.json")
        for name in ("max_rows", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.check_interval_ms < 0:
            raise ValueError(f"check_interval_ms must be >= 0, got {self.check_interval_ms}")
        if not MODEL_NAME.fullmatch(self.model_name):
            raise ValueError(
                "MODEL_NAME must be 1 to 64 letters, digits, '_', '.' or '-', starting with a "
                f"letter or digit, got {self.model_name!r}"
            )
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Settings from ``environ`` (default ``os.environ``); unset variables keep defaults."""
        env = os.environ if environ is None else environ
        return cls(
            model_dir=env.get("MODEL_DIR", cls.model_dir),
            max_rows=_int(env, "MAX_ROWS", cls.max_rows),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            log_level=env.get("LOG_LEVEL", cls.log_level).upper(),
            check_interval_ms=_int(env, "MODEL_CHECK_INTERVAL_MS", cls.check_interval_ms),
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            model_name=env.get("MODEL_NAME") or cls.model_name,
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
