"""The SQL of the Unfold analytics: counts over ``test_cases``, ``test_events``, daily
rollups, fix attempts and builds, each an index range of one tenant or repository."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..models import (
    Build,
    DailyRollup,
    FixAttempt,
    Quarantine,
    Repository,
    TestCase,
    TestEvent,
    TestState,
)
from ..quarantine import active


class TestCounts(NamedTuple):
    total: int
    flaky: int
    critical: int


def repo_ids(session: Session, tenant_id: str) -> list[str]:
    return list(session.scalars(select(Repository.id).where(Repository.tenant_id == tenant_id)))


def test_counts(
    session: Session, repo_ids: Sequence[str], seen_since: datetime, critical_rate: float
) -> TestCounts:
    """Tests seen since ``seen_since``; of them the flaky ones, and the flaky ones whose
    flake score reaches ``critical_rate``."""
    if not repo_ids:
        return TestCounts(0, 0, 0)
    flaky = TestCase.state == "flaky"
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((flaky, 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((flaky & (TestCase.flake_score >= critical_rate), 1), else_=0)), 0
            ),
        ).where(TestCase.repo_id.in_(repo_ids), TestCase.last_seen_at >= seen_since)
    ).one()
    return TestCounts(int(row[0]), int(row[1]), int(row[2]))


def rollup_totals(
    session: Session, repo_ids: Sequence[str], first: date, last: date
) -> tuple[int, int]:
    """(test runs, flaky test runs) of the repositories from day ``first`` to ``last``."""
    if not repo_ids:
        return 0, 0
    row = session.execute(
        select(
            func.coalesce(func.sum(DailyRollup.test_runs), 0),
            func.coalesce(func.sum(DailyRollup.flaky_test_runs), 0),
        ).where(
            DailyRollup.repo_id.in_(repo_ids),
            DailyRollup.day >= first.isoformat(),
            DailyRollup.day <= last.isoformat(),
        )
    ).one()
    return int(row[0]), int(row[1])


def flaky_turns(session: Session, repo_ids: Sequence[str], since: datetime) -> tuple[int, int]:
    """Tests that turned flaky since ``since`` (from healthy or broken), and tests that
    stopped being flaky (resolved to healthy), each counted once."""
    if not repo_ids:
        return 0, 0

    def distinct_tests(*conditions: Any) -> int:
        found = session.scalar(
            select(func.count(func.distinct(TestEvent.test_id))).where(
                TestEvent.repo_id.in_(repo_ids), TestEvent.at >= since, *conditions
            )
        )
        return int(found or 0)

    turned = distinct_tests(
        TestEvent.to_state == "flaky", TestEvent.from_state.in_(("healthy", "broken"))
    )
    stopped = distinct_tests(TestEvent.from_state == "flaky", TestEvent.to_state == "healthy")
    return turned, stopped


def pull_request_counts(session: Session, tenant_id: str) -> tuple[int, int]:
    """Pull requests with fix attempts, and those of them merged (each counted once per
    repository and number)."""
    rows = session.execute(
        select(
            FixAttempt.repo_id,
            FixAttempt.pr_number,
            func.max(case((FixAttempt.merged, 1), else_=0)),
        )
        .where(FixAttempt.tenant_id == tenant_id, FixAttempt.pr_number.is_not(None))
        .group_by(FixAttempt.repo_id, FixAttempt.pr_number)
    ).all()
    return len(rows), sum(1 for row in rows if row[2])


def quarantined_flakes(
    session: Session, tenant_id: str, now: datetime
) -> list[tuple[datetime, str]]:
    """(quarantined since, stored state) of each environment of the tenant's quarantined
    tests."""
    rows = session.execute(
        select(Quarantine.created_at, TestState.data)
        .join(TestState, TestState.test_id == Quarantine.test_id)
        .join(Repository, Repository.id == Quarantine.repo_id)
        .where(Repository.tenant_id == tenant_id, active(now))
    )
    return [(since, data) for since, data in rows]


def verified_fix_flakes(session: Session, tenant_id: str) -> list[tuple[datetime, str]]:
    """(merged at, stored state) of each environment of the tenant's verified fixes' tests."""
    rows = session.execute(
        select(FixAttempt.merged_at, TestState.data)
        .join(TestState, TestState.test_id == FixAttempt.test_id)
        .where(
            FixAttempt.tenant_id == tenant_id,
            FixAttempt.verdict == "verified",
            FixAttempt.merged_at.is_not(None),
        )
    )
    return [(merged_at, data) for merged_at, data in rows if merged_at is not None]


def build_durations(session: Session, tenant_id: str, newest: int) -> list[float]:
    """Durations (ms) of the tenant's newest builds that took any time."""
    return [
        float(ms)
        for ms in session.scalars(
            select(Build.duration_ms)
            .where(Build.tenant_id == tenant_id, Build.duration_ms > 0)
            .order_by(Build.created_at.desc())
            .limit(newest)
        )
    ]


def rollups(session: Session, repo_id: str, first: date | None) -> Sequence[DailyRollup]:
    query = select(DailyRollup).where(DailyRollup.repo_id == repo_id)
    if first is not None:
        query = query.where(DailyRollup.day >= first.isoformat())
    return session.scalars(query).all()


def repo_tests(
    session: Session, repo_id: str, seen_since: datetime | None
) -> list[tuple[str, str | None]]:
    """(state, root-cause category) of the repository's tests seen since ``seen_since``."""
    query = select(TestCase.state, TestCase.root_cause_category).where(TestCase.repo_id == repo_id)
    if seen_since is not None:
        query = query.where(TestCase.last_seen_at >= seen_since)
    return [(state, cause) for state, cause in session.execute(query)]


def fixes_merged(session: Session, repo_id: str, since: datetime | None) -> int:
    query = select(func.count()).where(FixAttempt.repo_id == repo_id, FixAttempt.merged.is_(True))
    if since is not None:
        query = query.where(FixAttempt.merged_at >= since)
    return int(session.scalar(query) or 0)
