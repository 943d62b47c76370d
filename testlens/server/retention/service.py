"""The retention's logic, callable without HTTP: policies, the sweep, deleting a repository.

Every deletion here is a loop of short transactions, each deleting at most a batch of rows
(:data:`BATCH_ROWS`), so no transaction holds SQLite's write lock for long and uploads go on
between them; a sweep or deletion that stops half-way (a shutdown, an outage) leaves nothing
inconsistent, and the next one carries on from there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.orm import Session

from ..database import Database
from ..github.tasks import MAX_ATTEMPTS
from ..models import RetentionPolicy, utcnow
from ..scoping import find_repo
from ..settings import Settings
from . import queries
from .schemas import Retention, RetentionDays, RetentionOverrides

log = logging.getLogger("testlens.server.retention")

BATCH_ROWS = 2000
"""Rows one transaction deletes at most: a few milliseconds of SQLite's write lock."""
RUNS_PER_PICK = 500
"""Runs whose results one transaction deletes from (their ids are bound in its statement)."""


@dataclass(slots=True)
class Swept:
    """Rows a sweep deleted, by kind."""

    results: int = 0
    runs: int = 0
    events: int = 0
    deliveries: int = 0
    builds: int = 0
    live_events: int = 0
    github_deliveries: int = 0

    def add(self, other: Swept) -> None:
        self.results += other.results
        self.runs += other.runs
        self.events += other.events
        self.deliveries += other.deliveries
        self.builds += other.builds
        self.live_events += other.live_events
        self.github_deliveries += other.github_deliveries

    def __bool__(self) -> bool:
        return any(astuple(self))


def defaults(settings: Settings) -> RetentionDays:
    """The server's retention, for tenants that set none of their own."""
    return RetentionDays(
        results_days=settings.retention_results_days,
        runs_days=settings.retention_runs_days,
        events_days=settings.retention_events_days,
        deliveries_days=settings.retention_deliveries_days,
    )


def _own(row: RetentionPolicy | None) -> RetentionOverrides:
    if row is None:
        return RetentionOverrides()
    return RetentionOverrides.model_validate(row, from_attributes=True)


def _in_force(server: RetentionDays, own: RetentionOverrides) -> RetentionDays:
    chosen = own.model_dump(exclude_none=True)
    return server.model_copy(update=chosen)


def _retention(settings: Settings, own: RetentionOverrides) -> Retention:
    server = defaults(settings)
    return Retention(**_in_force(server, own).model_dump(), overrides=own, defaults=server)


def retention(database: Database, settings: Settings, tenant_id: str) -> Retention:
    """The tenant's retention: in force, its own values and the server's defaults."""
    with database.read() as session:
        own = _own(queries.overrides(session, tenant_id))
    return _retention(settings, own)


def set_retention(
    database: Database, settings: Settings, tenant_id: str, own: RetentionOverrides
) -> Retention:
    """Replace the tenant's own retention; the next sweep applies it."""
    with database.transaction() as session:
        queries.save_overrides(database, session, tenant_id, own)
    return _retention(settings, own)


