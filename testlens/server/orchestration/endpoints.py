"""``/api/v1/orchestrate`` and ``/api/v1/runs``: orchestrated runs in the Shifty dialect,
and testlens' worker protocol (docs/orchestration.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from ..deps import DatabaseDep, IngestPrincipal, ReadPrincipal, SettingsDep
from ..errors import ApiError, ErrorCode, error_responses
from ..models.builds import FINISHED, BuildStatus
from . import reading, service
from .schemas import (
    CancelResponse,
    ClaimRequest,
    ClaimResponse,
    FailedTests,
    HeartbeatResponse,
    OpenRunRequest,
    OpenRunResponse,
    OrchestrateRequest,
    OrchestrateResponse,
    QueueStats,
    ReleaseResponse,
    RunList,
    RunWithResults,
)

router = APIRouter(prefix="/api/v1", tags=["orchestration"])

PROGRESS_SECONDS = 2.0
"""How often the progress stream sends a snapshot."""
KEEP_ALIVE_SECONDS = 15
"""How often the progress stream sends a comment, so proxies keep an idle stream open."""

RunId = Annotated[str, Path(max_length=36)]
BatchId = Annotated[str, Path(min_length=1, max_length=100)]
_NOT_FOUND = error_responses(ErrorCode.RUN_NOT_FOUND)


@router.post(
    "/orchestrate",
    status_code=201,
    responses={
        201: {"model": OrchestrateResponse, "description": "A new run."},
        200: {"model": OrchestrateResponse, "description": "The CI build's existing run."},
        **error_responses(ErrorCode.PLAN_CONFLICT, ErrorCode.QUEUE_FULL),
    },
)
def orchestrate(
    body: OrchestrateRequest,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: IngestPrincipal,
) -> JSONResponse:
    """Create a run: its work as a queue of files (or tests), planned from their predicted
    durations. With a ``ciBuildId`` every machine of the CI build gets the same run."""
    plan, new = service.create(
        database, principal.tenant_id, body, service.QueueConfig.of(settings)
    )
    return JSONResponse(plan, status_code=201 if new else 200)


@router.delete(
    "/orchestrate/{runId}",
    responses=error_responses(
        ErrorCode.RUN_NOT_FOUND, ErrorCode.RUN_FINISHED, ErrorCode.INVALID_PARAMETERS
    ),
)
def cancel(runId: RunId, database: DatabaseDep, principal: IngestPrincipal) -> CancelResponse:
    """Cancel a run: work not handed out is removed, work in progress finishes and its
    results are kept; workers learn it at their next call."""
    service.cancel(database, principal.tenant_id, runId)
    return CancelResponse(success=True, message="Orchestration cancelled")


@router.get("/orchestrate/queue/stats")
def queue_stats(database: DatabaseDep, principal: ReadPrincipal) -> QueueStats:
    """Items of the caller's tenant by state: waiting, held by a worker, done, lost."""
    return QueueStats(**service.queue_stats(database, principal.tenant_id))


@router.get(
    "/orchestrate/{runId}/progress",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."},
        **error_responses(ErrorCode.RUN_NOT_FOUND, ErrorCode.INVALID_PARAMETERS),
    },
)
async def progress(
    runId: RunId,
    database: DatabaseDep,
    principal: ReadPrincipal,
) -> EventSourceResponse:
    """Server-Sent Events: a JSON snapshot of the run every 2 s, closed once the run
    completes, fails or is cancelled."""
    first = await run_in_threadpool(reading.progress, database, principal.tenant_id, runId)

    async def snapshots() -> AsyncIterator[dict[str, str]]:
        snapshot, seq = first
        while True:
            # The id is the run's last event in the log: a snapshot is whole, so a client
            # that reconnects (Last-Event-ID) needs nothing before the next one.
            yield {"data": json.dumps(snapshot, separators=(",", ":")), "id": str(seq)}
            if snapshot["status"] in FINISHED:
                return
            await asyncio.sleep(PROGRESS_SECONDS)
            snapshot, seq = await run_in_threadpool(
                reading.progress, database, principal.tenant_id, runId
            )

    return EventSourceResponse(snapshots(), ping=KEEP_ALIVE_SECONDS)


