"""Predicted test durations over HTTP: a listing, shard plans, and the Flakiness.io Durations API.

Every answer is computed from the duration history that ingest keeps per (test, environment)
in ``test_states``, with identities from ``test_cases``; the results table is never read, so
answering costs the same after a year of runs as after the first one. Requested tests are
tied to stored ones by :func:`match_tests`, whatever report format either side came from, and
predicted by :func:`testlens.core.durations.predict`.

The Durations API is asynchronous by contract (create, upload, submit, poll). Its state lives
in one ``duration_jobs`` row per (tenant, commit, shard group, project), so the shards of a
CI run share one job, and any API process can answer any step: the presigned URLs and tokens
are verified with keys every process derives alike, a computation is claimed with one
conditional ``UPDATE`` and its result is stored in the row.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, get_args

import brotli
import jwt
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..core.durations import (
    Estimate,
    Sample,
    Source,
    TestKey,
    class_path,
    predict,
    pytest_nodeid,
)
from ..core.model import ReportError
from ..core.parsers import parse_report
from ..core.parsers.junit import SUITE_SEPARATOR
from ..core.sharding import GroupBy, plan_shards
from .auth import Principal, require
from .database import Database
from .errors import ApiError, not_found
from .ingest import REPO_PATTERN, too_large
from .models import DurationJob, Repository, ShardPlanRecord, TestCase, TestState, utcnow

router = APIRouter(tags=["durations"])
log = logging.getLogger(__name__)

TOKEN_TTL = timedelta(minutes=10)
UPLOAD_URL_TTL = timedelta(minutes=10)
DOWNLOAD_URL_TTL = timedelta(hours=1)
STALE_COMPUTATION = timedelta(minutes=15)
"""A job still computing after this long lost its process (a restart, a crash) and may be
claimed again."""
MAX_PLAN_TESTS = 200_000
RESULT_QUALITY = 5
"""Brotli quality of results: 11 costs seconds on a large report for a few percent of size."""

_TOKEN_KEY = "durations-token"
_URL_KEY = "durations-url"
_UPLOAD_ROUTE = "upload_durations_report"
_DOWNLOAD_ROUTE = "download_durations"
_SLUG = r"^[A-Za-z0-9_.-]+$"


# Matching requested tests to stored ones ---------------------------------------------------


def match_tests(
    requested: Collection[TestKey], stored: Collection[TestKey]
) -> dict[TestKey, TestKey]:
    """Map each requested test to the stored test whose history it gets (unmatched: absent).

    Report formats name one test differently: pytest's JUnit XML writes file
    ``tests/test_x.py``, classname ``tests.test_x.TestFoo``, name ``test_a[1]`` for the node
    id ``tests/test_x.py::TestFoo::test_a[1]``, and a Flakiness report nests it under suites.
    So a requested test matches, in this order:

    1. the stored test with the same identity (file, suite, classname, name);
    2. the stored test with the same file and name whose class path ends in the same
       component (split on ``.`` and ``::``);
    3. the stored test with the same file and name, if only one has them.

    The class path is the classname, less the file's dotted module path that pytest's JUnit
    puts in front (so a module-level pytest test has none), or the suite titles when there
    is no classname (Flakiness); a title such as ``TestLogin::test_ok`` (pytest-flakiness)
    carries its class path in front of the name. A step that finds several stored tests
    matches none: another test's history is a worse guess than the file-level fallback that
    an unmatched test gets from ``predict``.
    """
    by_name: dict[tuple[str, str], list[tuple[str, TestKey]]] = {}
    for key in stored:
        file, name, last = _loose(key)
        by_name.setdefault((file, name), []).append((last, key))
    matches: dict[TestKey, TestKey] = {}
    for key in requested:
        if key in stored:
            matches[key] = key
            continue
        file, name, last = _loose(key)
        named = by_name.get((file, name), [])
        same_class = [found for found_last, found in named if found_last == last]
        candidates = [found for _, found in named]
        for found in (same_class, candidates):
            if len(found) == 1:
                matches[key] = found[0]
                break
    return matches


def _loose(key: TestKey) -> tuple[str, str, str]:
    """(file, bare name, last class component): what steps 2 and 3 of matching compare."""
    head, bracket, params = key.name.partition("[")
    prefix, _, bare = head.rpartition("::")
    path = prefix or class_path(key)
    return key.file, bare + bracket + params, path.rpartition("::")[2].rpartition(".")[2]


# Reading history -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _History:
    test_id: str
    samples: list[Sample]


def _repo_id(session: Session, tenant_id: str, name: str) -> str | None:
    return session.scalar(
        select(Repository.id).where(Repository.tenant_id == tenant_id, Repository.name == name)
    )


def _has_states(session: Session, repo_id: str, *where: Any) -> bool:
    return bool(session.scalar(select(exists().where(TestState.repo_id == repo_id, *where))))


def _history(
    session: Session, repo_id: str | None, requested: str
) -> tuple[str, dict[TestKey, _History]]:
    """The environment that answers for ``requested``, and every test with duration samples
    in it (a test only ever skipped has a state but no samples). No repository, no history.

    The environment is ``requested`` itself, or ``""`` when that is all the repository has:
    runs that named no environment stand for every environment. A sample's age is its
    distance from the newest one, as ``test_states.durations`` lists them oldest first.
    """
    if repo_id is None:
        return requested, {}
    environment = requested
    if not (
        _has_states(session, repo_id, TestState.environment == requested)
        or _has_states(session, repo_id, TestState.environment != "")
    ):
        environment = ""
    rows = session.execute(
        select(
            TestCase.id,
            TestCase.file,
            TestCase.suite,
            TestCase.classname,
            TestCase.name,
            TestState.durations,
        )
        .join(TestCase, TestCase.id == TestState.test_id)
        .where(TestState.repo_id == repo_id, TestState.environment == environment)
    )
    history: dict[TestKey, _History] = {}
    for test_id, file, suite, classname, name, durations in rows:
        pairs = json.loads(durations)
        newest = len(pairs) - 1
        samples = [
            Sample(duration, newest - index, bool(censored))
            for index, (duration, censored) in enumerate(pairs)
        ]
        if samples:
            history[TestKey(file, suite, classname, name)] = _History(test_id, samples)
    return environment, history


def _predictions(
    history: dict[TestKey, _History], tests: Sequence[TestKey]
) -> dict[TestKey, Estimate]:
    """Estimates for ``tests`` from the history they match; unmatched tests fall back as
    ``predict`` does (file, suite, repository, default)."""
    matched = match_tests(tests, history.keys())
    estimates = predict(
        [matched.get(test, test) for test in tests],
        {key: stored.samples for key, stored in history.items()},
    )
    return {test: estimates[matched.get(test, test)] for test in tests}


# GET /api/durations --------------------------------------------------------------------------


class PredictedTest(BaseModel):
    id: str
    file: str
    suite: str
    classname: str
    name: str
    nodeid: str
    p50_ms: float
    p90_ms: float
    samples: int = Field(description="Complete (not timed-out) runs behind the estimate.")


class DurationsListing(BaseModel):
    repo: str
    environment: str = Field(description="The environment whose history answered.")
    tests: list[PredictedTest]


@router.get("/api/durations", responses={200: {"model": DurationsListing}})
def list_durations(
    request: Request,
    repo: Annotated[str, Query(pattern=REPO_PATTERN.pattern)],
    environment: Annotated[str, Query(max_length=200)] = "",
    principal: Principal = Depends(require("read")),
) -> dict[str, Any]:
    """Predicted duration of every test with history in one environment of a repository."""
    database: Database = request.app.state.database
    with database.transaction() as session:
        repo_id = _repo_id(session, principal.tenant_id, repo)
        if repo_id is None:
            raise not_found("repository", repo)
        environment, history = _history(session, repo_id, environment)
    estimates = _predictions(history, list(history))
    tests = [
        {
            "id": stored.test_id,
            "file": key.file,
            "suite": key.suite,
            "classname": key.classname,
            "name": key.name,
            "nodeid": pytest_nodeid(key),
            "p50_ms": estimates[key].p50_ms,
            "p90_ms": estimates[key].p90_ms,
            "samples": estimates[key].samples,
        }
        for key, stored in sorted(history.items())
    ]
    return {"repo": repo, "environment": environment, "tests": tests}


# Shard plans ---------------------------------------------------------------------------------


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


@router.post("/api/shard-plans", status_code=201, responses={201: {"model": ShardPlanBody}})
def create_shard_plan(
    body: ShardPlanRequest, request: Request, principal: Principal = Depends(require("read"))
) -> Response:
    """Split ``tests`` (pytest-style ids) into shards of equal predicted duration, and store
    the plan so that every CI node of the run can fetch the same one by its id.

    A repository this tenant has never uploaded to is planned with default durations (equal
    counts per shard) rather than refused: a new repository's first run has no history yet.
    """
    nodeids: dict[TestKey, str] = {}
    for nodeid in body.tests:
        key = TestKey.from_nodeid(nodeid)
        if nodeids.setdefault(key, nodeid) != nodeid:
            raise ApiError(
                422,
                "DUPLICATE_TEST",
                f"{nodeids[key]!r} and {nodeid!r} name the same test",
                {"tests": [nodeids[key], nodeid]},
            )
    database: Database = request.app.state.database
    with database.transaction() as session:
        repo_id = _repo_id(session, principal.tenant_id, body.repo)
        _, history = _history(session, repo_id, body.environment or "")
    estimates = _predictions(history, list(nodeids))
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
                id=plan_id,
                tenant_id=principal.tenant_id,
                repo_id=repo_id,
                plan=document,
                created_at=utcnow(),
            )
        )
    return Response(document, status_code=201, media_type="application/json")


@router.get("/api/shard-plans/{plan_id}", responses={200: {"model": ShardPlanBody}})
def get_shard_plan(
    plan_id: str, request: Request, principal: Principal = Depends(require("read"))
) -> Response:
    """A stored plan, exactly as it was created (404 for unknown or other tenants' plans)."""
    database: Database = request.app.state.database
    with database.transaction() as session:
        document = session.scalar(
            select(ShardPlanRecord.plan).where(
                ShardPlanRecord.id == plan_id, ShardPlanRecord.tenant_id == principal.tenant_id
            )
        )
    if document is None:
        raise not_found("shard plan", plan_id)
    return Response(document, media_type="application/json")


# The Flakiness.io Durations API --------------------------------------------------------------


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CreateDurationsJob(_Camel):
    commit_id: str = Field(min_length=1, max_length=64)
    shard_group_key: str = Field(min_length=1, max_length=250, pattern=r"^[a-zA-Z0-9_-]+$")
    org_slug: str | None = Field(default=None, max_length=150, pattern=_SLUG)
    project_slug: str | None = Field(default=None, max_length=150, pattern=_SLUG)

    @model_validator(mode="after")
    def _both_slugs(self) -> CreateDurationsJob:
        if (self.org_slug is None) != (self.project_slug is None):
            raise ValueError("orgSlug and projectSlug go together")
        return self

    @property
    def project(self) -> str:
        return f"{self.org_slug}/{self.project_slug}" if self.org_slug else ""


class DurationsJobCreated(_Camel):
    test_durations_token: str
    upload_url: str


class DurationsJobSubmitted(_Camel):
    download_url: str


@router.post("/api/testDurations/create", responses={200: {"model": DurationsJobCreated}})
def create_durations_job(
    body: CreateDurationsJob, request: Request, principal: Principal = Depends(require("read"))
) -> dict[str, str]:
    """Open the job of one sharded run, or join it: every shard of the run (same commit,
    shard group and project) gets its own token for the one shared job."""
    database: Database = request.app.state.database
    now = utcnow()
    identity = {
        "tenant_id": principal.tenant_id,
        "commit_id": body.commit_id,
        "shard_group_key": body.shard_group_key,
        "project": body.project,
    }
    with database.transaction() as session:
        session.execute(
            database.upsert(DurationJob, list(identity)),
            {
                "id": str(uuid.uuid4()),
                **identity,
                "status": "created",
                "created_at": now,
                "updated_at": now,
            },
        )
        job_id = session.scalar(select(DurationJob.id).filter_by(**identity))
    claims = {
        "job": job_id,
        "tenant": principal.tenant_id,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + TOKEN_TTL,
    }
    token = jwt.encode(claims, request.app.state.keys.derive(_TOKEN_KEY), algorithm="HS256")
    return {
        "testDurationsToken": token,
        "uploadUrl": _presign(request, _UPLOAD_ROUTE, job_id, UPLOAD_URL_TTL),
    }


@router.put("/api/testDurations/jobs/{job_id}/report", name=_UPLOAD_ROUTE)
async def upload_durations_report(
    job_id: str, request: Request, expires: str = "", signature: str = ""
) -> Response:
    """The presigned upload: a Brotli-compressed Flakiness report of the tests to run.

    The first valid upload of a job is kept; the run's other shards upload the same report,
    which is answered 200 and ignored.
    """
    _verify_url(request, _UPLOAD_ROUTE, job_id, expires, signature)
    if request.headers.get("content-encoding", "").strip().lower() != "br":
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the report Brotli-compressed, with Content-Encoding: br",
        )
    limit: int = request.app.state.settings.max_upload_bytes
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
    compressed = b"".join(chunks)
    database: Database = request.app.state.database
    job = await run_in_threadpool(_job, database, job_id)
    if job.status == "created":
        await run_in_threadpool(_check_report, compressed, limit, job.project)
        await run_in_threadpool(_keep_report, database, job_id, compressed)
    return Response(status_code=200)


