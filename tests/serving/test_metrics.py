"""Requests counted in memory and flushed give the metrics prometheus_client's own calls
would, and reach the registry without a scrape."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.metrics import LATENCY_BUCKETS, ServiceMetrics

# Below, on and above bucket bounds, and past the last one (+Inf).
SECONDS = [0.0001, 0.0005, 0.0007, 0.0025, 0.003, 0.003, 2.5, 3.0, 100.0]
KEYS = [("native", "/predict", "200"), ("v2", "/v2/models/{name}/infer", "422")]


def _families(text: bytes) -> list[bytes]:
    # The _created samples hold the time each series started: they differ between registries.
    return sorted(line for line in text.splitlines() if b"_created" not in line)


def test_flushed_counts_equal_what_observe_gives_directly() -> None:
    metrics = ServiceMetrics(None)
    registry = CollectorRegistry()
    requests = Counter(
        "linreg_serving_requests",
        "HTTP requests answered, by protocol, endpoint and status.",
        ["protocol", "endpoint", "status"],
        registry=registry,
    )
    latency = Histogram(
        "linreg_serving_request_duration_seconds",
        "Time to answer a request in the app, by protocol, endpoint and status.",
        ["protocol", "endpoint", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for index, key in enumerate(KEYS):
        for seconds in SECONDS[index:]:
            metrics.observe(*key, seconds)
            requests.labels(*key).inc()
            latency.labels(*key).observe(seconds)
    ours = _families(metrics.exposition()[0])
    expected = _families(generate_latest(registry))
    assert [line for line in ours if b"linreg_serving_request" in line] == expected


def test_counts_reach_the_registry_within_the_flush_interval_without_a_scrape() -> None:
    metrics = ServiceMetrics(None, flush_seconds=0.05)
    metrics.observe("native", "/predict", "200", 0.002)
    counted = metrics.requests.labels("native", "/predict", "200")
    deadline = time.monotonic() + 10
    while counted._value.get() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counted._value.get() == 1
