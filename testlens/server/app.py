"""The application factory: one call builds a ready server from settings.

Migrations run here, so starting the server is all the set-up a database needs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from .. import __version__
from . import analytics, durations, errors, ingest, insights, quarantine, webhooks
from .database import Database, upgrade
from .settings import Settings
from .signing import Keys


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    database = Database(settings.database_url)
    upgrade(database.engine)

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        with webhooks.delivery_worker(served):
            yield
        database.dispose()

    app = FastAPI(
        title="testlens",
        version=__version__,
        description="Self-hosted test intelligence for CI.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.keys = Keys.load(database)
    errors.install(app)

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

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: the database answers."""
        try:
            with database.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means "not ready"
            body = errors.error_body(503, "DATABASE_UNAVAILABLE", f"Database unreachable: {exc}")
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "database": database.dialect})

    app.include_router(ingest.router)
    app.include_router(insights.router)
    app.include_router(analytics.router)
    app.include_router(quarantine.router)
    app.include_router(webhooks.router)
    app.include_router(durations.router)
    return app
