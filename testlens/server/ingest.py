"""``POST /api/test-results``: the Unfold CI ingest dialect.

A report is read into memory under a size cap (also after gzip decompression), parsed by
``testlens.core.parsers`` and stored in one transaction: either the run, its tests and every
attempt are stored, or nothing is. The same report for the same repo, commit and workflow run
is recognised by a content hash and answered with the first run's id.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..core.model import Report, ReportError
from ..core.parsers import format_names, parse_report
from . import flakiness
from .auth import Principal, require
from .database import Database
from .errors import ApiError, not_found
from .models import Repository, Run, TestCase, TestResult, iso, utcnow
from .settings import DEFAULT_MAINLINE_BRANCHES

router = APIRouter(tags=["results"])

REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_READ_CHUNK = 1024 * 1024
# Multipart framing and the small text fields around the file.
_FORM_OVERHEAD = 64 * 1024
_TEXT_FIELDS = {
    "branch": 300,
    "commit": 64,
    "tree_sha": 64,
    "framework": 100,
    "workflow_run_id": 100,
    "environment": 200,
    "check_name": 300,
    "provider": 100,
    "format": 40,
}


@dataclass(frozen=True, slots=True)
class RunMetadata:
    repo: str
    framework: str
    branch: str | None = None
    commit: str | None = None
    tree_sha: str | None = None
    pr_number: int | None = None
    workflow_run_id: str | None = None
    environment: str | None = None
    check_name: str | None = None
    provider: str | None = None
    format: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    run_id: str
    tests_processed: int
    flaky_detected: int
    duplicate: bool

    def body(self) -> dict[str, Any]:
        return {
            "success": True,
            "tests_processed": self.tests_processed,
            "flaky_detected": self.flaky_detected,
            "run_id": self.run_id,
        }


def _missing(field: str, expected: str) -> ApiError:
    return ApiError(
        400,
        "MISSING_FIELD",
        f"Missing required field: {field}",
        {"field": field, "expected": expected},
    )


def _invalid(field: str, expected: str, message: str) -> ApiError:
    return ApiError(400, "INVALID_FIELD", message, {"field": field, "expected": expected})


def too_large(limit: int, what: str) -> ApiError:
    return ApiError(
        413,
        "PAYLOAD_TOO_LARGE",
        f"The {what} exceeds the limit of {limit} bytes",
        {"limit_bytes": limit},
    )


def read_metadata(form: Any) -> RunMetadata:
    """Validate the text fields of the upload form."""
    values: dict[str, Any] = {}
    for field, max_length in _TEXT_FIELDS.items():
        value = form.get(field)
        if isinstance(value, UploadFile):
            raise _invalid(field, "string", f"Field {field} must be text, not a file")
        if value is not None and value.strip():
            value = value.strip()
            if len(value) > max_length:
                raise _invalid(
                    field,
                    f"string of at most {max_length} characters",
                    f"Field {field} is longer than {max_length} characters",
                )
            values[field] = value
    repo = form.get("repo")
    if not isinstance(repo, str) or not repo.strip():
        raise _missing("repo", "string in format 'owner/repo'")
    if not REPO_PATTERN.match(repo.strip()):
        raise _invalid(
            "repo",
            "string in format 'owner/repo'",
            f"Invalid repo {repo.strip()!r}: expected 'owner/repo'",
        )
    if "framework" not in values:
        raise _missing("framework", "string naming the test framework, e.g. 'pytest'")
    if "format" in values and values["format"] not in format_names():
        raise _invalid(
            "format",
            "one of " + ", ".join(format_names()),
            f"Unknown report format {values['format']!r}",
        )
    pr_number = form.get("pr_number")
    if isinstance(pr_number, str) and pr_number.strip():
        if not pr_number.strip().isdigit():
            raise _invalid("pr_number", "positive integer", "pr_number must be a positive integer")
        values["pr_number"] = int(pr_number.strip())
    return RunMetadata(repo=repo.strip(), **values)


async def read_report(upload: UploadFile, limit: int) -> bytes:
    """Read the uploaded file, refusing more than ``limit`` bytes before or after gzip."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large(limit, "report")
        chunks.append(chunk)
    data = b"".join(chunks)
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data, limit)
    if not data.strip():
        raise ApiError(422, "UNPARSEABLE_REPORT", "The report file is empty", {"reason": "empty"})
    return data


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a gzip bomb stops at the cap, not in swap."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
        if len(out) > limit or decompressor.unconsumed_tail:
            raise too_large(limit, "decompressed report")
        out += decompressor.flush()
    except zlib.error as exc:
        raise ApiError(
            422, "UNPARSEABLE_REPORT", f"Invalid gzip data: {exc}", {"reason": str(exc)}
        ) from None
    if len(out) > limit:
        raise too_large(limit, "decompressed report")
    return out


