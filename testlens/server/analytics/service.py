"""Analytics, read from the per-test figures on ``test_cases``, the test state history
(``test_events``) and the daily rollups, never from raw results, so that latency does not
grow with history.

Two dialects: ``/api/v1/analytics`` (flaky tests by rate, daily trends, what to fix first)
and the Unfold dialect's ``/api/analytics`` (a tenant's dashboard and a repository's
figures over a period). ``docs/analytics.md`` gives every formula.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...core import flakiness as detection
from ..database import Database
from ..errors import missing_field
from ..flaky_feed import FEED_WINDOW
from ..models import DailyRollup, Repository, TestCase, iso, utcnow
from ..quarantine import active_quarantines
from ..scoping import find_repo, find_repo_by_id
from ..testcases import class_name
from . import queries
from .schemas import Dashboard, DashboardTrends, Period, RepoAnalytics, ScoredDay


def _project(session: Session, tenant_id: str, project: str) -> Repository:
    if not project:
        raise missing_field("project", "repository name 'owner/repo'")
    return find_repo(session, tenant_id, project)


def flaky_tests(
    database: Database, tenant_id: str, project: str, min_rate: float
) -> dict[str, Any]:
    """Tests that were flaky in the last 30 days, by flakiness rate: a :class:`FlakyTests`."""
    now = utcnow()
    with database.read() as session:
        repo = _project(session, tenant_id, project)
        tests = session.scalars(
            select(TestCase).where(
                TestCase.repo_id == repo.id, TestCase.last_flaky_at >= now - FEED_WINDOW
            )
        ).all()
    data: list[dict[str, Any]] = []
    for test in tests:
        rate = 100.0 * test.flaky_runs / test.total_runs if test.total_runs else 0.0
        if rate >= min_rate:
            data.append(
                {
                    "testId": test.id,
                    "testFile": test.file,
                    "testName": test.name,
                    "flakinessRate": round(rate, 2),
                    "flakyRuns": test.flaky_runs,
                    "totalRuns": test.total_runs,
                    "lastFlakyAt": iso(test.last_flaky_at),
                }
            )
    data.sort(key=lambda d: (-d["flakinessRate"], d["testId"]))
    return {"project": repo.name, "data": data}


def trends(database: Database, tenant_id: str, project: str, days: int) -> dict[str, Any]:
    """Per UTC day: distinct tests that flaked, and their mean flake score: a :class:`Trends`."""
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    with database.read() as session:
        repo = _project(session, tenant_id, project)
        rollups = {
            r.day: r
            for r in session.scalars(
                select(DailyRollup).where(
                    DailyRollup.repo_id == repo.id, DailyRollup.day >= first.isoformat()
                )
            )
        }
    data = []
    for offset in range(days):
        day = (first + timedelta(days=offset)).isoformat()
        rollup = rollups.get(day)
        count = rollup.flaky_tests if rollup else 0
        mean_score = rollup.flake_score_sum / count if rollup and count else 0.0
        data.append(
            {
                "detectionDate": day,
                "flakyTestCount": count,
                "avgFlakinessRate": round(100.0 * mean_score, 2),
                "testRuns": rollup.test_runs if rollup else 0,
                "failedTestRuns": rollup.failed_test_runs if rollup else 0,
            }
        )
    return {"project": repo.name, "days": days, "data": data}


def recommend(test: TestCase, quarantined: bool) -> dict[str, Any] | None:
    """What to do about one test, how urgent, and what it costs today; None when healthy."""
    rate = test.flaky_runs / test.total_runs if test.total_runs else 0.0
    if test.state == "broken":
        severity, text = (
            "critical",
            (
                "Fails on every run since a recent change: a regression, not flakiness. "
                "Fix the code or the test; retries will not help."
            ),
        )
    elif test.state == "flaky":
        severity = "high" if rate >= 0.1 else "medium" if rate >= 0.02 else "low"
        text = "Fails intermittently on unchanged code. " + (
            "It is quarantined: fix it and lift the quarantine."
            if quarantined
            else "Quarantine it so it stops failing builds, then look for shared state, timing "
            "assumptions or order dependence in its failures."
        )
    else:
        return None
    return {
        "test": {
            "id": test.id,
            "name": test.name,
            "file": test.file,
            "class_name": class_name(test),
        },
        "severity": severity,
        "recommendation": text,
        "impact": {
            "flakiness_rate": round(100.0 * rate, 2),
            "flaky_runs": test.flaky_runs,
            "failed_runs": test.failed_runs,
            "total_runs": test.total_runs,
        },
    }


_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def recommendations(database: Database, tenant_id: str, project: str) -> dict[str, Any]:
    """What to fix first, broken tests, then flaky ones by how often they flake: a
    :class:`Recommendations`."""
    now = utcnow()
    with database.read() as session:
        repo = _project(session, tenant_id, project)
        tests = session.scalars(
            select(TestCase).where(
                TestCase.repo_id == repo.id, TestCase.state.in_(("flaky", "broken"))
            )
        ).all()
        quarantined = active_quarantines(session, (t.id for t in tests), now)
    data = [advice for test in tests if (advice := recommend(test, test.id in quarantined))]
    data.sort(
        key=lambda d: (_SEVERITY_ORDER[d["severity"]], -d["impact"]["flaky_runs"], d["test"]["id"])
    )
    return {"project": repo.name, "data": data}


# --- the Unfold dialect -------------------------------------------------------------------

TREND_DAYS = 30
"""The dashboard's period: its health score covers the last this many days, and its trends
compare them with the as many days before."""
ACTIVE_WINDOW = timedelta(days=30)
"""A test counts on the dashboard while it ran within this window (as on ``/api/repos``)."""
CRITICAL_RATE = 0.10
"""A flaky test is critical when it fails at least this share of runs on good code (its
flake score): it fails about one build in ten by itself."""
PERIOD_DAYS = {"7d": 7, "30d": 30, "90d": 90}
FIX_BASELINE_DAYS = 30
"""A verified fix's test is taken to have kept flaking at its rate of the last this many
days before the merge..."""
FIX_HORIZON_DAYS = 90
"""...for at most this many days after it (by then it would likely have been fixed or
quarantined anyway)."""
BUILDS_FOR_MEDIAN = 100
"""The tenant's newest builds whose median duration prices one rerun."""


