"""``/api/fix-attempts``: the Unfold dialect of fix tracking, with testlens' verdict on
each fix's effect."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import DatabaseDep, IngestPrincipal, ReadPrincipal, SettingsDep
from ..errors import ErrorCode, error_responses
from ..github.client import web_url
from ..models import utcnow
from . import service
from .schemas import FixAttemptDetail, FixAttemptIn, FixAttemptList, StatusFilter

router = APIRouter(tags=["fix attempts"])

MAX_LIMIT = 100


@router.get("/api/fix-attempts", responses=error_responses(ErrorCode.NOT_FOUND))
def list_fix_attempts(
    database: DatabaseDep,
    settings: SettingsDep,
    principal: ReadPrincipal,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10,
    status: StatusFilter = "all",
    repo_id: Annotated[str | None, Query(max_length=36)] = None,
) -> FixAttemptList:
    """The newest fix attempts, and how many there are by status."""
    github = web_url(settings.github_api_url)
    return service.listing(database, principal.tenant_id, limit, status, repo_id, github)


@router.get("/api/fix-attempts/{attempt_id}", responses=error_responses(ErrorCode.NOT_FOUND))
def get_fix_attempt(
    attempt_id: str, database: DatabaseDep, settings: SettingsDep, principal: ReadPrincipal
) -> FixAttemptDetail:
    """One fix attempt, its effect on the test's mainline runs and testlens' verdict."""
    return service.detail(database, principal.tenant_id, attempt_id, settings.mainline_branches)


@router.post(
    "/api/fix-attempts",
    status_code=201,
    responses=error_responses(ErrorCode.INVALID_FIELD, ErrorCode.NOT_FOUND),
)
def create_fix_attempt(
    body: FixAttemptIn, database: DatabaseDep, settings: SettingsDep, principal: IngestPrincipal
) -> FixAttemptDetail:
    """Record a fix attempt made outside GitHub pull requests (or before the App was
    installed); merged ones are judged at once."""
    return service.record(database, principal.tenant_id, body, settings.mainline_branches, utcnow())
