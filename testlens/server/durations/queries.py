"""The SQL of the durations area: duration histories, and the Durations API's job rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from ..database import Database
from ..models import DurationJob, TestCase, TestState, utcnow


class HistoryRow(NamedTuple):
    test_id: str
    file: str
    suite: str
    classname: str
    name: str
    durations: str  # JSON [[duration_ms, censored], ...], oldest first


class JobRow(NamedTuple):
    id: str
    tenant_id: str
    project: str
    status: str


class JobOutcome(NamedTuple):
    status: str
    result: bytes | None
    error: str | None


def has_states(session: Session, repo_id: str, environment: str | None) -> bool:
    """Whether the repository has test states in ``environment`` (None: in any named one)."""
    where = (
        TestState.environment != "" if environment is None else TestState.environment == environment
    )
    return bool(session.scalar(select(exists().where(TestState.repo_id == repo_id, where))))


def history_rows(session: Session, repo_id: str, environment: str) -> list[HistoryRow]:
    rows = session.execute(
        select(
            TestCase.id,
            TestCase.file,
            TestCase.suite,
            TestCase.classname,
            TestCase.name,
            TestState.durations,
        )
        .join(TestCase, TestCase.id == TestState.test_id)
        .where(TestState.repo_id == repo_id, TestState.environment == environment)
    )
    return [HistoryRow(*row) for row in rows]


def open_job(database: Database, session: Session, identity: dict[str, str], now: datetime) -> str:
    """The id of the job of ``identity`` (tenant, commit, shard group, project), created by
    the first shard that asks."""
    session.execute(
        database.upsert(DurationJob, list(identity)),
        {
            "id": str(uuid.uuid4()),
            **identity,
            "status": "created",
            "created_at": now,
            "updated_at": now,
        },
    )
    return session.execute(select(DurationJob.id).filter_by(**identity)).scalar_one()


def job(session: Session, job_id: str) -> JobRow | None:
    row = session.execute(
        select(
            DurationJob.id, DurationJob.tenant_id, DurationJob.project, DurationJob.status
        ).where(DurationJob.id == job_id)
    ).first()
    return None if row is None else JobRow(*row)


def job_outcome(session: Session, job_id: str) -> JobOutcome | None:
    row = session.execute(
        select(DurationJob.status, DurationJob.result, DurationJob.error).where(
            DurationJob.id == job_id
        )
    ).first()
    return None if row is None else JobOutcome(*row)


def job_report(session: Session, job_id: str) -> tuple[str, str, bytes]:
    """(tenant id, project, Brotli report) of a job whose report was uploaded."""
    tenant_id, project, report = session.execute(
        select(DurationJob.tenant_id, DurationJob.project, DurationJob.report).where(
            DurationJob.id == job_id
        )
    ).one()
    if report is None:
        raise ValueError(f"durations job {job_id} has no report")
    return tenant_id, project, report


def keep_report(session: Session, job_id: str, compressed: bytes) -> None:
    """Store the report unless another shard's upload got there first."""
    session.execute(
        update(DurationJob)
        .where(DurationJob.id == job_id, DurationJob.status == "created")
        .values(report=compressed, status="uploaded", updated_at=utcnow())
    )


def claim(session: Session, job_id: str, statuses: tuple[str, ...], stale_before: datetime) -> bool:
    """Mark the job computing if it is in ``statuses`` or has computed since before
    ``stale_before``; true for exactly one caller, whichever process it runs in."""
    stale = (DurationJob.status == "computing") & (DurationJob.updated_at < stale_before)
    claimed = session.execute(
        update(DurationJob)
        .where(DurationJob.id == job_id, DurationJob.status.in_(statuses) | stale)
        .values(status="computing", updated_at=utcnow())
    )
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def finish_job(session: Session, job_id: str, values: dict[str, Any]) -> None:
    session.execute(
        update(DurationJob).where(DurationJob.id == job_id).values(**values, updated_at=utcnow())
    )
