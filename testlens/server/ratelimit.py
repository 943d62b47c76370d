"""Rate limits of the API: per tenant, and for uploads per repository, in both dialects.

One tenant's runaway CI (a retry storm, a matrix of a thousand jobs) must not take the
server from every other tenant. The limits, their settings and the headers are in the
README (Rate limits):

- ``POST /api/test-results``: per repository of the tenant (the form's ``repo``, any case);
- ``/api/repos...`` and ``/api/tests...``: per tenant;
- ``/api/analytics...`` (the Unfold dialect's analytics): per tenant;
- ``/api/v1/...`` (the other dialect): per tenant, with bursts to twice its rate a minute;
- the rest of ``/api/`` that takes an API key: per tenant.

Only requests with a valid key count, against the key's tenant: :class:`Charged` wraps
``auth.require`` in the dependencies endpoints declare (``deps.ReadPrincipal``...), so no
route can forget its limit, and a 401 costs nobody's quota. An upload is keyed by its form,
which only the endpoint reads: it calls :func:`charge_upload` once it has the repository,
before the report is read, parsed or stored.

Every limit is a token bucket kept as one number, the time it is full again (the generic
cell rate algorithm, GCRA). That makes each store's check-and-take one atomic step: a locked
dict update in memory, one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` in the database
(shared by every process on it), one Lua script in Redis. Times are integer microseconds, so
no store rounds differently from another.

A store that fails (the database or Redis down) never fails the request: the limiter says so
in the log once, limits each process on its own in memory meanwhile, and tries the store
again every few seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIRouter
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import BigInteger, bindparam, case, delete
from sqlalchemy.dialects import postgresql, sqlite
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .auth import Principal
from .database import DATABASE_DOWN, Database
from .errors import ErrorBody, ErrorCode, log, rate_limited
from .models import RateLimitBucket, table_of
from .models.results import name_key
from .settings import Settings

MINUTE = 60_000_000
"""A minute in microseconds, the unit of every time here."""
STORE_RETRY = 5_000_000
"""How long the limiter keeps to memory after its store failed, before trying it again."""
SWEEP_EVERY = MINUTE
"""How often a process deletes the database store's rows of full buckets."""
REDIS_TIMEOUT = 0.5
"""Seconds to reach Redis or hear from it: it answers in a millisecond when it is well."""
REDIS_PREFIX = "testlens:ratelimit:"
UPLOADS = "/api/test-results"
STATE = "rate_limit"
"""Where a request's :class:`Decision` waits in ``request.state`` for the headers."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One group of routes' bucket: ``per_minute`` tokens come back a minute, up to ``burst``."""

    group: str  # uploads, repos, v1 or api: part of the key, and named in a 429's details
    dialect: str  # unfold or shifty: the label of the rejections metric
    per_minute: int
    burst: int

    @property
    def interval(self) -> int:
        """Microseconds one token takes to come back."""
        return max(1, round(MINUTE / self.per_minute))


@dataclass(frozen=True, slots=True)
class Limits:
    """The five limits the settings set, and which one a route has."""

    uploads: Limit
    repos: Limit
    analytics: Limit
    v1: Limit
    api: Limit

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        uploads = settings.rate_limit_uploads_per_minute
        repos = settings.rate_limit_repos_per_minute
        api = settings.rate_limit_api_per_minute
        analytics = settings.rate_limit_analytics_per_minute
        return cls(
            uploads=Limit("uploads", "unfold", uploads, uploads),
            repos=Limit("repos", "unfold", repos, repos),
            analytics=Limit("analytics", "unfold", analytics, analytics),
            v1=Limit(
                "v1", "shifty", settings.rate_limit_v1_per_minute, settings.rate_limit_v1_burst
            ),
            api=Limit("api", "unfold", api, api),
        )

    def for_route(self, path: str) -> Limit | None:
        """The tenant's limit on the route declared as ``path``; None for uploads (keyed by
        repository, see :func:`charge_upload`) and for routes outside ``/api/``."""
        parts = path.split("/")
        if len(parts) < 3 or parts[1] != "api" or path == UPLOADS:
            return None
        if parts[2] == "v1":
            return self.v1
        if parts[2] == "analytics":
            return self.analytics
        return self.repos if parts[2] in ("repos", "tests") else self.api


