"""Repository names match case-insensitively, as on GitHub: ``Acme/Shop`` and ``acme/shop``
are one repository, shown as first uploaded. Every lookup by name agrees, and migration 0004
merges the case duplicates stored before, losing no result, on the backend the suite runs
against (a scratch database of its own on PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from builders import LiveServer, junit, make_tenant, upload
from sqlalchemy import Engine, column, insert, table, text
from sqlalchemy.exc import IntegrityError

from testlens.core.flakiness import TestState as FlakinessState
from testlens.server.app import create_app
from testlens.server.auth import create_key
from testlens.server.database import Database, upgrade
from testlens.server.models.base import UTCDateTime
from testlens.server.settings import Settings

# Lookups through the API


def test_spellings_of_one_name_are_one_repository_shown_as_first_uploaded(tenant):
    for number, spelling in enumerate(("Acme/Shop", "acme/shop", "ACME/SHOP")):
        response = upload(
            tenant.client,
            junit({"test_pay": ["pass"], "test_cart": ["fail"]}),
            repo=spelling,
            commit=f"{number}" * 40,
        )
        assert response.status_code == 201, response.text
    repos = tenant.client.get("/api/repos").json()["repos"]
    assert [repo["name"] for repo in repos] == ["Acme/Shop"]
    detail = tenant.client.get(f"/api/repos/{repos[0]['id']}").json()
    assert sorted(test["name"] for test in detail["tests"]) == ["test_cart", "test_pay"]
    assert {test["total_runs"] for test in detail["tests"]} == {3}


def test_every_lookup_by_name_ignores_case(database, server):
    admin = make_tenant(database, server, scopes=("admin",))
    client = admin.client
    for number in range(2):
        response = upload(
            client,
            junit({"test_pay": ["fail", "pass"], "test_cart": ["pass"]}),
            repo="Acme/Shop",
            commit=f"{number}" * 40,
            check_name="unit",
            environment="linux",
        )
        assert response.status_code == 201, response.text
    (repo,) = client.get("/api/repos").json()["repos"]
    test_id = next(
        t["id"] for t in client.get(f"/api/repos/{repo['id']}").json()["tests"] if t["flake_score"]
    )
    assert client.post(f"/api/tests/{test_id}/quarantine", json={"reason": "r"}).status_code == 201

    feed = client.get("/api/v1/testdeck/flaky?org=ACME&repo=shop").json()
    assert feed["repository"] == {"name": "Shop", "org": "Acme"}
    assert [case["name"] for case in feed["test_cases"]] == ["test_pay"]
    quarantined = client.get("/api/quarantine?repo=acme/SHOP").json()
    assert (quarantined["repo"], [t["id"] for t in quarantined["tests"]]) == (
        "Acme/Shop",
        [test_id],
    )
    analytics = client.get("/api/v1/analytics/flaky-tests?project=aCmE/sHoP&minRate=0")
    assert analytics.status_code == 200, analytics.text
    assert [row["testName"] for row in analytics.json()["data"]] == ["test_pay"]
    durations = client.get("/api/durations?repo=ACME/SHOP&environment=linux")
    assert durations.status_code == 200, durations.text
    assert len(durations.json()["tests"]) == 2
    plan = client.post(
        "/api/shard-plans",
        json={
            "repo": "acme/shop",
            "environment": "linux",
            "shards": 2,
            "tests": [
                "tests/test_shop.py::TestShop::test_pay",
                "tests/test_shop.py::TestShop::test_cart",
            ],
        },
    )
    assert plan.status_code == 201, plan.text
    assert plan.json()["sources"]["history"] == 2  # the repository's history, found
    assert [r["name"] for r in client.get("/api/repos").json()["repos"]] == ["Acme/Shop"]


# Migration 0004: the case duplicates stored before


NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
SHARED = ("src/cart.test.js", "cart", "Cart", "adds")  # in all three spellings
ONLY_LOWER = ("src/pay.test.js", "cart", "Pay", "pays")  # only in acme/shop
REPORT = (
    b'<testsuites><testsuite name="cart">'
    b'<testcase classname="Cart" name="adds" file="src/cart.test.js" time="0.1"/>'
    b'<testcase classname="Pay" name="pays" file="src/pay.test.js" time="0.1"/>'
    b"</testsuite></testsuites>"
)


def tid(repo_id: str, identity: tuple[str, str, str, str]) -> str:
    """A test's id as ingest computed it before 0004 (and still does for these tests)."""
    return hashlib.blake2b("\x1f".join((repo_id, *identity)).encode(), digest_size=16).hexdigest()


