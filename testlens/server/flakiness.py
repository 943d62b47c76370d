"""Detection at ingest: fold each uploaded run into per-test state, events and daily rollups.

The state of a test in an environment is ``testlens.core.flakiness.TestState``. A run loads
the states it touches in one query and applies ``observe`` to each (:func:`evaluate`); the
ingest transaction then writes the tests' combined figures onto ``test_cases`` and the new
states, events and the day's rollup with one statement each (:func:`write`). Analytics read
those rows, never raw results, so their latency does not grow with history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..core import flakiness as detection
from ..core.model import Report, TestCase
from . import webhooks
from .database import Database
from .models import DailyRollup, TestEvent, iso
from .models import TestState as TestStateRow

MAX_DURATION_SAMPLES = 30  # kept: between this and twice this many (see _append_samples)
RECENT_FLAKY = 50
_LOAD_CHUNK = 5000
_STATE_RANK = {"healthy": 0, "flaky": 1, "broken": 2}
STATE_COLUMNS = (
    "test_id", "environment", "repo_id", "state", "since", "flake_score", "flake_score_low",
    "flake_score_high", "pass_rate", "total_runs", "failed_runs", "flaky_runs",
    "first_flaky_at", "last_flaky_at", "last_run_at", "last_run_id", "check_name", "durations",
    "data",
)  # fmt: skip
EVENT_COLUMNS = (
    "repo_id", "test_id", "environment", "from_state", "to_state", "at", "reason", "run_ids",
    "commit_sha",
)  # fmt: skip
# The columns of test_cases that hold a test's figures combined over its environments.
SUMMARY_COLUMNS = (
    "state", "flake_score", "flake_score_low", "flake_score_high", "total_runs", "failed_runs",
    "flaky_runs", "first_flaky_at", "last_flaky_at", "last_run_id", "recent_flaky",
)  # fmt: skip
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
    mainline: bool = True


@dataclass(slots=True)
class Change:
    """One test's transition in this run, for webhooks."""

    test_id: str
    state: detection.TestState
    transition: detection.Transition


@dataclass(slots=True)
class Evaluation:
    """Everything a run changes, computed before anything is written."""

    states: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    summaries: dict[str, tuple] = field(default_factory=dict)  # test id -> SUMMARY_COLUMNS
    rollup: dict[str, float] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    flaky_tests: int = 0


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


