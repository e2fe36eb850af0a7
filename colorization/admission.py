"""Load shedding: `concurrency` requests work at once, `queue` more wait, the rest get `Busy` (with a retry
time) at once. `admit()` precedes reading the body (memory stays bounded); `working()` holds a slot."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(Exception):
    """Every working slot and queue place is taken: come back in `retry_after` seconds."""

    def __init__(self, retry_after: int, message: str):
        super().__init__(message)
        self.retry_after, self.message = retry_after, message


def default_concurrency() -> int:
    """The cores this process may use (its CPU affinity), at least 1."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class Admission:
    def __init__(self, concurrency: int, queue: int):
        if concurrency < 1 or queue < 0:
            raise ValueError(f"concurrency must be >= 1 and queue >= 0, got {concurrency} and {queue}")
        self.concurrency, self.queue = concurrency, queue
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self.inside = 0  # admitted: working or waiting for a slot
        self._held_s: float | None = None  # a moving average of how long a slot is held

    @contextmanager
    def admit(self) -> Iterator[None]:
        """A place among the admitted for the block, or `Busy` at once."""
        with self._lock:
            if self.inside >= self.concurrency + self.queue:
                rounds = math.ceil(self.inside / self.concurrency)  # work admitted ahead, in rounds of slots
                retry = max(1, math.ceil((self._held_s or 1.0) * rounds))  # 1 s a round before any is timed
                raise Busy(
                    retry,
                    f"busy: {self.inside} requests at work or waiting, the most this server "
                    f"takes ({self.concurrency} at once, {self.queue} queued); try again in {retry} s",
                )
            self.inside += 1
        try:
            yield
        finally:
            with self._lock:
                self.inside -= 1

    @contextmanager
    def working(self) -> Iterator[None]:
        """One of the `concurrency` working slots for the block; waits for one (call when admitted)."""
        with self._slots:
            started = time.monotonic()
            try:
                yield
            finally:
                held = time.monotonic() - started
                with self._lock:
                    self._held_s = held if self._held_s is None else 0.8 * self._held_s + 0.2 * held
