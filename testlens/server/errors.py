"""One error body everywhere: ``{"error", "code", "message", "details"}``.

``error`` is the HTTP reason phrase, ``code`` a stable machine code, ``message`` a sentence
for people. Every failure path (our own, FastAPI's validation, Starlette's 404/405, an
unexpected exception) goes through here, so clients parse exactly one shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("testlens.server")

_CODES_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE_ENTITY",
    429: "RATE_LIMITED",
}


class ApiError(Exception):
    """Raised by handlers and services; rendered as the shared error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers


def error_body(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    return {
        "error": HTTPStatus(status).phrase,
        "code": code,
        "message": message,
        "details": details or {},
    }


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.status, error.code, error.message, error.details),
        status_code=error.status,
        headers=error.headers,
    )


def not_found(what: str, ident: str) -> ApiError:
    """404 for ids that don't exist *or* belong to another tenant: the two look the same."""
    return ApiError(404, "NOT_FOUND", f"{what} not found: {ident}", {"id": ident})


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES_BY_STATUS.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(ApiError(exc.status_code, code, message, headers=exc.headers))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "problem": e["msg"],
            }
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"field": "", "problem": "invalid request"}
        message = f"Invalid field {first['field']}: {first['problem']}"
        return error_response(ApiError(422, "VALIDATION_ERROR", message, {"errors": problems}))


def internal_error(request_id: str) -> JSONResponse:
    """The 500 for an unexpected exception (logged with its traceback, never shown)."""
    log.exception("unhandled error (request_id=%s)", request_id)
    return error_response(
        ApiError(
            500,
            "INTERNAL_ERROR",
            "An unexpected error occurred; quote the request_id when reporting it.",
            {"request_id": request_id},
            headers={"X-Request-ID": request_id},
        )
    )
