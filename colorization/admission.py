"""Load shedding: at most `concurrency` requests work at once and `queue` more wait; the rest are
turned away at once (`Busy`, with a retry time). `admit()` comes before a request's body is read, so
memory stays bounded; `working()` then holds a working slot for the costly part."""

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
        self._inside = 0  # admitted: working or waiting for a slot
        self._held_s: float | None = None  # a moving average of how long a slot is held

    @property
    def inside(self) -> int:
        return self._inside

    @contextmanager
    def admit(self) -> Iterator[None]:
        """A place among the admitted for the block, or `Busy` at once."""
        with self._lock:
            if self._inside >= self.concurrency + self.queue:
                rounds = math.ceil(self._inside / self.concurrency)  # work admitted ahead, in rounds of slots
                retry = max(1, math.ceil((self._held_s or 1.0) * rounds))  # 1 s a round before any is timed
                raise Busy(
                    retry,
                    f"busy: {self._inside} requests at work or waiting, the most this server "
                    f"takes ({self.concurrency} at once, {self.queue} queued); try again in {retry} s",
                )
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1

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
