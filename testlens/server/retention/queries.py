"""The retention's SQL: policies, and deletions a batch of rows at a time.

Each deletion picks at most ``batch`` rows by an index range (oldest first where an index
orders them) and deletes them by primary key in one statement; the caller commits each batch
on its own. On PostgreSQL the pick skips rows another transaction holds, so the sweepers of
several server processes share the work instead of queueing behind one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, exists, func, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from ..database import Database
from ..models import (
    Build,
    CiJob,
    DailyRollup,
    FailureSignature,
    FixAttempt,
    GithubDelivery,
    Quarantine,
    Repository,
    RetentionPolicy,
    Run,
    RunEvent,
    ShardPlanRecord,
    Tenant,
    TestCase,
    TestEvent,
    TestResult,
    TestState,
    Webhook,
    WebhookDelivery,
    table_of,
    utcnow,
)
from ..models.builds import FINISHED as BUILD_FINISHED
from .schemas import RetentionOverrides

FINISHED = ("delivered", "dead")
"""Delivery statuses the retention applies to: a pending delivery is kept, however old."""

RunKey = tuple[datetime, str]
"""Where a run stands in the sweep's order: (created_at, id)."""


def overrides(session: Session, tenant_id: str) -> RetentionPolicy | None:
    return session.get(RetentionPolicy, tenant_id)


def save_overrides(
    database: Database, session: Session, tenant_id: str, values: RetentionOverrides
) -> None:
    row = {"tenant_id": tenant_id, "updated_at": utcnow(), **values.model_dump()}
    columns = tuple(name for name in row if name != "tenant_id")
    session.execute(database.upsert(RetentionPolicy, ["tenant_id"], update=columns), [row])


def tenants_with_overrides(session: Session) -> list[tuple[str, RetentionPolicy | None]]:
    """Every tenant, with its own retention if it set one."""
    rows = session.execute(
        select(Tenant.id, RetentionPolicy)
        .outerjoin(RetentionPolicy, RetentionPolicy.tenant_id == Tenant.id)
        .order_by(Tenant.id)
    )
    return [(tenant_id, own) for tenant_id, own in rows]


def repositories_oldest(
    session: Session, tenant_id: str
) -> list[tuple[str, datetime | None, datetime | None]]:
    """The tenant's repositories, each with its oldest run's and oldest state change's time
    (None: it has none): a sweep with nothing old to delete then writes nothing."""
    oldest_run = select(func.min(Run.created_at)).where(Run.repo_id == Repository.id)
    oldest_event = select(func.min(TestEvent.at)).where(TestEvent.repo_id == Repository.id)
    rows = session.execute(
        select(Repository.id, oldest_run.scalar_subquery(), oldest_event.scalar_subquery()).where(
            Repository.tenant_id == tenant_id
        )
    )
    return [(repo_id, run_at, event_at) for repo_id, run_at, event_at in rows]


def webhooks_oldest(session: Session, tenant_id: str) -> list[tuple[str, datetime | None]]:
    """The tenant's webhooks, each with its oldest delivery's creation time."""
    oldest = select(func.min(WebhookDelivery.created_at)).where(
        WebhookDelivery.webhook_id == Webhook.id
    )
    rows = session.execute(
        select(Webhook.id, oldest.scalar_subquery()).where(Webhook.tenant_id == tenant_id)
    )
    return [(webhook_id, created_at) for webhook_id, created_at in rows]


def delete_rows(
    session: Session,
    table: Table,
    condition: ColumnElement[bool],
    batch: int,
    oldest_first: InstrumentedAttribute[Any] | None = None,
) -> int:
    """Delete at most ``batch`` rows of ``table`` meeting ``condition``; how many went."""
    key = list(table.primary_key.columns)
    chosen = select(*key).where(condition).limit(batch).with_for_update(skip_locked=True)
    if oldest_first is not None:
        chosen = chosen.order_by(oldest_first)
    target = key[0] if len(key) == 1 else tuple_(*key)
    result = session.execute(
        delete(table).where(target.in_(chosen)).execution_options(synchronize_session=False)
    )
    deleted: int = result.rowcount  # type: ignore[attr-defined]
    return deleted


def runs_before(
    session: Session, repo_id: str, before: datetime | None, after: RunKey | None, limit: int
) -> list[RunKey]:
    """The repository's next ``limit`` runs created before ``before`` (None: all of them),
    oldest first, starting after ``after``."""
    query = select(Run.created_at, Run.id).where(Run.repo_id == repo_id)
    if before is not None:
        query = query.where(Run.created_at < before)
    if after is not None:
        at, run_id = after
        query = query.where(or_(Run.created_at > at, and_(Run.created_at == at, Run.id > run_id)))
    rows = session.execute(query.order_by(Run.created_at, Run.id).limit(limit))
    return [(at, run_id) for at, run_id in rows]


