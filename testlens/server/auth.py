"""Tenants and API keys: creation, revocation and the request dependency that checks them.

Keys are ``tl_sk_`` plus 256 random bits. Because they are random and long, a plain SHA-256
is the right hash (a slow password hash buys nothing and would cost every request); only
that hash and an 8-character display prefix are stored.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .errors import ApiError, ErrorCode, unauthorized
from .models import ApiKey, Tenant, utcnow

KEY_PREFIX = "tl_sk_"
SCOPES = ("ingest", "read", "admin")
DEFAULT_SCOPES = ("ingest", "read")
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant a valid key belongs to, and what it may do."""

    tenant_id: str
    tenant_name: str
    key_id: str
    scopes: frozenset[str]


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be a comma-separated subset of {', '.join(SCOPES)}")
    return scopes


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=utcnow())
        session.add(tenant)
        session.flush()
    return tenant


def create_key(
    session: Session, tenant_name: str, scopes: tuple[str, ...] = DEFAULT_SCOPES, name: str = ""
) -> tuple[ApiKey, str]:
    """Create a key for ``tenant_name`` (creating the tenant if new); return it and its secret.

    The secret exists only in the return value: it cannot be recovered later.
    """
    tenant = get_or_create_tenant(session, tenant_name)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=str(uuid.uuid4()),
        tenant_id=tenant.id,
        name=name,
        prefix=secret[:14],
        key_hash=hash_key(secret),
        scopes=",".join(scopes),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return key, secret


def list_keys(session: Session) -> list[tuple[ApiKey, Tenant]]:
    rows = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .order_by(Tenant.name, ApiKey.created_at)
    )
    return [(key, tenant) for key, tenant in rows]


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey | None:
    key = session.scalar(
        select(ApiKey).where((ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix))
    )
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def authenticate(
    session: Session, authorization: str | None, tenant_header: str | None
) -> Principal:
    """Resolve the ``Authorization: Bearer`` header to a principal, or raise 401/403."""
    if not authorization:
        raise unauthorized("Missing API key: send Authorization: Bearer <key>")
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise unauthorized("Authorization header must be 'Bearer <key>'")
    row = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_key(secret))
    ).first()
    if row is None or row[0].revoked_at is not None:
        raise unauthorized("Invalid or revoked API key", ErrorCode.INVALID_API_KEY)
    key, tenant = row
    if tenant_header and tenant_header not in (tenant.id, tenant.name):
        raise ApiError(ErrorCode.INVALID_TENANT, "X-Tenant-ID does not match the API key's tenant")
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return Principal(tenant.id, tenant.name, key.id, frozenset(key.scopes.split(",")))


def require(scope: str) -> Callable[[Request], Principal]:
    """FastAPI dependency: a valid key with ``scope`` (``admin`` implies every scope)."""

    def dependency(request: Request) -> Principal:
        database = request.app.state.database
        with database.transaction() as session:
            principal = authenticate(
                session, request.headers.get("authorization"), request.headers.get("x-tenant-id")
            )
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise ApiError(
                ErrorCode.INSUFFICIENT_SCOPE,
                f"This API key lacks the '{scope}' scope",
                {"required_scope": scope},
            )
        return principal

    return dependency
