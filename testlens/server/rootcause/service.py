"""Failure signatures at ingest, and root causes computed from a test's history.

Ingest computes the signature of every failed attempt (:class:`Collector`), stores it on the
attempt and counts it per test, and marks the tests that failed as due for analysis. The
analysis reads what the classifier weighs (:mod:`testlens.core.rootcause`) from the test's
newest runs: the failures and their messages, the pass/fail sequence, where the failures
happen (environment, OS, shard, check), what ran before it on the same machine, and which
other tests failed in the same runs. It runs in the background (:mod:`.tasks`), not inside
the upload: it reads history that an upload does not need to wait for.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from ...core import rootcause, signatures
from ...core.model import Attempt
from ..database import Database
from ..models import TestCase, iso, utcnow
from . import queries

log = logging.getLogger("testlens.server.rootcause")

HISTORY_ATTEMPTS = 400
"""Attempts of a test the analysis reads, newest first: enough runs for the statistics,
bounded whatever the history."""
FAILURES_READ = 20
"""Failed attempts (newest) whose messages and predecessors the analysis reads."""
ORDER_RUNS = 10
"""Runs, failing and passing each, whose predecessors are read for order dependency."""
PRECEDING = 30
"""Tests before an attempt in its run that count as having run before it."""
CO_FAILING_RUNS = 50
CO_FAILING_TESTS = 20

Explainer = Callable[[Mapping[str, Any]], tuple[str, str] | None]
"""Writes an explanation from the evidence: ``(text, model)``, or None to keep the built-in
one (see :mod:`testlens.server.llm`)."""


class Collector:
    """The signatures of one upload's failed attempts, per test, for :func:`record`."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str | None, str | None, str | None], signatures.Signature] = {}
        self._seen: dict[tuple[str, str], tuple[signatures.Signature, int]] = {}

    def key(self, test_id: str, attempt: Attempt) -> str | None:
        """The signature key of ``attempt`` if it failed (else None), counted for its test."""
        if attempt.status not in queries.FAILED:
            return None
        text = (attempt.error_type, attempt.message, attempt.stack)
        found = self._cache.get(text)
        if found is None:
            found = self._cache[text] = signatures.signature(*text)
        counted = self._seen.get((test_id, found.key))
        self._seen[(test_id, found.key)] = (found, 1 + (counted[1] if counted else 0))
        return found.key

    def record(
        self, database: Database, session: Session, repo_id: str, run_id: str, now: datetime
    ) -> None:
        """Store what was collected, and mark the failing tests due for analysis."""
        rows = [
            {
                "repo_id": repo_id,
                "test_id": test_id,
                "key": key,
                "error_type": found.error_type,
                "message": found.message,
                "frames": json.dumps(list(found.frames)),
                "count": count,
                "first_seen_at": now,
                "last_seen_at": now,
                "last_run_id": run_id,
            }
            for (test_id, key), (found, count) in self._seen.items()
        ]
        queries.write_signatures(database, session, rows)
        queries.mark_due(session, sorted({test_id for test_id, _key in self._seen}), now)


def evidence(session: Session, test_id: str) -> rootcause.Evidence:
    """What the classifier weighs, from the test's newest attempts."""
    attempts = queries.history(session, test_id, HISTORY_ATTEMPTS)
    runs: dict[str, list[queries.Attempt]] = defaultdict(list)
    for attempt in attempts:  # newest first; each run's attempts oldest first below
        runs[attempt.run_id].append(attempt)
    outcomes: list[str] = []
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    failed_runs: list[str] = []
    passed_runs: list[queries.Attempt] = []
    for run_id, tried in reversed(runs.items()):  # oldest run first
        statuses = {a.status for a in tried}
        failed, passed = bool(statuses & set(queries.FAILED)), "passed" in statuses
        if not (failed or passed):
            continue  # skipped only
        outcomes.append("flaky" if failed and passed else "failed" if failed else "passed")
        first = min(tried, key=lambda a: a.id)
        for dimension, value in _dimensions(first).items():
            counts = groups[dimension][value]
            counts[0] += failed
            counts[1] += 1
        if failed:
            failed_runs.append(run_id)
        else:
            passed_runs.append(first)
    failures = [
        rootcause.Failure(
            error_type=a.error_type or "",
            message=a.message or "",
            stack=a.stack or "",
            duration_ms=a.duration_ms,
            environment=a.environment,
            shard=a.shard,
            run_id=a.run_id,
            preceding=queries.preceding(session, a.run_id, a.id, PRECEDING)
            if index < ORDER_RUNS
            else (),
        )
        for index, a in enumerate(a for a in attempts if a.status in queries.FAILED)
        if index < FAILURES_READ
    ]
    newest_failed = failed_runs[::-1][:CO_FAILING_RUNS]
    return rootcause.Evidence(
        failures=failures,
        outcomes=outcomes,
        groups={d: {v: (c[0], c[1]) for v, c in values.items()} for d, values in groups.items()},
        passing_durations_ms=[a.duration_ms for a in attempts if a.status == "passed"],
        preceding_when_passed=[
            queries.preceding(session, a.run_id, a.id, PRECEDING)
            for a in passed_runs[::-1][:ORDER_RUNS]
        ],
        co_failing=queries.co_failing(session, test_id, newest_failed, CO_FAILING_TESTS),
        failed_runs=len(failed_runs),
    )