@router.post(
    "/orchestrate/{runId}/claims",
    responses=error_responses(
        ErrorCode.RUN_NOT_FOUND,
        ErrorCode.RUN_CANCELLED,
        ErrorCode.RUN_FINISHED,
        ErrorCode.INVALID_PARAMETERS,
    ),
)
def claim(
    runId: RunId,
    body: ClaimRequest,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: IngestPrincipal,
) -> ClaimResponse:
    """The next batch for a worker (the same batch again for a repeated ``batchId``), or
    ``wait``; 409 when the worker should stop."""
    answer = service.claim(
        database, principal.tenant_id, runId, body, service.QueueConfig.of(settings)
    )
    return ClaimResponse(**answer)


@router.post(
    "/orchestrate/{runId}/claims/{batchId}/heartbeat",
    responses=error_responses(ErrorCode.RUN_NOT_FOUND, ErrorCode.INVALID_PARAMETERS),
)
def heartbeat(
    runId: RunId,
    batchId: BatchId,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: IngestPrincipal,
) -> HeartbeatResponse:
    """Renew a batch's lease; the answer says whether to go on."""
    answer = service.heartbeat(
        database, principal.tenant_id, runId, batchId, service.QueueConfig.of(settings)
    )
    return HeartbeatResponse(**answer)


@router.delete(
    "/orchestrate/{runId}/claims/{batchId}",
    responses=error_responses(ErrorCode.RUN_NOT_FOUND, ErrorCode.INVALID_PARAMETERS),
)
def release(
    runId: RunId,
    batchId: BatchId,
    database: DatabaseDep,
    principal: IngestPrincipal,
) -> ReleaseResponse:
    """Give a batch back: its items without a result go to the front of the queue."""
    return ReleaseResponse(released=service.release(database, principal.tenant_id, runId, batchId))


@router.get("/runs", responses=error_responses(ErrorCode.INVALID_TENANT))
def runs(
    database: DatabaseDep,
    principal: ReadPrincipal,
    tenant: Annotated[str | None, Query(max_length=100)] = None,
    project: Annotated[str | None, Query(max_length=300)] = None,
    branch: Annotated[str | None, Query(max_length=300)] = None,
    status: Annotated[BuildStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> RunList:
    """The tenant's runs (CI builds), newest first: orchestrated ones and those made of
    plain uploads (every upload of one workflow run id, or one upload alone)."""
    if tenant is not None and tenant not in (principal.tenant_id, principal.tenant_name):
        raise ApiError(ErrorCode.INVALID_TENANT, "tenant names another tenant than the key's")
    return RunList(
        **reading.run_list(
            database,
            principal.tenant_id,
            project=project,
            branch=branch,
            status=status,
            limit=limit,
            offset=offset,
        )
    )


@router.post(
    "/runs",
    status_code=201,
    responses={
        201: {"model": OpenRunResponse, "description": "A new run."},
        200: {"model": OpenRunResponse, "description": "The CI run's existing run."},
    },
)
def open_run(
    body: OpenRunRequest, database: DatabaseDep, principal: IngestPrincipal
) -> JSONResponse:
    """Open a run of plain uploads before uploading, to publish live events to it
    (``POST /api/v1/runs/{runId}/events``); uploads that name it in ``orchestration_run``
    join it. With ``ciBuildId`` every machine of one CI run gets the same run."""
    opened, new = service.open_run(database, principal.tenant_id, body)
    return JSONResponse(opened, status_code=201 if new else 200)


@router.get("/runs/{runId}", responses=_NOT_FOUND)
def run(
    runId: RunId,
    database: DatabaseDep,
    principal: ReadPrincipal,
    limit: Annotated[int, Query(ge=1, le=reading.MAX_RESULTS_PAGE)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RunWithResults:
    """One run and a page of its results: each test once, with its combined status and
    ``retryCount`` (its attempts less one); ``totalResults`` says how many there are."""
    return RunWithResults(**reading.run_detail(database, principal.tenant_id, runId, limit, offset))


@router.get("/runs/{runId}/failed-tests", responses=_NOT_FOUND)
def failed_tests(runId: RunId, database: DatabaseDep, principal: ReadPrincipal) -> FailedTests:
    """The run's failed tests (not the flaky ones, which passed on a retry) and lost items,
    for rerunning exactly those."""
    return FailedTests(**reading.failed_tests(database, principal.tenant_id, runId))
