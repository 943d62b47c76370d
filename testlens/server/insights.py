"""What testlens knows, for people and CI: the flaky feed, repositories and tests.

Every read here comes from the per-test figures on ``test_cases`` (combined over the test's
environments at ingest: the worst state and score, summed counts), the per-environment rows of
``test_states`` for one test's details, and ``daily_rollups``; only a test's own recent runs
are read from results, through the (test_id, id) index. Lists are index range scans with a
limit, so latency does not grow with history.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Row, and_, func, select
from sqlalchemy.orm import Session

from ..core.durations import Sample, estimate
from .auth import Principal, require
from .database import Database
from .errors import ApiError, not_found
from .models import (
    Quarantine,
    Repository,
    Run,
    TestCase,
    TestEvent,
    TestResult,
    TestState,
    iso,
    utcnow,
)
from .quarantine import active, active_quarantines
from .scoping import find_repo, find_test

router = APIRouter(tags=["insights"])

# Lists select just the columns they show: rows, not ORM objects, keep pages fast.
FEED_COLUMNS = (
    TestCase.id, TestCase.name, TestCase.classname, TestCase.suite, TestCase.first_flaky_at,
    TestCase.last_flaky_at, TestCase.recent_flaky,
)  # fmt: skip
LIST_COLUMNS = (
    TestCase.id, TestCase.name, TestCase.classname, TestCase.suite, TestCase.file,
    TestCase.flake_score, TestCase.total_runs, TestCase.failed_runs, TestCase.state,
    TestCase.last_run_id, TestCase.last_seen_at,
)  # fmt: skip

FEED_WINDOW = timedelta(days=30)
PAGE_SIZE = 100
RECENT_RUNS = 20


def _db(request: Request) -> Database:
    return request.app.state.database


def _split_repo(name: str) -> dict[str, str]:
    org, _, repo = name.partition("/")
    return {"name": repo, "org": org}


def pass_rate(test: TestCase | Row) -> float | None:
    """Share of the test's runs that passed in the end (retries included)."""
    if not test.total_runs:
        return None
    return round((test.total_runs - test.failed_runs) / test.total_runs, 4)


def _states_by_test(session: Session, test_ids: Sequence[str]) -> dict[str, list[TestState]]:
    grouped: dict[str, list[TestState]] = {}
    if test_ids:
        for row in session.scalars(select(TestState).where(TestState.test_id.in_(test_ids))):
            grouped.setdefault(row.test_id, []).append(row)
    return grouped


def last_24_hours(test: TestCase | Row, now: datetime) -> int:
    start = now.timestamp() - 24 * 3600
    return sum(1 for at in json.loads(test.recent_flaky) if at > start)


def class_name(test: TestCase | Row) -> str:
    return test.classname or test.suite


# --- the flaky feed ------------------------------------------------------------------------


class FeedQuery(BaseModel):
    org: str | None = None
    repo: str | None = None
    github_check_name: str | None = None
    page: int = Field(1, ge=1)


async def _feed_query(request: Request) -> FeedQuery:
    """Parameters from the query string, or from a JSON body (the dialect allows both)."""
    values: dict[str, Any] = dict(request.query_params)
    if not values and request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                raise ApiError(400, "INVALID_JSON", "The request body is not valid JSON") from None
            if isinstance(parsed, dict):
                values = parsed
    try:
        return FeedQuery.model_validate(values)
    except ValueError as exc:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameters: {exc}") from None


def _repo_name(org: str | None, repo: str | None) -> str:
    if not repo:
        raise ApiError(
            400,
            "MISSING_FIELD",
            "Missing required field: repo",
            {"field": "repo", "expected": "repository name (with org)"},
        )
    if "/" in repo:
        return repo
    if not org:
        raise ApiError(
            400,
            "MISSING_FIELD",
            "Missing required field: org",
            {"field": "org", "expected": "organisation owning the repository"},
        )
    return f"{org}/{repo}"


@router.get("/api/v1/testdeck/flaky")
def flaky_feed(
    request: Request,
    query: FeedQuery = Depends(_feed_query),
    principal: Principal = Depends(require("read")),
) -> JSONResponse:
    """Flaky tests of the last 30 days, newest first occurrence first, 100 per page."""
    database = _db(request)
    now = utcnow()
    name = _repo_name(query.org, query.repo)
    with database.transaction() as session:
        repo = find_repo(session, principal.tenant_id, name)
        conditions = [TestCase.repo_id == repo.id, TestCase.last_flaky_at >= now - FEED_WINDOW]
        if query.github_check_name:
            conditions.append(
                select(TestState.test_id)
                .where(
                    TestState.test_id == TestCase.id,
                    TestState.check_name == query.github_check_name,
                )
                .exists()
            )
        page = list(
            session.execute(
                select(*FEED_COLUMNS)
                .where(*conditions)
                .order_by(TestCase.first_flaky_at.desc(), TestCase.id)
                .limit(PAGE_SIZE + 1)
                .offset((query.page - 1) * PAGE_SIZE)
            )
        )
        provider = session.scalar(
            select(Run.provider)
            .where(Run.repo_id == repo.id)
            .order_by(Run.created_at.desc())
            .limit(1)
        )
    has_more = len(page) > PAGE_SIZE
    base = str(request.base_url).rstrip("/")
    cases = [
        {
            "name": test.name,
            "class_name": class_name(test),
            "first_occurrence": iso(test.first_flaky_at),
            "last_occurrence": iso(test.last_flaky_at),
            "details_url": f"{base}/api/tests/{test.id}",
            "last_24_hours_count": last_24_hours(test, now),
        }
        for test in page[:PAGE_SIZE]
    ]
    headers = {}
    if has_more:
        params = {**query.model_dump(exclude_none=True), "page": query.page + 1}
        headers["Link"] = f'<{base}/api/v1/testdeck/flaky?{urlencode(params)}>; rel="next"'
    return JSONResponse(
        {
            "repository": _split_repo(repo.name),
            "github_check": {"name": query.github_check_name, "provider": provider or "github"},
            "test_cases": cases,
        },
        headers=headers,
    )