def _stopped(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _older(at: datetime | None, cutoff: datetime) -> bool:
    return at is not None and at < cutoff


def _drain(
    database: Database,
    delete_batch: Callable[[Session], int],
    batch: int,
    stop: threading.Event | None,
) -> int:
    """Run ``delete_batch`` a transaction at a time until it deletes less than a batch."""
    total = 0
    while not _stopped(stop):
        with database.transaction() as session:
            deleted = delete_batch(session)
        total += deleted
        if deleted < batch:
            break
    return total


def _delete_results(
    database: Database,
    repo_id: str,
    before: datetime | None,
    batch: int,
    stop: threading.Event | None,
) -> int:
    """The results of the repository's runs created before ``before`` (None: of every run),
    the oldest runs first. Each transaction picks the next runs and deletes a batch of their
    results; the pick moves on once they have none left, so runs kept after their results
    went are passed over once per sweep, not once per batch."""
    total = 0
    after: queries.RunKey | None = None
    while not _stopped(stop):
        with database.transaction() as session:
            runs = queries.runs_before(session, repo_id, before, after, RUNS_PER_PICK)
            run_ids = [run_id for _at, run_id in runs]
            deleted = queries.delete_results(session, run_ids, batch) if runs else 0
        total += deleted
        if deleted == batch:
            continue  # these runs may have more
        if len(runs) < RUNS_PER_PICK:
            break
        after = runs[-1]
    return total


def sweep_tenant(
    database: Database,
    tenant_id: str,
    policy: RetentionDays,
    now: datetime,
    batch: int = BATCH_ROWS,
    stop: threading.Event | None = None,
    live_days: int = 7,
) -> Swept:
    """Delete what the tenant keeps no longer under ``policy``, as of ``now``: results, then
    the runs left without any, then the finished builds left without runs, the live events
    of runs that ended ``live_days`` ago, state changes, finished webhook deliveries. Only
    what holds rows older than a retention is written to, so a sweep with nothing to delete
    takes no write lock."""
    with database.read() as session:
        repos = queries.repositories_oldest(session, tenant_id)
        hooks = queries.webhooks_oldest(session, tenant_id)
        oldest_build = queries.oldest_build(session, tenant_id)
        oldest_live = queries.oldest_live_end(session, tenant_id)
    results_before = now - timedelta(days=policy.results_days)
    runs_before = now - timedelta(days=policy.runs_days)
    events_before = now - timedelta(days=policy.events_days)
    deliveries_before = now - timedelta(days=policy.deliveries_days)
    swept = Swept()
    for repo_id, oldest_run, oldest_event in repos:
        if _older(oldest_run, results_before):
            swept.results += _delete_results(database, repo_id, results_before, batch, stop)
        if _older(oldest_run, runs_before):
            emptied = partial(
                queries.delete_emptied_runs, repo_id=repo_id, before=runs_before, batch=batch
            )
            swept.runs += _drain(database, emptied, batch, stop)
        if _older(oldest_event, events_before):
            events = partial(
                queries.delete_events, repo_id=repo_id, before=events_before, batch=batch
            )
            swept.events += _drain(database, events, batch, stop)
    live_before = now - timedelta(days=live_days)
    if _older(oldest_live, live_before):
        live = partial(
            queries.delete_live_events, tenant_id=tenant_id, before=live_before, batch=batch
        )
        swept.live_events += _drain(database, live, batch, stop)
    if _older(oldest_build, runs_before):
        emptied_builds = partial(
            queries.delete_emptied_builds, tenant_id=tenant_id, before=runs_before, batch=batch
        )
        swept.builds += _drain(database, emptied_builds, batch, stop)
    for webhook_id, oldest_delivery in hooks:
        if not _older(oldest_delivery, deliveries_before):
            continue
        deliveries = partial(
            queries.delete_finished_deliveries,
            webhook_id=webhook_id,
            before=deliveries_before,
            batch=batch,
        )
        swept.deliveries += _drain(database, deliveries, batch, stop)
    return swept


def sweep(
    database: Database,
    settings: Settings,
    now: datetime | None = None,
    batch: int = BATCH_ROWS,
    stop: threading.Event | None = None,
) -> Swept:
    """Sweep the GitHub App's deliveries (the server's, not a tenant's) under the server's
    deliveries retention, then every tenant under its retention (its own values, else the
    server's), as of ``now``; returns early once ``stop`` is set."""
    now = now or utcnow()
    server = defaults(settings)
    with database.read() as session:
        tenants = [
            (tenant_id, _own(row)) for tenant_id, row in queries.tenants_with_overrides(session)
        ]
        oldest_github = queries.oldest_github_delivery(session, MAX_ATTEMPTS)
    swept = Swept()
    github_before = now - timedelta(days=server.deliveries_days)
    if _older(oldest_github, github_before):
        github = partial(
            queries.delete_github_deliveries,
            before=github_before,
            attempts=MAX_ATTEMPTS,
            batch=batch,
        )
        swept.github_deliveries += _drain(database, github, batch, stop)
    for tenant_id, own in tenants:
        if _stopped(stop):
            break
        policy = _in_force(server, own)
        swept.add(
            sweep_tenant(
                database, tenant_id, policy, now, batch, stop, settings.retention_live_events_days
            )
        )
    return swept


def delete_repository(
    database: Database, tenant_id: str, name: str, batch: int = BATCH_ROWS
) -> None:
    """Delete the tenant's repository ``name`` and everything of it, a batch at a time.

    The repository row goes last: until then the repository is still there, so a deletion
    cut short is finished by deleting it again. Its webhook deliveries already queued are
    the tenant's, not the repository's, and stay."""
    with database.read() as session:
        repo = find_repo(session, tenant_id, name)
        repo_id, shown = repo.id, repo.name
    total = _delete_results(database, repo_id, None, batch, None)
    for table in queries.REPOSITORY_TABLES:
        rows = partial(queries.delete_repository_rows, table=table, repo_id=repo_id, batch=batch)
        total += _drain(database, rows, batch, None)
    with database.transaction() as session:
        queries.delete_repository(session, repo_id)
    log.info("deleted repository %s (%s) and its %d rows", shown, repo_id, total)
