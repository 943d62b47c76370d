"""Reading builds as the Shifty dialect's "runs": the list, one run with its results, its
failed tests, and the progress snapshot the SSE stream sends."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from ..database import Database
from ..errors import ApiError, ErrorCode
from ..models import Build, Repository, WorkItem, iso
from ..models.results import name_key
from . import builds

MAX_RESULTS_PAGE = 1000


def _total(build: Build) -> int:
    """Tests counted so far; while the run goes on, at least the tests it plans to run."""
    if build.status in ("pending", "running"):
        return max(build.tests, build.planned_tests)
    return build.tests


def _summary(build: Build) -> dict[str, Any]:
    return {
        "id": build.id,
        "status": build.status,
        "totalTests": _total(build),
        "passedTests": build.passed,
        "failedTests": build.failed,
        "durationMs": round(build.duration_ms, 3),
        "branch": build.branch,
        "commitSha": build.commit_sha,
        "createdAt": iso(build.created_at),
        "completedAt": iso(build.completed_at),
    }


def run_list(
    database: Database,
    tenant_id: str,
    *,
    project: str | None,
    branch: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """The tenant's builds, newest first, orchestrated or made of uploads."""
    query = select(Build).where(Build.tenant_id == tenant_id)
    if project is not None:
        query = query.join(Repository, Repository.id == Build.repo_id).where(
            Repository.name_key == name_key(project)
        )
    if branch is not None:
        query = query.where(Build.branch == branch)
    if status is not None:
        query = query.where(Build.status == status)
    query = query.order_by(Build.created_at.desc(), Build.id).limit(limit).offset(offset)
    with database.read() as session:
        return {"runs": [_summary(build) for build in session.scalars(query)]}


def run_detail(
    database: Database, tenant_id: str, run_id: str, limit: int, offset: int
) -> dict[str, Any]:
    """One build and a page of its tests, each once with its combined status; tests lost
    with their items follow the reported ones."""
    with database.read() as session:
        build = builds.tenant_build(session, tenant_id, run_id)
        found = builds.outcomes(session, build.id, details=True)
        lost = builds.lost_items(session, build.id)
        page = list(found.values())[offset : offset + limit]
        names = builds.test_names(session, [outcome.test_id for outcome in page])
    results = []
    for outcome in page:
        file, name = names.get(outcome.test_id, ("", outcome.test_id))
        status = outcome.status
        results.append(
            {
                "id": outcome.test_id,
                "testFile": file,
                "testName": name,
                "status": "failed" if status == "error" else status,
                "durationMs": outcome.attempts[-1].duration_ms,
                "retryCount": len(outcome.attempts) - 1,
                "healingAttempted": False,
                "traceUrl": None,
            }
        )
    lost_from = max(0, offset - len(found))
    for item in lost[lost_from : lost_from + max(0, limit - len(results))]:
        results.append(
            {
                "id": f"item-{item.id}",
                "testFile": item.file,
                "testName": "",
                "status": "failed",
                "durationMs": 0.0,
                "retryCount": 0,
                "healingAttempted": False,
                "traceUrl": None,
            }
        )
    return {
        "run": {
            **{key: value for key, value in _summary(build).items() if key in _DETAIL},
            "flakyTests": build.flaky,
            "workerCount": build.worker_count,
            "shardStrategy": build.kind,
            "metadata": json.loads(build.meta),
            "reason": build.reason,
        },
        "results": results,
        "totalResults": len(found) + len(lost),
    }


_DETAIL = (
    "id",
    "status",
    "totalTests",
    "passedTests",
    "failedTests",
    "durationMs",
    "branch",
    "commitSha",
)


def failed_tests(database: Database, tenant_id: str, run_id: str) -> dict[str, Any]:
    """Every test whose combined status in the build is a failure (a test that failed and
    then passed is flaky, not failed), with its last failure's message, then every lost item."""
    with database.read() as session:
        build = builds.tenant_build(session, tenant_id, run_id)
        found = builds.outcomes(session, build.id, details=True)
        failing = [o for o in found.values() if o.status in ("failed", "error")]
        names = builds.test_names(session, [outcome.test_id for outcome in failing])
        lost = builds.lost_items(session, build.id)
    failed = []
    for outcome in failing:
        file, name = names.get(outcome.test_id, ("", outcome.test_id))
        last = next((a for a in reversed(outcome.attempts) if a.is_failure), outcome.attempts[-1])
        failed.append({"testFile": file, "testName": name, "errorMessage": last.message})
    failed.extend(
        {"testFile": item.file, "testName": "", "errorMessage": item.reason} for item in lost
    )
    return {"failedTests": failed}


def progress(database: Database, tenant_id: str, run_id: str) -> tuple[dict[str, Any], int]:
    """The progress stream's snapshot: totals, and per shard of the run's plan how many of
    its tests have a result (a queue run's shards are its plan's even shares of the work);
    and the sequence number of the run's last event, which the snapshot includes."""
    with database.read() as session:
        build = builds.tenant_build(session, tenant_id, run_id)
        if build.kind == builds.UPLOADS:
            raise ApiError(
                ErrorCode.INVALID_PARAMETERS,
                f"run {run_id} is made of uploads, not orchestrated: it has no progress stream",
            )
        rows = session.execute(
            select(
                WorkItem.shard,
                WorkItem.status,
                func.count(),
                func.coalesce(func.sum(WorkItem.test_count), 0),
            )
            .where(WorkItem.build_id == build.id)
            .group_by(WorkItem.shard, WorkItem.status)
        ).all()
    shards: dict[int, dict[str, int]] = {}
    for shard, status, _, tests in rows:
        counts = shards.setdefault(shard, {})
        counts[status] = counts.get(status, 0) + int(tests)
    snapshot = {
        "id": build.id,
        "status": build.status,
        "passedTests": build.passed,
        "failedTests": build.failed,
        "shards": [
            _shard_progress(index, shards.get(index, {})) for index in range(build.worker_count)
        ],
    }
    return snapshot, build.event_seq


def _shard_progress(index: int, counts: dict[str, int]) -> dict[str, Any]:
    total = sum(counts.values())
    completed = counts.get("done", 0) + counts.get("lost", 0)
    if counts.get("waiting", 0) + counts.get("leased", 0) == 0:
        status = "completed"
    elif completed or counts.get("leased", 0):
        status = "running"
    else:
        status = "pending"
    return {"index": index, "status": status, "testCount": total, "completed": completed}