_TEST_COLUMNS = (
    "id",
    "repo_id",
    "file",
    "suite",
    "classname",
    "name",
    "first_seen_at",
    "last_seen_at",
    *flakiness.SUMMARY_COLUMNS,
)
RESULT_COLUMNS = (
    "run_id",
    "test_id",
    "attempt",
    "status",
    "duration_ms",
    "environment",
    "censored",
    "error_type",
    "error_message",
    "stack",
    "stdout",
    "stderr",
)


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL, which JSON reports may carry as ``\\u0000``."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def test_id(repo_id: str, identity: tuple[str, str, str, str]) -> str:
    """A test's primary key: stable for its identity within one repository."""
    key = "\x1f".join((repo_id, *identity)).encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def _ingest_key(meta: RunMetadata, data: bytes) -> str:
    digest = hashlib.sha256()
    for part in (meta.repo, meta.commit or "", meta.workflow_run_id or ""):
        digest.update(part.encode() + b"\x1f")
    digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def _repository(database: Database, session: Any, tenant_id: str, name: str) -> str:
    session.execute(
        database.upsert(Repository, ["tenant_id", "name"]),
        {"id": str(uuid.uuid4()), "tenant_id": tenant_id, "name": name, "created_at": utcnow()},
    )
    return session.scalar(
        select(Repository.id).where(Repository.tenant_id == tenant_id, Repository.name == name)
    )


def store_report(
    database: Database,
    tenant_id: str,
    meta: RunMetadata,
    report: Report,
    ingest_key: str,
    mainline_branches: tuple[str, ...] = DEFAULT_MAINLINE_BRANCHES,
) -> IngestResult:
    """Store one parsed report as a run, in a single transaction."""
    summary = report.summary()
    now = utcnow()
    with database.transaction() as session:
        repo_id = _repository(database, session, tenant_id, meta.repo)
        existing = session.execute(
            select(Run.id, Run.tests, Run.flaky_detected).where(
                Run.repo_id == repo_id, Run.ingest_key == ingest_key
            )
        ).first()
        if existing is not None:
            return IngestResult(
                existing.id, existing.tests, existing.flaky_detected, duplicate=True
            )
        run_id = str(uuid.uuid4())
        session.execute(
            insert(Run),
            [
                {
                    "id": run_id,
                    "repo_id": repo_id,
                    "ingest_key": ingest_key,
                    "branch": meta.branch,
                    "commit_sha": meta.commit,
                    "tree_sha": meta.tree_sha,
                    "framework": meta.framework,
                    "format": report.format,
                    "environment": meta.environment,
                    "provider": meta.provider,
                    "check_name": meta.check_name,
                    "pr_number": meta.pr_number,
                    "workflow_run_id": meta.workflow_run_id,
                    "created_at": now,
                    "tests": summary.tests,
                    "passed": summary.passed,
                    "failed": summary.failed,
                    "errors": summary.errors,
                    "skipped": summary.skipped,
                    "flaky": summary.flaky,
                    "attempts": summary.attempts,
                    "duration_ms": summary.duration_ms,
                }
            ],
        )
        test_ids = {test.identity: test_id(repo_id, test.identity) for test in report.tests}
        now_db = database.to_driver(TestCase.__table__.c.last_seen_at)(now)
        identities = {
            tid: (
                tid,
                repo_id,
                _text(t.file),
                _text(t.suite),
                _text(t.classname),
                _text(t.name),
                now_db,
                now_db,
            )
            for t in report.tests
            for tid in (test_ids[t.identity],)
        }
        database.claim_rows(
            session, TestCase.__table__, _TEST_COLUMNS[:8], list(identities.values())
        )
        context = flakiness.RunContext(
            repo_id,
            run_id,
            now,
            meta.commit,
            meta.tree_sha,
            meta.environment,
            meta.check_name,
            mainline=meta.pr_number is None
            and (meta.branch is None or meta.branch in mainline_branches),
        )
        evaluation = flakiness.evaluate(database, session, context, report, test_ids)
        tests: list[tuple] = []
        results: list[tuple] = []
        for test in report.tests:
            tid = test_ids[test.identity]
            tests.append((*identities[tid], *evaluation.summaries[tid]))
            for number, a in enumerate(test.attempts):
                results.append(
                    (
                        run_id,
                        tid,
                        number,
                        a.status,
                        a.duration_ms,
                        a.environment or meta.environment,
                        a.censored,
                        _text(a.error_type),
                        _text(a.message),
                        _text(a.stack),
                        _text(a.stdout),
                        _text(a.stderr),
                    )
                )
        connection = session.connection()
        database.insert_many(
            connection,
            TestCase.__table__,
            _TEST_COLUMNS,
            tests,
            conflict=["id"],
            update=["last_seen_at", *flakiness.SUMMARY_COLUMNS],
        )
        database.insert_many(connection, TestResult.__table__, RESULT_COLUMNS, results)
        flakiness.write(database, session, context, evaluation)
        flakiness.notify(
            session,
            tenant_id,
            meta.repo,
            {"name": meta.check_name or meta.framework, "provider": meta.provider or "github"},
            meta.commit,
            evaluation,
            {test_ids[t.identity]: t for t in report.tests},
            now,
        )
        session.execute(
            update(Run).where(Run.id == run_id).values(flaky_detected=evaluation.flaky_tests)
        )
        session.execute(update(Repository).where(Repository.id == repo_id).values(last_run_at=now))
    return IngestResult(run_id, summary.tests, evaluation.flaky_tests, duplicate=False)


