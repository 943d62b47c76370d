"""Shard plans: ``POST /api/shard-plans`` splits a test list into shards of equal predicted
duration and stores the split, ``GET /api/shard-plans/{id}`` hands the same plan to every CI
node of the run.

The orchestration area (queue-mode runs, workers) grows from here.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Annotated, get_args

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ..core.durations import Source
from ..core.identity import TestKey
from ..core.sharding import GroupBy, plan_shards
from .database import Database
from .deps import DatabaseDep, ReadPrincipal
from .durations.service import history, predictions
from .errors import ApiError, ErrorCode, not_found
from .ingest.form import REPO_PATTERN
from .models import ShardPlanRecord, utcnow
from .scoping import repo_id_named

router = APIRouter(tags=["orchestration"])

MAX_PLAN_TESTS = 200_000


class ShardPlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str = Field(pattern=REPO_PATTERN.pattern)
    environment: str | None = Field(default=None, max_length=200)
    shards: int = Field(ge=1, le=1000)
    group_by: GroupBy = "none"
    tests: list[Annotated[str, Field(min_length=1)]] = Field(max_length=MAX_PLAN_TESTS)


class ShardPlanBody(BaseModel):
    plan_id: str
    shards: list[list[str]]
    durations_ms: list[float]
    sources: dict[str, int] = Field(description="Tests per prediction source.")


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


def create_plan(database: Database, tenant_id: str, body: ShardPlanRequest) -> str:
    """Plan and store; return the plan as JSON (a :class:`ShardPlanBody`).

    A repository this tenant has never uploaded to is planned with default durations (equal
    counts per shard) rather than refused: a new repository's first run has no history yet.
    """
    nodeids = _keys(body.tests)
    with database.transaction() as session:
        repo_id = repo_id_named(session, tenant_id, body.repo)
        _, known = history(session, repo_id, body.environment or "")
    estimates = predictions(known, list(nodeids))
    plan = plan_shards(
        {key: found.p50_ms for key, found in estimates.items()}, body.shards, group_by=body.group_by
    )
    counts = Counter(found.source for found in estimates.values())
    plan_id = str(uuid.uuid4())
    document = json.dumps(
        {
            "plan_id": plan_id,
            "shards": [[nodeids[key] for key in shard] for shard in plan.shards],
            "durations_ms": [round(duration, 3) for duration in plan.durations_ms],
            "sources": {source: counts[source] for source in get_args(Source)},
        },
        separators=(",", ":"),
    )
    with database.transaction() as session:
        session.add(
            ShardPlanRecord(
                id=plan_id, tenant_id=tenant_id, repo_id=repo_id, plan=document, created_at=utcnow()
            )
        )
    return document


def stored_plan(database: Database, tenant_id: str, plan_id: str) -> str:
    with database.transaction() as session:
        document = session.scalar(
            select(ShardPlanRecord.plan).where(
                ShardPlanRecord.id == plan_id, ShardPlanRecord.tenant_id == tenant_id
            )
        )
    if document is None:
        raise not_found("shard plan", plan_id)
    return document


@router.post("/api/shard-plans", status_code=201, responses={201: {"model": ShardPlanBody}})
def create_shard_plan(
    body: ShardPlanRequest, database: DatabaseDep, principal: ReadPrincipal
) -> Response:
    """Split ``tests`` (pytest-style ids) into shards of equal predicted duration, and store
    the plan so that every CI node of the run can fetch the same one by its id."""
    document = create_plan(database, principal.tenant_id, body)
    return Response(document, status_code=201, media_type="application/json")


@router.get("/api/shard-plans/{plan_id}", responses={200: {"model": ShardPlanBody}})
def get_shard_plan(plan_id: str, database: DatabaseDep, principal: ReadPrincipal) -> Response:
    """A stored plan, exactly as it was created (404 for unknown or other tenants' plans)."""
    return Response(
        stored_plan(database, principal.tenant_id, plan_id), media_type="application/json"
    )
