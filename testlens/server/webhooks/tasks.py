"""The delivery worker: claims due deliveries, POSTs them signed, records every attempt."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from ..database import Database
from ..metrics import UNSERVED, Metrics
from ..models import Webhook, WebhookDelivery, iso, utcnow
from ..settings import Settings
from ..signing import Keys
from ..workers import Outage, Worker, running
from .targets import RefusedTarget, Unresolvable, check

log = logging.getLogger("testlens.server.webhooks")

USER_AGENT = "testlens-webhooks"
# Sends in flight per server process: a slow receiver holds one of them, not the queue.
_CONCURRENCY = 4
# Connecting, sending and reading may each take the timeout; the fourth covers recording the
# outcome. A lease that still runs out only costs a duplicate under the same delivery id.
_LEASE_TIMEOUTS = 4
_KEPT_ATTEMPTS = 50  # newest entries of a delivery's attempt log
_MAX_ERROR_CHARS = 500


def backoff(settings: Settings, failures: int) -> timedelta:
    """The wait after ``failures`` failed attempts: capped exponential, with equal jitter.

    Doubling spares a receiver that is down; the random upper half spreads the retries of
    deliveries that failed together (an outage) instead of sending them back in one burst,
    while the fixed lower half keeps a minimum spacing that full jitter would not.
    """
    exponent = min(failures - 1, 32)  # past the cap anyway; keeps the float finite
    ceiling = min(
        settings.webhook_backoff_cap_seconds, settings.webhook_backoff_base_seconds * 2**exponent
    )
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


@dataclass(frozen=True, slots=True)
class _Job:
    """A claimed delivery; ``lease_until`` also identifies this claim when recording it."""

    id: str
    event: str
    body: str
    attempts: int
    attempt_log: str
    lease_until: datetime
    url: str
    encrypted_secret: str


@dataclass(frozen=True, slots=True)
class _Attempt:
    at: datetime
    status_code: int | None
    error: str | None  # None: delivered
    duration_ms: float

    def log_entry(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


REFUSED = "refused by policy"
"""What the tenant sees of a delivery to a non-public address."""
NO_RESPONSE = "no HTTP response"
"""What the tenant sees of a delivery that got no answer, whatever the reason: telling a
refused port from a silent one would make deliveries a probe of the network."""


def _describe(exc: Exception) -> str:
    """The operator's account of a failed send (the log, never the tenant)."""
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:_MAX_ERROR_CHARS]


