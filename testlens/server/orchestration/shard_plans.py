"""Shard plans: one split of a test list per CI run, the same for every node of the run.

``POST /api/shard-plans`` splits a test list into shards of equal predicted duration. With a
``plan_key`` (the CI run's identity, which every node derives from its CI environment) the
first node's request computes and stores the plan and every later request of the run gets
that same plan, whatever was uploaded in between: a plan is a property of the CI run, not of
the node that asked. A node whose test list differs from the plan's is refused with 409
``PLAN_CONFLICT`` naming the difference, because splitting a different list would skip or
double tests. ``GET /api/shard-plans/{id}/coverage`` tells which planned tests no upload of
the run reported.

The orchestration area (queue-mode runs, workers) grows from here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from typing import Annotated, Any, get_args

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ...core.durations import Source
from ...core.identity import TestKey, match_tests
from ...core.sharding import GroupBy, plan_shards
from ..database import Database
from ..deps import DatabaseDep, ReadPrincipal
from ..durations.service import history, predictions
from ..errors import ApiError, ErrorCode, error_responses, not_found
from ..ingest.form import REPO_PATTERN
from ..ingest.queries import repository_id
from ..models import Run, ShardPlanRecord, TestCase, TestResult, utcnow

router = APIRouter(tags=["orchestration"])

MAX_PLAN_TESTS = 200_000
_EXAMPLES = 10  # tests named in a conflict or coverage answer
_NOT_RUN_LISTED = 1000


class ShardPlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str = Field(pattern=REPO_PATTERN.pattern)
    environment: str | None = Field(default=None, max_length=200)
    shards: int = Field(ge=1, le=1000)
    group_by: GroupBy = "none"
    tests: list[Annotated[str, Field(min_length=1)]] = Field(max_length=MAX_PLAN_TESTS)
    plan_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="The CI run's identity (e.g. github/<run id>/<job>): every request "
        "with the same key, repository, environment, shard count and grouping gets one plan.",
    )
    workflow_run_id: str | None = Field(
        default=None,
        max_length=100,
        description="The CI run id its nodes upload under, for the plan's coverage.",
    )


class ShardPlanBody(BaseModel):
    plan_id: str
    shards: list[list[str]]
    durations_ms: list[float]
    sources: dict[str, int] = Field(description="Tests per prediction source.")


class ShardPlanCoverage(BaseModel):
    plan_id: str
    workflow_run_id: str | None
    tests: int = Field(description="Tests the plan splits.")
    ran: int = Field(description="Of those, tests some upload of the CI run reported.")
    not_run: list[str] = Field(
        description=f"Planned tests no upload reported (at most {_NOT_RUN_LISTED})."
    )
    uploads: int


def _keys(tests: list[str]) -> dict[TestKey, str]:
    """Each requested node id by its test key; two ids of one test are refused."""
    nodeids: dict[TestKey, str] = {}
    for nodeid in tests:
        key = TestKey.from_nodeid(nodeid)
        if nodeids.setdefault(key, nodeid) != nodeid:
            raise ApiError(
                ErrorCode.DUPLICATE_TEST,
                f"{nodeids[key]!r} and {nodeid!r} name the same test",
                {"tests": [nodeids[key], nodeid]},
            )
    return nodeids


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _plan_key(body: ShardPlanRequest) -> str | None:
    if body.plan_key is None:
        return None
    return _digest(
        body.repo.lower(), body.environment or "", str(body.shards), body.group_by, body.plan_key
    )


def _tests_hash(nodeids: dict[TestKey, str]) -> str:
    return _digest(*sorted(key.nodeid for key in nodeids))


def _plan_document(
    session: Session,
    repo_id: str | None,
    body: ShardPlanRequest,
    nodeids: dict[TestKey, str],
    plan_id: str,
) -> str:
    _, known = history(session, repo_id, body.environment or "")
    estimates = predictions(known, list(nodeids))
    plan = plan_shards(
        {key: found.p50_ms for key, found in estimates.items()}, body.shards, group_by=body.group_by
    )
    counts = Counter(found.source for found in estimates.values())
    return json.dumps(
        {
            "plan_id": plan_id,
            "shards": [[nodeids[key] for key in shard] for shard in plan.shards],
            "durations_ms": [round(duration, 3) for duration in plan.durations_ms],
            "sources": {source: counts[source] for source in get_args(Source)},
        },
        separators=(",", ":"),
    )


def _keyed_plan(session: Session, tenant_id: str, plan_key: str) -> ShardPlanRecord | None:
    return session.scalar(
        select(ShardPlanRecord).where(
            ShardPlanRecord.tenant_id == tenant_id, ShardPlanRecord.plan_key == plan_key
        )
    )


def _check_same_tests(found: ShardPlanRecord, nodeids: dict[TestKey, str], tests_hash: str) -> None:
    """Refuse a node whose test list is not the one the run's plan splits, naming how."""
    if found.tests_hash == tests_hash:
        return
    planned = {TestKey.from_nodeid(t) for shard in json.loads(found.plan)["shards"] for t in shard}
    raise list_conflict(
        {key.nodeid for key in nodeids},
        {key.nodeid for key in planned},
        lead=f"This node lists {len(nodeids)} tests, but the plan of this CI run splits "
        f"{len(planned)}",
        where="plan",
        rule="Every node of a run must collect the same tests.",
        details={"plan_id": found.id},
    )


