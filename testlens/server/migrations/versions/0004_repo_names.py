"""repository names matched case-insensitively; repositories differing only in case merged

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

GitHub treats ``Acme/Shop`` and ``acme/shop`` as one repository; testlens stored them as
two. Every repository gets ``name_key``, its name lowercased, and the unique constraint
moves from (tenant_id, name) to (tenant_id, name_key).

A tenant's repositories whose names differ only in case merge into the oldest, which keeps
its name (the first spelling uploaded). Everything of the others moves to it: runs, tests,
results, states, state changes, daily rollups, quarantines and shard plans. A test is keyed
by a hash of its repository's id and its identity, so each moved test takes the id ingest
gives it in the surviving repository; a test both repositories have becomes one test with
every result of both. Of its two states in one environment, the one run last is kept; of two
quarantines, the one in force longer; its combined figures are recomputed from the states
it keeps, as ingest computes them. Rollups of one day are added up. No result is lost.

SQLite cannot drop a table's constraint without rebuilding the table, and rebuilding a table
that others reference with ON DELETE CASCADE deletes their rows unless foreign keys are off,
which SQLite allows to switch only outside a transaction. So on SQLite this revision (and
any after it in the same upgrade) runs in one transaction of its own with foreign keys off,
checked for violations at the end; they are switched back on when the connection is
returned.

This revision computes test ids itself, as ingest did when it was written: later changes to
how ingest keys tests come with their own migrations, which run on what this one leaves.
"""

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from testlens.server.models.base import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_AT = UTCDateTime(timezone=True)
_VERDICT_RANK = {"healthy": 0, "flaky": 1, "broken": 2}
_RECENT_FLAKY_KEPT = 50
_ROLLUP_COUNTERS = (
    "runs",
    "test_runs",
    "failed_test_runs",
    "flaky_test_runs",
    "flaky_tests",
    "flake_score_sum",
)
_TEST_COLUMNS = (
    "id, repo_id, file, suite, classname, name, first_seen_at, last_seen_at, state, "
    "flake_score, flake_score_low, flake_score_high, total_runs, failed_runs, flaky_runs, "
    "first_flaky_at, last_flaky_at, last_run_id, recent_flaky"
)
_REPO_TABLES = (  # every table with a repo_id
    "runs",
    "test_cases",
    "test_states",
    "test_events",
    "daily_rollups",
    "quarantines",
    "shard_plans",
)

repositories = sa.table(
    "repositories",
    sa.column("id", sa.String),
    sa.column("tenant_id", sa.String),
    sa.column("name", sa.String),
    sa.column("name_key", sa.String),
    sa.column("created_at", _AT),
    sa.column("last_run_at", _AT),
)
test_cases = sa.table(
    "test_cases",
    sa.column("id", sa.String),
    sa.column("repo_id", sa.String),
    sa.column("file", sa.String),
    sa.column("suite", sa.String),
    sa.column("classname", sa.String),
    sa.column("name", sa.String),
    sa.column("first_seen_at", _AT),
    sa.column("last_seen_at", _AT),
    sa.column("state", sa.String),
    sa.column("flake_score", sa.Float),
    sa.column("flake_score_low", sa.Float),
    sa.column("flake_score_high", sa.Float),
    sa.column("total_runs", sa.Integer),
    sa.column("failed_runs", sa.Integer),
    sa.column("flaky_runs", sa.Integer),
    sa.column("first_flaky_at", _AT),
    sa.column("last_flaky_at", _AT),
    sa.column("last_run_id", sa.String),
    sa.column("recent_flaky", sa.Text),
)
test_states = sa.table(
    "test_states",
    sa.column("test_id", sa.String),
    sa.column("environment", sa.String),
    sa.column("state", sa.String),
    sa.column("flake_score", sa.Float),
    sa.column("flake_score_low", sa.Float),
    sa.column("flake_score_high", sa.Float),
    sa.column("total_runs", sa.Integer),
    sa.column("failed_runs", sa.Integer),
    sa.column("flaky_runs", sa.Integer),
    sa.column("first_flaky_at", _AT),
    sa.column("last_flaky_at", _AT),
    sa.column("last_run_at", _AT),
    sa.column("last_run_id", sa.String),
)
quarantines = sa.table(
    "quarantines",
    sa.column("test_id", sa.String),
    sa.column("expires_at", _AT),
)