@router.post("/api/testDurations/submit", responses={200: {"model": DurationsJobSubmitted}})
def submit_durations_job(request: Request) -> dict[str, str]:
    """Start computing the job's durations (once for all shards); answer where to poll."""
    job_id = _token_job(request)
    database: Database = request.app.state.database
    with database.transaction() as session:
        status = session.scalar(select(DurationJob.status).where(DurationJob.id == job_id))
        if status == "created":
            raise ApiError(
                400, "REPORT_NOT_UPLOADED", "Upload the report to uploadUrl before submitting"
            )
        claimed = _claim(session, job_id, ("uploaded", "failed"))
    if claimed:
        _start(database, job_id)
    return {"downloadUrl": _presign(request, _DOWNLOAD_ROUTE, job_id, DOWNLOAD_URL_TTL)}


@router.get("/api/testDurations/jobs/{job_id}/durations", name=_DOWNLOAD_ROUTE)
def download_durations(
    job_id: str, request: Request, expires: str = "", signature: str = ""
) -> Response:
    """The presigned download: the uploaded report with predicted attempts (Brotli), or 404
    while it is being computed."""
    _verify_url(request, _DOWNLOAD_ROUTE, job_id, expires, signature)
    database: Database = request.app.state.database
    with database.transaction() as session:
        row = session.execute(
            select(DurationJob.status, DurationJob.result, DurationJob.error).where(
                DurationJob.id == job_id
            )
        ).first()
        if row is None:
            raise not_found("durations job", job_id)
        claimed = row.status == "computing" and _claim(session, job_id, ())
    if claimed:
        _start(database, job_id)
    if row.status == "ready":
        return Response(
            row.result, media_type="application/json", headers={"Content-Encoding": "br"}
        )
    if row.status == "failed":
        raise ApiError(
            500,
            "COMPUTATION_FAILED",
            f"Computing the durations failed; submit again to retry: {row.error}",
        )
    raise ApiError(
        404,
        "NOT_READY",
        "The durations are being computed; retry shortly",
        {"id": job_id},
        headers={"Retry-After": "1"},
    )


