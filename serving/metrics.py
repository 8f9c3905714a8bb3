"""Prometheus metrics of the service, summed over gunicorn's workers in multiprocess mode.

Under gunicorn each worker is a process; prometheus_client then writes every value to a file
in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` reads them all (gunicorn's ``child_exit``
hook removes a dead worker's live gauges). The variable must be set before prometheus_client
is first imported, which ``serving/gunicorn.conf.py`` arranges.

Requests are counted in memory and written to prometheus_client once a second (and before
each ``/metrics`` answer of the same worker, and when a worker stops): three locked writes
to the multiprocess files per request cost a 1-row ``/predict`` about 10 µs of its ~200 µs
of server CPU under bench/serve's load. Another worker's newest second may therefore be
missing from a scrape; a worker killed outright loses at most that second's counts.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
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
FLUSH_SECONDS = 1.0


class ServiceMetrics:
    """Request counts and latency by protocol, endpoint and status, model version, reloads.

    Parameters
    ----------
    multiprocess_dir : str or None
        ``PROMETHEUS_MULTIPROC_DIR`` when several worker processes serve; None otherwise.
    flush_seconds : float
        How often the requests counted in memory are written out.
    """

    def __init__(self, multiprocess_dir: str | None, flush_seconds: float = FLUSH_SECONDS) -> None:
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
        # (protocol, endpoint, status) -> [requests, seconds, requests per latency bucket]
        # since the last flush; the last bucket is +Inf.
        self._pending: dict[tuple[str, str, str], list[Any]] = {}
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_seconds = flush_seconds
        self._flusher: threading.Thread | None = None

    def observe(self, protocol: str, endpoint: str, status: str, seconds: float) -> None:
        """Count one answered request and its latency (written out within ``flush_seconds``)."""
        key = (protocol, endpoint, status)
        bucket = bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds: its "le"
        with self._pending_lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = [0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
            pending[0] += 1
            pending[1] += seconds
            pending[2][bucket] += 1
        if self._flusher is None:
            self._start_flusher()

    def flush(self) -> None:
        """Write the requests counted since the last flush to prometheus_client."""
        with self._flush_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for key, (count, seconds, buckets) in pending.items():
                self.requests.labels(*key).inc(count)
                # What Histogram.observe does for one value, for many at once (prometheus_client
                # is pinned; tests/serving/test_metrics.py compares the two).
                latency = self.latency.labels(*key)
                latency._sum.inc(seconds)
                for value, observed in zip(latency._buckets, buckets, strict=True):
                    if observed:
                        value.inc(observed)

    def _start_flusher(self) -> None:
        # Started by the first request, so in the gunicorn worker, after the fork. The thread
        # holds the metrics weakly: it ends once they are gone (an app of a test).
        with self._flush_lock:
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=_flush_every,
                    args=(weakref.ref(self), self._flush_seconds),
                    name="metrics-flush",
                    daemon=True,
                )
                self._flusher.start()

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric (of every worker) and its content type."""
        self.flush()
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _flush_every(metrics: weakref.ref[ServiceMetrics], seconds: float) -> None:
    while True:
        time.sleep(seconds)
        alive = metrics()
        if alive is None:
            return
        alive.flush()
        del alive
