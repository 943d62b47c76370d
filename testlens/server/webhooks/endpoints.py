"""The webhooks API: subscribe, list, unsubscribe, inspect deliveries, redeliver (admin keys)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..deps import AdminPrincipal, DatabaseDep, KeysDep, SettingsDep
from ..errors import ErrorCode, error_responses
from ..pagination import Page, PageNumber
from . import service
from .schemas import DeliveryPage, Redelivered, WebhookIn, WebhookList, WebhookOut

router = APIRouter(tags=["webhooks"])


@router.post("/api/webhooks", status_code=201, responses=error_responses(ErrorCode.INVALID_FIELD))
def create_webhook(
    body: WebhookIn,
    database: DatabaseDep,
    keys: KeysDep,
    settings: SettingsDep,
    principal: AdminPrincipal,
) -> WebhookOut:
    """Subscribe ``url`` to ``events``; deliveries are signed with ``secret``, never shown again.

    The URL's host must be a public address (400 ``INVALID_FIELD`` otherwise), unless the
    server allows its network (``TESTLENS_WEBHOOK_ALLOWED_NETWORKS``)."""
    return service.create(
        database, keys, principal.tenant_id, body, settings.webhook_allowed_networks
    )


@router.get("/api/webhooks")
def list_webhooks(database: DatabaseDep, principal: AdminPrincipal) -> WebhookList:
    """The tenant's webhooks, oldest first."""
    return service.list_all(database, principal.tenant_id)


@router.delete(
    "/api/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(ErrorCode.NOT_FOUND),
)
def delete_webhook(webhook_id: str, database: DatabaseDep, principal: AdminPrincipal) -> None:
    """Unsubscribe. The webhook's deliveries, pending ones included, go with it."""
    service.remove(database, principal.tenant_id, webhook_id)


@router.get("/api/webhooks/{webhook_id}/deliveries", responses=error_responses(ErrorCode.NOT_FOUND))
def list_deliveries(
    webhook_id: str, database: DatabaseDep, principal: AdminPrincipal, page: PageNumber = 1
) -> DeliveryPage:
    """A webhook's deliveries, newest first, 50 a page, with every attempt."""
    return service.deliveries(
        database, principal.tenant_id, webhook_id, Page(page, service.PAGE_SIZE)
    )


@router.post(
    "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    responses=error_responses(ErrorCode.NOT_FOUND),
)
def redeliver(
    webhook_id: str, delivery_id: str, database: DatabaseDep, principal: AdminPrincipal
) -> Redelivered:
    """Send a delivery again, under the same id and with a fresh attempt budget."""
    return Redelivered(
        delivery=service.redeliver(database, principal.tenant_id, webhook_id, delivery_id)
    )
