"""The retention API: ``GET /api/retention`` (read keys) and ``PUT /api/retention`` (admin
keys), the caller's own tenant only."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import AdminPrincipal, DatabaseDep, ReadPrincipal, SettingsDep
from . import service
from .schemas import Retention, RetentionOverrides

router = APIRouter(tags=["retention"])


@router.get("/api/retention")
def get_retention(
    database: DatabaseDep, settings: SettingsDep, principal: ReadPrincipal
) -> Retention:
    """How many days the tenant's results, runs, state changes and finished webhook
    deliveries are kept, its own values and the server's defaults."""
    return service.retention(database, settings, principal.tenant_id)


@router.put("/api/retention")
def put_retention(
    body: RetentionOverrides,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: AdminPrincipal,
) -> Retention:
    """Set the tenant's own retention: each field a number of days (1 to 36500), or null
    (or left out) for the server's default. The next sweep deletes what is older."""
    return service.set_retention(database, settings, principal.tenant_id, body)