def _test_id(repo_id: str, identity: tuple[str, str, str, str]) -> str:
    """A test's id as ingest computed it at this revision (a hash of repository and
    identity)."""
    key = "\x1f".join((repo_id, *identity)).encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@contextmanager
def _sqlite_foreign_keys_off(connection: sa.Connection) -> Iterator[None]:
    """On SQLite: the block in a transaction of its own with foreign keys off (see the
    module's docstring), checked for violations at its end. Elsewhere: nothing to do."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw: Any = connection.connection.dbapi_connection
    if raw.in_transaction:
        raw.commit()  # the revisions before this one, complete and stamped
    (before,) = raw.execute("PRAGMA foreign_keys").fetchone()
    raw.execute("PRAGMA foreign_keys=OFF")
    if raw.execute("PRAGMA foreign_keys").fetchone()[0] != 0:
        raise RuntimeError("could not switch SQLite foreign keys off to rebuild a table")
    restored = False

    def restore(dbapi_connection: Any, _record: Any) -> None:
        nonlocal restored
        if dbapi_connection is raw and not restored:
            restored = True
            dbapi_connection.execute(f"PRAGMA foreign_keys={'ON' if before else 'OFF'}")

    sa.event.listen(connection.engine.pool, "checkin", restore)
    raw.execute("BEGIN")  # committed or rolled back with the rest of the upgrade
    yield
    problems = raw.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"foreign keys violated after merging repositories: {problems[:5]}")


def upgrade() -> None:
    connection = op.get_bind()
    with _sqlite_foreign_keys_off(connection):
        op.add_column("repositories", sa.Column("name_key", sa.String(length=300), nullable=True))
        for survivor, others in _case_duplicates(connection):
            for other in others:
                _merge_repository(connection, survivor, other)
        with op.batch_alter_table("repositories", schema=None) as batch_op:
            batch_op.alter_column("name_key", existing_type=sa.String(length=300), nullable=False)
            batch_op.drop_constraint("uq_repositories_tenant_id", type_="unique")
            batch_op.create_unique_constraint("uq_repositories_name_key", ["tenant_id", "name_key"])


def downgrade() -> None:
    """Merged repositories stay merged; names become case-sensitive again."""
    connection = op.get_bind()
    with (
        _sqlite_foreign_keys_off(connection),
        op.batch_alter_table("repositories", schema=None) as batch_op,
    ):
        batch_op.drop_constraint("uq_repositories_name_key", type_="unique")
        batch_op.create_unique_constraint("uq_repositories_tenant_id", ["tenant_id", "name"])
        batch_op.drop_column("name_key")


def _case_duplicates(connection: sa.Connection) -> list[tuple[str, list[str]]]:
    """Fill in every ``name_key``; return each group of one tenant's repositories that share
    one as (the oldest, the others)."""
    rows = connection.execute(
        sa.select(
            repositories.c.id,
            repositories.c.tenant_id,
            repositories.c.name,
            repositories.c.created_at,
        )
    ).all()
    if not rows:
        return []
    connection.execute(
        repositories.update()
        .where(repositories.c.id == sa.bindparam("repo"))
        .values(name_key=sa.bindparam("key")),
        [{"repo": repo_id, "key": name.lower()} for repo_id, _tenant, name, _at in rows],
    )
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        groups.setdefault((row.tenant_id, row.name.lower()), []).append(row)
    duplicates = []
    for group in groups.values():
        if len(group) > 1:
            group.sort(key=lambda row: (row.created_at, row.id))
            duplicates.append((group[0].id, [row.id for row in group[1:]]))
    return duplicates


def _merge_repository(connection: sa.Connection, survivor: str, other: str) -> None:
    """Move everything of repository ``other`` to ``survivor``, then delete ``other``."""
    _merge_tests(connection, survivor, other)
    _merge_rollups(connection, survivor, other)
    for table in ("runs", "test_states", "test_events", "quarantines", "shard_plans"):
        connection.execute(
            sa.text(f"UPDATE {table} SET repo_id = :survivor WHERE repo_id = :other"),
            {"survivor": survivor, "other": other},
        )
    latest = connection.execute(
        sa.select(sa.func.max(repositories.c.last_run_at)).where(
            repositories.c.id.in_([survivor, other])
        )
    ).scalar()
    connection.execute(
        repositories.update().where(repositories.c.id == survivor).values(last_run_at=latest)
    )
    for table in _REPO_TABLES:
        left = connection.execute(
            sa.text(f"SELECT count(*) FROM {table} WHERE repo_id = :other"), {"other": other}
        ).scalar()
        if left:  # deleting the repository would cascade to them
            raise RuntimeError(f"{left} rows of {table} still belong to repository {other}")
    connection.execute(repositories.delete().where(repositories.c.id == other))


def _merge_tests(connection: sa.Connection, survivor: str, other: str) -> None:
    """Give each test of ``other`` its id in ``survivor``: a copy of it under that id if the
    survivor lacks the test, else a merge into the survivor's test."""
    known = set(
        connection.execute(sa.select(test_cases.c.id).where(test_cases.c.repo_id == survivor))
        .scalars()
        .all()
    )
    moved: list[dict[str, str]] = []
    merged: list[dict[str, str]] = []
    rows = connection.execute(
        sa.select(
            test_cases.c.id,
            test_cases.c.file,
            test_cases.c.suite,
            test_cases.c.classname,
            test_cases.c.name,
        ).where(test_cases.c.repo_id == other)
    ).all()
    for old, file, suite, classname, name in rows:
        new = _test_id(survivor, (file, suite, classname, name))
        pair = {"old": old, "new": new, "repo": survivor}
        (merged if new in known else moved).append(pair)
        known.add(new)
    if moved:
        connection.execute(
            sa.text(
                f"INSERT INTO test_cases ({_TEST_COLUMNS}) SELECT :new, :repo, file, suite, "
                "classname, name, first_seen_at, last_seen_at, state, flake_score, "
                "flake_score_low, flake_score_high, total_runs, failed_runs, flaky_runs, "
                "first_flaky_at, last_flaky_at, last_run_id, recent_flaky "
                "FROM test_cases WHERE id = :old"
            ),
            moved,
        )
        _move_children(connection, moved)
        connection.execute(sa.text("DELETE FROM test_cases WHERE id = :old"), moved)
    for pair in merged:  # after the moves: a merge may meet a test moved just now
        _merge_test(connection, pair["old"], pair["new"], survivor)


