"""Produce the next items of an iterator on a background thread while the caller works.

For sgd: reading and laying out a chunk (pyarrow and numpy, which release the GIL) overlaps
with ``SGDRegressor.partial_fit`` on the previous one (its loop releases the GIL too), so a
round uses a second core while at most ``depth`` chunks wait in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from queue import Empty, Full, Queue
from typing import TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1
_DONE = object()


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, produced at most ``depth`` ahead on a daemon thread.

    An exception raised while producing is raised here, at the item where it happened. If
    the caller stops early (an exception, ``close()``), the thread stops at its next item and
    is joined before this returns, so nothing keeps reading behind the caller's back.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    queue: Queue[tuple[object, BaseException | None]] = Queue(maxsize=depth)
    stopping = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stopping.is_set():
            try:
                queue.put(entry, timeout=_POLL_SECONDS)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put((None, error))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item  # type: ignore[misc]
    finally:
        stopping.set()
        while thread.is_alive():
            try:
                queue.get(timeout=_POLL_SECONDS)
            except Empty:
                pass
        thread.join()
