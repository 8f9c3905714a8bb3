"""Prometheus metrics of the service, summed over gunicorn's workers in multiprocess mode.

Under gunicorn each worker is a process; prometheus_client then writes every value to a file
in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` reads them all (gunicorn's ``child_exit``
hook removes a dead worker's live gauges). The variable must be set before prometheus_client
is first imported, which ``serving/gunicorn.conf.py`` arranges.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """Request counts and latency by protocol, endpoint and status, model version, reloads.

    Parameters
    ----------
    multiprocess_dir : str or None
        ``PROMETHEUS_MULTIPROC_DIR`` when several worker processes serve; None otherwise.
    """

    def __init__(self, multiprocess_dir: str | None) -> None:
        if multiprocess_dir and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                "PROMETHEUS_MULTIPROC_DIR is set but prometheus_client was imported before it "
                "was: set it in the environment before the process starts"
            )
        self.multiprocess_dir = multiprocess_dir
        # A registry per app, so that several apps in one process (tests) do not collide.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "linreg_serving_requests",
            "HTTP requests answered, by protocol, endpoint and status.",
            ["protocol", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "linreg_serving_request_duration_seconds",
            "Time to answer a request in the app, by protocol, endpoint and status.",
            ["protocol", "endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "linreg_serving_model_version",
            "Version of the model each worker serves (0: none loaded yet).",
            multiprocess_mode="liveall",
            registry=self.registry,
        )
        self.drift_detected = Gauge(
            "linreg_model_drift_detected",
            "1 while the served model's model.json reports drift (Page-Hinkley), else 0.",
            multiprocess_mode="liveall",
            registry=self.registry,
        )
        self.recent_rmse = Gauge(
            "linreg_model_recent_rmse",
            "Held-out RMSE of the served model over the newest batches (model.json).",
            multiprocess_mode="liveall",
            registry=self.registry,
        )
        self.reloads = Counter(
            "linreg_serving_model_reloads",
            "Published models loaded (the first one included).",
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "linreg_serving_model_reload_failures",
            "Published models refused: sha256 mismatch, unreadable, wrong shape.",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, protocol: str, endpoint: str, status: str, seconds: float) -> None:
        """Count one answered request and its latency."""
        # labels() takes a lock and validates on each call; the children are few, keep them.
        key = (protocol, endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric (of every worker) and its content type."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