def health_score(test_runs: int, flaky_test_runs: int) -> float | None:
    """100 x the share of test runs that did not flake, to one decimal; None without runs."""
    if not test_runs:
        return None
    return round(100.0 * (1.0 - flaky_test_runs / test_runs), 1)


def dashboard(database: Database, tenant_id: str, cost_per_hour: float) -> Dashboard:
    """The tenant's figures across its repositories: a :class:`Dashboard`."""
    now = utcnow()
    today = now.date()
    recent = today - timedelta(days=TREND_DAYS - 1)
    earlier = recent - timedelta(days=TREND_DAYS)
    with database.read() as session:
        repo_ids = queries.repo_ids(session, tenant_id)
        tests = queries.test_counts(session, repo_ids, now - ACTIVE_WINDOW, CRITICAL_RATE)
        runs_now = queries.rollup_totals(session, repo_ids, recent, today)
        runs_before = queries.rollup_totals(session, repo_ids, earlier, recent - timedelta(1))
        turned, stopped = queries.flaky_turns(session, repo_ids, now - timedelta(days=TREND_DAYS))
        created, merged = queries.pull_request_counts(session, tenant_id)
        avoided = _flakes_avoided(session, tenant_id, now)
        build_ms = statistics.median(
            queries.build_durations(session, tenant_id, BUILDS_FOR_MEDIAN) or [0.0]
        )
    score, previous = health_score(*runs_now), health_score(*runs_before)
    hours = avoided * build_ms / 3_600_000
    return Dashboard(
        health_score=score,
        total_tests=tests.total,
        total_repos=len(repo_ids),
        flaky_tests=tests.flaky,
        critical_flaky=tests.critical,
        prs_created=created,
        prs_merged=merged,
        time_saved_hours=round(hours, 2),
        cost_savings_usd=round(hours * cost_per_hour, 2),
        trends=DashboardTrends(
            health_score_change=None
            if score is None or previous is None
            else round(score - previous, 1),
            flaky_tests_change=turned - stopped,
        ),
    )


def _flakes_avoided(session: Session, tenant_id: str, now: datetime) -> float:
    """Flaky failures that failed no build thanks to testlens: those of quarantined tests
    since their quarantine, and those verified fixes prevented (the test's flakes a day
    over the :data:`FIX_BASELINE_DAYS` before the merge, times the days since, up to
    :data:`FIX_HORIZON_DAYS`, less the flakes it still had). Flakes are the recent flaky
    occurrences each environment's state keeps (the last 50): a lower bound for very flaky
    tests."""
    avoided = 0.0
    for since, data in queries.quarantined_flakes(session, tenant_id, now):
        avoided += sum(1 for at in _flake_times(data) if at >= since)
    baseline = timedelta(days=FIX_BASELINE_DAYS)
    for merged_at, data in queries.verified_fix_flakes(session, tenant_id):
        flakes = _flake_times(data)
        before = sum(1 for at in flakes if merged_at - baseline <= at < merged_at)
        after = sum(1 for at in flakes if at >= merged_at)
        days = min((now - merged_at).total_seconds() / 86_400, FIX_HORIZON_DAYS)
        avoided += max(0.0, before / FIX_BASELINE_DAYS * days - after)
    return avoided


def _flake_times(data: str) -> list[datetime]:
    state = detection.TestState.from_json(data)
    return [detection.from_micros(micros) for micros, _run in state.recent_flaky]


def repo_analytics(
    database: Database, tenant_id: str, repo_id: str, period: Period
) -> RepoAnalytics:
    """One repository's figures over a period: a :class:`RepoAnalytics`."""
    now = utcnow()
    days = PERIOD_DAYS.get(period)
    since = None if days is None else now - timedelta(days=days)
    first_day = None if days is None else now.date() - timedelta(days=days - 1)
    with database.read() as session:
        repo = find_repo_by_id(session, tenant_id, repo_id)
        rollups = queries.rollups(session, repo.id, first_day)
        tests = queries.repo_tests(session, repo.id, since)
        fixes = queries.fixes_merged(session, repo.id, since)
    causes: dict[str, int] = {}
    for _state, cause in tests:
        if cause:
            causes[cause] = causes.get(cause, 0) + 1
    return RepoAnalytics(
        repo_id=repo.id,
        period=period,
        test_runs=sum(row.test_runs for row in rollups),
        total_tests=len(tests),
        flaky_tests=sum(1 for state, _cause in tests if state == "flaky"),
        fixes_applied=fixes,
        health_score_history=_history(rollups),
        root_causes=dict(sorted(causes.items())),
    )


def _history(rollups: Sequence[DailyRollup]) -> list[ScoredDay]:
    """The health score of each day that had test runs, oldest first."""
    scored = []
    for row in sorted(rollups, key=lambda row: row.day):
        score = health_score(row.test_runs, row.flaky_test_runs)
        if score is not None:
            scored.append(ScoredDay(date=row.day, score=score))
    return scored
