"""The GitHub delivery worker: every server process runs one, claiming stored deliveries not
yet processed and applying each in the transaction that holds it.

The claim is ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two processes never
apply one delivery (SQLite has one writer at a time, which serializes claims by itself).
A delivery is applied inside a savepoint: when it fails, what it did is undone, the
failure is counted on the delivery and its error kept, and it is tried again once its
back-off is over (:func:`retry_delay`), fresh deliveries first, until :data:`MAX_ATTEMPTS`.
A payload that lacks what its event needs is recorded at once (``processed_at`` and
``error``), never retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import or_, select, update

from ..database import DATABASE_DOWN, Database
from ..models import GithubDelivery, utcnow
from ..settings import Settings
from ..workers import Outage, Worker, running
from . import service

log = logging.getLogger("testlens.server.github")

MAX_ATTEMPTS = 5
"""Tries of one delivery before it is left with its error."""
RETRY_SECONDS = 10.0
"""The wait after a delivery's first failure; each further failure triples it (10 s, 30 s,
90 s, 270 s: the five tries span about seven minutes, time for GitHub's API or the database
to come back from a short outage)."""
POLL_SECONDS = 1.0
"""How often the worker looks for deliveries another process received (its own wake it)."""
_MAX_ERROR_CHARS = 500


class DeliveryProcessor(Worker):
    """Applies stored GitHub deliveries from a background thread, one at a time."""

    name = "testlens-github"

    def __init__(self, database: Database, settings: Settings) -> None:
        super().__init__()
        self._database = database
        self._settings = settings
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look for deliveries now (one was just stored)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        super().stop()

    def _run(self, stop: threading.Event) -> None:
        outage = Outage(log, "GitHub deliveries", POLL_SECONDS)
        while not stop.is_set():
            self._wake.clear()
            try:
                found = self.process_next()
            except DATABASE_DOWN as exc:
                stop.wait(outage.failed(exc))
                continue
            outage.answered()
            if not found:
                self._wake.wait(POLL_SECONDS)

    def process_next(self) -> bool:
        """Claim and apply the next delivery; False when none is waiting."""
        with self._database.transaction() as session:
            now = utcnow()
            delivery = session.scalars(
                select(GithubDelivery)
                .where(
                    GithubDelivery.processed_at.is_(None),
                    GithubDelivery.attempts < MAX_ATTEMPTS,
                    or_(
                        GithubDelivery.next_attempt_at.is_(None),
                        GithubDelivery.next_attempt_at <= now,
                    ),
                )
                .order_by(GithubDelivery.attempts, GithubDelivery.received_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if delivery is None:
                return False
            ident, attempts = delivery.id, delivery.attempts + 1
            outcome: dict[str, object] = {"attempts": attempts, "error": None}
            try:
                with session.begin_nested():
                    service.apply(self._database, session, self._settings.github_tenant, ident)
            except DATABASE_DOWN:
                raise
            except service.Unusable as exc:
                log.warning("GitHub delivery %s ignored: %s", ident, exc)
                outcome.update(processed_at=utcnow(), error=str(exc)[:_MAX_ERROR_CHARS])
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
                outcome.update(error=error)
                if attempts >= MAX_ATTEMPTS:
                    log.exception("GitHub delivery %s failed %d times; left", ident, attempts)
                else:
                    delay = retry_delay(attempts)
                    outcome.update(next_attempt_at=now + timedelta(seconds=delay))
                    log.warning(
                        "GitHub delivery %s failed (retried in %g s): %s", ident, delay, error
                    )
            else:
                outcome.update(processed_at=utcnow())
            session.execute(
                update(GithubDelivery)
                .where(GithubDelivery.id == ident)
                .values(**outcome)
                .execution_options(synchronize_session=False)
            )
        return True


def retry_delay(attempts: int) -> float:
    """Seconds to wait before the next try of a delivery that failed ``attempts`` times."""
    return RETRY_SECONDS * 3 ** (attempts - 1)


def wake(app: FastAPI) -> None:
    """Wake ``app``'s worker, if it runs (it does while the app serves)."""
    processor: DeliveryProcessor | None = getattr(app.state, "github_processor", None)
    if processor is not None:
        processor.wake()


@contextmanager
def delivery_processor(app: FastAPI) -> Iterator[DeliveryProcessor]:
    """Run a :class:`DeliveryProcessor` while ``app`` serves (the app's lifespan enters this)."""
    processor = DeliveryProcessor(app.state.database, app.state.settings)
    app.state.github_processor = processor
    with running(processor):
        yield processor
