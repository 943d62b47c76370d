"""Routes of both analytics dialects: ``/api/v1/analytics/...`` and the Unfold dialect's
``/api/analytics/...``."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ..deps import DatabaseDep, ReadPrincipal, SettingsDep
from ..errors import ErrorCode, error_responses
from .schemas import Dashboard, FlakyTests, Period, Recommendations, RepoAnalytics, Trends
from .service import dashboard, flaky_tests, recommendations, repo_analytics, trends

router = APIRouter(tags=["analytics"])


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


@router.get("/api/analytics/dashboard")
def analytics_dashboard(
    database: DatabaseDep, settings: SettingsDep, principal: ReadPrincipal
) -> Dashboard:
    """The tenant's health, flaky tests, fix pull requests and what testlens saved."""
    return dashboard(database, principal.tenant_id, settings.ci_cost_per_hour)


@router.get("/api/analytics/repos/{repo_id}", responses=error_responses(ErrorCode.NOT_FOUND))
def analytics_repo(
    repo_id: str, database: DatabaseDep, principal: ReadPrincipal, period: Period = "30d"
) -> RepoAnalytics:
    """One repository's test runs, tests, fixes, daily health and root causes over a
    period (``all``: its whole history)."""
    return repo_analytics(database, principal.tenant_id, repo_id, period)
