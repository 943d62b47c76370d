"""Prometheus metrics at ``GET /metrics``: HTTP traffic, ingest, webhook deliveries, rate
limiting and the database pool.

Each app keeps its figures in a :class:`~prometheus_client.CollectorRegistry` of its own
(``app.state.metrics``), never in the library's global default registry: several apps in one
process (the test suite serves many) then neither collide on metric names nor count each
other's requests. A ``testlens serve`` process is one app, so each process exposes its own
figures and Prometheus, scraping every process as its own target, sums them; no
multi-process mode is needed.

Code that runs while a request is served (ingest, the rate limiter) records into the serving
app's metrics through :func:`current`, which the middleware sets for the request, so service
functions keep their signatures. Background work (the webhook worker) is handed the app's
:class:`Metrics` when it is built.

The route takes its own scrape token (``TESTLENS_METRICS_TOKEN``), not a tenant's API key: the
figures span every tenant, and a Prometheus server is no tenant. Without that setting the
route answers 404.

Not here yet: the orchestration queue's depth and its lease expiries. They belong to the
orchestration feature that will own that queue, and will be added with it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import bearer_token
from .errors import ApiError, ErrorCode, error_responses, unauthorized

MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text exposition format, which every Prometheus version reads (no name here
needs the escaping of the newer formats)."""
UNMATCHED = "unmatched"
"""The ``route`` label of requests no route matched: one value, whatever the URL."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods kept as labels; any other (a client may send anything) is ``other``."""
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A 50 MB report takes tens of seconds to parse or store: the default buckets end at 10 s.
_INGEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
DELIVERY_OUTCOMES = ("delivered", "retried", "refused", "dead_lettered")
"""What a webhook delivery attempt came to (see :attr:`Metrics.webhook_attempts`)."""