def delete_results(session: Session, run_ids: Sequence[str], batch: int) -> int:
    return delete_rows(session, table_of(TestResult), TestResult.run_id.in_(run_ids), batch)


def delete_emptied_runs(session: Session, repo_id: str, before: datetime, batch: int) -> int:
    """Runs created before ``before`` whose results are all gone."""
    condition = and_(
        Run.repo_id == repo_id,
        Run.created_at < before,
        ~exists().where(TestResult.run_id == Run.id),
    )
    return delete_rows(session, table_of(Run), condition, batch, Run.created_at)


def oldest_build(session: Session, tenant_id: str) -> datetime | None:
    return session.scalar(select(func.min(Build.created_at)).where(Build.tenant_id == tenant_id))


def delete_emptied_builds(session: Session, tenant_id: str, before: datetime, batch: int) -> int:
    """Finished builds created before ``before`` whose runs are all gone (their work items
    and leases go with them)."""
    condition = and_(
        Build.tenant_id == tenant_id,
        Build.created_at < before,
        Build.status.in_(BUILD_FINISHED),
        ~exists().where(Run.build_id == Build.id),
    )
    return delete_rows(session, table_of(Build), condition, batch, Build.created_at)


def oldest_live_end(session: Session, tenant_id: str) -> datetime | None:
    """When the earliest-ended of the tenant's runs that still have live events ended."""
    return session.scalar(
        select(func.min(Build.completed_at)).where(
            Build.tenant_id == tenant_id, exists().where(RunEvent.build_id == Build.id)
        )
    )


def delete_live_events(session: Session, tenant_id: str, before: datetime, batch: int) -> int:
    """Live events of the tenant's runs that ended before ``before``."""
    ended = select(Build.id).where(
        Build.tenant_id == tenant_id,
        Build.completed_at.is_not(None),
        Build.completed_at < before,
    )
    condition = and_(RunEvent.tenant_id == tenant_id, RunEvent.build_id.in_(ended))
    return delete_rows(session, table_of(RunEvent), condition, batch)


def delete_events(session: Session, repo_id: str, before: datetime, batch: int) -> int:
    condition = and_(TestEvent.repo_id == repo_id, TestEvent.at < before)
    return delete_rows(session, table_of(TestEvent), condition, batch, TestEvent.at)


def delete_finished_deliveries(
    session: Session, webhook_id: str, before: datetime, batch: int
) -> int:
    condition = and_(
        WebhookDelivery.webhook_id == webhook_id,
        WebhookDelivery.created_at < before,
        WebhookDelivery.status.in_(FINISHED),
    )
    table = table_of(WebhookDelivery)
    return delete_rows(session, table, condition, batch, WebhookDelivery.created_at)


INSTALLATION_EVENTS = ("installation", "installation_repositories")
"""GitHub events that stay: they are the record of which repositories an installation has,
read again when ``testlens github link`` gives it to a tenant (one per change, so few)."""


def _finished_github(attempts: int) -> ColumnElement[bool]:
    return and_(
        or_(GithubDelivery.processed_at.is_not(None), GithubDelivery.attempts >= attempts),
        GithubDelivery.event.not_in(INSTALLATION_EVENTS),
    )


def oldest_github_delivery(session: Session, attempts: int) -> datetime | None:
    """When the oldest GitHub delivery that is done with (applied, unusable, or failed
    ``attempts`` times) and is no installation event was received."""
    return session.scalar(
        select(func.min(GithubDelivery.received_at)).where(_finished_github(attempts))
    )


def delete_github_deliveries(session: Session, before: datetime, attempts: int, batch: int) -> int:
    """GitHub deliveries received before ``before`` that are done with and are no
    installation events: their GUIDs only recognise a redelivery, which GitHub offers for
    a few days."""
    condition = and_(GithubDelivery.received_at < before, _finished_github(attempts))
    table = table_of(GithubDelivery)
    return delete_rows(session, table, condition, batch, GithubDelivery.received_at)


REPOSITORY_TABLES = tuple(
    table_of(model)
    for model in (
        TestEvent,
        TestState,
        Quarantine,
        FixAttempt,
        FailureSignature,
        TestCase,
        Run,
        Build,
        DailyRollup,
        ShardPlanRecord,
        CiJob,
    )
)
"""Every table with a ``repo_id``, in an order that deletes each row before any it refers to
(results, which have none, go first, run by run)."""


def delete_repository_rows(session: Session, table: Table, repo_id: str, batch: int) -> int:
    return delete_rows(session, table, table.c.repo_id == repo_id, batch)


def delete_repository(session: Session, repo_id: str) -> None:
    """The repository row, and (by cascade) whatever was uploaded to it meanwhile."""
    session.execute(delete(Repository).where(Repository.id == repo_id))
