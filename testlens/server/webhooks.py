"""Outgoing webhooks: subscriptions, a durable outbox, and the worker that empties it.

:func:`enqueue` writes one ``webhook_deliveries`` row per subscribed webhook inside the
transaction that produces the event, so an event is announced exactly when its cause is
committed. A background :class:`DeliveryWorker` claims due rows, POSTs them signed, and
records every attempt; failures are retried with capped exponential backoff, then
dead-lettered where the API can revive them. A claimed row is leased, not removed: if the
process dies mid-send, the row falls due again when the lease runs out. Delivery is therefore
at least once, and receivers deduplicate on ``X-Testlens-Delivery``, which one event keeps
for one webhook across every retry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from .auth import Principal, require
from .database import Database
from .errors import not_found
from .models import Webhook, WebhookDelivery, iso, utcnow
from .settings import Settings
from .signing import Keys

router = APIRouter(tags=["webhooks"])
log = logging.getLogger("testlens.server.webhooks")

EVENTS = ("new_flaky_test", "resolved_flaky_test")
PAGE_SIZE = 50
USER_AGENT = "testlens-webhooks"
_MAX_PAGE = 1_000_000  # keeps the row offset well inside a 64-bit integer
# Sends in flight per server process: a slow receiver holds one of them, not the queue.
_CONCURRENCY = 4
# Connecting, sending and reading may each take the timeout; the fourth covers recording the
# outcome. A lease that still runs out only costs a duplicate under the same delivery id.
_LEASE_TIMEOUTS = 4
_KEPT_ATTEMPTS = 50  # newest entries of a delivery's attempt log
_MAX_ERROR_CHARS = 500


class WebhookIn(BaseModel):
    """The body of ``POST /api/webhooks``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    events: list[str] = Field(min_length=1)
    secret: str = Field(min_length=16, max_length=512)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Parsed by the client that will send to it, so what passes here can be requested.
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if (
            url is None
            or url.scheme not in ("http", "https")
            or not url.host
            or any(ch.isspace() for ch in value)
        ):
            raise PydanticCustomError("url", "must be an http:// or https:// URL with a host")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [event for event in value if event not in EVENTS]
        if unknown:
            raise PydanticCustomError(
                "event",
                "unknown event {event}; known events: {known}",
                {"event": repr(unknown[0]), "known": ", ".join(EVENTS)},
            )
        return list(dict.fromkeys(value))


def _database(request: Request) -> Database:
    return request.app.state.database


def _webhook_json(hook: Webhook) -> dict[str, Any]:
    # The secret is deliberately absent: it is write-only.
    return {
        "id": hook.id,
        "url": hook.url,
        "events": hook.events.split(","),
        "created_at": iso(hook.created_at),
    }


def _delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    pending = delivery.status == "pending"
    return {
        "id": delivery.id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": iso(delivery.created_at),
        "next_attempt_at": iso(delivery.next_attempt_at) if pending else None,
        "delivered_at": iso(delivery.delivered_at),
        "attempts_log": json.loads(delivery.attempt_log),
    }


def _owned_webhook(session: Session, principal: Principal, webhook_id: str) -> Webhook:
    hook = session.scalar(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == principal.tenant_id)
    )
    if hook is None:
        raise not_found("webhook", webhook_id)
    return hook


@router.post("/api/webhooks", status_code=201)
def create_webhook(
    body: WebhookIn, request: Request, principal: Principal = Depends(require("admin"))
) -> dict[str, Any]:
    """Subscribe ``url`` to ``events``; deliveries are signed with ``secret``, never shown again."""
    hook = Webhook(
        id=str(uuid.uuid4()),
        tenant_id=principal.tenant_id,
        url=body.url,
        events=",".join(body.events),
        secret=request.app.state.keys.encrypt(body.secret),
        created_at=utcnow(),
    )
    with _database(request).transaction() as session:
        session.add(hook)
    return _webhook_json(hook)


@router.get("/api/webhooks")
def list_webhooks(
    request: Request, principal: Principal = Depends(require("admin"))
) -> dict[str, Any]:
    """The tenant's webhooks, oldest first."""
    with _database(request).transaction() as session:
        hooks = session.scalars(
            select(Webhook)
            .where(Webhook.tenant_id == principal.tenant_id)
            .order_by(Webhook.created_at, Webhook.id)
        ).all()
    return {"webhooks": [_webhook_json(hook) for hook in hooks]}


