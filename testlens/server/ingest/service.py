"""Storing a report: parse it, then write the run, its tests, every attempt and what detection
concludes, in one transaction.

Either all of a report is stored or none of it. The same report for the same repo, commit
and workflow run is recognised by a content hash and answered with the first run's id.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ...core.identity import PYTEST_SUITE, TestKey, pytest_key, relative_to_root
from ...core.model import Report, ReportError, ReportTooLarge
from ...core.model import TestCase as ReportedTest
from ...core.parsers import parse_report
from .. import metrics
from ..database import Database
from ..errors import too_many_results, unparseable_report
from ..models import TestCase, table_of, utcnow
from ..models.results import name_key
from ..orchestration import builds, events
from ..orchestration import service as queue
from ..rootcause import service as rootcause
from ..settings import DEFAULT_MAINLINE_BRANCHES, DEFAULT_MAX_REPORT_RESULTS
from ..webhooks import payloads
from . import detection, queries
from .form import RunMetadata
from .queries import IdentityRow, ResultRow

Identity = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class IngestResult:
    run_id: str
    tests_processed: int
    flaky_detected: int
    duplicate: bool


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL, which JSON reports may carry as ``\\u0000``."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def test_id(repo_id: str, identity: Identity) -> str:
    """A test's primary key: stable for its identity within one repository."""
    key = "\x1f".join((repo_id, *identity)).encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def keyed_tests(report: Report, framework: str) -> tuple[Report, dict[Identity, Identity]]:
    """The report with each test once, and the identity each test's id is a hash of.

    A pytest test is one test however it was reported (JUnit XML from pytest or from the
    plugin, pytest-json-report, a shard request by node id): its id hashes
    :func:`pytest_key`, and a missing ``file`` is filled in from it. Two entries of one
    report that turn out to be the same test become one test with both entries' attempts.
    Other tests are keyed by their identity as reported.
    """
    everything_pytest = framework.lower() == "pytest" or report.format == "pytest-json"
    kept: dict[Identity, ReportedTest] = {}
    keys: dict[Identity, Identity] = {}
    for test in report.tests:
        key = None
        if everything_pytest or test.suite == PYTEST_SUITE:
            key = pytest_key(test.identity)
        if key is not None and not test.file:
            test.file = key.file
        hashed = test.identity if key is None else (key.file, key.suite, key.classname, key.name)
        if hashed in kept:  # a new list: the report may be stored again (a lost race)
            first = kept[hashed]
            kept[hashed] = dataclasses.replace(first, attempts=first.attempts + test.attempts)
            continue
        kept[hashed] = test
        keys[test.identity] = hashed
    if len(kept) == len(report.tests):
        return report, keys
    return dataclasses.replace(report, tests=list(kept.values())), keys


def ingest_key(meta: RunMetadata, data: bytes) -> str:
    """What makes two uploads the same: repository (in any case), commit, workflow run,
    orchestrated batch and content (a batch run again elsewhere may report the very same
    results, and must still be told done)."""
    digest = hashlib.sha256()
    for part in (
        name_key(meta.repo),
        meta.commit or "",
        meta.workflow_run_id or "",
        meta.orchestration_run or "",
        meta.batch_id or "",
    ):
        digest.update(part.encode() + b"\x1f")
    digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def ingest(
    database: Database,
    tenant_id: str,
    meta: RunMetadata,
    data: bytes,
    mainline_branches: tuple[str, ...] = DEFAULT_MAINLINE_BRANCHES,
    max_results: int = DEFAULT_MAX_REPORT_RESULTS,
) -> IngestResult:
    """Parse and store; a concurrent duplicate upload resolves to the run that won."""
    try:
        return _ingest(database, tenant_id, meta, data, mainline_branches, max_results)
    finally:
        # The report's objects are freed by now; the C allocator keeps their pages unless
        # asked, so a process would stay at the size of its largest upload.
        release_memory()


def _ingest(
    database: Database,
    tenant_id: str,
    meta: RunMetadata,
    data: bytes,
    mainline_branches: tuple[str, ...],
    max_results: int,
) -> IngestResult:
    measured = metrics.current()
    try:
        with measured.parse_seconds.time():
            report = parse_report(data, meta.format, max_results)
            report = relative_to_root(report, meta.root, meta.repo)
    except ReportTooLarge as exc:
        raise too_many_results(exc.limit, str(exc)) from None
    except ReportError as exc:
        raise unparseable_report(f"Could not parse the report: {exc}", str(exc)) from None
    # Counted now: storing merges a test's repeated entries into the first one's attempts.
    attempts = sum(len(test.attempts) for test in report.tests)
    key = ingest_key(meta, data)
    with measured.store_seconds.time():
        try:
            result = store_report(database, tenant_id, meta, report, key, mainline_branches)
        except IntegrityError:
            result = store_report(database, tenant_id, meta, report, key, mainline_branches)
    if not result.duplicate:
        measured.results_stored.inc(attempts)
    return result


