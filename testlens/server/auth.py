"""Tenants and API keys: creation, revocation and the request dependency that checks them.

Keys are ``tl_sk_`` plus 256 random bits. Because they are random and long, a plain SHA-256
is the right hash (a slow password hash buys nothing and would cost every request); only
that hash and the key's first 14 characters (``tl_sk_`` and 8 more, its display prefix) are
stored. Neither the secret nor the hash is ever logged or answered.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .database import DATABASE_DOWN, Database
from .errors import ApiError, ErrorCode, invalid_field, log, unauthorized
from .logredact import KEY_PARAMETERS
from .models import ApiKey, Tenant, utcnow
from .workers import Outage, Worker

KEY_PREFIX = "tl_sk_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8  # the part of a secret stored, to tell keys apart
ELLIPSIS = "…"
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
    return create_tenant_key(session, tenant.id, scopes, name)


def create_tenant_key(
    session: Session, tenant_id: str, scopes: tuple[str, ...], name: str = ""
) -> tuple[ApiKey, str]:
    """Create a key for the existing tenant ``tenant_id``; return it and its secret (which,
    as for :func:`create_key`, exists only in the return value)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        name=name,
        prefix=secret[:PREFIX_LENGTH],
        key_hash=hash_key(secret),
        scopes=",".join(scopes),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return key, secret


def shown_prefix(key: ApiKey) -> str:
    """How key listings show a key: its prefix and an ellipsis (``tl_sk_AbCd1234…``)."""
    return f"{key.prefix}{ELLIPSIS}"


def list_keys(session: Session, tenant_id: str | None = None) -> list[tuple[ApiKey, Tenant]]:
    """Every key (or one tenant's), by tenant name, oldest first."""
    query = select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    rows = session.execute(query.order_by(Tenant.name, ApiKey.created_at, ApiKey.id))
    return [(key, tenant) for key, tenant in rows]


def find_keys(session: Session, key_id_or_prefix: str) -> list[tuple[ApiKey, Tenant]]:
    """The keys that ``key_id_or_prefix`` names, of every tenant: the key with that id, or
    else every key whose prefix starts with it. A prefix may be given as listings show it
    (with the trailing ``…``, or ``...``) or shortened; callers refuse to act on several."""
    text = key_id_or_prefix.strip()
    for mark in (ELLIPSIS, "..."):
        text = text.removesuffix(mark)
    if not text:
        return []
    query = select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id)
    rows = session.execute(query.where(ApiKey.id == text)).all()
    if not rows:
        rows = session.execute(
            query.where(ApiKey.prefix.startswith(text, autoescape=True)).order_by(
                Tenant.name, ApiKey.created_at, ApiKey.id
            )
        ).all()
    return [(key, tenant) for key, tenant in rows]


def revoke(key: ApiKey) -> bool:
    """Revoke ``key`` (in its session); False if it already was, keeping the first date."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    return True


def active_admin_keys(session: Session, tenant_id: str) -> int:
    """How many unrevoked keys with the ``admin`` scope the tenant has."""
    scopes = session.scalars(
        select(ApiKey.scopes).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
    )
    return sum("admin" in text.split(",") for text in scopes)


class KeyUsage:
    """When each key was last used, to the minute, written in batches off the request path.

    Writing it while authenticating made every request a write: on SQLite, a read waited
    behind a long upload's write lock and failed after the busy timeout. Here a request only
    notes the time in memory; :meth:`flush` (every few seconds, and when the server stops)
    writes what changed in one short transaction.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, datetime] = {}
        self._noted: dict[str, datetime] = {}

    def seen(self, key_id: str, stored: datetime | None) -> None:
        now = utcnow()
        with self._lock:
            last = self._noted.get(key_id, stored)
            if last is None or now - last > _LAST_USED_RESOLUTION:
                self._pending[key_id] = self._noted[key_id] = now

    def flush(self, database: Database) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            with database.transaction() as session:
                session.execute(
                    update(ApiKey),
                    [{"id": key_id, "last_used_at": at} for key_id, at in pending.items()],
                )
        except Exception:
            with self._lock:  # keep them for the next flush; a newer note wins
                self._pending = pending | self._pending
            raise


class KeyUsageWriter(Worker):
    """Writes :class:`KeyUsage` every ``interval`` seconds, and once more when it stops."""

    name = "testlens-key-usage"

    def __init__(self, usage: KeyUsage, database: Database, interval: float) -> None:
        super().__init__()
        self._usage = usage
        self._database = database
        self._interval = interval

    def _run(self, stop: threading.Event) -> None:
        outage = Outage(log, "writing keys' last use", self._interval)
        while not stop.wait(self._interval):
            try:
                self._usage.flush(self._database)
            except DATABASE_DOWN as exc:
                stop.wait(outage.failed(exc))
            else:
                outage.answered()

    def stop(self) -> None:
        super().stop()
        try:
            self._usage.flush(self._database)
        except DATABASE_DOWN as exc:
            log.warning("keys' last use since the last write is lost: %s", exc)


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, else None."""
    scheme, _, credential = (authorization or "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


def authenticate(
    session: Session, authorization: str | None, tenant_header: str | None, usage: KeyUsage
) -> Principal:
    """Resolve the ``Authorization: Bearer`` header to a principal, or raise 401/403."""
    if not authorization:
        raise unauthorized("Missing API key: send Authorization: Bearer <key>")
    secret = bearer_token(authorization)
    if secret is None:
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
    usage.seen(key.id, key.last_used_at)
    return Principal(tenant.id, tenant.name, key.id, frozenset(key.scopes.split(",")))


def require(scope: str) -> Callable[[Request], Principal]:
    """FastAPI dependency: a valid key with ``scope`` (``admin`` implies every scope)."""

    def dependency(request: Request) -> Principal:
        in_url = [name for name in KEY_PARAMETERS if name in request.query_params]
        if in_url:  # URLs are logged and kept in histories: a key there is a leaked key
            raise invalid_field(
                in_url[0],
                "no API key in the URL",
                "Send the API key as 'Authorization: Bearer <key>', never in the URL",
            )
        database = request.app.state.database
        with database.read() as session:
            principal = authenticate(
                session,
                request.headers.get("authorization"),
                request.headers.get("x-tenant-id"),
                request.app.state.key_usage,
            )
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise ApiError(
                ErrorCode.INSUFFICIENT_SCOPE,
                f"This API key lacks the '{scope}' scope",
                {"required_scope": scope},
            )
        return principal

    return dependency
