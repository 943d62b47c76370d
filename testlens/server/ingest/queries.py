"""The SQL of ingest: the rows it writes, as named tuples in column order, and the statements
that write them.

Rows are built by the tens of thousands per report and handed to the driver as they are
(:meth:`Database.insert_many`), so they are tuples; naming them keeps a field from silently
landing in the wrong column. Each row type's fields are its table's column names.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from ..database import Database
from ..models import (
    DailyRollup,
    Repository,
    Run,
    TestCase,
    TestEvent,
    TestResult,
    TestState,
    table_of,
    utcnow,
)
from ..models.results import name_key

_LOAD_CHUNK = 5000
FAILING = ("failed", "error")


class IdentityRow(NamedTuple):
    """The identity columns of ``test_cases``."""

    id: str
    repo_id: str
    file: str
    suite: str
    classname: str
    name: str
    first_seen_at: Any
    last_seen_at: Any


class SummaryRow(NamedTuple):
    """The columns of ``test_cases`` that hold a test's figures combined over environments."""

    state: str
    flake_score: float
    flake_score_low: float
    flake_score_high: float
    total_runs: int
    failed_runs: int
    flaky_runs: int
    first_flaky_at: Any
    last_flaky_at: Any
    last_run_id: str
    recent_flaky: str


class ResultRow(NamedTuple):
    """One attempt: a ``test_results`` row (the id is the database's)."""

    run_id: str
    test_id: str
    attempt: int
    status: str
    duration_ms: float
    environment: str | None
    censored: bool
    error_type: str | None
    error_message: str | None
    stack: str | None
    stdout: str | None
    stderr: str | None
    signature: str | None


class StateRow(NamedTuple):
    """A ``test_states`` row: one test in one environment."""

    test_id: str
    environment: str
    repo_id: str
    state: str
    since: Any
    flake_score: float
    flake_score_low: float
    flake_score_high: float
    pass_rate: float | None
    total_runs: int
    failed_runs: int
    flaky_runs: int
    first_flaky_at: Any
    last_flaky_at: Any
    last_run_at: Any
    last_run_id: str
    check_name: str | None
    durations: str
    data: str


class EventRow(NamedTuple):
    """A ``test_events`` row (the id is the database's)."""

    repo_id: str
    test_id: str
    environment: str
    from_state: str
    to_state: str
    at: Any
    reason: str
    run_ids: str
    commit_sha: str | None


class StoredState(NamedTuple):
    """What a test in an environment has kept from earlier runs."""

    data: str  # the serialized core TestState
    durations: str  # JSON duration samples


class DuplicateRun(NamedTuple):
    id: str
    tests: int
    flaky_detected: int


def repository_id(database: Database, session: Session, tenant_id: str, name: str) -> str:
    """The id of the tenant's repository ``name``, created on its first upload. Names match
    case-insensitively (:func:`name_key`); the first upload's spelling is the one kept."""
    key = name_key(name)
    session.execute(
        database.upsert(Repository, ["tenant_id", "name_key"]),
        {
            "id": str(uuid.uuid4()),
            "tenant_id": tenant_id,
            "name": name,
            "name_key": key,
            "created_at": utcnow(),
        },
    )
    return session.execute(
        select(Repository.id).where(Repository.tenant_id == tenant_id, Repository.name_key == key)
    ).scalar_one()


def run_with_key(session: Session, repo_id: str, ingest_key: str) -> DuplicateRun | None:
    """The run an identical upload already stored, if any."""
    row = session.execute(
        select(Run.id, Run.tests, Run.flaky_detected).where(
            Run.repo_id == repo_id, Run.ingest_key == ingest_key
        )
    ).first()
    return None if row is None else DuplicateRun(*row)


def insert_run(session: Session, values: dict[str, Any]) -> None:
    session.execute(insert(Run), [values])


def claim_tests(database: Database, session: Session, rows: Sequence[IdentityRow]) -> None:
    """Create the run's missing tests and lock all of them (see :meth:`Database.claim_rows`)."""
    database.claim_rows(session, table_of(TestCase), IdentityRow._fields, rows)


