"""Quarantine: a user's decision that a test's failures must not fail the build.

``POST``/``DELETE /api/tests/{id}/quarantine`` set and lift it (admin keys), and
``GET /api/quarantine`` is the list CI clients read. The test keeps being judged while
quarantined; both changes are recorded as events.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..core.durations import TestKey, pytest_nodeid
from .auth import Principal, require
from .errors import ApiError, not_found
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
    with request.app.state.database.transaction() as session:
        test, _repo = find_test(session, principal.tenant_id, test_id)
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
    with request.app.state.database.transaction() as session:
        test, _repo = find_test(session, principal.tenant_id, test_id)
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
    with request.app.state.database.transaction() as session:
        repository = find_repo(session, principal.tenant_id, repo)
        rows = session.execute(
            select(TestCase, Quarantine)
            .join(Quarantine, Quarantine.test_id == TestCase.id)
            .where(Quarantine.repo_id == repository.id, active(now))
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