def gcra(full_at: int, now: int, limit: Limit) -> tuple[int, bool]:
    """A request at ``now`` on a bucket full at ``full_at`` (0: never used): the bucket's new
    ``full_at``, and whether the request is let in. Each request pushes ``full_at`` one
    interval on; the bucket is empty when that would put it more than ``burst`` intervals
    ahead. The SQL and Lua stores do exactly this."""
    candidate = max(full_at, now) + limit.interval
    if candidate - now > limit.burst * limit.interval:
        return full_at, False
    return candidate, True


@dataclass(frozen=True, slots=True)
class Decision:
    """What the limiter made of one request, as its headers and 429 say it."""

    limit: Limit
    admitted: bool
    remaining: int
    reset: int  # epoch seconds when the bucket is full again
    retry_after: int  # seconds until a request would be let in (0 while there are tokens)

    @classmethod
    def of(cls, limit: Limit, full_at: int, admitted: bool, now: int) -> Decision:
        interval, burst = limit.interval, limit.burst
        remaining = min(burst, max(0, (now + burst * interval - full_at) // interval))
        wait = full_at + interval - burst * interval - now
        return cls(
            limit,
            admitted,
            remaining,
            reset=math.ceil(max(full_at, now) / 1_000_000),
            retry_after=0 if admitted else max(1, math.ceil(wait / 1_000_000)),
        )

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit.burst),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


# Stores --------------------------------------------------------------------------------------


class Store(Protocol):
    name: str
    failures: tuple[type[Exception], ...]
    """The errors that mean "the store is unavailable" (any other is a bug, and a 500)."""

    def take(self, key: str, now: int, limit: Limit) -> tuple[int, bool]:
        """:func:`gcra` on ``key``'s bucket, atomically: its new ``full_at``, and whether
        the request is let in."""
        ...


class MemoryStore:
    """Buckets in this process's memory: right for one process, and free of any I/O."""

    name = "memory"
    failures: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._full_at: dict[str, int] = {}
        self._next_sweep = 0

    def take(self, key: str, now: int, limit: Limit) -> tuple[int, bool]:
        with self._lock:
            if now >= self._next_sweep:  # full buckets say nothing: keep memory bounded
                self._full_at = {k: at for k, at in self._full_at.items() if at > now}
                self._next_sweep = now + SWEEP_EVERY
            full_at, admitted = gcra(self._full_at.get(key, 0), now, limit)
            self._full_at[key] = full_at
        return full_at, admitted


class DatabaseStore:
    """Buckets in the ``rate_limits`` table, shared by every process on the database.

    Each request is one statement, which PostgreSQL runs atomically on the key's row (and
    SQLite under its write lock), so processes never let in more than the limit together.
    Each process deletes the rows of full buckets once a minute, through the index on
    ``full_at``.
    """

    name = "database"
    failures: tuple[type[Exception], ...] = DATABASE_DOWN

    def __init__(self, database: Database) -> None:
        self.database = database
        self._next_sweep = 0
        table = table_of(RateLimitBucket)
        now = bindparam("now", type_=BigInteger)
        interval = bindparam("interval", type_=BigInteger)
        burst = bindparam("burst", type_=BigInteger)
        dialect = postgresql if database.dialect == "postgresql" else sqlite
        insert = dialect.insert(table).values(
            key=bindparam("key"), full_at=now + interval, admitted=True
        )
        current = table.c.full_at
        candidate = case((current > now, current), else_=now) + interval
        fits = candidate - now <= burst * interval
        self._take = insert.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"full_at": case((fits, candidate), else_=current), "admitted": fits},
        ).returning(table.c.full_at, table.c.admitted)
        self._sweep = delete(table).where(current <= now)

    def take(self, key: str, now: int, limit: Limit) -> tuple[int, bool]:
        parameters = {"key": key, "now": now, "interval": limit.interval, "burst": limit.burst}
        with self.database.transaction() as session:
            full_at, admitted = session.execute(self._take, parameters).one()
            if now >= self._next_sweep:  # in the same transaction: one outcome, one failure
                self._next_sweep = now + SWEEP_EVERY
                session.execute(self._sweep, {"now": now})
        return int(full_at), bool(admitted)


