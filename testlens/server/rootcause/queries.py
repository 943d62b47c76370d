"""The SQL of root causes: signatures written at ingest, the tests whose analysis is due,
and one test's history as the classifier needs it (bounded: the newest runs only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..database import Database
from ..models import FailureSignature, Run, TestCase, TestResult

FAILED = ("failed", "error")


def write_signatures(database: Database, session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Add an upload's failures to each (test, signature)'s count, first and last seen."""
    if rows:
        statement = database.upsert(
            FailureSignature,
            ["test_id", "key"],
            update=("last_seen_at", "last_run_id"),
            increment=("count",),
        )
        session.execute(statement, list(rows))


def mark_due(session: Session, test_ids: Sequence[str], now: datetime) -> None:
    """Ask for the root cause of ``test_ids`` to be recomputed (new failures arrived)."""
    for start in range(0, len(test_ids), 500):
        session.execute(
            update(TestCase)
            .where(TestCase.id.in_(test_ids[start : start + 500]))
            .values(analysis_due_at=now)
        )


def due(session: Session, limit: int) -> list[tuple[str, datetime]]:
    """Tests whose analysis is due, the longest waiting first. Not locked: two processes
    may take one test, and the second analysis only repeats the first's answer."""
    query = (
        select(TestCase.id, TestCase.analysis_due_at)
        .where(TestCase.analysis_due_at.is_not(None))
        .order_by(TestCase.analysis_due_at)
        .limit(limit)
    )
    return [(test_id, at) for test_id, at in session.execute(query) if at is not None]


class Attempt(NamedTuple):
    id: int
    run_id: str
    status: str
    duration_ms: float
    environment: str | None
    error_type: str | None
    message: str | None
    stack: str | None
    shard: str | None
    check_name: str | None


def history(session: Session, test_id: str, limit: int) -> list[Attempt]:
    """The test's newest ``limit`` attempts, newest first, with their runs' shard and check."""
    rows = session.execute(
        select(
            TestResult.id,
            TestResult.run_id,
            TestResult.status,
            TestResult.duration_ms,
            TestResult.environment,
            TestResult.error_type,
            TestResult.error_message,
            TestResult.stack,
            Run.shard,
            Run.check_name,
        )
        .join(Run, Run.id == TestResult.run_id)
        .where(TestResult.test_id == test_id, Run.outage.is_(False))
        .order_by(TestResult.id.desc())
        .limit(limit)
    )
    return [Attempt._make(row) for row in rows]


def preceding(session: Session, run_id: str, before_id: int, limit: int) -> tuple[str, ...]:
    """The tests reported before result ``before_id`` in its run, nearest last: what ran
    before it on that machine, in report order."""
    rows = session.execute(
        select(TestCase.file, TestCase.classname, TestCase.name)
        .join(TestResult, TestResult.test_id == TestCase.id)
        .where(TestResult.run_id == run_id, TestResult.id < before_id, TestResult.attempt == 0)
        .order_by(TestResult.id.desc())
        .limit(limit)
    ).all()
    return tuple(shown(*row) for row in reversed(rows))


def co_failing(
    session: Session, test_id: str, run_ids: Sequence[str], limit: int
) -> list[tuple[str, int]]:
    """Other tests that failed in ``run_ids`` (the runs this test failed in), with how many
    of those runs each failed in, most first."""
    if not run_ids:
        return []
    runs = func.count(TestResult.run_id.distinct())
    rows = session.execute(
        select(TestCase.file, TestCase.classname, TestCase.name, runs)
        .join(TestCase, TestCase.id == TestResult.test_id)
        .where(
            TestResult.run_id.in_(run_ids),
            TestResult.status.in_(FAILED),
            TestResult.test_id != test_id,
        )
        .group_by(TestCase.id, TestCase.file, TestCase.classname, TestCase.name)
        .order_by(runs.desc())
        .limit(limit)
    ).all()
    return [(shown(file, classname, name), count) for file, classname, name, count in rows]


def shown(file: str, classname: str, name: str) -> str:
    """A test as explanations name it: ``file::Class::name`` (or what of it is known)."""
    return "::".join(part for part in (file, classname.rsplit(".", 1)[-1], name) if part)


def signatures(session: Session, test_id: str) -> list[FailureSignature]:
    return list(
        session.scalars(
            select(FailureSignature)
            .where(FailureSignature.test_id == test_id)
            .order_by(FailureSignature.count.desc())
            .limit(200)
        )
    )
