"""One error body everywhere: ``{"error", "code", "message", "details"}`` (a 429 adds
``retry_after``, the seconds ``Retry-After`` says, for clients that read only the body).

``error`` is the HTTP reason phrase, ``code`` a stable machine code, ``message`` a sentence
for people. Every code is declared once in :class:`ErrorCode` with its status, so a code
cannot be misspelt at a call site or answered with two statuses; the common errors have named
constructors. Every failure path (our own, FastAPI's validation, Starlette's 404/405, an
unexpected exception) goes through here, so clients parse exactly one shape. The README and
docs/ list every code; a test keeps them in step with this registry.
"""

from __future__ import annotations

import logging
from enum import Enum
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyPoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("testlens.server")


class ErrorCode(Enum):
    """Every machine code the API answers with: its HTTP status, and when it is answered."""

    BAD_REQUEST = 400, "the request is malformed in a way no other code names"
    MISSING_FIELD = 400, "a required field is missing"
    INVALID_FIELD = 400, "a field is malformed"
    INVALID_PARAMETERS = 400, "a malformed request on /api/v1/orchestrate or /api/v1/runs"
    INVALID_JSON = 400, "a JSON body is not valid JSON"
    INVALID_REPORT = 400, "an uploaded Flakiness report is invalid (Durations API)"
    REPORT_NOT_UPLOADED = 400, "a Durations API job was submitted before its report"
    UNAUTHORIZED = 401, "no credentials, or malformed ones"
    INVALID_API_KEY = 401, "an unknown or revoked API key"
    INVALID_TOKEN = 401, "an invalid testDurationsToken"
    TOKEN_EXPIRED = 401, "an expired testDurationsToken"
    URL_EXPIRED = 401, "an expired presigned URL"
    INVALID_METRICS_TOKEN = 401, "GET /metrics with another token than TESTLENS_METRICS_TOKEN"
    INVALID_WEBHOOK_SIGNATURE = 401, "a GitHub delivery whose X-Hub-Signature-256 is wrong"
    FORBIDDEN = 403, "the credentials do not give access to this resource"
    INVALID_TENANT = 403, "X-Tenant-ID names another tenant than the key's"
    INSUFFICIENT_SCOPE = 403, "the key lacks the scope the endpoint needs"
    INVALID_SIGNATURE = 403, "a presigned URL's signature is invalid"
    NOT_FOUND = 404, "an unknown id or path, or one of another tenant"
    RUN_NOT_FOUND = 404, "an unknown orchestrated run or build, or one of another tenant"
    NOT_READY = 404, "a Durations API result is still being computed"
    METRICS_DISABLED = 404, "GET /metrics while TESTLENS_METRICS_TOKEN is unset"
    GITHUB_APP_DISABLED = 404, "a GitHub delivery while TESTLENS_GITHUB_WEBHOOK_SECRET is unset"
    METHOD_NOT_ALLOWED = 405, "the path does not take this method"
    PLAN_CONFLICT = 409, "a node's test list differs from the one its CI run's plan splits"
    RUN_CANCELLED = 409, "a claim on a cancelled run: the worker stops"
    RUN_FINISHED = 409, "a claim on a run whose work is all done: the worker stops"
    PAYLOAD_TOO_LARGE = 413, "an upload, or its decompressed content, exceeds the limit"
    TOO_MANY_RESULTS = 413, "a report holds more results (test attempts) than one may"
    UNSUPPORTED_MEDIA_TYPE = 415, "the body is not in a media type the endpoint reads"
    UNPARSEABLE_REPORT = 422, "an uploaded test report cannot be read"
    VALIDATION_ERROR = 422, "a JSON body or a query parameter is malformed"
    DUPLICATE_TEST = 422, "two entries of a shard plan request name the same test"
    RATE_LIMITED = 429, "a rate limit is exceeded; retry_after says when to try again"
    INTERNAL_ERROR = 500, "a bug; details.request_id finds it in the log"
    COMPUTATION_FAILED = 500, "a Durations API computation failed"
    DATABASE_UNAVAILABLE = 503, "the database does not answer"
    QUEUE_FULL = 503, "the tenant's waiting work or active runs are at their cap; Retry-After"

    def __init__(self, status: int, when: str) -> None:
        self.status = status
        self.when = when


# Starlette's own errors (unknown path, wrong method, ...) by status.
_CODES_BY_STATUS = {
    code.status: code
    for code in (
        ErrorCode.BAD_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    )
}