_GCRA_LUA = """
local full_at = tonumber(redis.call('GET', KEYS[1]) or '0')
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local candidate = math.max(full_at, now) + interval
if candidate - now > burst * interval then
  return {full_at, 0}
end
local ttl = math.ceil((candidate - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', candidate), 'PX', string.format('%d', ttl))
return {candidate, 1}
"""
""":func:`gcra` in Redis. A key expires when its bucket is full, so nothing needs deleting.
``string.format('%d')`` because Lua would write a microsecond time in exponent notation."""


class RedisStore:
    """Buckets in Redis (``TESTLENS_REDIS_URL``): one script run per request, atomic there."""

    name = "redis"
    failures: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 1),  # once, for a pooled connection Redis dropped
        )
        self._script = self._redis.register_script(_GCRA_LUA)

    def take(self, key: str, now: int, limit: Limit) -> tuple[int, bool]:
        full_at, admitted = self._script(
            keys=[REDIS_PREFIX + key], args=[now, limit.interval, limit.burst]
        )
        return int(full_at), bool(admitted)


def store_for(settings: Settings, database: Database) -> Store:
    """The store ``TESTLENS_RATE_LIMIT_STORE`` names; by default Redis when it is configured,
    else the database on PostgreSQL (where several processes serve) and memory on SQLite
    (one process, and no write on every request)."""
    name = settings.rate_limit_store or (
        "redis"
        if settings.redis_url
        else "database"
        if database.dialect == "postgresql"
        else "memory"
    )
    if name == "redis":
        if not settings.redis_url:
            raise ValueError("TESTLENS_RATE_LIMIT_STORE=redis needs TESTLENS_REDIS_URL")
        return RedisStore(settings.redis_url)
    if name == "database":
        return DatabaseStore(database)
    return MemoryStore()


# The limiter ---------------------------------------------------------------------------------


