"""Managing subscriptions and their deliveries, callable without HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select

from ..database import Database
from ..errors import invalid_field, not_found
from ..models import Webhook, WebhookDelivery, iso, utcnow
from ..pagination import Page, Paged
from ..scoping import find_webhook
from ..signing import Keys
from .schemas import DeliveryOut, DeliveryPage, WebhookIn, WebhookList, WebhookOut
from .targets import Network, RefusedTarget, Unresolvable, check

PAGE_SIZE = 50


def _webhook_out(hook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=hook.id, url=hook.url, events=hook.events.split(","), created_at=iso(hook.created_at)
    )


def _delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    pending = delivery.status == "pending"
    return DeliveryOut(
        id=delivery.id,
        event=delivery.event,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=iso(delivery.created_at),
        next_attempt_at=iso(delivery.next_attempt_at) if pending else None,
        delivered_at=iso(delivery.delivered_at),
        attempts_log=json.loads(delivery.attempt_log),
    )


def create(
    database: Database,
    keys: Keys,
    tenant_id: str,
    body: WebhookIn,
    allowed: Sequence[Network] = (),
) -> WebhookOut:
    """Subscribe; the secret is stored encrypted and never shown again. A URL whose host is
    not a public address (nor in ``allowed``) is refused (see :mod:`.targets`)."""
    try:
        check(body.url, allowed)
    except Unresolvable:
        pass  # a receiver not deployed yet: every delivery is checked when it is sent
    except RefusedTarget:
        raise invalid_field(
            "url",
            "an http(s) URL whose host is a public address",
            "The webhook URL is refused by policy: its host must be a public address",
        ) from None
    hook = Webhook(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        url=body.url,
        events=",".join(body.events),
        secret=keys.encrypt(body.secret),
        created_at=utcnow(),
    )
    with database.transaction() as session:
        session.add(hook)
    return _webhook_out(hook)


def list_all(database: Database, tenant_id: str) -> WebhookList:
    with database.read() as session:
        hooks = session.scalars(
            select(Webhook)
            .where(Webhook.tenant_id == tenant_id)
            .order_by(Webhook.created_at, Webhook.id)
        ).all()
        return WebhookList(webhooks=[_webhook_out(hook) for hook in hooks])


def remove(database: Database, tenant_id: str, webhook_id: str) -> None:
    """Unsubscribe. The webhook's deliveries, pending ones included, go with it (FK cascade)."""
    with database.transaction() as session:
        deleted = session.execute(
            delete(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id)
        ).rowcount  # type: ignore[attr-defined]
    if not deleted:
        raise not_found("webhook", webhook_id)


def deliveries(database: Database, tenant_id: str, webhook_id: str, page: Page) -> DeliveryPage:
    """A webhook's deliveries, newest first, with every attempt."""
    with database.read() as session:
        find_webhook(session, tenant_id, webhook_id)
        rows = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .offset(page.offset)
            .limit(page.fetch)
        ).all()
    paged = Paged.of(rows, page)
    return DeliveryPage(
        deliveries=[_delivery_out(d) for d in paged.items],
        page=page.number,
        has_more=paged.has_more,
    )


def redeliver(database: Database, tenant_id: str, webhook_id: str, delivery_id: str) -> DeliveryOut:
    """Send a delivery again, under the same id and with a fresh attempt budget.

    Meant for dead-lettered deliveries once the receiver is fixed; on a pending one it means
    "retry now". The attempt log is kept, so the history stays readable.
    """
    with database.transaction() as session:
        find_webhook(session, tenant_id, webhook_id)
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
        session.flush()
        return _delivery_out(delivery)