def _dimensions(attempt: queries.Attempt) -> dict[str, str]:
    """Where a run happened, by each dimension failures may concentrate on."""
    found = {
        "environment": attempt.environment,
        "shard": attempt.shard,
        "check": attempt.check_name,
    }
    if attempt.environment and "-" in attempt.environment:  # "linux-py3.12": its OS first
        found["os"] = attempt.environment.split("-", 1)[0]
    return {dimension: value for dimension, value in found.items() if value}


@dataclass(frozen=True, slots=True)
class Analysis:
    """A test's root cause; ``evidence`` is what it rests on as a model is shown it (also
    what a fix proposal is asked with and a pull request describes)."""

    verdict: rootcause.Verdict
    explanation: str
    model: str | None
    evidence: Mapping[str, Any]


AfterStore = Callable[[str, Analysis], None]
"""Called with each test's analysis once it is stored (see
:mod:`testlens.server.fixes.proposals`)."""


def analyze(database: Database, test_id: str, explain: Explainer | None = None) -> Analysis:
    """The root cause of one test's failures, written by the model when one is configured
    and answers (else the classifier's own sentence)."""
    with database.read() as session:
        found = evidence(session, test_id)
    verdict = rootcause.classify(found)
    described = _described(verdict, found)
    written = explain(described) if explain is not None else None
    if written is None:
        return Analysis(verdict, verdict.explanation, None, described)
    return Analysis(verdict, written[0], written[1], described)


def _described(verdict: rootcause.Verdict, found: rootcause.Evidence) -> dict[str, Any]:
    """The evidence as a model is shown it: the classifier's answer and what it rests on."""
    counted = signatures.merge(
        (signatures.signature(f.error_type, f.message, f.stack), 1) for f in found.failures
    )
    return {
        "category": verdict.category,
        "confidence": verdict.confidence,
        "explanation": verdict.explanation,
        "cluster": list(verdict.cluster),
        "signatures": [
            {"error_type": s.error_type, "message": s.message, "frames": list(s.frames), "count": n}
            for s, n in counted[:5]
        ],
        "outcomes": "".join(
            {"passed": ".", "failed": "F", "flaky": "f"}[o] for o in found.outcomes
        ),
        "groups": {d: dict(v) for d, v in found.groups.items()},
        "co_failing": list(found.co_failing[:10]),
        "failed_runs": found.failed_runs,
    }


def store(database: Database, test_id: str, due_at: datetime, analysis: Analysis) -> None:
    """Write a test's root cause, and clear its analysis unless new failures came since."""
    now = utcnow()
    verdict = analysis.verdict
    with database.transaction() as session:
        session.execute(
            update(TestCase)
            .where(TestCase.id == test_id)
            .values(
                root_cause_category=verdict.category,
                root_cause_confidence=verdict.confidence,
                root_cause_explanation=analysis.explanation,
                ai_model_used=analysis.model,
                last_analyzed_at=now,
            )
        )
        session.execute(
            update(TestCase)
            .where(TestCase.id == test_id, TestCase.analysis_due_at == due_at)
            .values(analysis_due_at=None)
        )


def analyze_due(
    database: Database,
    limit: int,
    explain: Explainer | None = None,
    after_store: AfterStore | None = None,
) -> int:
    """Analyse up to ``limit`` tests whose analysis is due; how many were."""
    with database.read() as session:
        due = queries.due(session, limit)
    for test_id, due_at in due:
        analysis = analyze(database, test_id, explain)
        store(database, test_id, due_at, analysis)
        if after_store is not None:
            after_store(test_id, analysis)
    return len(due)


def signatures_body(session: Session, test_id: str) -> list[dict[str, Any]]:
    """A test's failure signatures with counts and first/last seen, near-identical ones
    merged (the most frequent speaks for its group)."""
    stored = {row.key: row for row in queries.signatures(session, test_id)}
    counted = [
        (
            signatures.Signature(
                row.key, row.error_type, row.message, tuple(json.loads(row.frames))
            ),
            row.count,
        )
        for row in stored.values()
    ]
    body = []
    for members in signatures.group(counted):
        head = members[0][0]
        rows = [stored[member.key] for member, _count in members]
        body.append(
            {
                "key": head.key,
                "error_type": head.error_type,
                "message": head.message,
                "frames": list(head.frames),
                "count": sum(count for _member, count in members),
                "first_seen": iso(min(r.first_seen_at for r in rows)),
                "last_seen": iso(max(r.last_seen_at for r in rows)),
            }
        )
    return body
