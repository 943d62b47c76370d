"""The Flakiness.io Durations API's jobs: asynchronous by contract (create, upload, submit,
poll).

A job's state lives in one ``duration_jobs`` row per (tenant, commit, shard group, project),
so the shards of a CI run share one job, and any API process can answer any step: the
presigned URLs and tokens are verified with keys every process derives alike, a computation
is claimed with one conditional ``UPDATE`` and its result is stored in the row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import brotli
import jwt

from ...core.model import ReportError
from ...core.parsers.flakiness_io import read_report
from ..auth import bearer_token
from ..database import Database
from ..errors import ApiError, ErrorCode, not_found, too_large, unauthorized
from ..ingest.form import REPO_PATTERN
from ..models import utcnow
from ..signing import Keys
from . import queries, tasks
from .queries import JobRow

TOKEN_TTL = timedelta(minutes=10)
UPLOAD_URL_TTL = timedelta(minutes=10)
DOWNLOAD_URL_TTL = timedelta(hours=1)
STALE_COMPUTATION = timedelta(minutes=15)
"""A job still computing after this long lost its process (a restart, a crash) and may be
claimed again."""

UPLOAD_ROUTE = "upload_durations_report"
DOWNLOAD_ROUTE = "download_durations"
_TOKEN_KEY = "durations-token"
_URL_KEY = "durations-url"

UrlFor = Callable[..., object]
"""``request.url_for``: the absolute URL of a named route."""


def open_job(
    database: Database, keys: Keys, tenant_id: str, commit: str, group: str, project: str
) -> tuple[str, str]:
    """Open the job of one sharded run, or join it; return (job id, a new token for it)."""
    now = utcnow()
    identity = {
        "tenant_id": tenant_id,
        "commit_id": commit,
        "shard_group_key": group,
        "project": project,
    }
    with database.transaction() as session:
        job_id = queries.open_job(database, session, identity, now)
    claims = {
        "job": job_id,
        "tenant": tenant_id,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + TOKEN_TTL,
    }
    return job_id, jwt.encode(claims, keys.derive(_TOKEN_KEY), algorithm="HS256")


def presign(keys: Keys, url_for: UrlFor, route: str, job_id: str, ttl: timedelta) -> str:
    """An absolute URL to ``route`` for ``job_id`` that works without a key until it expires;
    the signature covers the route, the job and the expiry, so none can be changed."""
    expires = str(int((utcnow() + ttl).timestamp()))
    signature = keys.sign(_URL_KEY, f"{route}\n{job_id}\n{expires}")
    url = url_for(route, job_id=job_id)
    return str(url.include_query_params(expires=expires, signature=signature))  # type: ignore[attr-defined]


def verify_url(keys: Keys, route: str, job_id: str, expires: str, signature: str) -> None:
    if not keys.verify(_URL_KEY, f"{route}\n{job_id}\n{expires}", signature):
        raise ApiError(ErrorCode.INVALID_SIGNATURE, "The URL's signature is invalid")
    if int(expires) <= utcnow().timestamp():
        raise ApiError(ErrorCode.URL_EXPIRED, "The URL has expired; create a new job request")


def token_job(database: Database, keys: Keys, authorization: str) -> str:
    """The job a ``testDurationsToken`` names, after checking its signature, expiry and tenant."""
    token = bearer_token(authorization)
    if token is None:
        raise unauthorized("Send Authorization: Bearer <testDurationsToken>")
    try:
        claims = jwt.decode(
            token,
            keys.derive(_TOKEN_KEY),
            algorithms=["HS256"],
            options={"require": ["exp", "job", "tenant"]},
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("The testDurationsToken has expired", ErrorCode.TOKEN_EXPIRED) from None
    except jwt.InvalidTokenError:
        raise unauthorized("Invalid testDurationsToken", ErrorCode.INVALID_TOKEN) from None
    found = job(database, str(claims["job"]))
    if found.tenant_id != claims["tenant"]:
        raise ApiError(ErrorCode.FORBIDDEN, "The token does not belong to the job's tenant")
    return found.id


def job(database: Database, job_id: str) -> JobRow:
    with database.read() as session:
        found = queries.job(session, job_id)
    if found is None:
        raise not_found("durations job", job_id)
    return found


def accept_report(database: Database, job_id: str, compressed: bytes, limit: int) -> None:
    """Keep the first valid report of a job; the run's other shards upload the same report,
    which is ignored."""
    found = job(database, job_id)
    if found.status != "created":
        return
    check_report(compressed, limit, found.project)
    with database.transaction() as session:
        queries.keep_report(session, job_id, compressed)


def check_report(compressed: bytes, limit: int, project: str) -> None:
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
        document, _tests = read_report(data)
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
        ErrorCode.INVALID_REPORT, f"Invalid Flakiness report: {reason}", {"reason": reason}
    )


def submit(database: Database, job_id: str) -> None:
    """Start computing the job's durations, once for all shards."""
    with database.transaction() as session:
        found = queries.job(session, job_id)
        if found is not None and found.status == "created":
            raise ApiError(
                ErrorCode.REPORT_NOT_UPLOADED, "Upload the report to uploadUrl before submitting"
            )
        claimed = queries.claim(session, job_id, ("uploaded", "failed"), _stale_before())
    if claimed:
        tasks.start(database, job_id)


def download(database: Database, job_id: str) -> bytes:
    """The job's result (Brotli JSON), or the error saying why there is none yet."""
    with database.transaction() as session:
        outcome = queries.job_outcome(session, job_id)
        if outcome is None:
            raise not_found("durations job", job_id)
        claimed = outcome.status == "computing" and queries.claim(
            session, job_id, (), _stale_before()
        )
    if claimed:
        tasks.start(database, job_id)
    if outcome.status == "ready" and outcome.result is not None:
        return outcome.result
    if outcome.status == "failed":
        raise ApiError(
            ErrorCode.COMPUTATION_FAILED,
            f"Computing the durations failed; submit again to retry: {outcome.error}",
        )
    raise ApiError(
        ErrorCode.NOT_READY,
        "The durations are being computed; retry shortly",
        {"id": job_id},
        headers={"Retry-After": "1"},
    )


def _stale_before() -> datetime:
    return utcnow() - STALE_COMPUTATION
