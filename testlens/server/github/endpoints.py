"""``POST /api/github/webhooks``: GitHub App deliveries. No API key: the signature of the
body with the App's webhook secret is the authentication."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..deps import DatabaseDep, SettingsDep
from ..errors import ErrorCode, error_responses, too_large
from . import service, tasks
from .schemas import Accepted

router = APIRouter(tags=["github"])

_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
    "description": "A GitHub webhook payload, signed in X-Hub-Signature-256.",
}


async def _body(request: Request, limit: int) -> bytes:
    """The raw body (what the signature covers), refused past ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, "delivery")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise too_large(limit, "delivery")
    return bytes(chunks)


@router.post(
    "/api/github/webhooks",
    status_code=202,
    responses={
        202: {"model": Accepted},
        **error_responses(
            ErrorCode.MISSING_FIELD,
            ErrorCode.INVALID_FIELD,
            ErrorCode.INVALID_JSON,
            ErrorCode.INVALID_WEBHOOK_SIGNATURE,
            ErrorCode.GITHUB_APP_DISABLED,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.DATABASE_UNAVAILABLE,
        ),
    },
    openapi_extra={"requestBody": _BODY},
)
async def github_webhook(
    request: Request, database: DatabaseDep, settings: SettingsDep
) -> JSONResponse:
    """Take one delivery of the GitHub App: 202 once it is stored (or known already), then
    applied in the background. 401 when X-Hub-Signature-256 is missing or wrong, 400 for a
    missing X-GitHub-Event or X-GitHub-Delivery or a body that is not a JSON object, 404
    while the server has no webhook secret."""
    secret = settings.github_webhook_secret
    if not secret:
        raise service.disabled()
    body = await _body(request, service.MAX_BODY_BYTES)
    accepted = await run_in_threadpool(
        service.receive,
        database,
        secret,
        body,
        request.headers.get(service.SIGNATURE_HEADER),
        request.headers.get(service.EVENT_HEADER),
        request.headers.get(service.DELIVERY_HEADER),
    )
    if not accepted.duplicate:
        tasks.wake(request.app)
    return JSONResponse(accepted.model_dump(), status_code=202)
