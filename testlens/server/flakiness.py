"""Detection at ingest: fold each uploaded run into per-test state, events and daily rollups.

The state of a test in an environment is ``testlens.core.flakiness.TestState``. A run loads
the states it touches in one query, applies ``observe`` to each, appends the run's duration
samples, and writes every state back with one statement; transitions become events (and
webhooks), and the day's rollup row is incremented. Analytics then read states and rollups,
never raw results, so their latency does not grow with history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..core import flakiness as detection
from ..core.model import Report
from .database import Database
from .models import DailyRollup, TestEvent
from .models import TestState as TestStateRow

MAX_DURATION_SAMPLES = 30
_LOAD_CHUNK = 5000
_STATE_COLUMNS = (
    "test_id", "environment", "repo_id", "state", "since", "flake_score", "flake_score_low",
    "flake_score_high", "pass_rate", "total_runs", "failed_runs", "flaky_runs",
    "first_flaky_at", "last_flaky_at", "last_run_at", "last_run_id", "check_name", "durations",
    "data",
)  # fmt: skip
_EVENT_COLUMNS = (
    "repo_id",
    "test_id",
    "environment",
    "from_state",
    "to_state",
    "at",
    "reason",
    "run_ids",
    "commit_sha",
)
_intervals: dict[tuple[float, float], tuple[float, float]] = {}


def flake_interval(state: detection.TestState) -> tuple[float, float]:
    """The credible interval of the flake score, memoised: it depends only on the posterior,
    which tests with the same history share, and costs hundreds of µs to compute."""
    key = (state.alpha, state.beta)
    found = _intervals.get(key)
    if found is None:
        found = detection.credible_interval(state)
        if len(_intervals) < 100_000:
            _intervals[key] = found
    return found


@dataclass(frozen=True, slots=True)
class RunContext:
    repo_id: str
    run_id: str
    at: datetime
    commit: str | None
    tree_sha: str | None
    environment: str | None
    check_name: str | None


@dataclass(slots=True)
class Change:
    """One test's transition in this run, for webhooks."""

    test_id: str
    state: detection.TestState
    transition: detection.Transition


@dataclass(slots=True)
class RunOutcome:
    flaky_tests: int = 0
    changes: list[Change] = field(default_factory=list)


def _durations_by_key(
    report: Report, test_ids: Mapping[tuple[str, str, str, str], str], environment: str | None
) -> dict[tuple[str, str], list[list[float]]]:
    samples: dict[tuple[str, str], list[list[float]]] = {}
    for test in report.tests:
        tid = test_ids[test.identity]
        for attempt in test.attempts:
            if attempt.status == "skipped":
                continue
            env = attempt.environment or environment or ""
            samples.setdefault((tid, env), []).append(
                [attempt.duration_ms, 1 if attempt.censored else 0]
            )
    return samples


def _load(session: Session, test_ids: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for start in range(0, len(test_ids), _LOAD_CHUNK):
        chunk = test_ids[start : start + _LOAD_CHUNK]
        rows = session.execute(
            select(
                TestStateRow.test_id,
                TestStateRow.environment,
                TestStateRow.data,
                TestStateRow.durations,
            ).where(TestStateRow.test_id.in_(chunk))
        )
        for test_id, env, data, durations in rows:
            found[(test_id, env)] = (data, durations)
    return found


def record_run(
    database: Database,
    session: Session,
    ctx: RunContext,
    report: Report,
    test_ids: Mapping[tuple[str, str, str, str], str],
) -> RunOutcome:
    """Update the states, events and rollup of every test the run touched."""
    observed = detection.observations(
        report, run_id=ctx.run_id, at=ctx.at, commit=ctx.commit, tree_sha=ctx.tree_sha,
        environment=ctx.environment,
    )
    samples = _durations_by_key(report, test_ids, ctx.environment)
    existing = _load(session, list(dict.fromkeys(test_ids.values())))
    stamp = database.to_driver(TestStateRow.__table__.c.last_run_at)
    at = stamp(ctx.at)
    outcome = RunOutcome()
    flaky_ids: set[str] = set()
    rows: list[tuple] = []
    events: list[tuple] = []
    rollup = {"test_runs": 0, "failed_test_runs": 0, "flaky_test_runs": 0, "flaky_tests": 0,
              "flake_score_sum": 0.0}
    for identity, obs in observed:
        tid = test_ids[identity]
        env = obs.environment or ""
        stored = existing.get((tid, env))
        before = detection.TestState.from_json(stored[0]) if stored else None
        state, transitions = detection.observe(before, obs)
        history = json.loads(stored[1]) if stored else []
        history.extend(samples.get((tid, env), ()))
        low, high = flake_interval(state)
        rows.append((
            tid, env, ctx.repo_id, state.verdict, stamp(state.since), state.flake_score, low,
            high, state.pass_rate, state.total_runs, state.failed_runs, state.flaky_runs,
            stamp(state.first_flaky_at), stamp(state.last_flaky_at), at, ctx.run_id,
            ctx.check_name, json.dumps(history[-MAX_DURATION_SAMPLES:], separators=(",", ":")),
            state.to_json(),
        ))
        for transition in transitions:
            events.append((
                ctx.repo_id, tid, env, transition.from_state, transition.to_state,
                stamp(transition.at), transition.reason, json.dumps(list(transition.run_ids)),
                ctx.commit,
            ))
            outcome.changes.append(Change(tid, state, transition))
        if state.verdict == "flaky":
            flaky_ids.add(tid)
        rollup["test_runs"] += 1
        if any(s in ("failed", "error") for s in obs.statuses):
            rollup["failed_test_runs"] += 1
        if state.flaky_runs > (before.flaky_runs if before else 0):  # flaky in this run
            rollup["flaky_test_runs"] += 1
            previous = before.last_flaky_at if before else None
            if previous is None or previous.date() != ctx.at.date():
                rollup["flaky_tests"] += 1
                rollup["flake_score_sum"] += state.flake_score
    connection = session.connection()
    database.insert_many(
        connection, TestStateRow.__table__, _STATE_COLUMNS, rows,
        conflict=("test_id", "environment"), update=_STATE_COLUMNS[2:],
    )
    database.insert_many(connection, TestEvent.__table__, _EVENT_COLUMNS, events)
    session.execute(
        database.upsert(DailyRollup, ["repo_id", "day"], increment=("runs", *rollup)),
        {"repo_id": ctx.repo_id, "day": ctx.at.date().isoformat(), "runs": 1, **rollup},
    )
    outcome.flaky_tests = len(flaky_ids)
    return outcome
