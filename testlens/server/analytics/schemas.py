"""Response models of the analytics dialects: ``/api/v1/analytics`` and the Unfold
dialect's ``/api/analytics``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Period = Literal["7d", "30d", "90d", "all"]


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


class DashboardTrends(BaseModel):
    health_score_change: float | None = Field(
        description="Health score of the last 30 days minus that of the 30 days before "
        "(null when either had no test runs)."
    )
    flaky_tests_change: int = Field(
        description="Tests that turned flaky in the last 30 days minus tests that stopped "
        "being flaky."
    )


class Dashboard(BaseModel):
    health_score: float | None = Field(
        description="100 x (1 - flaky test runs / test runs) over the last 30 days (null "
        "without test runs)."
    )
    total_tests: int
    total_repos: int
    flaky_tests: int
    critical_flaky: int
    prs_created: int
    prs_merged: int
    time_saved_hours: float
    cost_savings_usd: float
    trends: DashboardTrends


class ScoredDay(BaseModel):
    date: str
    score: float


class RepoAnalytics(BaseModel):
    repo_id: str
    period: Period
    test_runs: int
    total_tests: int
    flaky_tests: int
    fixes_applied: int
    health_score_history: list[ScoredDay]
    root_causes: dict[str, int]
