"""Builds: which CI execution an upload belongs to, and what a build's tests did.

Every upload joins a build when it is stored (:func:`attach`): the orchestrated run it names,
else the build of its repository's ``workflow_run_id``, else a build of its own. A build's
totals count tests, not attempts, over every upload that joined it except speculative ones:
a test reported by two uploads (a retried CI job, a batch run again after its lease lapsed)
is one test whose status combines all its attempts, as within one report
(:attr:`testlens.core.model.TestCase.status`). :func:`settle` rewrites them, inside the
upload's transaction, after the build's row is locked, so two uploads of one build that
commit together both count.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ...core.identity import TestKey
from ...core.model import Attempt
from ...core.model import TestCase as CombinedTest
from ..database import Database
from ..errors import ApiError, ErrorCode, invalid_field
from ..models import Build, Lease, Run, TestCase, TestResult, WorkItem, table_of
from ..models.builds import FINISHED
from . import events

UPLOADS = "uploads"
"""The kind of a build made of plain uploads (orchestrated ones are ``queue`` or ``static``)."""


def build_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def run_not_found(run_id: str) -> ApiError:
    """404 ``RUN_NOT_FOUND``, also for another tenant's run: the two look the same."""
    return ApiError(ErrorCode.RUN_NOT_FOUND, f"Run not found: {run_id}", {"runId": run_id})


def tenant_build(session: Session, tenant_id: str, build_id: str, lock: bool = False) -> Build:
    """The tenant's build ``build_id``, or 404 ``RUN_NOT_FOUND``."""
    query = select(Build).where(Build.id == build_id, Build.tenant_id == tenant_id)
    found = session.scalar(query.with_for_update(key_share=True) if lock else query)
    if found is None:
        raise run_not_found(build_id)
    return found


@dataclass(frozen=True, slots=True)
class Joined:
    """The build an upload joined, and the lease of the batch it reports (if one)."""

    build_id: str
    lease_id: str | None


def attach(
    database: Database,
    session: Session,
    tenant_id: str,
    repo_id: str,
    *,
    orchestration_run: str | None,
    batch_id: str | None,
    workflow_run_id: str | None,
    branch: str | None,
    commit: str | None,
    environment: str | None,
    now: datetime,
) -> Joined:
    """The build an upload joins (created for a CI run's first upload, or a lone one)."""
    if orchestration_run is not None:
        build = tenant_build(session, tenant_id, orchestration_run)
        if build.repo_id is None:
            build.repo_id = repo_id
        lease_id = None
        if batch_id is not None:
            lease_id = session.scalar(
                select(Lease.id).where(Lease.build_id == build.id, Lease.batch_id == batch_id)
            )
            if lease_id is None:
                raise invalid_field(
                    "batch_id", "a batch claimed in this run", f"No batch {batch_id!r} was claimed"
                )
        return Joined(build.id, lease_id)
    if batch_id is not None:
        raise invalid_field(
            "batch_id", "with orchestration_run", "batch_id needs orchestration_run"
        )
    build_id, _new = open_uploads_build(
        database,
        session,
        tenant_id,
        repo_id,
        workflow_run_id=workflow_run_id,
        branch=branch,
        commit=commit,
        environment=environment,
        now=now,
    )
    return Joined(build_id, None)


