"""The SQL of fix attempts: finding the tests a pull request names, its attempts, and a
test's mainline runs around a merge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from ...core.identity import TestKey
from ..models import FixAttempt, Repository, Run, TestCase, TestResult

BEFORE_RUNS = 200
"""Mainline runs before a merge that its fix is compared with (the newest ones)..."""
BEFORE_DAYS = 90
"""...within this many days of the merge: the rate of an older version of the test says
little of the code the fix changed."""
AFTER_RUNS = 1000
"""Mainline runs after a merge that count (the oldest ones): enough to prove a rate under
1%, and a bound on the work of judging."""

_FAILING = ("failed", "error")


def test_in_repo(session: Session, repo_id: str, test_id: str) -> str | None:
    found: str | None = session.scalar(
        select(TestCase.id).where(TestCase.id == test_id, TestCase.repo_id == repo_id)
    )
    return found


def tests_in_file(session: Session, repo_id: str, file: str) -> dict[TestKey, str]:
    """The repository's tests in one file, by identity (the ``(repo_id, file)`` index)."""
    rows = session.execute(
        select(TestCase.file, TestCase.suite, TestCase.classname, TestCase.name, TestCase.id).where(
            TestCase.repo_id == repo_id, TestCase.file == file
        )
    )
    return {
        TestKey(file, suite, classname, name): tid for file, suite, classname, name, tid in rows
    }


def tests_named(session: Session, repo_id: str, name: str) -> list[tuple[str, str]]:
    """(classname, id) of the repository's tests with this name."""
    rows = session.execute(
        select(TestCase.classname, TestCase.id).where(
            TestCase.repo_id == repo_id, TestCase.name == name
        )
    )
    return [(classname, tid) for classname, tid in rows]


def attempts_of_pull(session: Session, repo_id: str, number: int) -> Sequence[FixAttempt]:
    return session.scalars(
        select(FixAttempt).where(FixAttempt.repo_id == repo_id, FixAttempt.pr_number == number)
    ).all()


def mainline(branches: Sequence[str]) -> Any:
    """The condition for a run that is evidence on the mainline: not of a pull request, on
    one of ``branches`` or naming no branch (as ingest decides), and no outage."""
    return and_(
        Run.pr_number.is_(None),
        or_(Run.branch.is_(None), Run.branch.in_(list(branches))),
        Run.outage.is_(False),
    )


def runs_around(
    session: Session, test_id: str, repo_id: str, branches: Sequence[str], merged_at: datetime
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(runs, failing runs) of the test on the mainline before the merge (the newest
    :data:`BEFORE_RUNS` within :data:`BEFORE_DAYS`) and from it on (the oldest
    :data:`AFTER_RUNS`). A run counts when the test ran in it (an attempt not skipped); it
    fails when any attempt failed or errored, a retry that passed included."""
    failed = func.max(case((TestResult.status.in_(_FAILING), 1), else_=0))
    per_run = (
        select(Run.created_at, failed.label("failed"))
        .join(TestResult, TestResult.run_id == Run.id)
        .where(
            TestResult.test_id == test_id,
            TestResult.status != "skipped",
            Run.repo_id == repo_id,
            mainline(branches),
        )
        .group_by(Run.id, Run.created_at)
    )
    before = session.execute(
        per_run.where(
            Run.created_at < merged_at, Run.created_at >= merged_at - timedelta(days=BEFORE_DAYS)
        )
        .order_by(Run.created_at.desc())
        .limit(BEFORE_RUNS)
    ).all()
    after = session.execute(
        per_run.where(Run.created_at >= merged_at).order_by(Run.created_at).limit(AFTER_RUNS)
    ).all()
    return (
        (len(before), sum(row.failed for row in before)),
        (len(after), sum(row.failed for row in after)),
    )


def newest(
    session: Session, tenant_id: str, repo_id: str | None, status: str | None, limit: int
) -> Sequence[tuple[FixAttempt, TestCase, Repository]]:
    """The tenant's newest attempts with their test and repository (the tenant and time
    index), optionally of one repository and one status."""
    query = (
        select(FixAttempt, TestCase, Repository)
        .join(TestCase, TestCase.id == FixAttempt.test_id)
        .join(Repository, Repository.id == FixAttempt.repo_id)
        .where(FixAttempt.tenant_id == tenant_id)
    )
    if repo_id is not None:
        query = query.where(FixAttempt.repo_id == repo_id)
    if status is not None:
        query = query.where(FixAttempt.status == status)
    rows = session.execute(
        query.order_by(FixAttempt.created_at.desc(), FixAttempt.id.desc()).limit(limit)
    ).all()
    return [(attempt, test, repo) for attempt, test, repo in rows]


def count_by_status(session: Session, tenant_id: str, repo_id: str | None) -> dict[str, int]:
    query = select(FixAttempt.status, func.count()).where(FixAttempt.tenant_id == tenant_id)
    if repo_id is not None:
        query = query.where(FixAttempt.repo_id == repo_id)
    return {status: count for status, count in session.execute(query.group_by(FixAttempt.status))}


def attempt_of_tenant(
    session: Session, tenant_id: str, attempt_id: str
) -> tuple[FixAttempt, Repository] | None:
    row = session.execute(
        select(FixAttempt, Repository)
        .join(Repository, Repository.id == FixAttempt.repo_id)
        .where(FixAttempt.id == attempt_id, FixAttempt.tenant_id == tenant_id)
    ).first()
    return None if row is None else (row[0], row[1])


def merged_unverified(session: Session, repo_id: str) -> Sequence[FixAttempt]:
    """The repository's merged attempts whose fix is not verified yet."""
    return session.scalars(
        select(FixAttempt).where(
            FixAttempt.repo_id == repo_id,
            FixAttempt.merged.is_(True),
            FixAttempt.verdict != "verified",
        )
    ).all()


def tests_in_run(session: Session, run_id: str, test_ids: set[str]) -> set[str]:
    """Those of ``test_ids`` that the run holds results of."""
    rows = session.scalars(
        select(TestResult.test_id)
        .where(TestResult.run_id == run_id, TestResult.test_id.in_(sorted(test_ids)))
        .distinct()
    )
    return set(rows)