class DeliveryWorker(Worker):
    """Sends due deliveries from a background thread; several processes may share a queue.

    On PostgreSQL each claim skips rows another process has locked, so every server process
    can run a worker; SQLite has one writer at a time, which serializes claims by itself.
    Stopping returns once the sends in flight, each bounded by the timeout, are recorded.
    """

    name = "testlens-webhooks"

    def __init__(
        self, database: Database, keys: Keys, settings: Settings, metrics: Metrics = UNSERVED
    ) -> None:
        super().__init__()
        self._database = database
        self._keys = keys
        self._settings = settings
        self._metrics = metrics
        self._lease = timedelta(seconds=_LEASE_TIMEOUTS * settings.webhook_timeout_seconds)

    def _run(self, stop: threading.Event) -> None:
        slots = threading.Semaphore(_CONCURRENCY)
        outage = Outage(log, "webhook deliveries", self._settings.webhook_poll_seconds)
        timeout = httpx.Timeout(self._settings.webhook_timeout_seconds)
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            ThreadPoolExecutor(_CONCURRENCY, thread_name_prefix="testlens-webhook") as pool,
        ):
            while not stop.is_set():
                slots.acquire()
                if stop.is_set():
                    break
                try:
                    job = self._claim()
                except Exception as exc:  # the database is down: one line per outage
                    slots.release()
                    stop.wait(outage.failed(exc))
                    continue
                outage.answered()
                if job is None:
                    slots.release()
                    stop.wait(self._settings.webhook_poll_seconds)
                    continue
                pool.submit(self._deliver, client, job).add_done_callback(
                    lambda _future: slots.release()
                )

    def _claim(self) -> _Job | None:
        """Lease the most overdue delivery, in one short statement."""
        now = utcnow()
        lease_until = now + self._lease
        # FOR UPDATE SKIP LOCKED on PostgreSQL; the SQLite dialect leaves it out.
        due = (
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(due))
            .values(next_attempt_at=lease_until)
            .returning(
                WebhookDelivery.id,
                WebhookDelivery.webhook_id,
                WebhookDelivery.event,
                WebhookDelivery.payload,
                WebhookDelivery.attempts,
                WebhookDelivery.attempt_log,
            )
            .execution_options(synchronize_session=False)
        )
        with self._database.transaction() as session:
            row = session.execute(claim).first()
            if row is None:
                return None
            hook = session.execute(
                select(Webhook.url, Webhook.secret).where(Webhook.id == row.webhook_id)
            ).one()
        return _Job(
            id=row.id,
            event=row.event,
            body=row.payload,
            attempts=row.attempts,
            attempt_log=row.attempt_log,
            lease_until=lease_until,
            url=hook.url,
            encrypted_secret=hook.secret,
        )

    def _deliver(self, client: httpx.Client, job: _Job) -> None:
        try:
            self._record(job, self._send(client, job))
        except Exception:
            log.exception("could not record webhook delivery %s; retried after its lease", job.id)

    def _send(self, client: httpx.Client, job: _Job) -> _Attempt:
        at = utcnow()
        started = time.monotonic()
        status_code: int | None = None
        try:
            # Checked now, not only at registration: the name may point elsewhere today.
            target = check(job.url, self._settings.webhook_allowed_networks)
            body = job.body.encode()
            secret = self._keys.decrypt(job.encrypted_secret).encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Testlens-Event": job.event,
                "X-Testlens-Delivery": job.id,
                "X-Testlens-Signature-256": "sha256="
                + hmac.new(secret, body, hashlib.sha256).hexdigest(),
            }
            headers["Host"] = target.host
            # Streamed and closed unread: only the status matters, whatever the body's size.
            # The checked address is what we connect to; TLS still verifies the host's name.
            with client.stream(
                "POST",
                target.url,
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host},
            ) as response:
                status_code = response.status_code
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        except Unresolvable as exc:
            log.warning("webhook delivery %s failed: %s", job.id, exc)
            error = NO_RESPONSE
        except RefusedTarget as exc:
            log.warning("webhook delivery %s refused by policy: %s", job.id, exc)
            error = REFUSED
        except Exception as exc:  # whatever prevented delivery, it is an attempt to record
            log.warning("webhook delivery %s failed: %s", job.id, _describe(exc))
            error = NO_RESPONSE
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        return _Attempt(at, status_code, error, duration_ms)

    def _record(self, job: _Job, attempt: _Attempt) -> None:
        """Store the outcome, unless the delivery changed since it was claimed.

        A redelivery, a deleted webhook or a lease that ran out and was claimed again all
        change or remove the row; their outcome then wins over this stale one.
        """
        attempts = job.attempts + 1
        entries = [*json.loads(job.attempt_log), attempt.log_entry()][-_KEPT_ATTEMPTS:]
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
            "attempt_log": json.dumps(entries),
        }
        if attempt.error is None:
            outcome = "delivered"
            values.update(status="delivered", delivered_at=utcnow())
        elif attempts >= self._settings.webhook_max_attempts:
            outcome = "dead_lettered"
            values.update(status="dead")
            log.warning(
                "webhook delivery %s dead after %d attempts: %s", job.id, attempts, attempt.error
            )
        else:
            outcome = "refused" if attempt.error == REFUSED else "retried"
            values.update(next_attempt_at=utcnow() + backoff(self._settings, attempts))
        with self._database.transaction() as session:
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == job.id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at == job.lease_until,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        self._metrics.webhook_attempts.labels(outcome).inc()


@contextmanager
def delivery_worker(app: FastAPI) -> Iterator[DeliveryWorker]:
    """Run a :class:`DeliveryWorker` while ``app`` serves (the app's lifespan enters this)."""
    worker = DeliveryWorker(
        app.state.database, app.state.keys, app.state.settings, app.state.metrics
    )
    app.state.webhook_worker = worker
    with running(worker):
        yield worker
