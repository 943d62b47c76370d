"""One test: ``GET /api/tests/{id}``, and how a test is shown wherever tests are listed.

A test's figures come from its row in ``test_cases`` (combined over its environments at
ingest: the worst state and score, summed counts) and its per-environment ``test_states``;
only its own recent runs are read from results, through the (test_id, id) index, so the
answer costs the same after a year of history as after a day.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Row, select

from ..core.durations import Sample, estimate
from ..core.fix_proposals import Suggestion, suggestion_for
from .database import Database
from .deps import DatabaseDep, ReadPrincipal
from .errors import ErrorCode, error_responses
from .models import Run, TestCase, TestEvent, TestResult, TestState, iso, utcnow
from .quarantine import active_quarantines
from .rootcause.service import signatures_body
from .scoping import find_test

router = APIRouter(tags=["tests"])

RECENT_RUNS = 20

AnyRow = Row[*tuple[Any, ...]]
"""A result row of any columns (the helpers below read the ones they name)."""


def class_name(test: TestCase | AnyRow) -> str:
    return test.classname or test.suite


def pass_rate(test: TestCase | AnyRow) -> float | None:
    """Share of the test's runs that passed in the end (retries included)."""
    if not test.total_runs:
        return None
    return round((test.total_runs - test.failed_runs) / test.total_runs, 4)


def last_24_hours(test: TestCase | AnyRow, now: datetime) -> int:
    """Flaky occurrences in the last 24 hours, from the test's recent ones."""
    start = now.timestamp() - 24 * 3600
    return sum(1 for at in json.loads(test.recent_flaky) if at > start)


class TestSummary(BaseModel):
    """A test as lists show it."""

    __test__ = False  # not a pytest test class

    id: str
    name: str
    class_name: str
    file_path: str
    flake_score: float
    pass_rate: float | None
    total_runs: int
    state: str = Field(description="healthy, flaky, broken or quarantined")
    framework: str | None
    root_cause_category: str | None
    root_cause_confidence: float | None
    ai_model_used: str | None = Field(
        description="The model that wrote the root-cause explanation; null: the built-in one."
    )
    last_analyzed_at: str | None = Field(description="When the root cause was last computed.")
    last_run: str | None


def summary_body(
    test: TestCase | AnyRow, framework: str | None, quarantined: bool
) -> dict[str, Any]:
    """A :class:`TestSummary` as JSON (built directly: lists show hundreds of them)."""
    return {
        "id": test.id,
        "name": test.name,
        "class_name": class_name(test),
        "file_path": test.file,
        "flake_score": round(test.flake_score, 4),
        "pass_rate": pass_rate(test),
        "total_runs": test.total_runs,
        "state": "quarantined" if quarantined else test.state,
        "framework": framework,
        "root_cause_category": test.root_cause_category,
        "root_cause_confidence": test.root_cause_confidence,
        "ai_model_used": test.ai_model_used,
        "last_analyzed_at": iso(test.last_analyzed_at),
        "last_run": iso(test.last_seen_at),
    }


class RepoRef(BaseModel):
    id: str
    name: str


class QuarantineInfo(BaseModel):
    reason: str
    created_at: str | None
    expires_at: str | None


class EnvironmentState(BaseModel):
    environment: str | None
    state: str
    flake_score: float
    total_runs: int
    flaky_runs: int
    since: str | None


class RecentRun(BaseModel):
    timestamp: str | None
    status: str
    duration_ms: float
    error_message: str | None
    attempt: int
    environment: str | None
    run_id: str


class StateEvent(BaseModel):
    at: str | None
    from_: str = Field(alias="from")
    to: str
    reason: str
    environment: str | None
    run_ids: list[str]


class FailureSignatureOut(BaseModel):
    key: str
    error_type: str
    message: str = Field(description="Numbers, ids, times, paths and ports masked.")
    frames: list[str] = Field(description="The top in-app frames, file:function.")
    count: int
    first_seen: str | None
    last_seen: str | None


class TestDetail(TestSummary):
    classname: str
    suite: str
    repo: RepoRef
    first_seen: str | None
    flake_score_interval: list[float]
    failed_runs: int
    flaky_runs: int
    first_occurrence: str | None
    last_occurrence: str | None
    last_24_hours_count: int
    duration_p50_ms: float | None
    duration_p90_ms: float | None
    quarantine: QuarantineInfo | None
    environments: list[EnvironmentState]
    recent_runs: list[RecentRun]
    events: list[StateEvent]
    root_cause_explanation: str | None = Field(
        description="One sentence naming the evidence for root_cause_category."
    )
    suggested_action: Suggestion | None = Field(
        description="What to do about the test: pull_request (a fix to its code) or "
        "quarantine (the cause is unknown or in the infrastructure); null until it has "
        "failed and been analysed."
    )
    signatures: list[FailureSignatureOut] = Field(
        description="How the test fails: near-identical failures merged, most frequent first."
    )


