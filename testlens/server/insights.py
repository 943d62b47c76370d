"""What testlens knows, for people and CI: the flaky feed, repositories, tests, analytics and
quarantine.

Every read here comes from the per-test figures on ``test_cases`` (combined over the test's
environments at ingest: the worst state and score, summed counts), the per-environment rows of
``test_states`` for one test's details, and ``daily_rollups``; only a test's own recent runs
are read from results, through the (test_id, id) index. Lists are index range scans with a
limit, so latency does not grow with history.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Row, and_, func, or_, select
from sqlalchemy.orm import Session

from ..core.durations import Sample, TestKey, estimate, pytest_nodeid
from .auth import Principal, require
from .database import Database
from .errors import ApiError, not_found
from .models import (
    DailyRollup,
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


def find_repo(session: Session, tenant_id: str, name: str) -> Repository:
    repo = session.scalar(
        select(Repository).where(Repository.tenant_id == tenant_id, Repository.name == name)
    )
    if repo is None:
        raise not_found("repository", name)
    return repo


def _find_test(session: Session, tenant_id: str, test_id: str) -> tuple[TestCase, Repository]:
    row = session.execute(
        select(TestCase, Repository)
        .join(Repository, Repository.id == TestCase.repo_id)
        .where(TestCase.id == test_id, Repository.tenant_id == tenant_id)
    ).first()
    if row is None:
        raise not_found("test", test_id)
    return row[0], row[1]


def _active(now: datetime) -> Any:
    """The condition for a quarantine in force at ``now``."""
    return or_(Quarantine.expires_at.is_(None), Quarantine.expires_at > now)


def _active_quarantines(
    session: Session, test_ids: Iterable[str], now: datetime
) -> dict[str, Quarantine]:
    ids = list(test_ids)
    if not ids:
        return {}
    rows = session.scalars(select(Quarantine).where(Quarantine.test_id.in_(ids), _active(now)))
    return {q.test_id: q for q in rows}


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
                .outerjoin(Quarantine, and_(Quarantine.test_id == TestCase.id, _active(now)))
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
        test, repo = _find_test(session, principal.tenant_id, test_id)
        rows = _states_by_test(session, [test.id]).get(test.id, [])
        quarantine = _active_quarantines(session, [test.id], now).get(test.id)
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


# --- analytics (the /api/v1/analytics dialect) -----------------------------------------------


def _project(session: Session, principal: Principal, project: str) -> Repository:
    if not project:
        raise ApiError(
            400,
            "MISSING_FIELD",
            "Missing required field: project",
            {"field": "project", "expected": "repository name 'owner/repo'"},
        )
    return find_repo(session, principal.tenant_id, project)


@router.get("/api/v1/analytics/flaky-tests")
def analytics_flaky_tests(
    request: Request,
    project: str = Query(""),
    min_rate: float = Query(0.0, alias="minRate", ge=0, le=100),
    principal: Principal = Depends(require("read")),
) -> JSONResponse:
    """Tests that were flaky in the last 30 days, by flakiness rate (percent of runs)."""
    now = utcnow()
    with _db(request).transaction() as session:
        repo = _project(session, principal, project)
        tests = session.scalars(
            select(TestCase).where(
                TestCase.repo_id == repo.id, TestCase.last_flaky_at >= now - FEED_WINDOW
            )
        ).all()
    data = []
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
    return JSONResponse({"project": repo.name, "data": data})


@router.get("/api/v1/analytics/flakiness-trends")
def analytics_flakiness_trends(
    request: Request,
    project: str = Query(""),
    days: int = Query(30, ge=1, le=365),
    principal: Principal = Depends(require("read")),
) -> JSONResponse:
    """Per UTC day: distinct tests that flaked, and their mean flake score (percent)."""
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    with _db(request).transaction() as session:
        repo = _project(session, principal, project)
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
        data.append(
            {
                "detectionDate": day,
                "flakyTestCount": count,
                "avgFlakinessRate": round(100.0 * rollup.flake_score_sum / count, 2)
                if count
                else 0.0,
                "testRuns": rollup.test_runs if rollup else 0,
                "failedTestRuns": rollup.failed_test_runs if rollup else 0,
            }
        )
    return JSONResponse({"project": repo.name, "days": days, "data": data})


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


@router.get("/api/v1/analytics/flaky-recommendations")
def analytics_recommendations(
    request: Request,
    project: str = Query(""),
    principal: Principal = Depends(require("read")),
) -> JSONResponse:
    """What to fix first: broken tests, then flaky ones by how often they flake."""
    now = utcnow()
    with _db(request).transaction() as session:
        repo = _project(session, principal, project)
        tests = session.scalars(
            select(TestCase).where(
                TestCase.repo_id == repo.id, TestCase.state.in_(("flaky", "broken"))
            )
        ).all()
        quarantined = _active_quarantines(session, (t.id for t in tests), now)
    data = [advice for test in tests if (advice := recommend(test, test.id in quarantined))]
    data.sort(
        key=lambda d: (_SEVERITY_ORDER[d["severity"]], -d["impact"]["flaky_runs"], d["test"]["id"])
    )
    return JSONResponse({"project": repo.name, "data": data})


# --- quarantine ----------------------------------------------------------------------------


class QuarantineRequest(BaseModel):
    reason: str = Field("", max_length=2000)
    expires_at: datetime | None = None


def _quarantine_body(test: TestCase, q: Quarantine) -> dict[str, Any]:
    return {
        "test_id": test.id,
        "reason": q.reason,
        "created_at": iso(q.created_at),
        "expires_at": iso(q.expires_at),
    }


def _record_quarantine_event(
    session: Session, test: TestCase, from_state: str, to_state: str, reason: str
) -> None:
    session.add(
        TestEvent(
            repo_id=test.repo_id,
            test_id=test.id,
            environment="",
            from_state=from_state,
            to_state=to_state,
            at=utcnow(),
            reason=reason,
            run_ids="[]",
        )
    )


@router.post("/api/tests/{test_id}/quarantine", status_code=201)
def quarantine_test(
    test_id: str,
    body: QuarantineRequest,
    request: Request,
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    """Quarantine a test: CI clients stop failing builds on its failures (until expiry)."""
    now = utcnow()
    expires = body.expires_at
    if expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= now:
            raise ApiError(
                400,
                "INVALID_FIELD",
                "expires_at must be in the future",
                {"field": "expires_at", "expected": "ISO-8601 time in the future"},
            )
    with _db(request).transaction() as session:
        test, _repo = _find_test(session, principal.tenant_id, test_id)
        existing = session.get(Quarantine, test.id)
        if existing is None:
            existing = Quarantine(test_id=test.id, repo_id=test.repo_id, created_at=now)
            session.add(existing)
            _record_quarantine_event(
                session, test, test.state, "quarantined", body.reason or "quarantined by a user"
            )
        existing.reason = body.reason
        existing.expires_at = expires
        existing.created_by = principal.key_id
        return _quarantine_body(test, existing)


@router.delete("/api/tests/{test_id}/quarantine", status_code=204)
def unquarantine_test(
    test_id: str, request: Request, principal: Principal = Depends(require("admin"))
) -> Response:
    """Lift a quarantine."""
    with _db(request).transaction() as session:
        test, _repo = _find_test(session, principal.tenant_id, test_id)
        existing = session.get(Quarantine, test.id)
        if existing is None:
            raise not_found("quarantine", test_id)
        session.delete(existing)
        _record_quarantine_event(session, test, "quarantined", test.state, "quarantine lifted")
    return Response(status_code=204)


@router.get("/api/quarantine")
def list_quarantine(
    request: Request,
    repo: str = Query(..., description="owner/repo"),
    principal: Principal = Depends(require("read")),
) -> JSONResponse:
    """Active quarantines of a repository: the list CI clients read to know which failures
    must not fail the build."""
    now = utcnow()
    with _db(request).transaction() as session:
        repository = find_repo(session, principal.tenant_id, repo)
        rows = session.execute(
            select(TestCase, Quarantine)
            .join(Quarantine, Quarantine.test_id == TestCase.id)
            .where(Quarantine.repo_id == repository.id, _active(now))
            .order_by(TestCase.file, TestCase.name)
        ).all()
    return JSONResponse(
        {
            "repo": repository.name,
            "tests": [
                {
                    "id": t.id,
                    "file": t.file,
                    "suite": t.suite,
                    "classname": t.classname,
                    "name": t.name,
                    "nodeid": pytest_nodeid(TestKey(t.file, t.suite, t.classname, t.name)),
                    "reason": q.reason,
                    "expires_at": iso(q.expires_at),
                }
                for t, q in rows
            ],
        }
    )