class ApiError(Exception):
    """Raised by handlers and services; rendered as the shared error body."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = code.status
        self.message = message
        self.details = details or {}
        self.headers = headers
        self.extra = extra or {}  # top-level fields beside the shared four


def error_body(
    code: ErrorCode,
    message: str,
    details: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict:
    return {
        "error": HTTPStatus(code.status).phrase,
        "code": code.name,
        "message": message,
        **(extra or {}),
        "details": details or {},
    }


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.details, error.extra),
        status_code=error.status,
        headers=error.headers,
    )


# Named constructors for the errors many endpoints answer -------------------------------------

_BEARER = {"WWW-Authenticate": "Bearer"}


def missing_field(field: str, expected: str) -> ApiError:
    return ApiError(
        ErrorCode.MISSING_FIELD,
        f"Missing required field: {field}",
        {"field": field, "expected": expected},
    )


def invalid_field(field: str, expected: str, message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_FIELD, message, {"field": field, "expected": expected})


def not_found(what: str, ident: str) -> ApiError:
    """404 for ids that don't exist *or* belong to another tenant: the two look the same."""
    return ApiError(ErrorCode.NOT_FOUND, f"{what} not found: {ident}", {"id": ident})


def too_large(limit: int, what: str) -> ApiError:
    return ApiError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"The {what} exceeds the limit of {limit} bytes",
        {"limit_bytes": limit},
    )


def too_many_results(limit: int, message: str) -> ApiError:
    return ApiError(
        ErrorCode.TOO_MANY_RESULTS,
        f"The report was refused: {message} (TESTLENS_MAX_REPORT_RESULTS); split it",
        {"limit_results": limit},
    )


def unauthorized(message: str, code: ErrorCode = ErrorCode.UNAUTHORIZED) -> ApiError:
    """401 with the ``WWW-Authenticate`` challenge; ``code`` says which credential failed."""
    return ApiError(code, message, headers=_BEARER)


def rate_limited(retry_after: int, details: dict[str, Any]) -> ApiError:
    """429 ``RATE_LIMITED``: try again in ``retry_after`` seconds (header and body say so)."""
    return ApiError(
        ErrorCode.RATE_LIMITED,
        "Rate limit exceeded",
        details,
        headers={"Retry-After": str(retry_after)},
        extra={"retry_after": retry_after},
    )


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, message)


def unparseable_report(message: str, reason: str) -> ApiError:
    return ApiError(ErrorCode.UNPARSEABLE_REPORT, message, {"reason": reason})


def validation_error(problems: list[dict[str, str]]) -> ApiError:
    """422 listing every problem as ``{"field", "problem"}``; the message names the first."""
    first = problems[0] if problems else {"field": "", "problem": "invalid request"}
    return ApiError(
        ErrorCode.VALIDATION_ERROR,
        f"Invalid field {first['field']}: {first['problem']}",
        {"errors": problems},
    )


SHIFTY_PATHS = ("/api/v1/orchestrate", "/api/v1/runs")
"""Paths of the Shifty dialect, which answers every validation failure with 400
``INVALID_PARAMETERS``; everywhere else it is 422 ``VALIDATION_ERROR``."""


def validation_code(path: str) -> ErrorCode:
    """The code a malformed request to ``path`` answers."""
    if path.startswith(SHIFTY_PATHS):
        return ErrorCode.INVALID_PARAMETERS
    return ErrorCode.VALIDATION_ERROR


