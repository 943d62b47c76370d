"""Routes of the durations area: ``GET /api/durations`` and the Flakiness.io Durations API
(``/api/testDurations/...``, with its presigned upload and download URLs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from ..deps import DatabaseDep, KeysDep, ReadPrincipal, SettingsDep
from ..errors import ErrorCode, error_responses, too_large, unsupported_media_type
from ..ingest.form import REPO_PATTERN
from . import jobs, service
from .schemas import (
    CreateDurationsJob,
    DurationsJobCreated,
    DurationsJobSubmitted,
    DurationsListing,
)

router = APIRouter(tags=["durations"])

_PRESIGNED = (
    ErrorCode.URL_EXPIRED,
    ErrorCode.INVALID_SIGNATURE,
    ErrorCode.NOT_FOUND,
    ErrorCode.DATABASE_UNAVAILABLE,
)
"""What a presigned URL answers whatever it is for: it needs no API key, only its signature."""
_TOKEN = HTTPBearer(
    scheme_name="DurationsToken",
    description="The testDurationsToken that POST /api/testDurations/create answered.",
    auto_error=False,  # jobs.token_job answers a missing or invalid token, in the shared body
)
_REPORT_UPLOAD = {
    "parameters": [
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "enum": ["br"]},
            "description": "The report is Brotli-compressed.",
        }
    ],
    "requestBody": {
        "required": True,
        "description": "A Flakiness report (JSON), Brotli-compressed; any Content-Type.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


@router.get("/api/durations", responses=error_responses(ErrorCode.NOT_FOUND))
def list_durations(
    database: DatabaseDep,
    principal: ReadPrincipal,
    repo: Annotated[str, Query(pattern=REPO_PATTERN.pattern)],
    environment: Annotated[str, Query(max_length=200)] = "",
) -> DurationsListing:
    """Predicted duration of every test with history in one environment of a repository."""
    return service.listing(database, principal.tenant_id, repo, environment)


@router.post("/api/testDurations/create")
def create_durations_job(
    body: CreateDurationsJob,
    request: Request,
    database: DatabaseDep,
    keys: KeysDep,
    principal: ReadPrincipal,
) -> DurationsJobCreated:
    """Open the job of one sharded run, or join it: every shard of the run (same commit,
    shard group and project) gets its own token for the one shared job."""
    job_id, token = jobs.open_job(
        database, keys, principal.tenant_id, body.commit_id, body.shard_group_key, body.project
    )
    upload_url = jobs.presign(keys, request.url_for, jobs.UPLOAD_ROUTE, job_id, jobs.UPLOAD_URL_TTL)
    return DurationsJobCreated(test_durations_token=token, upload_url=upload_url)


@router.put(
    "/api/testDurations/jobs/{job_id}/report",
    name=jobs.UPLOAD_ROUTE,
    response_class=Response,
    responses={
        200: {"description": "The report was stored, or a shard's copy ignored."},
        **error_responses(
            *_PRESIGNED,
            ErrorCode.INVALID_REPORT,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ),
    },
    openapi_extra=_REPORT_UPLOAD,  # read from the stream, so FastAPI cannot tell its shape
)
async def upload_durations_report(
    job_id: str,
    request: Request,
    database: DatabaseDep,
    keys: KeysDep,
    settings: SettingsDep,
    expires: str = "",
    signature: str = "",
) -> Response:
    """The presigned upload: a Brotli-compressed Flakiness report of the tests to run.

    The first valid upload of a job is kept; the run's other shards upload the same report,
    which is answered 200 and ignored.
    """
    jobs.verify_url(keys, jobs.UPLOAD_ROUTE, job_id, expires, signature)
    if request.headers.get("content-encoding", "").strip().lower() != "br":
        raise unsupported_media_type("Send the report Brotli-compressed, with Content-Encoding: br")
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, "report")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit, "report")
        chunks.append(chunk)
    await run_in_threadpool(jobs.accept_report, database, job_id, b"".join(chunks), limit)
    return Response(status_code=200)


@router.post(
    "/api/testDurations/submit",
    dependencies=[Security(_TOKEN)],  # read by jobs.token_job; declared for the documentation
    responses=error_responses(
        ErrorCode.REPORT_NOT_UPLOADED,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.INVALID_TOKEN,
        ErrorCode.TOKEN_EXPIRED,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.DATABASE_UNAVAILABLE,
    ),
)
def submit_durations_job(
    request: Request, database: DatabaseDep, keys: KeysDep
) -> DurationsJobSubmitted:
    """Start computing the job's durations (once for all shards); answer where to poll."""
    job_id = jobs.token_job(database, keys, request.headers.get("authorization", ""))
    jobs.submit(database, job_id)
    url = jobs.presign(keys, request.url_for, jobs.DOWNLOAD_ROUTE, job_id, jobs.DOWNLOAD_URL_TTL)
    return DurationsJobSubmitted(download_url=url)


@router.get(
    "/api/testDurations/jobs/{job_id}/durations",
    name=jobs.DOWNLOAD_ROUTE,
    response_class=Response,
    responses={
        200: {
            "description": "The report with predicted attempts, Brotli-compressed JSON.",
            "content": {"application/json": {}},
        },
        **error_responses(*_PRESIGNED, ErrorCode.NOT_READY, ErrorCode.COMPUTATION_FAILED),
    },
)
def download_durations(
    job_id: str, database: DatabaseDep, keys: KeysDep, expires: str = "", signature: str = ""
) -> Response:
    """The presigned download: the uploaded report with predicted attempts (Brotli), or 404
    while it is being computed."""
    jobs.verify_url(keys, jobs.DOWNLOAD_ROUTE, job_id, expires, signature)
    result = jobs.download(database, job_id)
    return Response(result, media_type="application/json", headers={"Content-Encoding": "br"})
