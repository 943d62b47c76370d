"""one id per pytest test, whichever report format named it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Ingest now keys a pytest test by its node id's parts (``testlens.core.identity.pytest_key``)
rather than by the fields one report format spelled, so pytest's JUnit XML, the plugin's
upload and pytest-json-report land on one test. This re-keys the tests stored before: each
pytest test moves to the id ingest now gives it, and spellings that meet there merge into
one test. Every result, state change and quarantine follows; of two states of one
environment the one run last is kept. A merged test's combined figures are those of the
test it merged into until its next upload recomputes them from its states.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from testlens.core.identity import PYTEST_SUITE, pytest_key
from testlens.server.ingest.service import test_id

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TEST_COLUMNS = (
    "id, repo_id, file, suite, classname, name, first_seen_at, last_seen_at, state, "
    "flake_score, flake_score_low, flake_score_high, total_runs, failed_runs, flaky_runs, "
    "first_flaky_at, last_flaky_at, last_run_id, recent_flaky"
)


def _pytest_tests(connection: sa.Connection) -> list[Any]:
    return list(
        connection.execute(
            sa.text(
                "SELECT t.id, t.repo_id, t.file, t.suite, t.classname, t.name, "
                "r.framework, r.format FROM test_cases t "
                "LEFT JOIN runs r ON r.id = t.last_run_id"
            )
        )
    )


def _move_children(connection: sa.Connection, old: str, new: str) -> None:
    """Re-point everything of test ``old`` to test ``new`` (which exists)."""
    for table in ("test_results", "test_events"):
        connection.execute(
            sa.text(f"UPDATE {table} SET test_id = :new WHERE test_id = :old"),
            {"new": new, "old": old},
        )
    states = connection.execute(
        sa.text(
            "SELECT o.environment, o.last_run_at AS old_at, n.last_run_at AS new_at "
            "FROM test_states o LEFT JOIN test_states n "
            "ON n.test_id = :new AND n.environment = o.environment WHERE o.test_id = :old"
        ),
        {"new": new, "old": old},
    )
    for environment, old_at, new_at in list(states):
        keep_old = new_at is None or (old_at is not None and old_at > new_at)
        if new_at is not None and keep_old:
            connection.execute(
                sa.text("DELETE FROM test_states WHERE test_id = :new AND environment = :env"),
                {"new": new, "env": environment},
            )
        if keep_old:
            connection.execute(
                sa.text(
                    "UPDATE test_states SET test_id = :new "
                    "WHERE test_id = :old AND environment = :env"
                ),
                {"new": new, "old": old, "env": environment},
            )
    connection.execute(sa.text("DELETE FROM test_states WHERE test_id = :old"), {"old": old})
    has_quarantine = connection.execute(
        sa.text("SELECT 1 FROM quarantines WHERE test_id = :new"), {"new": new}
    ).first()
    if has_quarantine:
        connection.execute(sa.text("DELETE FROM quarantines WHERE test_id = :old"), {"old": old})
    else:
        connection.execute(
            sa.text("UPDATE quarantines SET test_id = :new WHERE test_id = :old"),
            {"new": new, "old": old},
        )
    connection.execute(sa.text("DELETE FROM test_cases WHERE id = :old"), {"old": old})


def upgrade() -> None:
    connection = op.get_bind()
    existing = {row[0] for row in connection.execute(sa.text("SELECT id FROM test_cases"))}
    for old, repo_id, file, suite, classname, name, framework, report_format in _pytest_tests(
        connection
    ):
        if not (
            (framework or "").lower() == "pytest"
            or report_format == "pytest-json"
            or suite == PYTEST_SUITE
        ):
            continue
        key = pytest_key((file, suite, classname, name))
        if key is None:
            continue
        new = test_id(repo_id, (key.file, key.suite, key.classname, key.name))
        if new == old:
            continue
        if new not in existing:
            # A copy under the new id, with the file filled in, takes the test's place.
            connection.execute(
                sa.text(
                    f"INSERT INTO test_cases ({_TEST_COLUMNS}) SELECT :new, repo_id, :file, "
                    "suite, classname, name, first_seen_at, last_seen_at, state, flake_score, "
                    "flake_score_low, flake_score_high, total_runs, failed_runs, flaky_runs, "
                    "first_flaky_at, last_flaky_at, last_run_id, recent_flaky "
                    "FROM test_cases WHERE id = :old"
                ),
                {"new": new, "old": old, "file": key.file},
            )
            existing.add(new)
        _move_children(connection, old, new)
        existing.discard(old)


def downgrade() -> None:
    """Merged tests cannot be told apart again; the new ids stay valid under 0004."""
