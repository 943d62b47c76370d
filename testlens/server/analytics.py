"""The ``/api/v1/analytics`` dialect: flaky tests by rate, daily trends, and what to fix
first. Reads the per-test figures on ``test_cases`` and the daily rollups.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from .database import Database
from .deps import DatabaseDep, ReadPrincipal
from .errors import ErrorCode, error_responses, missing_field
from .flaky_feed import FEED_WINDOW
from .models import DailyRollup, Repository, TestCase, iso, utcnow
from .quarantine import active_quarantines
from .scoping import find_repo
from .testcases import class_name

router = APIRouter(tags=["analytics"])


class FlakyTestRate(BaseModel):
    testId: str
    testFile: str
    testName: str
    flakinessRate: float
    flakyRuns: int
    totalRuns: int
    lastFlakyAt: str | None


class FlakyTests(BaseModel):
    project: str
    data: list[FlakyTestRate]


class TrendDay(BaseModel):
    detectionDate: str
    flakyTestCount: int
    avgFlakinessRate: float
    testRuns: int
    failedTestRuns: int


class Trends(BaseModel):
    project: str
    days: int
    data: list[TrendDay]


class AdvisedTest(BaseModel):
    id: str
    name: str
    file: str
    class_name: str


class Impact(BaseModel):
    flakiness_rate: float
    flaky_runs: int
    failed_runs: int
    total_runs: int


class Recommendation(BaseModel):
    test: AdvisedTest
    severity: str
    recommendation: str
    impact: Impact


class Recommendations(BaseModel):
    project: str
    data: list[Recommendation]


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


# Routes --------------------------------------------------------------------------------------


@router.get(
    "/api/v1/analytics/flaky-tests",
    responses={
        200: {"model": FlakyTests},
        **error_responses(ErrorCode.MISSING_FIELD, ErrorCode.NOT_FOUND),
    },
)
def analytics_flaky_tests(
    database: DatabaseDep,
    principal: ReadPrincipal,
    project: str = Query(""),
    min_rate: float = Query(0.0, alias="minRate", ge=0, le=100),
) -> JSONResponse:
    """Tests that were flaky in the last 30 days, by flakiness rate (percent of runs)."""
    return JSONResponse(flaky_tests(database, principal.tenant_id, project, min_rate))


@router.get(
    "/api/v1/analytics/flakiness-trends",
    responses={
        200: {"model": Trends},
        **error_responses(ErrorCode.MISSING_FIELD, ErrorCode.NOT_FOUND),
    },
)
def analytics_flakiness_trends(
    database: DatabaseDep,
    principal: ReadPrincipal,
    project: str = Query(""),
    days: int = Query(30, ge=1, le=365),
) -> JSONResponse:
    """Per UTC day: distinct tests that flaked, and their mean flake score (percent)."""
    return JSONResponse(trends(database, principal.tenant_id, project, days))


@router.get(
    "/api/v1/analytics/flaky-recommendations",
    responses={
        200: {"model": Recommendations},
        **error_responses(ErrorCode.MISSING_FIELD, ErrorCode.NOT_FOUND),
    },
)
def analytics_recommendations(
    database: DatabaseDep, principal: ReadPrincipal, project: str = Query("")
) -> JSONResponse:
    """What to fix first: broken tests, then flaky ones by how often they flake."""
    return JSONResponse(recommendations(database, principal.tenant_id, project))
