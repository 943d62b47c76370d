"""The per-tenant cap on open ``/api/v1/ws`` connections, counted in the database so that
it holds across server processes: a connection is a row of ``live_connections`` from the
moment it is admitted until it closes.

Admissions of one tenant wait for each other (:meth:`Database.one_at_a_time`), so two
processes cannot both admit a tenant's last free connection. Each process renews the rows
of its open connections every :data:`RENEW_SECONDS`; a row whose ``seen_at`` is older than
:data:`LEASE_SECONDS`, left by a process that died, no longer counts and is deleted by the
tenant's next admission.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import delete, func, select, update

from ..database import DATABASE_DOWN, Database
from ..models import LiveConnection, utcnow
from ..workers import Outage, Worker, running

log = logging.getLogger("testlens.server.orchestration.connections")

LEASE_SECONDS = 60.0
"""How long a connection's row counts without being renewed."""
RENEW_SECONDS = 20.0
"""How often a process renews the rows of its open connections."""


def admit(database: Database, tenant_id: str, cap: int) -> str | None:
    """Count a new connection of the tenant, unless it has ``cap`` open already: its id,
    or None when refused."""
    now = utcnow()
    stale = now - timedelta(seconds=LEASE_SECONDS)
    with database.transaction() as session:
        database.one_at_a_time(session, f"live-connections:{tenant_id}")
        session.execute(
            delete(LiveConnection).where(
                LiveConnection.tenant_id == tenant_id, LiveConnection.seen_at < stale
            )
        )
        open_now = session.scalar(select(func.count()).where(LiveConnection.tenant_id == tenant_id))
        if (open_now or 0) >= cap:
            return None
        ident = str(uuid.uuid4())
        session.add(LiveConnection(id=ident, tenant_id=tenant_id, opened_at=now, seen_at=now))
        return ident


def release(database: Database, ident: str) -> None:
    """Stop counting a connection that closed. With the database down, its row is left to
    stop counting on its own, :data:`LEASE_SECONDS` after its last renewal."""
    try:
        with database.transaction() as session:
            session.execute(delete(LiveConnection).where(LiveConnection.id == ident))
    except DATABASE_DOWN as exc:
        log.warning("a closed live connection counts until its lease lapses: %s", exc)


class Renewer(Worker):
    """Renews the rows of this process's open connections (one statement a turn)."""

    name = "testlens-live-connections"

    def __init__(self, database: Database) -> None:
        super().__init__()
        self._database = database
        self._open: set[str] = set()
        self._lock = threading.Lock()

    def opened(self, ident: str) -> None:
        with self._lock:
            self._open.add(ident)

    def closed(self, ident: str) -> None:
        with self._lock:
            self._open.discard(ident)

    def _run(self, stop: threading.Event) -> None:
        outage = Outage(log, "live connection renewals", 1.0)
        while not stop.wait(RENEW_SECONDS):
            with self._lock:
                idents = list(self._open)
            if not idents:
                continue
            try:
                with self._database.transaction() as session:
                    session.execute(
                        update(LiveConnection)
                        .where(LiveConnection.id.in_(idents))
                        .values(seen_at=utcnow())
                    )
            except DATABASE_DOWN as exc:
                stop.wait(outage.failed(exc))
                continue
            outage.answered()


@contextmanager
def connection_renewer(app: FastAPI) -> Iterator[Renewer]:
    """Run a :class:`Renewer` while ``app`` serves (the app's lifespan enters this)."""
    renewer = Renewer(app.state.database)
    app.state.live_connections = renewer
    with running(renewer):
        yield renewer
