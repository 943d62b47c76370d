"""The application factory: one call builds a ready server from settings.

Migrations run here, so starting the server is all the set-up a database needs. Each API
area contributes one router; this module only assembles them with the infrastructure
(errors, request ids, health checks, API docs).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import __version__
from . import (
    apidocs,
    client_dist,
    errors,
    flaky_feed,
    keys,
    logredact,
    metrics,
    quarantine,
    ratelimit,
    repos,
    runs,
    testcases,
)
from .analytics import endpoints as analytics
from .auth import KeyUsage, KeyUsageWriter
from .database import Database, upgrade
from .durations import endpoints as durations
from .fixes import endpoints as fixes
from .fixes.proposals import FixPullRequests
from .github import endpoints as github
from .github.client import GitHubApp
from .github.tasks import delivery_processor
from .ingest import endpoints as ingest
from .llm import LanguageModel
from .orchestration import endpoints as orchestration
from .orchestration import shard_plans, stream
from .orchestration.connections import connection_renewer
from .orchestration.live import fan_out
from .orchestration.tasks import queue_sweeper
from .retention import endpoints as retention
from .retention.tasks import retention_sweeper
from .rootcause.tasks import analyser
from .settings import Settings
from .signing import Keys
from .webhooks import endpoints as webhooks
from .webhooks.tasks import delivery_worker
from .workers import running

READY_WITHIN = 1.0
"""Seconds ``/readyz`` waits for the database before it answers 503."""
KEY_USAGE_WRITE_SECONDS = 10.0
"""How often keys' last-use times are written (they are shown to the minute)."""

ROUTERS = (
    ingest.router,
    runs.router,
    flaky_feed.router,
    repos.router,
    testcases.router,
    analytics.router,
    fixes.router,
    quarantine.router,
    webhooks.router,
    github.router,
    durations.router,
    shard_plans.router,
    orchestration.router,
    stream.router,
    keys.router,
    retention.router,
    client_dist.router,
)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str


def settle_heap() -> None:
    """Move what start-up built (modules, the app, the database's metadata) out of the
    garbage collector's sight: it lives as long as the process, yet every full collection
    would walk it again, and an upload of 10,000 tests triggers several (about a tenth of
    its ingest time without this). Collection itself is unchanged for everything made
    later, on every thread. ``testlens serve`` calls it once, after building its app; an app
    does not, since a process that builds many (the test suite) would keep every frozen
    app's reference cycles for good."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    database = Database(
        settings.database_url, settings.database_timeout_seconds, settings.statement_timeout_seconds
    )
    upgrade(database.engine)

    key_usage = KeyUsage()

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        with (
            running(KeyUsageWriter(key_usage, database, KEY_USAGE_WRITE_SECONDS)),
            delivery_worker(served),
            delivery_processor(served),
            retention_sweeper(served),
            queue_sweeper(served),
            analyser(served),
            connection_renewer(served),
            fan_out(database.listen_url),
        ):
            yield
        if language_model is not None:
            language_model.close()
        database.dispose()

    app = FastAPI(
        title="testlens",
        version=__version__,
        description="Self-hosted test intelligence for CI.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.keys = Keys.load(database, settings.secret_key)
    app.state.github_app = GitHubApp.from_settings(settings)  # None when not configured
    # The model that writes root-cause explanations, if one is configured (docs/llm.md).
    language_model = LanguageModel.from_settings(settings)
    app.state.language_model = language_model
    # Draft pull requests fixing flaky tests: only with both the model and the App.
    app.state.fix_pull_requests = FixPullRequests.from_settings(
        settings, database, language_model, app.state.github_app
    )
    app.state.key_usage = key_usage
    app.state.ingest_slots = asyncio.Semaphore(
        settings.ingest_concurrency or (2 if database.dialect == "sqlite" else 4)
    )
    errors.install(app)
    logredact.install()
    apidocs.install(app, app.openapi_url or "/openapi.json")
    ratelimit.install(app, settings, database, ROUTERS)

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            response = await call_next(request)
        except Exception:  # answered here so the connection stays usable
            return errors.internal_error(rid)
        response.headers["X-Request-ID"] = rid
        return response

    # After every other middleware: the last added is the outermost.
    metrics.install(app, database.engine, settings.metrics_token)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Health:  # async: never waits for a thread of the request pool
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["health"],
        responses={
            200: {"model": Readiness},
            503: {"description": "The database does not answer."},
        },
    )
    async def readyz() -> JSONResponse:
        """Readiness: the database answers, within a second (its error goes to the log)."""
        problem = await database.problem(within=READY_WITHIN)
        if problem is not None:
            errors.log.warning("not ready: the database %s", problem)
            return errors.database_unavailable()
        return JSONResponse({"status": "ready", "database": database.dialect})

    for router in ROUTERS:
        app.include_router(router)
    return app