def load_states(
    database: Database, session: Session, test_ids: list[str]
) -> dict[str, dict[str, StoredState]]:
    """The stored state of every environment of the given tests, by test id and environment."""
    found: dict[str, dict[str, StoredState]] = {}
    columns = ("test_id", "environment", "data", "durations")
    rows = database.select_many(
        session.connection(), table_of(TestState), columns, "test_id", test_ids
    )
    for test_id, env, data, durations in rows:
        found.setdefault(test_id, {})[env] = StoredState(data, durations)
    return found


_EARLIER_RUNS_KEPT = 200
"""Earlier runs of one commit or tree searched for proof: reruns of a commit come in a
handful; a commit run nightly for months needs only its newest runs to find both outcomes."""


def earlier_runs_of_code(
    session: Session, repo_id: str, run_id: str, commit: str | None, tree_sha: str | None
) -> dict[str, datetime]:
    """The repository's other runs of the same commit or git tree (newest first, at most
    :data:`_EARLIER_RUNS_KEPT`), outages left out, with their times, by run id."""
    same = []
    if commit is not None:
        same.append(Run.commit_sha == commit)
    if tree_sha is not None:
        same.append(Run.tree_sha == tree_sha)
    if not same:
        return {}
    rows = session.execute(
        select(Run.id, Run.created_at)
        .where(Run.repo_id == repo_id, or_(*same), Run.id != run_id, Run.outage.is_(False))
        .order_by(Run.created_at.desc())
        .limit(_EARLIER_RUNS_KEPT)
    )
    return {run_id: at for run_id, at in rows}


def failed_in_runs(session: Session, run_ids: Sequence[str]) -> set[str]:
    """The tests that failed or errored in any attempt of the given runs."""
    return {
        test_id
        for (test_id,) in session.execute(
            select(TestResult.test_id)
            .where(TestResult.run_id.in_(run_ids), TestResult.status.in_(FAILING))
            .distinct()
        )
    }


def outcomes_in_runs(
    session: Session, run_ids: Sequence[str], test_ids: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    """(test id, environment or "", run id, status) of every attempt of the given tests in
    the given runs."""
    found: list[tuple[str, str, str, str]] = []
    for start in range(0, len(test_ids), _LOAD_CHUNK):
        chunk = test_ids[start : start + _LOAD_CHUNK]
        rows = session.execute(
            select(
                TestResult.test_id,
                TestResult.environment,
                TestResult.run_id,
                TestResult.status,
            ).where(TestResult.run_id.in_(run_ids), TestResult.test_id.in_(chunk))
        )
        found.extend((test_id, env or "", run, status) for test_id, env, run, status in rows)
    return found


TEST_COLUMNS = IdentityRow._fields + SummaryRow._fields
"""A whole ``test_cases`` row: an :class:`IdentityRow` followed by a :class:`SummaryRow`."""


def write_tests(database: Database, session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert or update whole test rows (:data:`TEST_COLUMNS`)."""
    database.insert_many(
        session.connection(),
        table_of(TestCase),
        TEST_COLUMNS,
        rows,
        conflict=["id"],
        update=["last_seen_at", *SummaryRow._fields],
    )


def write_results(database: Database, session: Session, rows: Sequence[ResultRow]) -> None:
    database.insert_many(session.connection(), table_of(TestResult), ResultRow._fields, rows)


def write_states(database: Database, session: Session, rows: Sequence[StateRow]) -> None:
    database.insert_many(
        session.connection(),
        table_of(TestState),
        StateRow._fields,
        rows,
        conflict=("test_id", "environment"),
        update=StateRow._fields[2:],
    )


def write_events(database: Database, session: Session, rows: Sequence[EventRow]) -> None:
    database.insert_many(session.connection(), table_of(TestEvent), EventRow._fields, rows)


def add_rollup(
    database: Database, session: Session, repo_id: str, day: date, counts: dict[str, float]
) -> None:
    """Add ``counts`` to the repository's rollup of ``day``."""
    session.execute(
        database.upsert(DailyRollup, ["repo_id", "day"], increment=tuple(counts)),
        {"repo_id": repo_id, "day": day.isoformat(), **counts},
    )


def finish_run(
    session: Session, run_id: str, repo_id: str, flaky: int, outage: bool, at: datetime
) -> None:
    """Record what detection found in the run, and the repository's latest run time."""
    session.execute(update(Run).where(Run.id == run_id).values(flaky_detected=flaky, outage=outage))
    session.execute(update(Repository).where(Repository.id == repo_id).values(last_run_at=at))