def _load(session: Session, test_ids: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Stored (state JSON, durations JSON) of every environment of the given tests."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
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
            found.setdefault(test_id, {})[env] = (data, durations)
    return found


def _append_samples(stored: str, new: list[list[float]] | None) -> str:
    """The stored duration samples (JSON) with ``new`` appended, without parsing them.

    The list is cut back to the newest :data:`MAX_DURATION_SAMPLES` only once it holds twice
    as many, so the parse is paid once every so many runs instead of at every ingest.
    """
    if not new:
        return stored
    added = json.dumps(new, separators=(",", ":"))[1:-1]
    text = f"[{added}]" if stored == "[]" else f"{stored[:-1]},{added}]"
    if text.count("],[") >= 2 * MAX_DURATION_SAMPLES:
        text = json.dumps(json.loads(text)[-MAX_DURATION_SAMPLES:], separators=(",", ":"))
    return text


def _summary(states: list[detection.TestState], run_id: str, stamp) -> tuple:
    """A test's figures over all its environments: the worst state and score, summed runs."""
    if len(states) == 1:  # most tests: no combining to do
        only = states[0]
        low, high = flake_interval(only)
        recent = [round(at.timestamp()) for at, _run in only.recent_flaky[-RECENT_FLAKY:]]
        return (
            only.verdict,
            only.flake_score,
            low,
            high,
            only.total_runs,
            only.failed_runs,
            only.flaky_runs,
            stamp(only.first_flaky_at),
            stamp(only.last_flaky_at),
            run_id,
            json.dumps(recent) if recent else "[]",
        )
    worst = max(states, key=lambda s: (_STATE_RANK[s.verdict], s.flake_score))
    low, high = flake_interval(worst)
    firsts = [s.first_flaky_at for s in states if s.first_flaky_at]
    lasts = [s.last_flaky_at for s in states if s.last_flaky_at]
    recent = sorted(at.timestamp() for s in states for at, _run in s.recent_flaky)
    return (
        worst.verdict,
        worst.flake_score,
        low,
        high,
        sum(s.total_runs for s in states),
        sum(s.failed_runs for s in states),
        sum(s.flaky_runs for s in states),
        stamp(min(firsts, default=None)),
        stamp(max(lasts, default=None)),
        run_id,
        json.dumps([round(t) for t in recent[-RECENT_FLAKY:]]),
    )


def evaluate(
    database: Database,
    session: Session,
    ctx: RunContext,
    report: Report,
    test_ids: Mapping[tuple[str, str, str, str], str],
) -> Evaluation:
    """Apply the run to the stored state of every test it touched (reads only)."""
    observed = detection.observations(
        report,
        run_id=ctx.run_id,
        at=ctx.at,
        commit=ctx.commit,
        tree_sha=ctx.tree_sha,
        environment=ctx.environment,
        mainline=ctx.mainline,
    )
    samples = _durations_by_key(report, test_ids, ctx.environment)
    stored = _load(session, list(dict.fromkeys(test_ids.values())))
    stamp = database.to_driver(TestStateRow.__table__.c.last_run_at)
    at = stamp(ctx.at)
    result = Evaluation(
        rollup={
            "runs": 1,
            "test_runs": 0,
            "failed_test_runs": 0,
            "flaky_test_runs": 0,
            "flaky_tests": 0,
            "flake_score_sum": 0.0,
        }
    )
    rollup = result.rollup
    new_states: dict[str, dict[str, detection.TestState]] = {}
    for identity, obs in observed:
        tid = test_ids[identity]
        env = obs.environment or ""
        previous = stored.get(tid, {}).get(env)
        before = detection.TestState.from_json(previous[0]) if previous else None
        state, transitions = detection.observe(before, obs)
        new_states.setdefault(tid, {})[env] = state
        durations = _append_samples(previous[1] if previous else "[]", samples.get((tid, env)))
        low, high = flake_interval(state)
        result.states.append(
            (
                tid,
                env,
                ctx.repo_id,
                state.verdict,
                stamp(state.since),
                state.flake_score,
                low,
                high,
                state.pass_rate,
                state.total_runs,
                state.failed_runs,
                state.flaky_runs,
                stamp(state.first_flaky_at),
                stamp(state.last_flaky_at),
                at,
                ctx.run_id,
                ctx.check_name,
                durations,
                state.to_json(),
            )
        )
        for transition in transitions:
            result.events.append(
                (
                    ctx.repo_id,
                    tid,
                    env,
                    transition.from_state,
                    transition.to_state,
                    stamp(transition.at),
                    transition.reason,
                    json.dumps(list(transition.run_ids)),
                    ctx.commit,
                )
            )
            result.changes.append(Change(tid, state, transition))
        rollup["test_runs"] += 1
        if any(s in ("failed", "error") for s in obs.statuses):
            rollup["failed_test_runs"] += 1
        if state.flaky_runs > (before.flaky_runs if before else 0):  # flaky in this run
            rollup["flaky_test_runs"] += 1
            seen = before.last_flaky_at if before else None
            if seen is None or seen.date() != ctx.at.date():
                rollup["flaky_tests"] += 1
                rollup["flake_score_sum"] += state.flake_score
    for tid, envs in new_states.items():
        others = [
            detection.TestState.from_json(data)
            for env, (data, _durations) in stored.get(tid, {}).items()
            if env not in envs
        ]
        states = [*envs.values(), *others]
        result.summaries[tid] = _summary(states, ctx.run_id, stamp)
        if any(s.verdict == "flaky" for s in envs.values()):
            result.flaky_tests += 1
    return result


def write(database: Database, session: Session, ctx: RunContext, result: Evaluation) -> None:
    """Store what :func:`evaluate` computed (after the run's test_cases rows exist)."""
    connection = session.connection()
    database.insert_many(
        connection,
        TestStateRow.__table__,
        STATE_COLUMNS,
        result.states,
        conflict=("test_id", "environment"),
        update=STATE_COLUMNS[2:],
    )
    database.insert_many(connection, TestEvent.__table__, EVENT_COLUMNS, result.events)
    session.execute(
        database.upsert(DailyRollup, ["repo_id", "day"], increment=tuple(result.rollup)),
        {"repo_id": ctx.repo_id, "day": ctx.at.date().isoformat(), **result.rollup},
    )


def notify(
    session: Session,
    tenant_id: str,
    repo_name: str,
    suite: dict[str, str],
    commit: str | None,
    evaluation: Evaluation,
    tests: Mapping[str, TestCase],
    now: datetime,
) -> int:
    """Queue ``new_flaky_test`` / ``resolved_flaky_test`` webhooks for this run's transitions
    (once per test and event, whatever the number of environments); return how many."""
    org, _, name = repo_name.partition("/")
    sent: set[tuple[str, str]] = set()
    queued = 0
    for change in evaluation.changes:
        moved = (change.transition.from_state, change.transition.to_state)
        if moved[1] == "flaky" and moved[0] in ("healthy", "broken"):
            event = "new_flaky_test"
        elif moved == ("flaky", "healthy"):
            event = "resolved_flaky_test"
        else:
            continue
        if (change.test_id, event) in sent:
            continue
        sent.add((change.test_id, event))
        test, state = tests[change.test_id], change.state
        payload: dict[str, Any] = {
            "action": event,
            "repository": {"name": name, "org": org},
            "test_suite": suite,
            "test_case": {
                "name": test.name,
                "class_name": test.classname or test.suite,
                "first_occurrence": iso(state.first_flaky_at),
                "last_occurrence": iso(state.last_flaky_at),
                "last_24_hours_count": detection.last_24_hours_count(state, now),
            },
        }
        if event == "new_flaky_test":
            payload["commit_sha"] = commit
        queued += webhooks.enqueue(session, tenant_id, event, payload)
    return queued