def _move_children(connection: sa.Connection, pairs: list[dict[str, str]]) -> None:
    """Re-point the results, state changes, states and quarantines of each ``old`` test to
    its ``new`` one (which has no states or quarantine of its own)."""
    connection.execute(
        sa.text("UPDATE test_results SET test_id = :new WHERE test_id = :old"), pairs
    )
    for table in ("test_events", "test_states", "quarantines"):
        connection.execute(
            sa.text(f"UPDATE {table} SET test_id = :new, repo_id = :repo WHERE test_id = :old"),
            pairs,
        )


def _merge_test(connection: sa.Connection, old: str, new: str, repo: str) -> None:
    """Merge test ``old`` into test ``new`` (of repository ``repo``): every result and state
    change; per environment the state run last; the quarantine in force longer; figures
    recomputed from the states kept."""
    cases = {
        row.id: row
        for row in connection.execute(sa.select(test_cases).where(test_cases.c.id.in_([old, new])))
    }
    conflicts = connection.execute(
        sa.text(
            "SELECT o.environment, o.last_run_at AS old_at, n.last_run_at AS new_at "
            "FROM test_states o "
            "JOIN test_states n ON n.test_id = :new AND n.environment = o.environment "
            "WHERE o.test_id = :old"
        ).columns(
            sa.column("environment", sa.String),
            sa.column("old_at", _AT),
            sa.column("new_at", _AT),
        ),
        {"old": old, "new": new},
    ).all()
    for environment, old_at, new_at in conflicts:
        loser = new if old_at > new_at else old
        connection.execute(
            sa.text("DELETE FROM test_states WHERE test_id = :test AND environment = :env"),
            {"test": loser, "env": environment},
        )
    found = {
        row.test_id: row.expires_at
        for row in connection.execute(
            sa.select(quarantines).where(quarantines.c.test_id.in_([old, new]))
        )
    }
    if len(found) == 2:  # keep the one in force longer (no expiry is longest)
        old_lasts, new_lasts = (_lasts(found[test]) for test in (old, new))
        connection.execute(
            sa.text("DELETE FROM quarantines WHERE test_id = :test"),
            {"test": new if old_lasts > new_lasts else old},
        )
    _move_children(connection, [{"old": old, "new": new, "repo": repo}])
    connection.execute(
        test_cases.update()
        .where(test_cases.c.id == new)
        .values(**_combined(connection, new, cases[old], cases[new]))
    )
    connection.execute(sa.text("DELETE FROM test_cases WHERE id = :old"), {"old": old})