def _presign(request: Request, route: str, job_id: str, ttl: timedelta) -> str:
    """An absolute URL to ``route`` for ``job_id`` that works without a key until it expires;
    the signature covers the route, the job and the expiry, so none can be changed."""
    expires = str(int((utcnow() + ttl).timestamp()))
    signature = request.app.state.keys.sign(_URL_KEY, f"{route}\n{job_id}\n{expires}")
    url = request.url_for(route, job_id=job_id)
    return str(url.include_query_params(expires=expires, signature=signature))


def _verify_url(request: Request, route: str, job_id: str, expires: str, signature: str) -> None:
    if not request.app.state.keys.verify(_URL_KEY, f"{route}\n{job_id}\n{expires}", signature):
        raise ApiError(403, "INVALID_SIGNATURE", "The URL's signature is invalid")
    if int(expires) <= utcnow().timestamp():
        raise ApiError(401, "URL_EXPIRED", "The URL has expired; create a new job request")


def _token_job(request: Request) -> str:
    """The job a ``testDurationsToken`` names, after checking its signature, expiry and tenant."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "UNAUTHORIZED",
            "Send Authorization: Bearer <testDurationsToken>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        claims = jwt.decode(
            token.strip(),
            request.app.state.keys.derive(_TOKEN_KEY),
            algorithms=["HS256"],
            options={"require": ["exp", "job", "tenant"]},
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(
            401,
            "TOKEN_EXPIRED",
            "The testDurationsToken has expired",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    except jwt.InvalidTokenError:
        raise ApiError(
            401,
            "INVALID_TOKEN",
            "Invalid testDurationsToken",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    job = _job(request.app.state.database, str(claims["job"]))
    if job.tenant_id != claims["tenant"]:
        raise ApiError(403, "FORBIDDEN", "The token does not belong to the job's tenant")
    return job.id


@dataclass(frozen=True, slots=True)
class _JobRow:
    id: str
    tenant_id: str
    project: str
    status: str


def _job(database: Database, job_id: str) -> _JobRow:
    with database.transaction() as session:
        row = session.execute(
            select(
                DurationJob.id, DurationJob.tenant_id, DurationJob.project, DurationJob.status
            ).where(DurationJob.id == job_id)
        ).first()
    if row is None:
        raise not_found("durations job", job_id)
    return _JobRow(*row)


def _check_report(compressed: bytes, limit: int, project: str) -> None:
    """Decompress at most ``limit`` bytes and check the Flakiness report and its project."""
    decompressor = brotli.Decompressor()
    try:
        data = decompressor.process(compressed, output_buffer_limit=limit + 1)
    except brotli.error:
        raise _invalid_report("the body is not Brotli-compressed data") from None
    if len(data) > limit:
        raise too_large(limit, "decompressed report")
    if not decompressor.is_finished():
        raise _invalid_report("the Brotli stream is truncated")
    try:
        parse_report(data, "flakiness")
        document = json.loads(data.decode("utf-8-sig"))
    except ReportError as exc:
        raise _invalid_report(str(exc)) from None
    except RecursionError:
        raise _invalid_report("the report is nested too deeply") from None
    named = project or document.get("flakinessProject")
    if not isinstance(named, str) or not REPO_PATTERN.match(named):
        raise _invalid_report(
            "no repository: pass orgSlug and projectSlug when creating the "
            "job, or set flakinessProject to 'org/project' in the report"
        )


def _invalid_report(reason: str) -> ApiError:
    return ApiError(
        400, "INVALID_REPORT", f"Invalid Flakiness report: {reason}", {"reason": reason}
    )


def _keep_report(database: Database, job_id: str, compressed: bytes) -> None:
    """Store the report unless another shard's upload got there first."""
    with database.transaction() as session:
        session.execute(
            update(DurationJob)
            .where(DurationJob.id == job_id, DurationJob.status == "created")
            .values(report=compressed, status="uploaded", updated_at=utcnow())
        )