def release_memory() -> None:
    """Give the C allocator's free pages back to the system, where it can say so (glibc)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def store_report(
    database: Database,
    tenant_id: str,
    meta: RunMetadata,
    report: Report,
    ingest_key: str,
    mainline_branches: tuple[str, ...] = DEFAULT_MAINLINE_BRANCHES,
) -> IngestResult:
    """Store one parsed report as a run, in a single transaction."""
    now = utcnow()
    with database.transaction() as session:
        repo_id = queries.repository_id(database, session, tenant_id, meta.repo)
        existing = queries.run_with_key(session, repo_id, ingest_key)
        if existing is not None:
            return IngestResult(
                existing.id, existing.tests, existing.flaky_detected, duplicate=True
            )
        run_id = str(uuid.uuid4())
        joined = builds.attach(
            database,
            session,
            tenant_id,
            repo_id,
            orchestration_run=meta.orchestration_run,
            batch_id=meta.batch_id,
            workflow_run_id=meta.workflow_run_id,
            branch=meta.branch,
            commit=meta.commit,
            environment=meta.environment,
            now=now,
        )
        values = _run_values(run_id, repo_id, ingest_key, meta, report, now)
        values.update(build_id=joined.build_id, lease_id=joined.lease_id)
        queries.insert_run(session, values)
        report, keys = keyed_tests(report, meta.framework)
        test_ids = {identity: test_id(repo_id, key) for identity, key in keys.items()}
        identities = _identity_rows(database, repo_id, report, test_ids, now)
        queries.claim_tests(database, session, list(identities.values()))
        context = detection.RunContext(
            repo_id,
            run_id,
            now,
            meta.commit,
            meta.tree_sha,
            meta.environment,
            meta.check_name,
            mainline=meta.pr_number is None
            and (meta.branch is None or meta.branch in mainline_branches),
            mainline_branches=mainline_branches,
        )
        rollup, flaky, outage, changes = detection.Rollup(), 0, False, []
        for part in detection.evaluate(database, session, context, report, test_ids):
            queries.write_tests(
                database, session, [identities[tid] + row for tid, row in part.summaries.items()]
            )
            detection.write(database, session, part)
            rollup.absorb(part.rollup)
            flaky += part.flaky_tests
            outage = outage or part.outage
            changes.extend(part.changes)
        failures = rootcause.Collector()
        for start in range(0, len(report.tests), detection.CHUNK_TESTS):
            tests = report.tests[start : start + detection.CHUNK_TESTS]
            rows = _result_rows(run_id, meta, tests, test_ids, failures)
            queries.write_results(database, session, rows)
        failures.record(database, session, repo_id, run_id, now)
        detection.add_rollup(database, session, context, rollup)
        _announce(session, tenant_id, meta, changes, report, test_ids, now)
        queries.finish_run(session, run_id, repo_id, flaky, outage, now)
        if joined.lease_id is not None:
            queue.complete_batch(
                session, joined.build_id, joined.lease_id, run_id, values["duration_ms"], now
            )
        results = [
            events.result_payload(test_ids[test.identity], TestKey(*keys[test.identity]), test)
            for test in report.tests
        ]
        events.append(
            session, tenant_id, joined.build_id, events.test_batches(joined.build_id, results), now
        )
        builds.settle(session, joined.build_id, now)
    return IngestResult(run_id, len(report.tests), flaky, duplicate=False)


def _run_values(
    run_id: str, repo_id: str, key: str, meta: RunMetadata, report: Report, now: datetime
) -> dict[str, Any]:
    summary = report.summary()
    return {
        "id": run_id,
        "repo_id": repo_id,
        "ingest_key": key,
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
        "shard": meta.shard,
        "created_at": now,
        "tests": summary.tests,
        "passed": summary.passed,
        "failed": summary.failed,
        "errors": summary.errors,
        "skipped": summary.skipped,
        "flaky": summary.flaky,
        "attempts": summary.attempts,
        "duration_ms": summary.duration_ms,
        "recovered_reason": (report.recovered_reason or "not well-formed XML")
        if report.recovered
        else None,
    }


def _identity_rows(
    database: Database,
    repo_id: str,
    report: Report,
    test_ids: Mapping[Identity, str],
    now: datetime,
) -> dict[str, IdentityRow]:
    """The identity part of each test's row, by test id, first and last seen now."""
    seen = database.to_driver(table_of(TestCase).c.last_seen_at)(now)
    rows: dict[str, IdentityRow] = {}
    for test in report.tests:
        tid = test_ids[test.identity]
        rows[tid] = IdentityRow(
            tid,
            repo_id,
            _text(test.file) or "",
            _text(test.suite) or "",
            _text(test.classname) or "",
            _text(test.name) or "",
            seen,
            seen,
        )
    return rows


def _result_rows(
    run_id: str,
    meta: RunMetadata,
    tests: list[ReportedTest],
    test_ids: Mapping[Identity, str],
    failures: rootcause.Collector,
) -> list[ResultRow]:
    """One row per attempt, numbered in the order the report gives them; a failed one with
    its signature."""
    return [
        ResultRow(
            run_id,
            test_ids[test.identity],
            number,
            attempt.status,
            attempt.duration_ms,
            attempt.environment or meta.environment,
            attempt.censored,
            _text(attempt.error_type),
            _text(attempt.message),
            _text(attempt.stack),
            _text(attempt.stdout),
            _text(attempt.stderr),
            failures.key(test_ids[test.identity], attempt),
        )
        for test in tests
        for number, attempt in enumerate(test.attempts)
    ]


def _announce(
    session: Session,
    tenant_id: str,
    meta: RunMetadata,
    changes: list[detection.Change],
    report: Report,
    test_ids: Mapping[Identity, str],
    now: datetime,
) -> None:
    """Queue the webhooks of the run's state changes, in the run's transaction."""
    if not changes:
        return
    changed = {change.test_id for change in changes}
    payloads.queue_flaky_events(
        session,
        tenant_id,
        meta.repo,
        {"name": meta.check_name or meta.framework, "provider": meta.provider or "github"},
        meta.commit,
        changes,
        {tid: test for test in report.tests if (tid := test_ids[test.identity]) in changed},
        now,
    )