@router.delete("/api/webhooks/{webhook_id}", status_code=204)
def delete_webhook(
    webhook_id: str, request: Request, principal: Principal = Depends(require("admin"))
) -> Response:
    """Unsubscribe. The webhook's deliveries, pending ones included, go with it (FK cascade)."""
    with _database(request).transaction() as session:
        deleted = session.execute(
            delete(Webhook).where(
                Webhook.id == webhook_id, Webhook.tenant_id == principal.tenant_id
            )
        ).rowcount
    if not deleted:
        raise not_found("webhook", webhook_id)
    return Response(status_code=204)


@router.get("/api/webhooks/{webhook_id}/deliveries")
def list_deliveries(
    webhook_id: str,
    request: Request,
    page: Annotated[int, Query(ge=1, le=_MAX_PAGE)] = 1,
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """A webhook's deliveries, newest first, ``PAGE_SIZE`` a page, with every attempt."""
    with _database(request).transaction() as session:
        _owned_webhook(session, principal, webhook_id)
        deliveries = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE + 1)
        ).all()
    return {
        "deliveries": [_delivery_json(d) for d in deliveries[:PAGE_SIZE]],
        "page": page,
        "has_more": len(deliveries) > PAGE_SIZE,
    }


@router.post("/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(
    webhook_id: str,
    delivery_id: str,
    request: Request,
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """Send a delivery again, under the same id and with a fresh attempt budget.

    Meant for dead-lettered deliveries once the receiver is fixed; on a pending one it means
    "retry now". The attempt log is kept, so the history stays readable.
    """
    with _database(request).transaction() as session:
        _owned_webhook(session, principal, webhook_id)
        delivery = session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id
            )
        )
        if delivery is None:
            raise not_found("delivery", delivery_id)
        delivery.status = "pending"
        delivery.attempts = 0
        delivery.next_attempt_at = utcnow()
        delivery.delivered_at = None
    return {"delivery": _delivery_json(delivery)}


def enqueue(session: Session, tenant_id: str, event: str, payload: dict[str, Any]) -> int:
    """Queue ``event`` for each of the tenant's webhooks subscribed to it; return how many.

    Call it inside the transaction that makes the event true: the deliveries commit or roll
    back with it. ``payload`` must be JSON (finite numbers only: receivers parse strict
    JSON) and is sent as the body, unwrapped. The body is fixed here, so every retry sends, and
    signs, the same bytes.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    now = utcnow()
    subscribed = [
        hook_id
        for hook_id, events in session.execute(
            select(Webhook.id, Webhook.events).where(Webhook.tenant_id == tenant_id)
        )
        if event in events.split(",")
    ]
    # The body is the event's payload itself, as receivers of the seed dialect expect; the
    # delivery id and event name travel in the X-Testlens-Delivery and -Event headers.
    body = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    rows = []
    for hook_id in subscribed:
        delivery_id = str(uuid.uuid4())
        rows.append(
            {
                "id": delivery_id,
                "webhook_id": hook_id,
                "event": event,
                "payload": body,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "attempt_log": "[]",
                "created_at": now,
            }
        )
    if rows:
        session.execute(insert(WebhookDelivery), rows)
    return len(rows)


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


def _describe(exc: Exception) -> str:
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:_MAX_ERROR_CHARS]


class DeliveryWorker:
    """Sends due deliveries from a background thread; several processes may share a queue.

    On PostgreSQL each claim skips rows another process has locked, so every server process
    can run a worker; SQLite has one writer at a time, which serializes claims by itself.
    """

    def __init__(self, database: Database, keys: Keys, settings: Settings) -> None:
        self._database = database
        self._keys = keys
        self._settings = settings
        self._lease = timedelta(seconds=_LEASE_TIMEOUTS * settings.webhook_timeout_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="testlens-webhooks", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Return once the sends in flight, each bounded by the timeout, have been recorded."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, stop: threading.Event) -> None:
        slots = threading.Semaphore(_CONCURRENCY)
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
                except Exception:
                    log.exception("could not claim webhook deliveries")
                    job = None
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
            # Streamed and closed unread: only the status matters, whatever the body's size.
            with client.stream("POST", job.url, content=body, headers=headers) as response:
                status_code = response.status_code
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        except Exception as exc:  # whatever prevented delivery, it is an attempt to record
            error = _describe(exc)
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
            values.update(status="delivered", delivered_at=utcnow())
        elif attempts >= self._settings.webhook_max_attempts:
            values.update(status="dead")
            log.warning(
                "webhook delivery %s dead after %d attempts: %s", job.id, attempts, attempt.error
            )
        else:
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


@contextmanager
def delivery_worker(app: FastAPI) -> Iterator[DeliveryWorker]:
    """Run a :class:`DeliveryWorker` while ``app`` serves (the app's lifespan enters this)."""
    worker = DeliveryWorker(app.state.database, app.state.keys, app.state.settings)
    app.state.webhook_worker = worker
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