def _claim(session: Session, job_id: str, statuses: tuple[str, ...]) -> bool:
    """Mark the job computing if it is in ``statuses`` or its computation went stale; true for
    exactly one caller, whichever process it runs in."""
    now = utcnow()
    stale = (DurationJob.status == "computing") & (DurationJob.updated_at < now - STALE_COMPUTATION)
    claimed = session.execute(
        update(DurationJob)
        .where(DurationJob.id == job_id, DurationJob.status.in_(statuses) | stale)
        .values(status="computing", updated_at=now)
    )
    return claimed.rowcount == 1


def _start(database: Database, job_id: str) -> None:
    threading.Thread(
        target=_compute, args=(database, job_id), name=f"durations-{job_id}", daemon=True
    ).start()


def _compute(database: Database, job_id: str) -> None:
    """Compute and store a claimed job's result; a failure is recorded for submit to retry."""
    try:
        result = _fill(database, job_id)
        values: dict[str, Any] = {"result": result, "status": "ready", "error": None}
    except Exception as exc:  # recorded on the job: the client polls, nobody else would see it
        log.exception("durations job %s failed", job_id)
        values = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    with database.transaction() as session:
        session.execute(
            update(DurationJob)
            .where(DurationJob.id == job_id)
            .values(**values, updated_at=utcnow())
        )


