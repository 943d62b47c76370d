"""Detection at ingest: fold each uploaded run into per-test state, events and daily rollups.

The state of a test in an environment is ``testlens.core.flakiness.TestState``. A run loads
the states it touches in one query and applies ``observe`` to each (:func:`evaluate`); the
ingest transaction then writes the tests' combined figures onto ``test_cases`` and the new
states, events and the day's rollup with one statement each (:func:`write`). Analytics read
those rows, never raw results, so their latency does not grow with history.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from ...core import flakiness as detection
from ...core.flakiness import Stored
from ...core.model import Report
from ..database import Database
from ..fixes import service as fixes
from ..models import TestState as TestStateRow
from ..models import table_of
from ..settings import DEFAULT_MAINLINE_BRANCHES
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
    mainline_branches: tuple[str, ...] = DEFAULT_MAINLINE_BRANCHES


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

    def absorb(self, chunk: Rollup) -> None:
        """Add the test counts of one chunk of the run (its ``runs`` is the same run)."""
        self.test_runs += chunk.test_runs
        self.failed_test_runs += chunk.failed_test_runs
        self.flaky_test_runs += chunk.flaky_test_runs
        self.flaky_tests += chunk.flaky_tests
        self.flake_score_sum += chunk.flake_score_sum


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
) -> dict[tuple[str, str], list[str]]:
    """Each test's new duration samples per environment, each already as the JSON it is
    stored as (``[duration_ms,censored]``; a float's repr is its JSON)."""
    samples: dict[tuple[str, str], list[str]] = {}
    for test in report.tests:
        tid = test_ids[test.identity]
        for attempt in test.attempts:
            if attempt.status == "skipped":
                continue
            env = attempt.environment or environment or ""
            sample = f"[{float(attempt.duration_ms)!r},{1 if attempt.censored else 0}]"
            samples.setdefault((tid, env), []).append(sample)
    return samples


def _append_samples(stored: str, new: list[str] | None) -> str:
    """The stored duration samples (JSON) with ``new`` appended, without parsing them.

    The list is cut back to the newest :data:`MAX_DURATION_SAMPLES` only once it holds twice
    as many, so the parse is paid once every so many runs instead of at every ingest.
    """
    if not new:
        return stored
    added = ",".join(new)
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


CHUNK_TESTS = 5000
"""Tests evaluated and written at a time: what one upload holds in memory at once of the
stored states it reads and the rows it writes, however large the report."""


def evaluate(
    database: Database,
    session: Session,
    ctx: RunContext,
    report: Report,
    test_ids: Mapping[tuple[str, str, str, str], str],
) -> Iterator[Evaluation]:
    """Apply the run to the stored state of every test it touched, :data:`CHUNK_TESTS` tests
    at a time (reads only): each chunk's evaluation is to be written before the next is read.

    Most tests of most runs pass as they always did: :func:`detection.observe_routine`
    updates their stored state without building it. The others, and tests with several
    environments (whose figures combine), go through the full model.
    """
    shares = detection.failure_shares(report, ctx.environment)
    code = _CodeRuns(session, ctx)
    rows = _Rows(ctx, database.to_driver(table_of(TestStateRow).c.last_run_at))
    for start in range(0, len(report.tests), CHUNK_TESTS):
        part = Report(report.format, report.tests[start : start + CHUNK_TESTS])
        yield _evaluate_part(database, session, ctx, part, test_ids, shares, code, rows)


def _evaluate_part(
    database: Database,
    session: Session,
    ctx: RunContext,
    part: Report,
    test_ids: Mapping[tuple[str, str, str, str], str],
    shares: Mapping[str | None, tuple[float, int]],
    code: _CodeRuns,
    rows: _Rows,
) -> Evaluation:
    observed = detection.observations(
        part,
        run_id=ctx.run_id,
        at=ctx.at,
        commit=ctx.commit,
        tree_sha=ctx.tree_sha,
        environment=ctx.environment,
        mainline=ctx.mainline,
        shares=shares,
    )
    samples = _durations_by_key(part, test_ids, ctx.environment)
    wanted = list(dict.fromkeys(test_ids[test.identity] for test in part.tests))
    stored = queries.load_states(database, session, wanted)
    keyed = [(test_ids[identity], obs.environment or "", obs) for identity, obs in observed]
    observed_envs = Counter(tid for tid, _, _ in keyed)
    evidence = code.evidence(keyed, stored)
    result = Evaluation()
    full: dict[str, dict[str, detection.TestState]] = {}
    for tid, env, obs in keyed:
        seen = evidence.get((tid, env))
        if seen is not None:
            obs = replace(obs, same_code=seen)
        result.outage = result.outage or detection.is_outage(obs)
        kept = stored.get(tid, {})
        previous = kept.get(env)
        durations = _append_samples(
            previous.durations if previous else "[]", samples.get((tid, env))
        )
        if previous is not None and len(kept) == 1 and observed_envs[tid] == 1:
            listed = json.loads(previous.data)  # read here, so that it dies young
            routine = detection.observe_routine(listed, obs) if isinstance(listed, list) else None
            if routine is not None:
                result.states.append(rows.routine_state(tid, env, routine, durations))
                result.summaries[tid] = rows.routine_summary(routine)
                result.rollup.test_runs += 1
                continue
        before = None if previous is None else detection.TestState.from_json(previous.data)
        state, transitions = detection.observe(before, obs)
        full.setdefault(tid, {})[env] = state
        result.states.append(rows.state(tid, env, state, durations))
        for transition in transitions:
            result.events.append(
                EventRow(
                    ctx.repo_id,
                    tid,
                    env,
                    transition.from_state,
                    transition.to_state,
                    rows.stamp(transition.at),
                    transition.reason,
                    json.dumps(list(transition.run_ids)),
                    ctx.commit,
                )
            )
            result.changes.append(Change(tid, state, transition))
        _count(result.rollup, ctx, obs, before, state)
    for tid, envs in full.items():
        others = [
            detection.TestState.from_json(kept.data)
            for env, kept in stored.get(tid, {}).items()
            if env not in envs
        ]
        combined = detection.combine([*envs.values(), *others])
        result.summaries[tid] = _summary_row(combined, ctx.run_id, rows.stamp)
        if any(s.verdict == "flaky" for s in envs.values()):
            result.flaky_tests += 1
    return result


class _Rows:
    """The rows of one run's states and summaries, with each time converted once per run
    (tests first seen in one upload share their times)."""

    def __init__(self, ctx: RunContext, stamp: Stamp) -> None:
        self.ctx = ctx
        self.stamp = stamp
        self.run_at = stamp(ctx.at)
        self._stamps: dict[int, Any] = {}

    def micros(self, micros: int | None) -> Any:
        """A stored time (µs since the epoch, or None) as the driver stores it."""
        if micros is None:
            return None
        found = self._stamps.get(micros)
        if found is None:
            found = self._stamps[micros] = self.stamp(detection.from_micros(micros))
        return found

    def state(self, tid: str, env: str, state: detection.TestState, durations: str) -> StateRow:
        """The row of a state the full model computed."""
        ctx, stamp = self.ctx, self.stamp
        low, high = detection.flake_interval(state)
        return StateRow(
            tid,
            env,
            ctx.repo_id,
            state.state,
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
            self.run_at,
            ctx.run_id,
            ctx.check_name,
            durations,
            state.to_json(),
        )

    def routine_state(self, tid: str, env: str, new: list[Any], durations: str) -> StateRow:
        """The row of a state :func:`detection.observe_routine` updated, read off its list."""
        ctx, at = self.ctx, Stored
        alpha, beta, total = new[at.ALPHA], new[at.BETA], new[at.TOTAL_RUNS]
        low, high = detection.posterior_interval(alpha, beta)
        quarantined = new[at.QUARANTINED_SINCE]
        return StateRow(
            tid,
            env,
            ctx.repo_id,
            "healthy" if quarantined is None else "quarantined",
            self.micros(quarantined or new[at.VERDICT_SINCE]),
            alpha / (alpha + beta),
            low,
            high,
            (total - new[at.FAILED_RUNS]) / total,
            total,
            new[at.FAILED_RUNS],
            new[at.FLAKY_RUNS],
            self.micros(new[at.FIRST_FLAKY_AT]),
            self.micros(new[at.LAST_FLAKY_AT]),
            self.run_at,
            ctx.run_id,
            ctx.check_name,
            durations,
            detection.stored_json(new),
        )

    def routine_summary(self, new: list[Any]) -> SummaryRow:
        """A one-environment test's figures (what :func:`detection.combine` gives for it)."""
        at = Stored
        alpha, beta = new[at.ALPHA], new[at.BETA]
        low, high = detection.posterior_interval(alpha, beta)
        recent = new[at.RECENT_FLAKY][-detection.RECENT_FLAKY_KEPT :]
        return SummaryRow(
            "healthy",
            alpha / (alpha + beta),
            low,
            high,
            new[at.TOTAL_RUNS],
            new[at.FAILED_RUNS],
            new[at.FLAKY_RUNS],
            self.micros(new[at.FIRST_FLAKY_AT]),
            self.micros(new[at.LAST_FLAKY_AT]),
            self.ctx.run_id,
            json.dumps([round(micros / 1e6) for micros, _ in recent]) if recent else "[]",
        )


def _in_streak(stored: queries.StoredState | None) -> bool:
    """Whether a stored state has a failure streak pending, told from its JSON without
    reading it (an absent streak is written last, as null, or as ``"streak":null``)."""
    if stored is None:
        return False
    data = stored.data
    return not (data.endswith(",null]") or '"streak":null' in data)


class _CodeRuns:
    """Same-code evidence (``Observation.same_code``) from the earlier runs of the run's
    commit or tree, for the tests that need it.

    Only three kinds of test can gain anything from it: one that failed now (a pass on the
    same code proves the failure a flake), one that failed in an earlier run of the code (a
    pass now proves that failure a flake), and one in a failure streak (a pass on code older
    than the streak does not end it). For every other test, the run's evidence is the same as
    a first run of the code, so most uploads look up a handful of rows or none.
    """

    def __init__(self, session: Session, ctx: RunContext) -> None:
        self.session = session
        self.earlier = queries.earlier_runs_of_code(
            session, ctx.repo_id, ctx.run_id, ctx.commit, ctx.tree_sha
        )
        self.run_ids = list(self.earlier)
        self.failed_before = (
            queries.failed_in_runs(session, self.run_ids) if self.run_ids else set[str]()
        )

    def evidence(
        self,
        keyed: list[tuple[str, str, detection.Observation]],
        stored: Mapping[str, Mapping[str, queries.StoredState]],
    ) -> dict[tuple[str, str], detection.CodeSeen]:
        """The evidence of the given tests that have any, by test id and environment."""
        if not self.run_ids:
            return {}
        wanted = {
            tid
            for tid, env, obs in keyed
            if tid in self.failed_before
            or any(status in queries.FAILING for status in obs.statuses)
            or _in_streak(stored.get(tid, {}).get(env))
        }
        if not wanted:
            return {}
        outcomes: dict[tuple[str, str, str], tuple[bool, bool]] = {}
        for tid, env, run_id, status in queries.outcomes_in_runs(
            self.session, self.run_ids, sorted(wanted)
        ):
            passed, failed = outcomes.get((tid, env, run_id), (False, False))
            outcomes[tid, env, run_id] = (
                passed or status == "passed",
                failed or status in queries.FAILING,
            )
        runs: dict[tuple[str, str], list[detection.CodeRun]] = {}
        for (tid, env, run_id), (passed, failed) in outcomes.items():
            runs.setdefault((tid, env), []).append(
                detection.CodeRun(self.earlier[run_id], run_id, passed, failed)
            )
        found: dict[tuple[str, str], detection.CodeSeen] = {}
        for key, listed in runs.items():
            seen = detection.same_code(listed)
            if seen is not None:
                found[key] = seen
        return found


def write(database: Database, session: Session, result: Evaluation) -> None:
    """Store the states and events of one chunk :func:`evaluate` computed (after the
    chunk's test_cases rows exist)."""
    queries.write_states(database, session, result.states)
    queries.write_events(database, session, result.events)


def add_rollup(database: Database, session: Session, ctx: RunContext, rollup: Rollup) -> None:
    """Add the run's counts to its repository's rollup of the day; a mainline run also
    has the merged fixes of its tests judged again (one indexed query when there are none)."""
    queries.add_rollup(database, session, ctx.repo_id, ctx.at.date(), asdict(rollup))
    if ctx.mainline:
        fixes.rejudge_after_run(session, ctx.repo_id, ctx.run_id, ctx.at, ctx.mainline_branches)