def ingest(
    database: Database,
    tenant_id: str,
    meta: RunMetadata,
    data: bytes,
    mainline_branches: tuple[str, ...] = DEFAULT_MAINLINE_BRANCHES,
) -> IngestResult:
    """Parse and store; a concurrent duplicate upload resolves to the run that won."""
    try:
        report = parse_report(data, meta.format)
    except ReportError as exc:
        raise ApiError(
            422, "UNPARSEABLE_REPORT", f"Could not parse the report: {exc}", {"reason": str(exc)}
        ) from None
    key = _ingest_key(meta, data)
    try:
        return store_report(database, tenant_id, meta, report, key, mainline_branches)
    except IntegrityError:
        return store_report(database, tenant_id, meta, report, key, mainline_branches)


@router.post("/api/test-results", status_code=201)
async def upload_test_results(
    request: Request, principal: Principal = Depends(require("ingest"))
) -> JSONResponse:
    """Upload one test report (multipart form) for a repository."""
    limit: int = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
        raise too_large(limit, "upload")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the report as multipart/form-data with a 'file' field",
        )
    async with request.form(max_files=1, max_fields=32) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _missing("file", "test report file (JUnit XML or JSON, optionally gzipped)")
        meta = read_metadata(form)
        data = await read_report(upload, limit)
    settings = request.app.state.settings
    result = await run_in_threadpool(
        ingest,
        request.app.state.database,
        principal.tenant_id,
        meta,
        data,
        settings.mainline_branches,
    )
    headers = {"Testlens-Duplicate": "true"} if result.duplicate else None
    return JSONResponse(result.body(), status_code=201, headers=headers)


@router.get("/api/runs/{run_id}")
def get_run(run_id: str, request: Request, principal: Principal = Depends(require("read"))) -> dict:
    """One stored run: its metadata and totals (404 for unknown or other tenants' runs)."""
    database: Database = request.app.state.database
    with database.transaction() as session:
        row = session.execute(
            select(Run, Repository.name)
            .join(Repository, Repository.id == Run.repo_id)
            .where(Run.id == run_id, Repository.tenant_id == principal.tenant_id)
        ).first()
    if row is None:
        raise not_found("run", run_id)
    run, repo = row
    return {
        "run": {
            "id": run.id,
            "repo": repo,
            "branch": run.branch,
            "commit": run.commit_sha,
            "tree_sha": run.tree_sha,
            "framework": run.framework,
            "format": run.format,
            "environment": run.environment,
            "provider": run.provider,
            "check_name": run.check_name,
            "pr_number": run.pr_number,
            "workflow_run_id": run.workflow_run_id,
            "created_at": iso(run.created_at),
            "summary": {
                "tests": run.tests,
                "passed": run.passed,
                "failed": run.failed,
                "errors": run.errors,
                "skipped": run.skipped,
                "flaky": run.flaky,
                "attempts": run.attempts,
                "duration_ms": run.duration_ms,
            },
        }
    }