class RateLimiter:
    """The app's limits and store; ``clock`` (epoch seconds) is replaceable for tests."""

    def __init__(
        self, limits: Limits, store: Store, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits
        self.store = store
        self.clock = clock
        self._fallback = MemoryStore()
        self._lock = threading.Lock()
        self._retry_store_at: int | None = None  # set while the store is failing

    def take(self, limit: Limit, key: str) -> Decision:
        now = int(self.clock() * 1_000_000)
        full_at, admitted = self._take(f"{limit.group}:{key}", now, limit)
        return Decision.of(limit, full_at, admitted, now)

    def _take(self, key: str, now: int, limit: Limit) -> tuple[int, bool]:
        with self._lock:
            retry_at = self._retry_store_at
        if retry_at is not None and now < retry_at:
            return self._fallback.take(key, now, limit)
        try:
            taken = self.store.take(key, now, limit)
        except self.store.failures as exc:
            with self._lock:
                first = self._retry_store_at is None
                self._retry_store_at = now + STORE_RETRY
            if first:  # once per outage, not once per request
                log.warning(
                    "rate limits: the %s store failed (%s: %s); each process limits on its "
                    "own until it answers again",
                    self.store.name,
                    type(exc).__name__,
                    str(exc)[:300],
                )
            return self._fallback.take(key, now, limit)
        if retry_at is not None:
            with self._lock:
                recovered = self._retry_store_at is not None
                self._retry_store_at = None
            if recovered:
                log.warning("rate limits: the %s store answers again", self.store.name)
        return taken


def _limiter(request: Request) -> RateLimiter | None:
    limiter: RateLimiter | None = request.app.state.rate_limiter
    return limiter


def _charge(request: Request, limiter: RateLimiter, limit: Limit, key: str, **shown: str) -> None:
    decision = limiter.take(limit, key)
    setattr(request.state, STATE, decision)
    if not decision.admitted:
        metrics.rate_limited(limit.dialect)
        details = {
            "group": limit.group,
            "limit": limit.burst,
            "per_minute": limit.per_minute,
            "reset": decision.reset,
            **shown,
        }
        raise rate_limited(decision.retry_after, details)


class Charged:
    """Dependency: the caller as ``check`` (``auth.require(scope)``) finds it, its request
    counted against its tenant's limit on the route (429 over it).

    A class rather than a closure, so that :func:`install` can tell the routes it guards."""

    def __init__(self, check: Callable[[Request], Principal]) -> None:
        self.check = check

    def __call__(self, request: Request) -> Principal:
        principal = self.check(request)
        limiter = _limiter(request)
        if limiter is not None:
            # The route's declared path (``/api/tests/{test_id}``), as the router matched it.
            limit = limiter.limits.for_route(request.scope["route"].path)
            if limit is not None:
                _charge(request, limiter, limit, principal.tenant_id)
        return principal


async def charge_upload(request: Request, tenant_id: str, repo: str) -> None:
    """Count an upload against its repository's limit (429 over it); the endpoint calls it
    as soon as the form names the repository, before reading the report."""
    limiter = _limiter(request)
    if limiter is not None:
        key = f"{tenant_id}:{name_key(repo)}"
        await run_in_threadpool(_charge, request, limiter, limiter.limits.uploads, key, repo=repo)


# Headers and the OpenAPI document ------------------------------------------------------------


class _Headers:
    """ASGI middleware: the request's ``X-RateLimit-*`` headers on whatever answer it gets,
    errors (and so the 429) included; handlers that build their own responses need not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # the dict request.state writes to, from here on

        async def sending(message: Message) -> None:
            decision = state.get(STATE)
            if message["type"] == "http.response.start" and decision is not None:
                headers = MutableHeaders(scope=message)
                for name, value in decision.headers().items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, sending)


_INTEGER = {"type": "integer"}
TOO_MANY_REQUESTS: dict[str, Any] = {
    "description": f"{ErrorCode.RATE_LIMITED.name}: {ErrorCode.RATE_LIMITED.when}",
    "content": {  # the shared body (errors.document declares it), with its one extra field
        "application/json": {
            "schema": {
                "allOf": [
                    {"$ref": f"#/components/schemas/{ErrorBody.__name__}"},
                    {
                        "type": "object",
                        "required": ["retry_after"],
                        "properties": {
                            "retry_after": {
                                "type": "integer",
                                "minimum": 1,
                                "description": "Seconds to wait, as Retry-After says.",
                            }
                        },
                    },
                ]
            }
        }
    },
    "headers": {
        "Retry-After": {"description": "Seconds to wait.", "schema": _INTEGER},
        "X-RateLimit-Limit": {"description": "The bucket's capacity.", "schema": _INTEGER},
        "X-RateLimit-Remaining": {"description": "Requests left now.", "schema": _INTEGER},
        "X-RateLimit-Reset": {
            "description": "Epoch seconds when the bucket is full again.",
            "schema": _INTEGER,
        },
    },
}


def _charged(dependant: Dependant) -> bool:
    return isinstance(dependant.call, Charged) or any(map(_charged, dependant.dependencies))


def _document(app: FastAPI, routes: Iterable[Any]) -> None:
    """Declare the 429 in the OpenAPI document on every route a :class:`Charged` guards
    (after ``errors.document``, installed first, has declared the other errors)."""
    limited = {
        (method.lower(), route.path)
        for route in routes
        if isinstance(route, APIRoute) and _charged(route.dependant)
        for method in route.methods or ()
    }
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path, operations in schema["paths"].items():
                for method, operation in operations.items():
                    if (method, path) in limited:
                        answers = {**operation.get("responses", {}), "429": TOO_MANY_REQUESTS}
                        operation["responses"] = dict(sorted(answers.items()))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension


def install(
    app: FastAPI, settings: Settings, database: Database, routers: Sequence[APIRouter]
) -> None:
    """Limit ``app`` as ``settings`` say (``app.state.rate_limiter``, None when off): the
    headers middleware, and the 429 in the OpenAPI document on ``routers``' limited routes
    (read from the routers: FastAPI keeps included routes in wrappers of its own).

    Call it before ``metrics.install``, whose middleware must be the outermost."""
    if not settings.rate_limits_enabled:
        app.state.rate_limiter = None
        return
    app.state.rate_limiter = RateLimiter(
        Limits.from_settings(settings), store_for(settings, database)
    )
    app.add_middleware(_Headers)
    _document(app, [route for router in routers for route in router.routes])