# --- repositories ----------------------------------------------------------------------------


@dataclass(slots=True)
class RepoCounts:
    total: int = 0
    healthy: int = 0
    flaky: int = 0
    broken: int = 0

    @property
    def health_score(self) -> float | None:
        """100 minus the share (in percent) of active tests that are flaky or broken."""
        if not self.total:
            return None
        return round(100.0 * (1 - (self.flaky + self.broken) / self.total), 1)


def repo_counts(session: Session, repo_ids: Sequence[str], now: datetime) -> dict[str, RepoCounts]:
    """Tests run in the last 30 days per repository, by state."""
    counts = {repo_id: RepoCounts() for repo_id in repo_ids}
    if not repo_ids:
        return counts
    rows = session.execute(
        select(TestCase.repo_id, TestCase.state, func.count())
        .where(TestCase.repo_id.in_(repo_ids), TestCase.last_seen_at >= now - FEED_WINDOW)
        .group_by(TestCase.repo_id, TestCase.state)
    )
    for repo_id, state, number in rows:
        c = counts[repo_id]
        c.total += number
        setattr(c, state, getattr(c, state) + number)
    return counts


def _repo_body(repo: Repository, counts: RepoCounts) -> dict[str, Any]:
    return {
        "id": repo.id,
        "name": repo.name,
        "github_url": f"https://github.com/{repo.name}",
        "health_score": counts.health_score,
        "total_tests": counts.total,
        "flaky_count": counts.flaky,
        "installed_at": iso(repo.created_at),
        "last_run": iso(repo.last_run_at),
    }


@router.get("/api/repos")
def list_repos(request: Request, principal: Principal = Depends(require("read"))) -> JSONResponse:
    """The tenant's repositories with their health."""
    now = utcnow()
    with _db(request).transaction() as session:
        repos = list(
            session.scalars(
                select(Repository)
                .where(Repository.tenant_id == principal.tenant_id)
                .order_by(Repository.name)
            )
        )
        counts = repo_counts(session, [r.id for r in repos], now)
    return JSONResponse({"repos": [_repo_body(r, counts[r.id]) for r in repos]})


def _test_row(test: TestCase | Row, framework: str | None, quarantined: bool) -> dict[str, Any]:
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
        "root_cause_category": None,
        "root_cause_confidence": None,
        "last_run": iso(test.last_seen_at),
    }


@router.get("/api/repos/{repo_id}")
def get_repo(
    repo_id: str,
    request: Request,
    page: int = Query(1, ge=1),
    principal: Principal = Depends(require("read")),
) -> JSONResponse:
    """A repository, its tests (most flaky first, 100 per page) and a summary."""
    now = utcnow()
    with _db(request).transaction() as session:
        repo = session.scalar(
            select(Repository).where(
                Repository.id == repo_id, Repository.tenant_id == principal.tenant_id
            )
        )
        if repo is None:
            raise not_found("repository", repo_id)
        counts = repo_counts(session, [repo.id], now)[repo.id]
        # One query for the page, its frameworks and quarantines: round trips dominate here.
        tests = list(
            session.execute(
                select(*LIST_COLUMNS, Run.framework, Quarantine.test_id.label("quarantined"))
                .outerjoin(Run, Run.id == TestCase.last_run_id)
                .outerjoin(Quarantine, and_(Quarantine.test_id == TestCase.id, active(now)))
                .where(TestCase.repo_id == repo.id, TestCase.last_seen_at >= now - FEED_WINDOW)
                .order_by(TestCase.flake_score.desc(), TestCase.id)
                .limit(PAGE_SIZE)
                .offset((page - 1) * PAGE_SIZE)
            )
        )
    return JSONResponse(
        {
            "repo": _repo_body(repo, counts),
            "tests": [_test_row(t, t.framework, t.quarantined is not None) for t in tests],
            "summary": {
                "total": counts.total,
                "passing": counts.healthy,
                "flaky": counts.flaky,
                "failing": counts.broken,
            },
        }
    )


# --- one test ------------------------------------------------------------------------------


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


@router.get("/api/tests/{test_id}")
def get_test(
    test_id: str, request: Request, principal: Principal = Depends(require("read"))
) -> JSONResponse:
    """Everything testlens knows of one test, with its recent runs and state changes."""
    now = utcnow()
    with _db(request).transaction() as session:
        test, repo = find_test(session, principal.tenant_id, test_id)
        rows = _states_by_test(session, [test.id]).get(test.id, [])
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
    return JSONResponse(
        {
            **_test_row(test, framework, quarantine is not None),
            "classname": test.classname,
            "suite": test.suite,
            "repo": {"id": repo.id, "name": repo.name},
            "first_seen": iso(test.first_seen_at),
            "flake_score_interval": [
                round(test.flake_score_low, 4),
                round(test.flake_score_high, 4),
            ],
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
        }
    )
