"""Quarantine: a user's decision that a test's failures must not fail the build.

``POST``/``DELETE /api/tests/{id}/quarantine`` set and lift it (admin keys), and
``GET /api/quarantine`` is the list CI clients read. The test keeps being judged while
quarantined; both changes are recorded as events.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..core.identity import TestKey, pytest_nodeid
from .database import Database
from .deps import AdminPrincipal, DatabaseDep, ReadPrincipal
from .errors import ErrorCode, error_responses, invalid_field, not_found
from .models import Quarantine, TestCase, TestEvent, iso, utcnow
from .scoping import find_repo, find_test

router = APIRouter(tags=["quarantine"])


def active(now: datetime) -> Any:
    """The condition for a quarantine in force at ``now``."""
    return or_(Quarantine.expires_at.is_(None), Quarantine.expires_at > now)


def active_quarantines(
    session: Session, test_ids: Iterable[str], now: datetime
) -> dict[str, Quarantine]:
    ids = list(test_ids)
    if not ids:
        return {}
    rows = session.scalars(select(Quarantine).where(Quarantine.test_id.in_(ids), active(now)))
    return {q.test_id: q for q in rows}


class QuarantineRequest(BaseModel):
    reason: str = Field("", max_length=2000)
    expires_at: datetime | None = None


class QuarantineOut(BaseModel):
    test_id: str
    reason: str
    created_at: str | None
    expires_at: str | None


class QuarantinedTest(BaseModel):
    id: str
    file: str
    suite: str
    classname: str
    name: str
    nodeid: str = Field(description="The pytest node id CI clients match on.")
    reason: str
    expires_at: str | None


class QuarantineList(BaseModel):
    repo: str
    tests: list[QuarantinedTest]


def _quarantine_out(test: TestCase, q: Quarantine) -> QuarantineOut:
    return QuarantineOut(
        test_id=test.id,
        reason=q.reason,
        created_at=iso(q.created_at),
        expires_at=iso(q.expires_at),
    )


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


def quarantine(
    database: Database, tenant_id: str, key_id: str, test_id: str, body: QuarantineRequest
) -> QuarantineOut:
    """Quarantine a test (or change its reason and expiry); recorded as an event once."""
    now = utcnow()
    expires = body.expires_at
    if expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= now:
            raise invalid_field(
                "expires_at", "ISO-8601 time in the future", "expires_at must be in the future"
            )
    with database.transaction() as session:
        test, _repo = find_test(session, tenant_id, test_id)
        existing = session.get(Quarantine, test.id)
        if existing is None:
            existing = Quarantine(test_id=test.id, repo_id=test.repo_id, created_at=now)
            session.add(existing)
            _record_quarantine_event(
                session, test, test.state, "quarantined", body.reason or "quarantined by a user"
            )
        existing.reason = body.reason
        existing.expires_at = expires
        existing.created_by = key_id
        return _quarantine_out(test, existing)


def lift(database: Database, tenant_id: str, test_id: str) -> None:
    with database.transaction() as session:
        test, _repo = find_test(session, tenant_id, test_id)
        existing = session.get(Quarantine, test.id)
        if existing is None:
            raise not_found("quarantine", test_id)
        session.delete(existing)
        _record_quarantine_event(session, test, "quarantined", test.state, "quarantine lifted")


def quarantine_list(database: Database, tenant_id: str, repo: str) -> dict[str, Any]:
    """The active quarantines of a repository: a :class:`QuarantineList` body."""
    now = utcnow()
    with database.read() as session:
        repository = find_repo(session, tenant_id, repo)
        rows = session.execute(
            select(TestCase, Quarantine)
            .join(Quarantine, Quarantine.test_id == TestCase.id)
            .where(Quarantine.repo_id == repository.id, active(now))
            .order_by(TestCase.file, TestCase.name)
        ).all()
    return {
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


@router.post(
    "/api/tests/{test_id}/quarantine",
    status_code=201,
    responses=error_responses(ErrorCode.INVALID_FIELD, ErrorCode.NOT_FOUND),
)
def quarantine_test(
    test_id: str, body: QuarantineRequest, database: DatabaseDep, principal: AdminPrincipal
) -> QuarantineOut:
    """Quarantine a test: CI clients stop failing builds on its failures (until expiry)."""
    return quarantine(database, principal.tenant_id, principal.key_id, test_id, body)


@router.delete(
    "/api/tests/{test_id}/quarantine",
    status_code=204,
    response_class=Response,
    responses=error_responses(ErrorCode.NOT_FOUND),
)
def unquarantine_test(test_id: str, database: DatabaseDep, principal: AdminPrincipal) -> None:
    """Lift a quarantine."""
    lift(database, principal.tenant_id, test_id)


@router.get(
    "/api/quarantine",
    responses={200: {"model": QuarantineList}, **error_responses(ErrorCode.NOT_FOUND)},
)
def list_quarantine(
    database: DatabaseDep,
    principal: ReadPrincipal,
    repo: str = Query(..., description="owner/repo"),
) -> JSONResponse:
    """Active quarantines of a repository: the list CI clients read to know which failures
    must not fail the build."""
    return JSONResponse(quarantine_list(database, principal.tenant_id, repo))