def open_uploads_build(
    database: Database,
    session: Session,
    tenant_id: str,
    repo_id: str,
    *,
    workflow_run_id: str | None,
    branch: str | None,
    commit: str | None,
    environment: str | None,
    now: datetime,
) -> tuple[str, bool]:
    """The build of plain uploads of a CI run (``workflow_run_id``: the same for every
    upload of it), or a new one of its own without; its id and whether it is new."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "repo_id": repo_id,
        "kind": UPLOADS,
        "status": "running",
        "branch": branch,
        "commit_sha": commit,
        "environment": environment or "",
        "workflow_run_id": workflow_run_id,
        "meta": "{}",
        "worker_count": 1,
        "planned_tests": 0,
        "tests": 0,
        "passed": 0,
        "failed": 0,
        "flaky": 0,
        "skipped": 0,
        "duration_ms": 0.0,
        "overhead_ms": 0.0,
        "created_at": now,
        "active_at": now,
    }
    if workflow_run_id is None:
        session.execute(table_of(Build).insert(), [values])
        return values["id"], True
    values["build_key"] = build_key(UPLOADS, repo_id, workflow_run_id)
    session.execute(database.upsert(table_of(Build), ["tenant_id", "build_key"]), [values])
    found = session.scalar(
        select(Build.id).where(Build.tenant_id == tenant_id, Build.build_key == values["build_key"])
    )
    assert found is not None, "the build was just stored or found"
    return found, found == values["id"]


@dataclass(slots=True)
class Outcome:
    """What one test did in a build: every attempt, oldest first."""

    test_id: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def status(self) -> str:
        return CombinedTest(name=self.test_id, attempts=self.attempts).status


def outcomes(session: Session, build_id: str, details: bool = False) -> dict[str, Outcome]:
    """Each test's attempts in the build's counted (non-speculative) uploads, in the order
    they were stored; with ``details``, their durations and messages too."""
    columns: list[Any] = [TestResult.test_id, TestResult.status, TestResult.environment]
    if details:
        columns += [TestResult.duration_ms, TestResult.error_message]
    rows = session.execute(
        select(*columns)
        .join(Run, Run.id == TestResult.run_id)
        .where(Run.build_id == build_id, Run.speculative.is_(False))
        .order_by(TestResult.id)
    )
    found: dict[str, Outcome] = {}
    for row in rows:
        outcome = found.get(row[0])
        if outcome is None:
            outcome = found[row[0]] = Outcome(row[0])
        attempt = Attempt(row[1], environment=row[2])
        if details:
            attempt.duration_ms, attempt.message = row[3], row[4]
        outcome.attempts.append(attempt)
    return found


def lost_items(session: Session, build_id: str) -> list[WorkItem]:
    return list(
        session.scalars(
            select(WorkItem)
            .where(WorkItem.build_id == build_id, WorkItem.status == "lost")
            .order_by(WorkItem.position)
        )
    )


def _count(statuses: Iterable[str]) -> dict[str, int]:
    counts = {"tests": 0, "passed": 0, "failed": 0, "flaky": 0, "skipped": 0}
    for status in statuses:
        counts["tests"] += 1
        counts["failed" if status == "error" else status] += 1
    return counts


def settle(session: Session, build_id: str, now: datetime) -> None:
    """Rewrite the build's totals and status after an upload joined it (the upload's
    transaction; the build's row is locked first, see the module's docstring)."""
    # FOR NO KEY UPDATE: the upload's own run row holds a KEY SHARE lock on the build (its
    # foreign key), as do those of concurrent uploads; FOR UPDATE would deadlock with them.
    build = session.scalar(
        select(Build).where(Build.id == build_id).with_for_update(key_share=True)
    )
    assert build is not None, "an upload's build exists"
    runs = session.execute(
        select(func.count(), func.max(Run.duration_ms)).where(
            Run.build_id == build_id, Run.speculative.is_(False)
        )
    ).one()
    if runs[0] == 1 and build.kind == UPLOADS:
        # One report: its own totals are the build's (a report lists each test once).
        run = session.execute(
            select(Run.tests, Run.passed, Run.failed + Run.errors, Run.flaky, Run.skipped).where(
                Run.build_id == build_id
            )
        ).one()
        counts = dict(zip(("tests", "passed", "failed", "flaky", "skipped"), run, strict=True))
    else:
        counts = _count(outcome.status for outcome in outcomes(session, build_id).values())
    lost = session.scalar(
        select(func.count()).where(WorkItem.build_id == build_id, WorkItem.status == "lost")
    )
    counts["failed"] += lost or 0
    for name, value in counts.items():
        setattr(build, name, value)
    build.active_at = now
    if build.kind == UPLOADS:
        # Any upload may be a build's last: each ends it, with the totals so far.
        build.duration_ms = runs[1] or 0.0
        build.status = "failed" if build.failed else "completed"
        build.completed_at = now
        announce_end(session, build, now)
        return
    finish_if_drained(session, build, now)


def finish_if_drained(session: Session, build: Build, now: datetime) -> bool:
    """Mark an orchestrated build finished once no item waits or runs: ``failed`` if a
    test failed or an item was lost, else ``completed``. Whether it is finished now."""
    if build.status == "cancelled":
        return True
    if build.status in FINISHED:  # a rerun's upload may turn a failed run green, or not
        build.status = "failed" if build.failed else "completed"
        return True
    if items_in(session, build.id, "waiting", "leased"):
        return False
    build.status = "failed" if build.failed else "completed"
    build.completed_at = now
    build.duration_ms = (now - (build.started_at or build.created_at)).total_seconds() * 1000
    announce_end(session, build, now)
    return True


def announce_end(session: Session, build: Build, now: datetime) -> None:
    """Log the ``run:end`` event of a build that has just finished."""
    session.flush()
    events.append(
        session,
        build.tenant_id,
        build.id,
        [
            (
                "run:end",
                {
                    "runId": build.id,
                    "status": build.status,
                    "totalTests": build.tests,
                    "passedTests": build.passed,
                    "failedTests": build.failed,
                },
            )
        ],
        now,
    )


def items_in(session: Session, build_id: str, *statuses: str) -> int:
    """How many of the build's items are in one of ``statuses``."""
    return (
        session.scalar(
            select(func.count()).where(WorkItem.build_id == build_id, WorkItem.status.in_(statuses))
        )
        or 0
    )


def mark_speculative(session: Session, run_id: str) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(speculative=True))


def test_names(session: Session, test_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``(testFile, testName)`` of each test: the file, and the rest of its pytest-style id
    (``Class::name``) or, for other runners, its class path and name."""
    ids = list(test_ids)
    names: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 5000):
        rows = session.execute(
            select(
                TestCase.id, TestCase.file, TestCase.suite, TestCase.classname, TestCase.name
            ).where(TestCase.id.in_(ids[start : start + 5000]))
        )
        for tid, *identity in rows:
            names[tid] = events.shown_name(TestKey(*identity))
    return names