def _lasts(expires_at: datetime | None) -> tuple[bool, datetime]:
    return expires_at is None, expires_at or datetime.min.replace(tzinfo=UTC)


def _combined(connection: sa.Connection, test: str, old: Any, new: Any) -> dict[str, Any]:
    """A merged test's figures over the states it kept, as ingest combines them: the worst
    verdict and its score, summed runs, the earliest and latest flake; first and last seen
    and the recent flaky occurrences of both tests."""
    recent = sorted({*json.loads(old.recent_flaky or "[]"), *json.loads(new.recent_flaky or "[]")})
    values: dict[str, Any] = {
        "first_seen_at": min(old.first_seen_at, new.first_seen_at),
        "last_seen_at": max(old.last_seen_at, new.last_seen_at),
        "recent_flaky": json.dumps(recent[-_RECENT_FLAKY_KEPT:]),
    }
    states = connection.execute(sa.select(test_states).where(test_states.c.test_id == test)).all()
    if not states:  # no state to combine: the figures of the test seen last
        newer = max((old, new), key=lambda case: case.last_seen_at)
        for column in ("state", "flake_score", "flake_score_low", "flake_score_high"):
            values[column] = getattr(newer, column)
        for column in ("total_runs", "failed_runs", "flaky_runs", "last_run_id"):
            values[column] = getattr(newer, column)
        return values
    worst = max(states, key=lambda s: (_VERDICT_RANK.get(s.state, 0), s.flake_score))
    flaky_first = [s.first_flaky_at for s in states if s.first_flaky_at is not None]
    flaky_last = [s.last_flaky_at for s in states if s.last_flaky_at is not None]
    values.update(
        state=worst.state,
        flake_score=worst.flake_score,
        flake_score_low=worst.flake_score_low,
        flake_score_high=worst.flake_score_high,
        total_runs=sum(s.total_runs for s in states),
        failed_runs=sum(s.failed_runs for s in states),
        flaky_runs=sum(s.flaky_runs for s in states),
        first_flaky_at=min(flaky_first, default=None),
        last_flaky_at=max(flaky_last, default=None),
        last_run_id=max(states, key=lambda s: s.last_run_at).last_run_id,
    )
    return values


def _merge_rollups(connection: sa.Connection, survivor: str, other: str) -> None:
    """Add ``other``'s daily rollups to the survivor's of the same day; move the rest."""
    days = set(
        connection.execute(
            sa.text("SELECT day FROM daily_rollups WHERE repo_id = :survivor"),
            {"survivor": survivor},
        ).scalars()
    )
    rows = connection.execute(
        sa.text(
            f"SELECT day, {', '.join(_ROLLUP_COUNTERS)} FROM daily_rollups WHERE repo_id = :other"
        ),
        {"other": other},
    ).all()
    added = ", ".join(f"{name} = {name} + :{name}" for name in _ROLLUP_COUNTERS)
    for row in rows:
        keys = {"survivor": survivor, "other": other, "day": row.day}
        if row.day in days:
            connection.execute(
                sa.text(
                    f"UPDATE daily_rollups SET {added} WHERE repo_id = :survivor AND day = :day"
                ),
                {**keys, **{name: getattr(row, name) for name in _ROLLUP_COUNTERS}},
            )
            connection.execute(
                sa.text("DELETE FROM daily_rollups WHERE repo_id = :other AND day = :day"), keys
            )
        else:
            connection.execute(
                sa.text(
                    "UPDATE daily_rollups SET repo_id = :survivor "
                    "WHERE repo_id = :other AND day = :day"
                ),
                keys,
            )
