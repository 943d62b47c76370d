"""The flaky feed, ``/api/v1/testdeck/flaky``: the tests of a repository that flaked in the
last 30 days, in the seed dialect (query string or JSON body, ``Link`` header to the next
page), read from the per-test figures on ``test_cases`` with an index range scan.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from .database import Database
from .deps import DatabaseDep, ReadPrincipal
from .errors import (
    ApiError,
    ErrorCode,
    error_responses,
    missing_field,
    validation_error,
    validation_problems,
)
from .models import Run, TestCase, TestState, iso, utcnow
from .pagination import MAX_PAGE, Page, Paged
from .scoping import find_repo
from .testcases import class_name, last_24_hours

router = APIRouter(tags=["flaky feed"])

FEED_WINDOW = timedelta(days=30)
PAGE_SIZE = 100

_FEED_COLUMNS = (
    TestCase.id, TestCase.name, TestCase.classname, TestCase.suite, TestCase.first_flaky_at,
    TestCase.last_flaky_at, TestCase.recent_flaky,
)  # fmt: skip


class FeedQuery(BaseModel):
    org: str | None = None
    repo: str | None = None
    github_check_name: str | None = None
    page: int = Field(1, ge=1, le=MAX_PAGE)

    @property
    def repo_name(self) -> str:
        """``org/repo`` from ``repo`` alone (``org/repo``) or from ``org`` and ``repo``."""
        if not self.repo:
            raise missing_field("repo", "repository name (with org)")
        if "/" in self.repo:
            return self.repo
        if not self.org:
            raise missing_field("org", "organisation owning the repository")
        return f"{self.org}/{self.repo}"


class FeedRepository(BaseModel):
    name: str
    org: str


class FeedCheck(BaseModel):
    name: str | None
    provider: str


class FeedTestCase(BaseModel):
    name: str
    class_name: str
    first_occurrence: str | None
    last_occurrence: str | None
    details_url: str
    last_24_hours_count: int


class FlakyFeed(BaseModel):
    repository: FeedRepository
    github_check: FeedCheck
    test_cases: list[FeedTestCase]


async def _feed_query(request: Request) -> FeedQuery:
    """Parameters from the query string, or from a JSON body (the dialect allows both)."""
    values: dict[str, Any] = dict(request.query_params)
    if not values and request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                raise ApiError(
                    ErrorCode.INVALID_JSON, "The request body is not valid JSON"
                ) from None
            if isinstance(parsed, dict):
                values = parsed
    try:
        return FeedQuery.model_validate(values)
    except ValidationError as exc:
        raise validation_error(validation_problems(exc.errors())) from None


def feed(
    database: Database, tenant_id: str, query: FeedQuery, base_url: str
) -> tuple[dict[str, Any], bool]:
    """A :class:`FlakyFeed` body for one page, and whether another page follows."""
    now = utcnow()
    name = query.repo_name
    page = Page(query.page, PAGE_SIZE)
    with database.read() as session:
        repo = find_repo(session, tenant_id, name)
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
        rows = list(
            session.execute(
                select(*_FEED_COLUMNS)
                .where(*conditions)
                .order_by(TestCase.first_flaky_at.desc(), TestCase.id)
                .limit(page.fetch)
                .offset(page.offset)
            )
        )
        provider = session.scalar(
            select(Run.provider)
            .where(Run.repo_id == repo.id)
            .order_by(Run.created_at.desc())
            .limit(1)
        )
    paged = Paged.of(rows, page)
    org, _, short = repo.name.partition("/")
    body = {
        "repository": {"name": short, "org": org},
        "github_check": {"name": query.github_check_name, "provider": provider or "github"},
        "test_cases": [
            {
                "name": test.name,
                "class_name": class_name(test),
                "first_occurrence": iso(test.first_flaky_at),
                "last_occurrence": iso(test.last_flaky_at),
                "details_url": f"{base_url}/api/tests/{test.id}",
                "last_24_hours_count": last_24_hours(test, now),
            }
            for test in paged.items
        ],
    }
    return body, paged.has_more


def _parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


_STRING = {"type": "string"}
_FEED_PARAMETERS = [  # read by _feed_query (from the query or a JSON body), so declared here
    _parameter("repo", "owner/repo, or the repository's name with org.", _STRING),
    _parameter("org", "The owner, when repo is the repository's name alone.", _STRING),
    _parameter("github_check_name", "Only tests that ran in this check.", _STRING),
    _parameter(
        "page",
        f"1-based page number (at most {MAX_PAGE}).",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
    ),
]


@router.get(
    "/api/v1/testdeck/flaky",
    responses={
        200: {"model": FlakyFeed},
        **error_responses(ErrorCode.MISSING_FIELD, ErrorCode.INVALID_JSON, ErrorCode.NOT_FOUND),
    },
    openapi_extra={"parameters": _FEED_PARAMETERS},
)
def flaky_feed(
    request: Request,
    database: DatabaseDep,
    principal: ReadPrincipal,
    query: FeedQuery = Depends(_feed_query),
) -> JSONResponse:
    """Flaky tests of the last 30 days, newest first occurrence first, 100 per page."""
    base = str(request.base_url).rstrip("/")
    body, has_more = feed(database, principal.tenant_id, query, base)
    headers = {}
    if has_more:
        params = {**query.model_dump(exclude_none=True), "page": query.page + 1}
        headers["Link"] = f'<{base}/api/v1/testdeck/flaky?{urlencode(params)}>; rel="next"'
    return JSONResponse(body, headers=headers)
