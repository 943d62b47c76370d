"""Detection at ingest: fold each uploaded run into per-test state, events and daily rollups.

The state of a test in an environment is ``testlens.core.flakiness.TestState``. A run loads
the states it touches in one query and applies ``observe`` to each (:func:`evaluate`); the
ingest transaction then writes the tests' combined figures onto ``test_cases`` and the new
states, events and the day's rollup with one statement each (:func:`write`). Analytics read
those rows, never raw results, so their latency does not grow with history.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from ...core import flakiness as detection
from ...core.model import Report
from ..database import Database
from ..models import TestState as TestStateRow
from ..models import table_of
from . import queries
from .queries import EventRow, StateRow, SummaryRow

MAX_DURATION_SAMPLES = 30  # kept: between this and twice this many (see _append_samples)

Stamp = Callable[[datetime | None], Any]
"""A datetime as the driver stores it (see :meth:`Database.to_driver`)."""


class RunContext(NamedTuple):
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
class Rollup:
    """The run's contribution to its repository's counters of the day."""

    runs: int = 1
    test_runs: int = 0
    failed_test_runs: int = 0
    flaky_test_runs: int = 0
    flaky_tests: int = 0  # distinct tests whose first flake of the day this is
    flake_score_sum: float = 0.0  # over those tests


@dataclass(slots=True)
class Evaluation:
    """Everything a run changes, computed before anything is written."""

    states: list[StateRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    summaries: dict[str, SummaryRow] = field(default_factory=dict)  # by test id
    rollup: Rollup = field(default_factory=Rollup)
    changes: list[Change] = field(default_factory=list)
    flaky_tests: int = 0
    outage: bool = False  # in some environment (see core.flakiness.is_outage)


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


def _summary_row(combined: detection.Combined, run_id: str, stamp: Stamp) -> SummaryRow:
    return SummaryRow(
        combined.verdict,
        combined.flake_score,
        combined.flake_score_low,
        combined.flake_score_high,
        combined.total_runs,
        combined.failed_runs,
        combined.flaky_runs,
        stamp(combined.first_flaky_at),
        stamp(combined.last_flaky_at),
        run_id,
        json.dumps(list(combined.recent_flaky)) if combined.recent_flaky else "[]",
    )


def _state_row(
    ctx: RunContext,
    tid: str,
    env: str,
    state: detection.TestState,
    durations: str,
    stamp: Stamp,
    run_at: Any,
) -> StateRow:
    """The state's row; ``run_at`` is the run's time, already as the driver stores it."""
    low, high = detection.flake_interval(state)
    return StateRow(
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
        run_at,
        ctx.run_id,
        ctx.check_name,
        durations,
        state.to_json(),
    )


def _count(
    rollup: Rollup,
    ctx: RunContext,
    obs: detection.Observation,
    before: detection.TestState | None,
    state: detection.TestState,
) -> None:
    rollup.test_runs += 1
    if any(s in ("failed", "error") for s in obs.statuses):
        rollup.failed_test_runs += 1
    if state.flaky_runs > (before.flaky_runs if before else 0):  # flaky in this run
        rollup.flaky_test_runs += 1
        seen = before.last_flaky_at if before else None
        if seen is None or seen.date() != ctx.at.date():
            rollup.flaky_tests += 1
            rollup.flake_score_sum += state.flake_score


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
    stored = queries.load_states(session, list(dict.fromkeys(test_ids.values())))
    befores = {
        (tid, env): detection.TestState.from_json(kept.data)
        for tid, envs in stored.items()
        for env, kept in envs.items()
    }
    keyed = [(test_ids[identity], obs.environment or "", obs) for identity, obs in observed]
    evidence = _same_code(session, ctx, keyed, befores)
    stamp = database.to_driver(table_of(TestStateRow).c.last_run_at)
    run_at = stamp(ctx.at)
    result = Evaluation()
    new_states: dict[str, dict[str, detection.TestState]] = {}
    for tid, env, obs in keyed:
        before = befores.get((tid, env))
        seen = evidence.get((tid, env))
        if seen is not None:
            obs = replace(obs, same_code=seen)
        result.outage = result.outage or detection.is_outage(obs)
        state, transitions = detection.observe(before, obs)
        new_states.setdefault(tid, {})[env] = state
        previous = stored.get(tid, {}).get(env)
        durations = _append_samples(
            previous.durations if previous else "[]", samples.get((tid, env))
        )
        result.states.append(_state_row(ctx, tid, env, state, durations, stamp, run_at))
        for transition in transitions:
            result.events.append(
                EventRow(
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
        _count(result.rollup, ctx, obs, before, state)
    for tid, envs in new_states.items():
        others = [befores[tid, env] for env in stored.get(tid, {}) if env not in envs]
        combined = detection.combine([*envs.values(), *others])
        result.summaries[tid] = _summary_row(combined, ctx.run_id, stamp)
        if any(s.verdict == "flaky" for s in envs.values()):
            result.flaky_tests += 1
    return result


def _same_code(
    session: Session,
    ctx: RunContext,
    keyed: list[tuple[str, str, detection.Observation]],
    befores: Mapping[tuple[str, str], detection.TestState],
) -> dict[tuple[str, str], detection.CodeSeen]:
    """Same-code evidence (``Observation.same_code``) of the tests that need it, from the
    earlier runs of the run's commit or tree.

    Only three kinds of test can gain anything from it: one that failed now (a pass on the
    same code proves the failure a flake), one that failed in an earlier run of the code (a
    pass now proves that failure a flake), and one in a failure streak (a pass on code older
    than the streak does not end it). For every other test, the run's evidence is the same as
    a first run of the code, so most uploads look up a handful of rows or none.
    """
    earlier = queries.earlier_runs_of_code(
        session, ctx.repo_id, ctx.run_id, ctx.commit, ctx.tree_sha
    )
    if not earlier:
        return {}
    run_ids = list(earlier)
    failed_before = queries.failed_in_runs(session, run_ids)
    wanted = {
        tid
        for tid, env, obs in keyed
        if tid in failed_before
        or any(status in queries.FAILING for status in obs.statuses)
        or ((before := befores.get((tid, env))) is not None and before.streak is not None)
    }
    if not wanted:
        return {}
    outcomes: dict[tuple[str, str, str], tuple[bool, bool]] = {}
    for tid, env, run_id, status in queries.outcomes_in_runs(session, run_ids, sorted(wanted)):
        passed, failed = outcomes.get((tid, env, run_id), (False, False))
        outcomes[tid, env, run_id] = (
            passed or status == "passed",
            failed or status in queries.FAILING,
        )
    runs: dict[tuple[str, str], list[detection.CodeRun]] = {}
    for (tid, env, run_id), (passed, failed) in outcomes.items():
        runs.setdefault((tid, env), []).append(
            detection.CodeRun(earlier[run_id], run_id, passed, failed)
        )
    found: dict[tuple[str, str], detection.CodeSeen] = {}
    for key, listed in runs.items():
        seen = detection.same_code(listed)
        if seen is not None:
            found[key] = seen
    return found


def write(database: Database, session: Session, ctx: RunContext, result: Evaluation) -> None:
    """Store what :func:`evaluate` computed (after the run's test_cases rows exist)."""
    queries.write_states(database, session, result.states)
    queries.write_events(database, session, result.events)
    queries.add_rollup(database, session, ctx.repo_id, ctx.at.date(), asdict(result.rollup))
