"""The queue sweeper: in every server process, takes back lapsed leases and fails runs no
worker has called for their inactivity timeout, even when no worker claims anymore (claims
take back their own run's lapsed leases too). Several processes may sweep at once: each
lease and run is locked with ``SKIP LOCKED`` and handled by one of them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from ..database import DATABASE_DOWN, Database
from ..models import utcnow
from ..workers import Outage, Worker, running
from .service import QueueConfig, expire, time_out

log = logging.getLogger("testlens.server.orchestration")

_FIRST_RETRY = 1.0


class QueueSweeper(Worker):
    """Sweeps every few seconds: often enough that a lapsed lease is back in the queue
    within a fraction of the lease's time-to-live."""

    name = "testlens-queue"

    def __init__(self, database: Database, config: QueueConfig) -> None:
        super().__init__()
        self._database = database
        self._config = config

    @property
    def interval(self) -> float:
        return max(0.2, min(5.0, self._config.lease_seconds / 6))

    def _run(self, stop: threading.Event) -> None:
        outage = Outage(log, "queue sweeps", _FIRST_RETRY)
        while not stop.wait(self.interval):
            try:
                with self._database.transaction() as session:
                    now = utcnow()
                    expire(session, self._config, now, build_id=None)
                    time_out(session, self._config, now)
            except DATABASE_DOWN as exc:
                stop.wait(outage.failed(exc))
                continue
            except Exception:  # a bug: logged, and tried again at the next sweep
                log.exception("queue sweep failed")
            else:
                outage.answered()


@contextmanager
def queue_sweeper(app: FastAPI) -> Iterator[QueueSweeper]:
    """Run a :class:`QueueSweeper` while ``app`` serves (the app's lifespan enters this)."""
    sweeper = QueueSweeper(app.state.database, QueueConfig.of(app.state.settings))
    with running(sweeper):
        yield sweeper
