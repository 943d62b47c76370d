"""Migrations and models agree, on whichever backend the suite runs against."""

from __future__ import annotations

from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from testlens.server.database import normalize_url, upgrade
from testlens.server.models import Base, Tenant, table_of, utcnow


def test_migrations_produce_exactly_the_models(database):
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_is_idempotent(database):
    upgrade(database.engine)
    tables = set(inspect(database.engine).get_table_names())
    assert {"tenants", "api_keys", "repositories", "runs", "test_cases", "test_results"} <= tables


def test_sqlite_runs_in_wal_mode(database):
    if database.dialect != "sqlite":
        pytest.skip("SQLite-only pragma; this run uses " + database.dialect)
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_naive_datetimes_are_refused(database):
    with pytest.raises(Exception, match="naive datetime"), database.transaction() as session:
        session.add(Tenant(id="x", name="naive", created_at=datetime(2020, 1, 1)))
        session.flush()


def test_postgres_urls_get_the_psycopg_driver():
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_select_many_finds_the_rows_of_more_keys_than_one_statement_binds(database):
    """Ingest reads its tests' states by the tens of thousands: SQLite binds them in chunks."""
    names = [f"select-many-{n:05d}" for n in range(12_000)]
    stored = names[::997]  # a few, spread over every chunk
    with database.transaction() as session:
        for name in stored:
            session.add(Tenant(id=name, name=name, created_at=utcnow()))
    with database.read() as session:
        found = database.select_many(
            session.connection(), table_of(Tenant), ("id", "name"), "id", names
        )
    assert sorted(found) == [(name, name) for name in stored]