def put(connection: Any, name: str, *rows: dict[str, Any]) -> None:
    """Insert rows naming only the columns they give (the schema of revision 0003)."""
    typed = {key for row in rows for key, value in row.items() if isinstance(value, datetime)}
    keys = list(rows[0])
    target = table(name, *(column(k, UTCDateTime() if k in typed else None) for k in keys))
    connection.execute(insert(target), list(rows))


def state(test: str, repo: str, env: str, at: datetime, marker: str, **figures: Any) -> dict:
    """A ``test_states`` row (``check_name`` tells which one it is) with a real stored state,
    so that ingest can go on from it."""
    verdict = figures.pop("state", "healthy")
    counts = {"total_runs": 1, "failed_runs": 0, "flaky_runs": 0}
    counts.update((k, figures.pop(k)) for k in list(figures) if k in counts)
    data = FlakinessState(env, at, at, verdict=verdict, **counts).to_json()
    return {
        "test_id": test,
        "environment": env,
        "repo_id": repo,
        "state": verdict,
        "flake_score": 0.0,
        "flake_score_low": 0.0,
        "flake_score_high": 0.0,
        **counts,
        **figures,
        "last_run_at": at,
        "last_run_id": f"run-of-{marker}",
        "check_name": marker,
        "durations": "[]",
        "data": data,
    }