def _fill(database: Database, job_id: str) -> bytes:
    """The job's report with one attempt per environment where a test has history, carrying
    the predicted p50 (the figure sharding balances on); other tests keep no attempts.

    Report environments map to testlens environments by name, or all to ``""`` when that is
    the only environment the repository has.
    """
    with database.transaction() as session:
        tenant_id, project, report = session.execute(
            select(DurationJob.tenant_id, DurationJob.project, DurationJob.report).where(
                DurationJob.id == job_id
            )
        ).one()
    document = json.loads(brotli.decompress(report).decode("utf-8-sig"))
    tests = list(_walk(document))
    keys = [key for _, key in tests]
    names = [environment["name"] for environment in document["environments"]]
    with database.transaction() as session:
        repo_id = _repo_id(session, tenant_id, project or document["flakinessProject"])
    measured: dict[str, dict[TestKey, Estimate]] = {}
    for name in dict.fromkeys(names):  # one history in memory at a time
        with database.transaction() as session:
            _, history = _history(session, repo_id, name)
        measured[name] = {
            key: found
            for key, found in _predictions(history, keys).items()
            if found.source == "history"
        }
    for test, key in tests:
        test["attempts"] = [
            {"environmentIdx": index, "duration": measured[name][key].p50_ms}
            for index, name in enumerate(names)
            if key in measured[name]
        ]
    return brotli.compress(
        json.dumps(document, separators=(",", ":")).encode(),
        mode=brotli.MODE_TEXT,
        quality=RESULT_QUALITY,
    )


def _walk(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], TestKey]]:
    """Every test object of a validated Flakiness report with the identity that
    ``testlens.core.parsers.flakiness`` gives it: a file suite sets the file, another suite
    adds its title to the suite path, and a test outside any file suite names its own file."""

    def location_file(node: dict[str, Any]) -> str:
        return (node.get("location") or {}).get("file") or ""

    def tests(
        node: dict[str, Any], file: str, path: tuple[str, ...]
    ) -> Iterator[tuple[dict[str, Any], TestKey]]:
        for suite in node.get("suites") or ():
            inner_file, inner_path = file, path
            if suite["type"] == "file":
                inner_file = location_file(suite) or suite["title"]
            elif suite["title"]:
                inner_path = (*path, suite["title"])
            yield from tests(suite, inner_file, inner_path)
        for test in node.get("tests") or ():
            key = TestKey(
                file or location_file(test), SUITE_SEPARATOR.join(path), "", test["title"]
            )
            yield test, key

    yield from tests(document, "", ())