def _durations(rows: Sequence[TestState]) -> dict[str, Any]:
    """p50/p90 from the stored samples of the test's busiest environment."""
    found = None
    if rows:
        history = json.loads(max(rows, key=lambda r: r.total_runs).durations)
        last = len(history) - 1
        found = estimate(Sample(d, last - i, bool(c)) for i, (d, c) in enumerate(history))
    return {
        "duration_p50_ms": round(found.p50_ms, 3) if found else None,
        "duration_p90_ms": round(found.p90_ms, 3) if found else None,
    }


def test_detail(database: Database, tenant_id: str, test_id: str) -> dict[str, Any]:
    """Everything testlens knows of one test, as a :class:`TestDetail` body."""
    now = utcnow()
    with database.read() as session:
        test, repo = find_test(session, tenant_id, test_id)
        rows = session.scalars(select(TestState).where(TestState.test_id == test.id)).all()
        quarantine = active_quarantines(session, [test.id], now).get(test.id)
        recent = session.execute(
            select(
                Run.created_at,
                TestResult.status,
                TestResult.duration_ms,
                TestResult.error_message,
                TestResult.attempt,
                TestResult.environment,
                Run.id,
            )
            .join(Run, Run.id == TestResult.run_id)
            .where(TestResult.test_id == test.id)
            .order_by(TestResult.id.desc())
            .limit(RECENT_RUNS)
        ).all()
        events = session.scalars(
            select(TestEvent)
            .where(TestEvent.test_id == test.id)
            .order_by(TestEvent.at.desc(), TestEvent.id.desc())
            .limit(RECENT_RUNS)
        ).all()
        framework = session.scalar(select(Run.framework).where(Run.id == test.last_run_id))
        signatures = signatures_body(session, test.id)
    return {
        **summary_body(test, framework, quarantine is not None),
        "classname": test.classname,
        "suite": test.suite,
        "repo": {"id": repo.id, "name": repo.name},
        "first_seen": iso(test.first_seen_at),
        "flake_score_interval": [round(test.flake_score_low, 4), round(test.flake_score_high, 4)],
        "failed_runs": test.failed_runs,
        "flaky_runs": test.flaky_runs,
        "first_occurrence": iso(test.first_flaky_at),
        "last_occurrence": iso(test.last_flaky_at),
        "last_24_hours_count": last_24_hours(test, now),
        **_durations(rows),
        "quarantine": None
        if quarantine is None
        else {
            "reason": quarantine.reason,
            "created_at": iso(quarantine.created_at),
            "expires_at": iso(quarantine.expires_at),
        },
        "environments": [
            {
                "environment": r.environment or None,
                "state": r.state,
                "flake_score": round(r.flake_score, 4),
                "total_runs": r.total_runs,
                "flaky_runs": r.flaky_runs,
                "since": iso(r.since),
            }
            for r in sorted(rows, key=lambda r: r.environment)
        ],
        "recent_runs": [
            {
                "timestamp": iso(at),
                "status": status,
                "duration_ms": duration,
                "error_message": message,
                "attempt": attempt,
                "environment": env,
                "run_id": run_id,
            }
            for at, status, duration, message, attempt, env, run_id in recent
        ],
        "events": [
            {
                "at": iso(e.at),
                "from": e.from_state,
                "to": e.to_state,
                "reason": e.reason,
                "environment": e.environment or None,
                "run_ids": json.loads(e.run_ids),
            }
            for e in events
        ],
        "root_cause_explanation": test.root_cause_explanation,
        "suggested_action": None
        if test.root_cause_category is None
        else suggestion_for(test.root_cause_category),
        "signatures": signatures,
    }


@router.get(
    "/api/tests/{test_id}",
    responses={200: {"model": TestDetail}, **error_responses(ErrorCode.NOT_FOUND)},
)
def get_test(test_id: str, database: DatabaseDep, principal: ReadPrincipal) -> JSONResponse:
    """Everything testlens knows of one test, with its recent runs and state changes."""
    return JSONResponse(test_detail(database, principal.tenant_id, test_id))