def fill_revision_0003(engine: Engine) -> dict[str, str]:
    """Tenant t1 has Acme/Shop (oldest), acme/shop and ACME/SHOP, plus acme/other; tenant t2
    has its own acme/shop. Returns the repositories' ids by label."""
    repos = {"S": "repo-s", "V1": "repo-v1", "V2": "repo-v2", "other": "repo-o", "t2": "repo-t2"}
    names = {"S": "Acme/Shop", "V1": "acme/shop", "V2": "ACME/SHOP", "other": "acme/other"}
    names["t2"] = "acme/shop"
    age = {"S": 3, "V1": 2, "V2": 1, "other": 5, "t2": 4}  # days
    with engine.begin() as db:
        put(db, "tenants", *({"id": t, "name": t, "created_at": NOW} for t in ("t1", "t2")))
        put(
            db,
            "repositories",
            *(
                {
                    "id": repos[label],
                    "tenant_id": "t2" if label == "t2" else "t1",
                    "name": names[label],
                    "created_at": NOW - timedelta(days=age[label]),
                    "last_run_at": NOW - timedelta(hours=age[label]),
                }
                for label in repos
            ),
        )
        tests = {  # (repo label, identity) -> test id under its repository then
            (label, identity): tid(repos[label], identity)
            for label, identity in [
                ("S", SHARED),
                ("V1", SHARED),
                ("V1", ONLY_LOWER),
                ("V2", SHARED),
                ("t2", SHARED),
                ("other", SHARED),
            ]
        }
        for label in repos:
            put(
                db,
                "runs",
                {
                    "id": f"run-{label}",
                    "repo_id": repos[label],
                    "ingest_key": f"key-{label}",
                    "framework": "jest",
                    "format": "junit",
                    "created_at": NOW - timedelta(hours=age[label]),
                    **dict.fromkeys(("tests", "passed", "attempts"), 2),
                    **dict.fromkeys(("failed", "errors", "skipped", "flaky"), 0),
                    "duration_ms": 2.0,
                },
            )
        for (label, identity), test in tests.items():
            file, suite, classname, name = identity
            put(
                db,
                "test_cases",
                {
                    "id": test,
                    "repo_id": repos[label],
                    "file": file,
                    "suite": suite,
                    "classname": classname,
                    "name": name,
                    "first_seen_at": NOW - timedelta(days=age[label]),
                    "last_seen_at": NOW - timedelta(hours=age[label]),
                    "last_run_id": f"run-{label}",
                    "recent_flaky": json.dumps([age[label]]),
                },
            )
            put(
                db,
                "test_results",
                *(
                    {
                        "run_id": f"run-{label}",
                        "test_id": test,
                        "attempt": attempt,
                        "status": "passed",
                        "duration_ms": 1.0,
                        "censored": False,
                    }
                    for attempt in (1, 2)
                ),
            )
            put(
                db,
                "test_events",
                {
                    "repo_id": repos[label],
                    "test_id": test,
                    "environment": "linux",
                    "from_state": "healthy",
                    "to_state": "flaky",
                    "at": NOW,
                    "reason": f"event-{label}",
                    "run_ids": "[]",
                },
            )
        states = [
            state(tests["S", SHARED], repos["S"], "linux", NOW - timedelta(days=3), "S-linux"),
            state(
                tests["V1", SHARED],
                repos["V1"],
                "linux",
                NOW - timedelta(hours=1),  # run last: kept
                "V1-linux",
                state="flaky",
                flake_score=0.3,
                flake_score_low=0.1,
                flake_score_high=0.5,
                total_runs=10,
                failed_runs=2,
                flaky_runs=2,
                first_flaky_at=NOW - timedelta(days=2),
                last_flaky_at=NOW - timedelta(hours=1),
            ),
            state(
                tests["V1", SHARED],
                repos["V1"],
                "mac",
                NOW - timedelta(days=2),
                "V1-mac",
                total_runs=5,
            ),
            state(tests["V2", SHARED], repos["V2"], "linux", NOW - timedelta(days=1), "V2-linux"),
            state(tests["V1", ONLY_LOWER], repos["V1"], "linux", NOW, "V1-only"),
            state(tests["t2", SHARED], repos["t2"], "linux", NOW, "t2-linux"),
        ]
        put(db, "test_states", *states)
        put(
            db,
            "quarantines",
            {
                "test_id": tests["S", SHARED],
                "repo_id": repos["S"],
                "reason": "S: for a day",
                "created_at": NOW,
                "expires_at": NOW + timedelta(days=1),
            },
            {
                "test_id": tests["V1", SHARED],
                "repo_id": repos["V1"],
                "reason": "V1: until lifted",  # in force longer: kept
                "created_at": NOW,
                "expires_at": None,
            },
        )
        counters = ("runs", "test_runs", "failed_test_runs", "flaky_test_runs", "flaky_tests")
        put(
            db,
            "daily_rollups",
            *(
                {"repo_id": repos[label], "day": day, **dict.fromkeys(counters, n)}
                | {"flake_score_sum": n / 10}
                for label, day, n in [
                    ("S", "2026-11-29", 1),
                    ("V1", "2026-11-29", 2),
                    ("V1", "2026-11-30", 5),
                    ("V2", "2026-11-30", 7),
                ]
            ),
        )
        put(
            db,
            "shard_plans",
            {
                "id": "plan-v2",
                "tenant_id": "t1",
                "repo_id": repos["V2"],
                "plan": "{}",
                "created_at": NOW,
                "plan_key": "k",
            },
        )
    return repos


def rows(db: Any, sql: str, **params: Any) -> list[tuple]:
    return [tuple(row) for row in db.execute(text(sql), params)]