def validation_problems(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic's errors as ``{"field", "problem"}``, the field a dotted path without the
    location prefix (``query``, ``body``) that FastAPI adds."""
    problems = []
    for error in errors:
        location = [str(part) for part in error["loc"]]
        if location and location[0] in ("query", "body", "path", "header", "form"):
            location = location[1:] or location
        problems.append({"field": ".".join(location), "problem": error["msg"]})
    return problems


def install(app: FastAPI) -> None:
    document(app)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        fallback = ErrorCode.BAD_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
        code = _CODES_BY_STATUS.get(exc.status_code, fallback)
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers) if exc.headers else None
        return error_response(ApiError(code, message, headers=headers))

    @app.exception_handler(SQLAlchemyOperationalError)
    @app.exception_handler(SQLAlchemyInterfaceError)
    @app.exception_handler(SQLAlchemyPoolTimeout)
    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        # The database refused, hung past its timeout, or ran out of connections: the
        # request may succeed later, which 503 with Retry-After says; 500 would call it a bug.
        log.warning("database unavailable for %s: %s", request.url.path, str(exc)[:300])
        return database_unavailable()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(validation_problems(list(exc.errors())))
        error.code = validation_code(request.url.path)
        error.status = error.code.status
        return error_response(error)


def database_unavailable() -> JSONResponse:
    """503 ``DATABASE_UNAVAILABLE``: the database did not answer (its error is logged)."""
    return error_response(
        ApiError(
            ErrorCode.DATABASE_UNAVAILABLE,
            "The database is unavailable; retry shortly",
            headers={"Retry-After": "5"},
        )
    )


def internal_error(request_id: str) -> JSONResponse:
    """The 500 for an unexpected exception (logged with its traceback, never shown)."""
    log.exception("unhandled error (request_id=%s)", request_id)
    return error_response(
        ApiError(
            ErrorCode.INTERNAL_ERROR,
            "An unexpected error occurred; quote the request_id when reporting it.",
            {"request_id": request_id},
            headers={"X-Request-ID": request_id},
        )
    )


# The error answers in the OpenAPI document --------------------------------------------------

API_KEY_SCHEME = "ApiKey"
"""The OpenAPI security scheme of API keys (declared in ``deps``): every operation that
requires it also answers :data:`AUTHENTICATION_ERRORS`."""

AUTHENTICATION_ERRORS = (
    ErrorCode.INVALID_FIELD,  # an API key in the URL
    ErrorCode.UNAUTHORIZED,
    ErrorCode.INVALID_API_KEY,
    ErrorCode.INSUFFICIENT_SCOPE,
    ErrorCode.INVALID_TENANT,
    ErrorCode.DATABASE_UNAVAILABLE,  # the key is looked up in the database
)
_CODES = "x-error-codes"
"""Where :func:`error_responses` leaves its codes for :func:`document` (which takes them out)."""


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="The HTTP reason phrase of the status.")
    code: str = Field(description="A stable machine code: the response lists those it may be.")
    message: str = Field(description="What went wrong, for people.")
    details: dict[str, Any] = Field(description="Facts about the error; which, by code.")


ERROR_CONTENT = {
    "application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}
}
"""The ``content`` of an error response in the OpenAPI document: the shared body."""


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route for the errors that are its own: one entry per status, with
    the shared body. What every operation of a kind answers (authentication, a malformed
    parameter or body) :func:`document` adds by itself."""
    by_status: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = by_status.setdefault(code.status, {"model": ErrorBody, _CODES: []})
        entry[_CODES].append(code.name)
    return by_status


def document(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document show the error answers (see :func:`with_errors`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Document every operation's error answers, with the shared body, in ``spec``.

    An operation answers the codes its route declares (:func:`error_responses`), plus
    :data:`AUTHENTICATION_ERRORS` when it requires an API key, ``VALIDATION_ERROR`` when it
    takes parameters or a body, and ``BAD_REQUEST`` when FastAPI reads its body (one it
    cannot decode). This replaces FastAPI's own 422, whose body is not the one answered.
    """
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas[ErrorBody.__name__] = ErrorBody.model_json_schema()
    order = {code: index for index, code in enumerate(ErrorCode)}
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            answers: dict[str, Any] = operation.setdefault("responses", {})
            codes: set[ErrorCode] = set()
            for answer in answers.values():
                codes.update(ErrorCode[name] for name in answer.pop(_CODES, ()))
            if any(API_KEY_SCHEME in need for need in operation.get("security", ())):
                codes.update(AUTHENTICATION_ERRORS)
            if operation.get("parameters") or "requestBody" in operation:
                codes.add(validation_code(path))
            if "requestBody" in operation:
                codes.add(ErrorCode.BAD_REQUEST)
            by_status: dict[str, list[ErrorCode]] = {}
            for code in sorted(codes, key=order.__getitem__):
                by_status.setdefault(str(code.status), []).append(code)
            for status, found in by_status.items():
                described = "; ".join(f"{code.name}: {code.when}" for code in found)
                answers.setdefault(status, {})["description"] = described
            for status, answer in answers.items():
                if int(status) >= 400:
                    answer["content"] = ERROR_CONTENT
            operation["responses"] = dict(sorted(answers.items()))
    return spec
