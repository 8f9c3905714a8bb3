from __future__ import annotations

import threading
import time

import pytest

from linreg.prefetch import prefetched


def test_items_arrive_in_order_produced_on_another_thread():
    producers: set[int] = set()

    def items():
        for value in range(50):
            producers.add(threading.get_ident())
            yield value

    assert list(prefetched(items(), depth=3)) == list(range(50))
    assert producers and threading.get_ident() not in producers


def test_an_error_while_producing_is_raised_to_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad chunk")

    received = []
    with pytest.raises(ValueError, match="bad chunk"):
        for item in prefetched(items()):
            received.append(item)
    assert received == [1, 2]


def test_stopping_early_stops_the_producer_before_returning():
    produced: list[int] = []

    def items():
        for value in range(1_000):
            produced.append(value)
            yield value

    before = threading.active_count()
    stream = prefetched(items(), depth=2)
    assert next(stream) == 0
    stream.close()
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 4  # at most the queue's depth ahead, then nothing
    assert threading.active_count() == before


def test_a_consumer_error_stops_the_producer():
    def items():
        yield from range(1_000_000)

    before = threading.active_count()
    with pytest.raises(RuntimeError):
        for item in prefetched(items()):
            if item == 3:
                raise RuntimeError("the consumer failed")
    assert threading.active_count() == before


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        next(prefetched([1], depth=0))