def test_migration_0004_merges_case_duplicates_into_the_oldest_losing_no_result(
    scratch_database_url, tmp_path
):
    database = Database(scratch_database_url)  # the app's engine: SQLite foreign keys on
    engine = database.engine
    upgrade(engine, "0003")
    repos = fill_revision_0003(engine)
    with engine.connect() as db:
        results_before = db.execute(text("SELECT count(*) FROM test_results")).scalar()
    upgrade(engine)
    s = repos["S"]
    shared, only = tid(s, SHARED), tid(s, ONLY_LOWER)
    with engine.connect() as db:
        assert rows(db, "SELECT tenant_id, name, name_key FROM repositories ORDER BY id") == [
            ("t1", "acme/other", "acme/other"),
            ("t1", "Acme/Shop", "acme/shop"),
            ("t2", "acme/shop", "acme/shop"),
        ]
        (latest,) = db.execute(
            text("SELECT last_run_at FROM repositories WHERE id = :s"), {"s": s}
        ).one()
        assert str(latest).startswith(str((NOW - timedelta(hours=1)).replace(tzinfo=None)))
        assert rows(db, "SELECT id FROM runs WHERE repo_id = :s ORDER BY id", s=s) == [
            ("run-S",),
            ("run-V1",),
            ("run-V2",),
        ]
        assert rows(db, "SELECT id FROM test_cases WHERE repo_id = :s ORDER BY id", s=s) == sorted(
            [(shared,), (only,)]
        )
        assert shared == tid(s, SHARED)  # the survivor's own test kept its id
        # Every result is still there, and belongs to a test that exists.
        assert db.execute(text("SELECT count(*) FROM test_results")).scalar() == results_before
        per_test = dict(
            rows(
                db,
                "SELECT r.test_id, count(*) FROM test_results r "
                "JOIN test_cases t ON t.id = r.test_id GROUP BY r.test_id",
            )
        )
        assert sum(per_test.values()) == results_before
        assert (per_test[shared], per_test[only]) == (6, 2)  # 2 attempts in each of 3 runs
        assert rows(
            db,
            "SELECT test_id, environment, repo_id, check_name FROM test_states "
            "WHERE repo_id = :s ORDER BY test_id, environment",
            s=s,
        ) == sorted(
            [
                (shared, "linux", s, "V1-linux"),
                (shared, "mac", s, "V1-mac"),
                (only, "linux", s, "V1-only"),
            ]
        )
        figures = db.execute(
            text(
                "SELECT state, flake_score, total_runs, failed_runs, flaky_runs, last_run_id, "
                "recent_flaky FROM test_cases WHERE id = :id"
            ),
            {"id": shared},
        ).one()
        assert tuple(figures) == ("flaky", 0.3, 15, 2, 2, "run-of-V1-linux", "[1, 2, 3]")
        events = rows(
            db, "SELECT test_id, repo_id, reason FROM test_events WHERE repo_id = :s", s=s
        )
        assert sorted(events) == sorted(
            [
                (shared, s, "event-S"),
                (shared, s, "event-V1"),
                (only, s, "event-V1"),
                (shared, s, "event-V2"),
            ]
        )
        assert rows(db, "SELECT test_id, repo_id, reason FROM quarantines") == [
            (shared, s, "V1: until lifted")
        ]
        assert rows(
            db, "SELECT repo_id, day, runs, flake_score_sum FROM daily_rollups ORDER BY day"
        ) == [(s, "2026-11-29", 3, pytest.approx(0.3)), (s, "2026-11-30", 12, pytest.approx(1.2))]
        assert rows(db, "SELECT id, repo_id FROM shard_plans") == [("plan-v2", s)]
        # The other tenant's acme/shop and its test are untouched.
        assert rows(db, "SELECT count(*) FROM test_results WHERE test_id = :t", t=tid(
            repos["t2"], SHARED)) == [(2,)]  # fmt: skip
        if database.dialect == "sqlite":
            assert db.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            assert db.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # switched back on
    with pytest.raises(IntegrityError), engine.begin() as db:
        put(
            db,
            "repositories",
            {"id": "x", "tenant_id": "t1", "name": "ACME/shop", "name_key": "acme/shop",
             "created_at": NOW},
        )  # fmt: skip
    database.dispose()

    # The app on the migrated database: an upload in yet another spelling lands on the
    # merged tests, and the repository is shown as first uploaded.
    app = create_app(Settings(database_url=scratch_database_url, data_dir=tmp_path))
    with app.state.database.transaction() as session:
        _key, secret = create_key(session, "t1", ("ingest", "read"))
    live = LiveServer(app).start()
    try:
        with httpx.Client(
            base_url=live.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
        ) as client:
            response = upload(client, REPORT, repo="acme/SHOP", framework="jest")
            assert response.status_code == 201, response.text
            names = sorted(r["name"] for r in client.get("/api/repos").json()["repos"])
            assert names == ["Acme/Shop", "acme/other"]
            tests = client.get(f"/api/repos/{s}").json()["tests"]
            assert sorted(t["id"] for t in tests) == sorted([shared, only])
            runs = {t["id"]: t["total_runs"] for t in tests}
            assert runs[shared] == 16  # 15 merged runs and this one
    finally:
        live.stop()
        app.state.database.dispose()