class Metrics:
    """One app's instruments, all registered in the app's own :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "testlens_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        # No status label: the counter has it, and a histogram per status multiplies series.
        self.http_seconds = Histogram(
            "testlens_http_request_duration_seconds",
            "Seconds from a request's arrival to its answer's last byte, by method and route.",
            ("method", "route"),
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )
        self.results_stored = Counter(
            "testlens_ingest_results",
            "Test results (attempts, retries included) stored by uploads; a duplicate upload "
            "stores none.",
            registry=self.registry,
        )
        self.parse_seconds = Histogram(
            "testlens_ingest_parse_seconds",
            "Seconds parsing an uploaded report, unreadable ones included.",
            buckets=_INGEST_BUCKETS,
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "testlens_ingest_store_seconds",
            "Seconds storing a parsed report (its one transaction).",
            buckets=_INGEST_BUCKETS,
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "testlens_webhook_delivery_attempts",
            "Webhook delivery attempts by outcome: delivered; retried (failed, tried again "
            "later); refused (the address is not allowed by policy, tried again later); "
            "dead_lettered (the last attempt allowed failed, whatever the reason).",
            ("outcome",),
            registry=self.registry,
        )
        for outcome in DELIVERY_OUTCOMES:  # at 0 from the start, for rate() and alerts
            self.webhook_attempts.labels(outcome)
        self.rate_limited_requests = Counter(
            "testlens_rate_limited_requests",
            "Requests refused by the rate limiter, by API dialect.",
            ("dialect",),
            registry=self.registry,
        )

    def request(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "other"
        route = route_template(scope)
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(method, route).observe(seconds)


UNSERVED = Metrics()
"""Where the figures of code that no app is serving go (a service function called by a
benchmark, a command or a test): recorded like any others, and never exposed."""

_serving: ContextVar[Metrics] = ContextVar("testlens_metrics", default=UNSERVED)


def current() -> Metrics:
    """The metrics of the app serving the current request, else :data:`UNSERVED`.

    The request's context reaches the threads that sync handlers, dependencies and
    ``run_in_threadpool`` run in, so service code finds it without being handed it."""
    return _serving.get()


@contextmanager
def serving(metrics: Metrics) -> Iterator[None]:
    """Make ``metrics`` :func:`current` within the block (the middleware's, per request)."""
    token = _serving.set(metrics)
    try:
        yield
    finally:
        _serving.reset(token)


def rate_limited(dialect: str) -> None:
    """Count one request the rate limiter refused, labelled with its API ``dialect``.

    Call it while the request is served: from a dependency or a handler, or from a middleware
    added before :func:`install` (which adds the outermost one). ``dialect`` must come from a
    fixed set, never from the request, to keep the series bounded."""
    current().rate_limited_requests.labels(dialect).inc()


def route_template(scope: Scope) -> str:
    """The path the matched route was declared with (``/api/tests/{test_id}``), never the
    URL, so the series are bounded by the routes; :data:`UNMATCHED` when no route matched.

    The router stores the route in the scope. The app includes its routers without a
    prefix, so a route's declared path is its whole template."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class _Instrumented:
    """ASGI middleware: counts and times every HTTP request, and sets :func:`current`.

    A request is recorded as its last body message is sent, before the client can have the
    whole answer, so a scrape made after a response arrived always counts it. A request that
    raises before answering counts as the 500 the server then gives."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        recorded = False

        async def recording(message: Message) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self.metrics.request(scope, status, time.perf_counter() - started)
                recorded = True
            await send(message)

        try:
            with serving(self.metrics):
                await self.app(scope, receive, recording)
        finally:
            if not recorded:
                self.metrics.request(scope, status, time.perf_counter() - started)


class PoolCollector:
    """The database connection pool's figures, read from the engine at each scrape.

    Only a :class:`~sqlalchemy.pool.QueuePool` (PostgreSQL's, and SQLite's for a database
    file) counts its connections; other pools (an in-memory SQLite database keeps one
    connection per thread) have no such figures, and the collector then reports none rather
    than made-up ones."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        pool = self._engine.pool  # read each time: Engine.dispose() replaces the pool
        if not isinstance(pool, QueuePool):
            return
        yield GaugeMetricFamily(
            "testlens_db_pool_checked_out",
            "Database connections in use now.",
            value=pool.checkedout(),
        )
        yield GaugeMetricFamily(
            "testlens_db_pool_size", "Connections the pool keeps open.", value=pool.size()
        )
        # SQLAlchemy counts overflow from -size up; below 0 means no connection beyond the size.
        yield GaugeMetricFamily(
            "testlens_db_pool_overflow",
            "Connections open beyond the pool size now.",
            value=max(pool.overflow(), 0),
        )


def authorize(token: str | None, authorization: str | None) -> None:
    """Let a scrape through only with the metrics token; 404 while there is none.

    ``hmac.compare_digest`` takes as long however much of a guess is right. The header is
    compared as the bytes it arrived as (Starlette decodes headers as Latin-1), so a header
    with any bytes in it is a 401, never an error."""
    if token is None:
        raise ApiError(
            ErrorCode.METRICS_DISABLED, "Metrics are off: set TESTLENS_METRICS_TOKEN to serve them"
        )
    given = bearer_token(authorization)
    if given is None:
        raise unauthorized("Missing metrics token: send Authorization: Bearer <metrics token>")
    if not hmac.compare_digest(given.encode("latin-1"), token.encode()):
        raise unauthorized(
            "Invalid metrics token: it is TESTLENS_METRICS_TOKEN, not an API key",
            ErrorCode.INVALID_METRICS_TOKEN,
        )


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The metrics, in the Prometheus text exposition format.",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    },
    **error_responses(
        ErrorCode.UNAUTHORIZED, ErrorCode.INVALID_METRICS_TOKEN, ErrorCode.METRICS_DISABLED
    ),
}


def install(app: FastAPI, engine: Engine, token: str | None) -> None:
    """Collect ``app``'s metrics (its database pool's from ``engine``) and serve them at
    ``GET /metrics`` to scrapers that send ``token``.

    Call it after every other middleware is added: the last one added is the outermost, so
    this one counts and times what clients get (the request id middleware's 500s included),
    and whatever runs inside it finds the request's metrics as :func:`current`."""
    metrics = Metrics()
    metrics.registry.register(PoolCollector(engine))
    app.state.metrics = metrics
    app.add_middleware(_Instrumented, metrics=metrics)

    @app.get("/metrics", tags=["health"], response_class=Response, responses=_RESPONSES)
    async def prometheus_metrics(request: Request) -> Response:
        """The server's metrics, for Prometheus: ``Authorization: Bearer <metrics token>``.

        Served on the event loop, not in a worker thread, so a scrape is answered even when
        every thread is busy with uploads: that is when the figures matter."""
        authorize(token, request.headers.get("authorization"))
        return Response(generate_latest(metrics.registry), media_type=MEDIA_TYPE)
