"""Migration 0005 re-keys the pytest tests stored before one id per pytest test: two
spellings of one test merge, losing no result, on the backend the suite runs against."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from testlens.server.database import upgrade
from testlens.server.ingest.service import test_id as make_test_id

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def test_stored_spellings_of_one_pytest_test_merge_into_its_new_id(scratch_database_url):
    engine = create_engine(scratch_database_url)
    upgrade(engine, "0004")
    repo = "r-1"
    xunit2 = ("", "pytest", "tests.test_shop.TestCart", "test_add")  # pytest's JUnit
    plugin = ("tests/test_shop.py", "", "TestCart", "test_add")  # testlens's plugin
    other = ("src/App.test.js", "", "App", "renders")  # not pytest: left alone
    old = {identity: make_test_id(repo, identity) for identity in (xunit2, plugin, other)}
    with engine.begin() as db:
        db.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :at)"), {"at": NOW}
        )
        db.execute(
            text(
                "INSERT INTO repositories (id, tenant_id, name, name_key, created_at) "
                "VALUES (:id, 't', 'acme/shop', 'acme/shop', :at)"
            ),
            {"id": repo, "at": NOW},
        )
        for number, framework in enumerate(("pytest", "pytest", "jest")):
            db.execute(
                text(
                    "INSERT INTO runs (id, repo_id, ingest_key, framework, format, created_at, "
                    "tests, passed, failed, errors, skipped, flaky, flaky_detected, attempts, "
                    "duration_ms) VALUES (:id, :repo, :key, :fw, 'junit', :at, "
                    "1, 1, 0, 0, 0, 0, 0, 1, 1.0)"
                ),
                {"id": f"run-{number}", "repo": repo, "key": f"k{number}", "fw": framework,
                 "at": NOW + timedelta(hours=number)},
            )  # fmt: skip
        for number, identity in enumerate((xunit2, plugin, other)):
            file, suite, classname, name = identity
            db.execute(
                text(
                    "INSERT INTO test_cases (id, repo_id, file, suite, classname, name, "
                    "first_seen_at, last_seen_at, last_run_id) VALUES "
                    "(:id, :repo, :file, :suite, :classname, :name, :at, :at, :run)"
                ),
                {"id": old[identity], "repo": repo, "file": file, "suite": suite,
                 "classname": classname, "name": name, "at": NOW, "run": f"run-{number}"},
            )  # fmt: skip
            for attempt in range(2):
                db.execute(
                    text(
                        "INSERT INTO test_results (run_id, test_id, attempt, status, "
                        "duration_ms, censored) VALUES (:run, :test, :n, 'passed', 1.0, :no)"
                    ),
                    {"run": f"run-{number}", "test": old[identity], "n": attempt, "no": False},
                )
            db.execute(
                text(
                    "INSERT INTO test_states (test_id, environment, repo_id, state, "
                    "flake_score, flake_score_low, flake_score_high, total_runs, failed_runs, "
                    "flaky_runs, last_run_at, last_run_id, durations, data) VALUES "
                    "(:test, 'linux', :repo, 'healthy', 0, 0, 0, 1, 0, 0, :at, :run, '[]', :data)"
                ),
                {"test": old[identity], "repo": repo, "at": NOW + timedelta(hours=number),
                 "run": f"run-{number}", "data": f"state-{number}"},
            )  # fmt: skip
        db.execute(
            text("INSERT INTO quarantines (test_id, repo_id, reason, created_at) "
                 "VALUES (:test, :repo, 'flaky', :at)"),
            {"test": old[xunit2], "repo": repo, "at": NOW},
        )  # fmt: skip
    upgrade(engine)
    new = make_test_id(repo, ("tests/test_shop.py", "", "TestCart", "test_add"))
    with engine.connect() as db:
        tests = dict(db.execute(text("SELECT id, file FROM test_cases")).all())
        assert tests == {new: "tests/test_shop.py", old[other]: "src/App.test.js"}
        results = dict(
            db.execute(text("SELECT test_id, count(*) FROM test_results GROUP BY test_id")).all()
        )
        assert results == {new: 4, old[other]: 2}
        states = db.execute(text("SELECT test_id, data FROM test_states ORDER BY data")).all()
        assert [tuple(s) for s in states] == [(new, "state-1"), (old[other], "state-2")]
        quarantined = db.execute(text("SELECT test_id FROM quarantines")).scalars().all()
        assert quarantined == [new]
    engine.dispose()