def list_conflict(
    here: set[str], there: set[str], *, lead: str, where: str, rule: str, details: dict[str, Any]
) -> ApiError:
    """409 ``PLAN_CONFLICT`` for a machine whose test list differs from the one its CI run
    already has (in its ``where``): how many, and a few of them, on each side."""
    only_here, only_there = sorted(here - there), sorted(there - here)
    return ApiError(
        ErrorCode.PLAN_CONFLICT,
        f"{lead}: {len(only_here)} only here"
        + (f" (e.g. {only_here[0]})" if only_here else "")
        + f", {len(only_there)} only in the {where}"
        + (f" (e.g. {only_there[0]})" if only_there else "")
        + f". {rule}",
        {
            **details,
            "only_here": only_here[:_EXAMPLES],
            f"only_in_{where}": only_there[:_EXAMPLES],
        },
    )


def create_plan(database: Database, tenant_id: str, body: ShardPlanRequest) -> tuple[str, bool]:
    """The plan for ``body`` as JSON (a :class:`ShardPlanBody`), and whether it is new.

    With a ``plan_key``, the run's existing plan is answered if there is one. A repository
    this tenant has never uploaded to is planned with default durations (equal counts per
    shard) rather than refused: a new repository's first run has no history yet.
    """
    nodeids = _keys(body.tests)
    plan_key, tests_hash = _plan_key(body), _tests_hash(nodeids)
    if plan_key is not None:
        with database.read() as session:
            found = _keyed_plan(session, tenant_id, plan_key)
            if found is not None:
                _check_same_tests(found, nodeids, tests_hash)
                return found.plan, False
    plan_id = str(uuid.uuid4())
    with database.transaction() as session:
        # Created if new, as an upload would: the plan's coverage is read from its uploads.
        repo_id = repository_id(database, session, tenant_id, body.repo)
        document = _plan_document(session, repo_id, body, nodeids, plan_id)
    try:
        with database.transaction() as session:
            session.add(
                ShardPlanRecord(
                    id=plan_id,
                    tenant_id=tenant_id,
                    repo_id=repo_id,
                    plan=document,
                    created_at=utcnow(),
                    plan_key=plan_key,
                    tests_hash=tests_hash,
                    environment=body.environment or "",
                    workflow_run_id=body.workflow_run_id,
                )
            )
    except IntegrityError:  # another node of the run stored its plan first: that one counts
        assert plan_key is not None, "only keyed plans can collide"
        with database.transaction() as session:
            found = _keyed_plan(session, tenant_id, plan_key)
            assert found is not None, "the plan that won the race exists"
            _check_same_tests(found, nodeids, tests_hash)
            return found.plan, False
    return document, True


