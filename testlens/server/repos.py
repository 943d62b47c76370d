"""Repositories: ``GET /api/repos`` and ``GET /api/repos/{id}``, with their health, and
``DELETE /api/repos/{owner}/{name}``, which removes one and all its data.

Counts and pages come from the per-test figures on ``test_cases``; lists are index range
scans with a limit, so latency does not grow with history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from .database import Database
from .deps import AdminPrincipal, DatabaseDep, ReadPrincipal, SettingsDep
from .errors import ErrorCode, error_responses
from .github.client import web_url
from .models import Quarantine, Repository, Run, TestCase, iso, utcnow
from .pagination import Page, PageNumber
from .quarantine import active
from .retention import service as retention
from .scoping import find_repo_by_id
from .testcases import TestSummary, summary_body

router = APIRouter(tags=["repositories"])

ACTIVE_WINDOW = timedelta(days=30)
"""A test counts towards its repository's figures while it ran within this window."""
PAGE_SIZE = 100

# One query for the page, its frameworks and quarantines: round trips dominate here.
_LIST_COLUMNS = (
    TestCase.id, TestCase.name, TestCase.classname, TestCase.suite, TestCase.file,
    TestCase.flake_score, TestCase.total_runs, TestCase.failed_runs, TestCase.state,
    TestCase.last_run_id, TestCase.last_seen_at, TestCase.root_cause_category,
    TestCase.root_cause_confidence, TestCase.ai_model_used, TestCase.last_analyzed_at,
)  # fmt: skip


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


class RepoOut(BaseModel):
    id: str
    name: str
    github_url: str
    health_score: float | None
    total_tests: int
    flaky_count: int
    installed_at: str | None
    last_run: str | None


class RepoList(BaseModel):
    repos: list[RepoOut]


class RepoSummary(BaseModel):
    total: int
    passing: int
    flaky: int
    failing: int


class RepoDetail(BaseModel):
    repo: RepoOut
    tests: list[TestSummary]
    summary: RepoSummary


def repo_counts(session: Session, repo_ids: Sequence[str], now: datetime) -> dict[str, RepoCounts]:
    """Tests run in the last 30 days per repository, by state."""
    counts = {repo_id: RepoCounts() for repo_id in repo_ids}
    if not repo_ids:
        return counts
    rows = session.execute(
        select(TestCase.repo_id, TestCase.state, func.count())
        .where(TestCase.repo_id.in_(repo_ids), TestCase.last_seen_at >= now - ACTIVE_WINDOW)
        .group_by(TestCase.repo_id, TestCase.state)
    )
    for repo_id, state, number in rows:
        c = counts[repo_id]
        c.total += number
        setattr(c, state, getattr(c, state) + number)
    return counts


def _repo_body(repo: Repository, counts: RepoCounts, github: str) -> dict[str, Any]:
    """``github``: GitHub's web address (github.com, or the Enterprise Server's host)."""
    return {
        "id": repo.id,
        "name": repo.name,
        "github_url": f"{github}/{repo.name}",
        "health_score": counts.health_score,
        "total_tests": counts.total,
        "flaky_count": counts.flaky,
        "installed_at": iso(repo.installed_at),  # null while the GitHub App is not on it
        "last_run": iso(repo.last_run_at),
    }


def list_repos_body(database: Database, tenant_id: str, github: str) -> dict[str, Any]:
    """The tenant's repositories with their health, as a :class:`RepoList` body."""
    now = utcnow()
    with database.read() as session:
        repos = list(
            session.scalars(
                select(Repository)
                .where(Repository.tenant_id == tenant_id)
                .order_by(Repository.name)
            )
        )
        counts = repo_counts(session, [r.id for r in repos], now)
    return {"repos": [_repo_body(r, counts[r.id], github) for r in repos]}


def repo_detail_body(
    database: Database, tenant_id: str, repo_id: str, page: Page, github: str
) -> dict[str, Any]:
    """A repository, a page of its tests (most flaky first) and a summary: a
    :class:`RepoDetail` body."""
    now = utcnow()
    with database.read() as session:
        repo = find_repo_by_id(session, tenant_id, repo_id)
        counts = repo_counts(session, [repo.id], now)[repo.id]
        tests = list(
            session.execute(
                select(*_LIST_COLUMNS, Run.framework, Quarantine.test_id.label("quarantined"))
                .outerjoin(Run, Run.id == TestCase.last_run_id)
                .outerjoin(Quarantine, and_(Quarantine.test_id == TestCase.id, active(now)))
                .where(TestCase.repo_id == repo.id, TestCase.last_seen_at >= now - ACTIVE_WINDOW)
                .order_by(TestCase.flake_score.desc(), TestCase.id)
                .limit(page.size)
                .offset(page.offset)
            )
        )
    return {
        "repo": _repo_body(repo, counts, github),
        "tests": [summary_body(t, t.framework, t.quarantined is not None) for t in tests],
        "summary": {
            "total": counts.total,
            "passing": counts.healthy,
            "flaky": counts.flaky,
            "failing": counts.broken,
        },
    }


@router.get("/api/repos", responses={200: {"model": RepoList}})
def list_repos(
    database: DatabaseDep, settings: SettingsDep, principal: ReadPrincipal
) -> JSONResponse:
    """The tenant's repositories with their health."""
    github = web_url(settings.github_api_url)
    return JSONResponse(list_repos_body(database, principal.tenant_id, github))


@router.get(
    "/api/repos/{repo_id}",
    responses={200: {"model": RepoDetail}, **error_responses(ErrorCode.NOT_FOUND)},
)
def get_repo(
    repo_id: str,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: ReadPrincipal,
    page: PageNumber = 1,
) -> JSONResponse:
    """A repository, its tests (most flaky first, 100 per page) and a summary."""
    github = web_url(settings.github_api_url)
    body = repo_detail_body(database, principal.tenant_id, repo_id, Page(page, PAGE_SIZE), github)
    return JSONResponse(body)


@router.delete(
    "/api/repos/{owner}/{name}",
    status_code=204,
    response_class=Response,
    responses=error_responses(ErrorCode.NOT_FOUND),
)
def delete_repo(owner: str, name: str, database: DatabaseDep, principal: AdminPrincipal) -> None:
    """Delete the repository (its name matched case-insensitively) and all its data: runs,
    results, tests, states, state changes, daily rollups, quarantines, shard plans. It goes
    a batch of rows at a time, so a large repository takes a while; if the request is cut
    short, sending it again finishes the deletion."""
    retention.delete_repository(database, principal.tenant_id, f"{owner}/{name}")
