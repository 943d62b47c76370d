"""``GET /api/runs/{id}``: one stored run (one uploaded report), its metadata and totals."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from .database import Database
from .deps import DatabaseDep, ReadPrincipal
from .errors import ErrorCode, error_responses
from .models import iso
from .scoping import find_run

router = APIRouter(tags=["results"])


class RunTotals(BaseModel):
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    flaky: int
    attempts: int
    duration_ms: float


class RunOut(BaseModel):
    id: str
    repo: str
    branch: str | None
    commit: str | None
    tree_sha: str | None
    framework: str
    format: str
    environment: str | None
    provider: str | None
    check_name: str | None
    pr_number: int | None
    workflow_run_id: str | None
    shard: str | None = Field(
        description="How a sharded node chose its tests: 'I/K' from the run's plan, "
        "'I/K local' split without the server, 'all' every test (no plan could be had)."
    )
    created_at: str | None
    recovered: bool = Field(
        description="The report was not well-formed XML and was read by the recovering "
        "parser: part of it may have been read by guesswork (see recovered_reason)."
    )
    recovered_reason: str | None = Field(
        description="The first XML error of a recovered report, else null."
    )
    summary: RunTotals


class RunBody(BaseModel):
    run: RunOut


def run_body(database: Database, tenant_id: str, run_id: str) -> RunBody:
    with database.read() as session:
        run, repo = find_run(session, tenant_id, run_id)
    return RunBody(
        run=RunOut(
            id=run.id,
            repo=repo.name,
            branch=run.branch,
            commit=run.commit_sha,
            tree_sha=run.tree_sha,
            framework=run.framework,
            format=run.format,
            environment=run.environment,
            provider=run.provider,
            check_name=run.check_name,
            pr_number=run.pr_number,
            workflow_run_id=run.workflow_run_id,
            shard=run.shard,
            created_at=iso(run.created_at),
            recovered=run.recovered_reason is not None,
            recovered_reason=run.recovered_reason,
            summary=RunTotals(
                tests=run.tests,
                passed=run.passed,
                failed=run.failed,
                errors=run.errors,
                skipped=run.skipped,
                flaky=run.flaky,
                attempts=run.attempts,
                duration_ms=run.duration_ms,
            ),
        )
    )


@router.get("/api/runs/{run_id}", responses=error_responses(ErrorCode.NOT_FOUND))
def get_run(run_id: str, database: DatabaseDep, principal: ReadPrincipal) -> RunBody:
    """One stored run: its metadata and totals (404 for unknown or other tenants' runs)."""
    return run_body(database, principal.tenant_id, run_id)