def _stored(session: Session, tenant_id: str, plan_id: str) -> ShardPlanRecord:
    found = session.scalar(
        select(ShardPlanRecord).where(
            ShardPlanRecord.id == plan_id, ShardPlanRecord.tenant_id == tenant_id
        )
    )
    if found is None:
        raise not_found("shard plan", plan_id)
    return found


def stored_plan(database: Database, tenant_id: str, plan_id: str) -> str:
    with database.read() as session:
        return _stored(session, tenant_id, plan_id).plan


def coverage(database: Database, tenant_id: str, plan_id: str) -> dict[str, Any]:
    """Which planned tests the CI run's uploads (same run id and environment) reported."""
    with database.read() as session:
        plan = _stored(session, tenant_id, plan_id)
        planned = [t for shard in json.loads(plan.plan)["shards"] for t in shard]
        reported: set[TestKey] = set()
        uploads = 0
        if plan.workflow_run_id is not None and plan.repo_id is not None:
            runs = select(Run.id).where(
                Run.repo_id == plan.repo_id,
                Run.workflow_run_id == plan.workflow_run_id,
                Run.environment == plan.environment
                if plan.environment
                else Run.environment.is_(None) | (Run.environment == ""),
            )
            run_ids = list(session.scalars(runs))
            uploads = len(run_ids)
            rows = session.execute(
                select(TestCase.file, TestCase.suite, TestCase.classname, TestCase.name)
                .join(TestResult, TestResult.test_id == TestCase.id)
                .where(TestResult.run_id.in_(run_ids))
                .distinct()
            )
            reported = {TestKey(*row) for row in rows}
    keys = {nodeid: TestKey.from_nodeid(nodeid) for nodeid in planned}
    matched = match_tests(list(keys.values()), reported)
    not_run = [nodeid for nodeid, key in keys.items() if key not in matched]
    return {
        "plan_id": plan_id,
        "workflow_run_id": plan.workflow_run_id,
        "tests": len(planned),
        "ran": len(planned) - len(not_run),
        "not_run": not_run[:_NOT_RUN_LISTED],
        "uploads": uploads,
    }


@router.post(
    "/api/shard-plans",
    status_code=201,
    responses={
        201: {"model": ShardPlanBody, "description": "A new plan."},
        200: {"model": ShardPlanBody, "description": "The CI run's existing plan."},
        **error_responses(ErrorCode.PLAN_CONFLICT, ErrorCode.DUPLICATE_TEST),
    },
)
def create_shard_plan(
    body: ShardPlanRequest, database: DatabaseDep, principal: ReadPrincipal
) -> Response:
    """Split ``tests`` (pytest-style ids) into shards of equal predicted duration; with a
    ``plan_key``, every node of the CI run gets the same plan."""
    document, new = create_plan(database, principal.tenant_id, body)
    return Response(document, status_code=201 if new else 200, media_type="application/json")


@router.get(
    "/api/shard-plans/{plan_id}",
    responses={200: {"model": ShardPlanBody}, **error_responses(ErrorCode.NOT_FOUND)},
)
def get_shard_plan(plan_id: str, database: DatabaseDep, principal: ReadPrincipal) -> Response:
    """A stored plan, exactly as it was created (404 for unknown or other tenants' plans)."""
    return Response(
        stored_plan(database, principal.tenant_id, plan_id), media_type="application/json"
    )


@router.get("/api/shard-plans/{plan_id}/coverage", responses=error_responses(ErrorCode.NOT_FOUND))
def get_shard_plan_coverage(
    plan_id: str, database: DatabaseDep, principal: ReadPrincipal
) -> ShardPlanCoverage:
    """The planned tests that no upload of the plan's CI run reported (same
    ``workflow_run_id`` and environment): what a node that never ran, or ran something
    else, left out."""
    return ShardPlanCoverage(**coverage(database, principal.tenant_id, plan_id))
