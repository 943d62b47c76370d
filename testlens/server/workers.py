"""What the server's background workers share: a thread started and stopped with the app,
and how a worker rides out a database outage.

Each worker (webhook deliveries, retention sweeps) runs on a daemon thread of every server
process, entered from the app's lifespan with :func:`running`. While the database is down a
worker says so once, retries at a doubling interval up to :data:`MAX_OUTAGE_WAIT` (so an
outage neither floods the log nor leaves the worker asleep long after the database is
back), and says so once more when it answers again.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

MAX_OUTAGE_WAIT = 30.0
"""Seconds between a worker's retries at most, while the database is down."""


class Worker(ABC):
    """A loop on a background thread, stopped through the event :meth:`_run` is given."""

    name = "testlens-worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end, and return once it has (each worker bounds its own wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @abstractmethod
    def _run(self, stop: threading.Event) -> None:
        """The loop: runs until ``stop`` is set, waiting on it rather than sleeping."""


W = TypeVar("W", bound=Worker)


@contextmanager
def running(worker: W) -> Iterator[W]:
    """``worker`` running for the block (the app's lifespan enters this)."""
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


class Outage:
    """One warning when the database stops answering ``what``, one when it answers again,
    and the wait before each retry in between: doubling from ``first_wait``, capped."""

    def __init__(self, log: logging.Logger, what: str, first_wait: float) -> None:
        self._log = log
        self._what = what
        self._first_wait = first_wait
        self._wait: float | None = None  # None: the database answers

    def failed(self, exc: Exception) -> float:
        """Seconds to wait before retrying, after ``exc``."""
        if self._wait is None:
            self._log.warning("%s paused, database unavailable: %s", self._what, exc)
            self._wait = self._first_wait
        self._wait = min(2 * self._wait, MAX_OUTAGE_WAIT)
        return self._wait

    def answered(self) -> None:
        """The database answered: the outage, if there was one, is over."""
        if self._wait is not None:
            self._log.warning("%s resumed: the database answers again", self._what)
            self._wait = None
