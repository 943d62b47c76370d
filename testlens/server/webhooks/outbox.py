"""The outbox: deliveries are rows written in the transaction of the event they announce."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ..models import Webhook, WebhookDelivery, utcnow

EVENTS = ("new_flaky_test", "resolved_flaky_test")


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
