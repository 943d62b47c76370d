"""The keys API: an admin key lists, creates and revokes the API keys of its own tenant.

``GET /api/keys``, ``POST /api/keys`` and ``DELETE /api/keys/{id}`` (admin keys). Another
tenant's key answers 404, like one that does not exist. A new key's secret is in the answer
that creates it and nowhere else: only its SHA-256 is stored, and neither is ever shown or
logged again.

A key may revoke itself: that is how a leaked key is revoked at once, by whoever holds it.
The answer says so (``Testlens-Revoked-Self: true``) and counts the admin keys the tenant
has left (``Testlens-Admin-Keys-Left``); with none left, only the server's
``testlens keys create --tenant <name> --scopes ...,admin`` makes a new one.
"""

from __future__ import annotations

from typing import Literal, cast

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .auth import (
    DEFAULT_SCOPES,
    KeyUsage,
    Principal,
    active_admin_keys,
    create_tenant_key,
    list_keys,
    revoke,
)
from .database import Database
from .deps import AdminPrincipal, DatabaseDep, KeyUsageDep
from .errors import ErrorCode, error_responses
from .models import ApiKey, iso
from .scoping import find_key

router = APIRouter(tags=["keys"])

Scope = Literal["ingest", "read", "admin"]  # auth.SCOPES
REVOKED_SELF = "Testlens-Revoked-Self"
ADMIN_KEYS_LEFT = "Testlens-Admin-Keys-Left"


class KeyIn(BaseModel):
    """The body of ``POST /api/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A label to recognise the key by.")
    scopes: list[Scope] = Field(
        default_factory=lambda: [cast(Scope, scope) for scope in DEFAULT_SCOPES],
        min_length=1,
        description="ingest (upload), read (query), admin (everything).",
    )

    @field_validator("scopes")
    @classmethod
    def _once_each(cls, value: list[Scope]) -> list[Scope]:
        return list(dict.fromkeys(value))


class KeyOut(BaseModel):
    """A key as the API shows it: never its secret or hash."""

    id: str
    name: str
    prefix: str = Field(description="The key's first 14 characters, to tell keys apart.")
    scopes: list[str]
    created_at: str
    last_used_at: str | None = Field(description="To the minute.")
    revoked_at: str | None
    current: bool = Field(description="Whether this is the key that made the request.")


class KeyList(BaseModel):
    keys: list[KeyOut] = Field(description="The tenant's keys, revoked ones too, oldest first.")


class KeyCreated(KeyOut):
    secret: str = Field(
        description="The key (tl_sk_...), to send as 'Authorization: Bearer <key>'. This "
        "answer is the only place it is ever shown: store it now."
    )


def _key_out(key: ApiKey, principal: Principal) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes.split(","),
        created_at=iso(key.created_at) or "",
        last_used_at=iso(key.last_used_at),
        revoked_at=iso(key.revoked_at),
        current=key.id == principal.key_id,
    )


def listing(database: Database, usage: KeyUsage, principal: Principal) -> KeyList:
    usage.flush(database)  # so that last use is current, not as of the last batch
    with database.read() as session:
        rows = list_keys(session, principal.tenant_id)
        return KeyList(keys=[_key_out(key, principal) for key, _tenant in rows])


def create(database: Database, principal: Principal, body: KeyIn) -> KeyCreated:
    with database.transaction() as session:
        key, secret = create_tenant_key(session, principal.tenant_id, tuple(body.scopes), body.name)
        shown = _key_out(key, principal)
    return KeyCreated(**shown.model_dump(), secret=secret)


def revoke_own(database: Database, principal: Principal, key_id: str) -> tuple[bool, int]:
    """Revoke one of the tenant's keys (again is no error); whether it was the caller's own,
    and how many admin keys the tenant has left."""
    with database.transaction() as session:
        key = find_key(session, principal.tenant_id, key_id)
        revoke(key)
        session.flush()
        return key.id == principal.key_id, active_admin_keys(session, principal.tenant_id)


@router.get("/api/keys")
def list_api_keys(database: DatabaseDep, usage: KeyUsageDep, principal: AdminPrincipal) -> KeyList:
    """The tenant's API keys (prefix, scopes, last use, revocation); never secrets."""
    return listing(database, usage, principal)


@router.post("/api/keys", status_code=201)
def create_api_key(body: KeyIn, database: DatabaseDep, principal: AdminPrincipal) -> KeyCreated:
    """Create a key for the tenant. Its ``secret`` is in this answer only: store it now."""
    return create(database, principal, body)


@router.delete(
    "/api/keys/{key_id}",
    status_code=204,
    response_class=Response,
    responses={
        204: {
            "description": "Revoked (or already revoked).",
            "headers": {
                REVOKED_SELF: {
                    "description": "'true' when the key revoked itself: later requests "
                    "with it answer 401.",
                    "schema": {"type": "string"},
                },
                ADMIN_KEYS_LEFT: {
                    "description": "Unrevoked admin keys the tenant has left; with 0, only "
                    "'testlens keys create' on the server makes a new one.",
                    "schema": {"type": "integer"},
                },
            },
        },
        **error_responses(ErrorCode.NOT_FOUND),
    },
)
def revoke_api_key(key_id: str, database: DatabaseDep, principal: AdminPrincipal) -> Response:
    """Revoke a key at once. A key may revoke itself (a leaked key, by whoever holds it)."""
    own, admins_left = revoke_own(database, principal, key_id)
    headers = {ADMIN_KEYS_LEFT: str(admins_left)}
    if own:
        headers[REVOKED_SELF] = "true"
    return Response(status_code=204, headers=headers)
