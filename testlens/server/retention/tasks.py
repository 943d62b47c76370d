"""The retention sweeper: every server process sweeps every tenant at the configured
interval (the first time at start-up), and rides out database outages like every worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from ..database import DATABASE_DOWN, Database
from ..settings import Settings
from ..workers import Outage, Worker, running
from .service import sweep

log = logging.getLogger("testlens.server.retention")

_FIRST_RETRY = 1.0
"""Seconds before the first retry after an outage (doubling from there, capped)."""


class RetentionSweeper(Worker):
    """Sweeps, then waits ``TESTLENS_RETENTION_SWEEP_SECONDS``; a sweep stops between two
    batches when the server stops. Sweepers of several processes share the work (see
    :mod:`.queries`)."""

    name = "testlens-retention"

    def __init__(self, database: Database, settings: Settings) -> None:
        super().__init__()
        self._database = database
        self._settings = settings

    def _run(self, stop: threading.Event) -> None:
        outage = Outage(log, "retention sweeps", _FIRST_RETRY)
        while not stop.is_set():
            try:
                swept = sweep(self._database, self._settings, stop=stop)
            except DATABASE_DOWN as exc:
                stop.wait(outage.failed(exc))
                continue
            except Exception:  # a bug: logged, and tried again at the next sweep
                log.exception("retention sweep failed")
            else:
                outage.answered()
                if swept:
                    log.info(
                        "retention sweep deleted %d results, %d runs, %d builds, %d live "
                        "events, %d state changes, %d webhook deliveries and %d GitHub "
                        "deliveries",
                        swept.results,
                        swept.runs,
                        swept.builds,
                        swept.live_events,
                        swept.events,
                        swept.deliveries,
                        swept.github_deliveries,
                    )
            stop.wait(self._settings.retention_sweep_seconds)


@contextmanager
def retention_sweeper(app: FastAPI) -> Iterator[RetentionSweeper]:
    """Run a :class:`RetentionSweeper` while ``app`` serves (the app's lifespan enters this)."""
    sweeper = RetentionSweeper(app.state.database, app.state.settings)
    app.state.retention_sweeper = sweeper
    with running(sweeper):
        yield sweeper
