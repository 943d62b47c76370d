"""``POST /api/test-results``: the Unfold CI ingest dialect."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import ratelimit
from ..deps import DatabaseDep, IngestPrincipal, SettingsDep
from ..errors import ErrorCode, error_responses
from . import form, service
from .schemas import UPLOAD_FORM, IngestResponse

router = APIRouter(tags=["results"])


@router.post(
    "/api/test-results",
    status_code=201,
    responses={
        201: {"model": IngestResponse},
        **error_responses(
            ErrorCode.MISSING_FIELD,
            ErrorCode.INVALID_FIELD,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.TOO_MANY_RESULTS,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            ErrorCode.UNPARSEABLE_REPORT,
            ErrorCode.RUN_NOT_FOUND,
        ),
    },
    openapi_extra={"requestBody": UPLOAD_FORM},
)
async def upload_test_results(
    request: Request, database: DatabaseDep, settings: SettingsDep, principal: IngestPrincipal
) -> JSONResponse:
    """Upload one test report (multipart form) for a repository.

    A repeated upload of the same report answers the first run's id, with the header
    ``Testlens-Duplicate: true``. Over the repository's rate limit, 429 before the report is
    read.
    """
    limit = settings.max_upload_bytes
    form.check_request(
        request.headers.get("content-type", ""), request.headers.get("content-length"), limit
    )
    async with request.form(max_files=1, max_fields=32) as fields:
        upload = form.report_file(fields)
        meta = form.read_metadata(fields)
        await ratelimit.charge_upload(request, principal.tenant_id, meta.repo)
        # Waiting here holds no thread: reads keep being answered however many uploads queue.
        async with request.app.state.ingest_slots:
            data = await form.read_report(upload, limit)
            result = await run_in_threadpool(
                service.ingest,
                database,
                principal.tenant_id,
                meta,
                data,
                settings.mainline_branches,
                settings.max_report_results,
            )
    body = IngestResponse(
        success=True,
        tests_processed=result.tests_processed,
        flaky_detected=result.flaky_detected,
        run_id=result.run_id,
    )
    headers = {"Testlens-Duplicate": "true"} if result.duplicate else None
    return JSONResponse(body.model_dump(), status_code=201, headers=headers)
