"""Retention and repository deletion, through the real app and a real database: the
retention API, the sweep (what it deletes, what it keeps, in how many transactions), the
sweeper's own schedule and outages, and ``DELETE /api/repos/{owner}/{name}``."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from builders import LiveServer, junit, make_tenant, upload
from sqlalchemy import event, func, select, update

from testlens.server.app import create_app
from testlens.server.database import Database, upgrade
from testlens.server.models import (
    ApiKey,
    Base,
    Build,
    CiJob,
    GithubDelivery,
    Repository,
    Run,
    RunEvent,
    TestEvent,
    TestResult,
    WebhookDelivery,
    utcnow,
)
from testlens.server.retention import queries
from testlens.server.retention.schemas import RetentionDays
from testlens.server.retention.service import delete_repository, sweep, sweep_tenant
from testlens.server.retention.tasks import RetentionSweeper
from testlens.server.settings import Settings

DEFAULTS = {"results_days": 180, "runs_days": 180, "events_days": 365, "deliveries_days": 30}
NO_OVERRIDES = dict.fromkeys(DEFAULTS)


@pytest.fixture(scope="module", autouse=True)
def no_shared_sweeper(app) -> Iterator[None]:
    """Pause the shared server's sweeper while this module runs: the tests sweep themselves
    and count exactly what went."""
    sweeper = getattr(app.state, "retention_sweeper", None)
    if sweeper is not None:
        sweeper.stop()
    yield
    if sweeper is not None:
        sweeper.start()


@pytest.fixture
def admin(database, server):
    made = make_tenant(database, server, scopes=("ingest", "read", "admin"))
    yield made
    made.client.close()


def tenant_id_of(database, tenant) -> str:
    with database.read() as session:
        return session.scalar(select(ApiKey.tenant_id).where(ApiKey.id == tenant.key_id))


def repo_id_of(database, tenant, name: str) -> str:
    tenant_id = tenant_id_of(database, tenant)
    with database.read() as session:
        return session.scalar(
            select(Repository.id).where(
                Repository.tenant_id == tenant_id, Repository.name_key == name.lower()
            )
        )


def uploaded(client, cases: dict[str, list[str]], repo: str, commit: str) -> str:
    response = upload(client, junit(cases), repo=repo, commit=commit * 40)
    assert response.status_code == 201, response.text
    return response.json()["run_id"]


def backdate(database, days: float, runs: Sequence[str] = (), events_of: str | None = None) -> None:
    """Move runs (and so their results and builds), or a repository's state changes,
    ``days`` back."""
    with database.transaction() as session:
        for run_id in runs:
            at, build_id = session.execute(
                select(Run.created_at, Run.build_id).where(Run.id == run_id)
            ).one()
            session.execute(
                update(Run).where(Run.id == run_id).values(created_at=at - timedelta(days=days))
            )
            session.execute(
                update(Build)
                .where(Build.id == build_id)
                .values(created_at=at - timedelta(days=days))
            )
        if events_of is not None:
            events = select(TestEvent.id, TestEvent.at).where(TestEvent.repo_id == events_of)
            for event_id, at in list(session.execute(events)):
                session.execute(
                    update(TestEvent)
                    .where(TestEvent.id == event_id)
                    .values(at=at - timedelta(days=days))
                )


def results_of(database, run_id: str) -> int:
    with database.read() as session:
        return session.scalar(
            select(func.count()).select_from(TestResult).where(TestResult.run_id == run_id)
        )


def assert_validation_error(response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "code", "message", "details"}
    assert body["code"] == "VALIDATION_ERROR"
    assert body["details"]["errors"][0]["field"] == field


# The retention API ---------------------------------------------------------------------------


def test_a_tenant_starts_with_the_server_defaults(admin):
    response = admin.client.get("/api/retention")
    assert response.status_code == 200, response.text
    assert response.json() == {**DEFAULTS, "overrides": NO_OVERRIDES, "defaults": DEFAULTS}


def test_put_replaces_the_tenants_own_values_and_null_means_the_default(admin):
    put = admin.client.put("/api/retention", json={"results_days": 30, "events_days": 90})
    assert put.status_code == 200, put.text
    own = {**NO_OVERRIDES, "results_days": 30, "events_days": 90}
    expected = {**DEFAULTS, "results_days": 30, "events_days": 90}
    assert put.json() == {**expected, "overrides": own, "defaults": DEFAULTS}
    assert admin.client.get("/api/retention").json() == put.json()
    # PUT is the whole policy: what it leaves out goes back to the default.
    again = admin.client.put("/api/retention", json={"runs_days": 400, "events_days": None})
    assert again.json()["overrides"] == {**NO_OVERRIDES, "runs_days": 400}
    assert again.json()["results_days"] == 180
    cleared = admin.client.put("/api/retention", json={})
    assert cleared.json() == {**DEFAULTS, "overrides": NO_OVERRIDES, "defaults": DEFAULTS}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"results_days": 0}, "results_days"),
        ({"runs_days": -7}, "runs_days"),
        ({"events_days": 36501}, "events_days"),
        ({"deliveries_days": 10**30}, "deliveries_days"),
        ({"results_days": 1.5}, "results_days"),
        ({"results_days": "30"}, "results_days"),
        ({"results_days": True}, "results_days"),
        ({"results": 30}, "results"),
    ],
)
def test_invalid_days_are_422_with_the_shared_body_and_change_nothing(admin, body, field):
    admin.client.put("/api/retention", json={"results_days": 60})
    assert_validation_error(admin.client.put("/api/retention", json=body), field)
    assert admin.client.get("/api/retention").json()["results_days"] == 60


def test_reading_needs_read_and_changing_needs_admin(database, server, admin, anonymous):
    reader = make_tenant(database, server, scopes=("read",))
    uploader = make_tenant(database, server, scopes=("ingest",))
    assert reader.client.get("/api/retention").status_code == 200
    refused = reader.client.put("/api/retention", json={"results_days": 1})
    assert refused.status_code == 403
    assert refused.json()["code"] == "INSUFFICIENT_SCOPE"
    assert uploader.client.get("/api/retention").json()["code"] == "INSUFFICIENT_SCOPE"
    assert anonymous.put("/api/retention", json={"results_days": 1}).status_code == 401
    assert reader.client.get("/api/retention").json()["results_days"] == 180


def test_a_tenants_put_changes_only_its_own_retention(database, server, admin):
    other = make_tenant(database, server, scopes=("read", "admin"))
    assert admin.client.put("/api/retention", json={"results_days": 7}).status_code == 200
    assert other.client.get("/api/retention").json()["results_days"] == 180
    other.client.put("/api/retention", json={"results_days": 9})
    assert admin.client.get("/api/retention").json()["results_days"] == 7


def test_the_defaults_come_from_the_settings(tmp_path):
    settings = Settings.from_env(
        {
            "TESTLENS_DATA_DIR": str(tmp_path),
            "TESTLENS_RETENTION_RESULTS_DAYS": "90",
            "TESTLENS_RETENTION_SWEEP_SECONDS": "60",
        }
    )
    assert (settings.retention_results_days, settings.retention_sweep_seconds) == (90, 60.0)
    for variable, value in [
        ("TESTLENS_RETENTION_RESULTS_DAYS", "0"),
        ("TESTLENS_RETENTION_EVENTS_DAYS", "36501"),
        ("TESTLENS_RETENTION_SWEEP_SECONDS", "0"),
    ]:
        with pytest.raises(ValueError, match=variable):
            Settings.from_env({"TESTLENS_DATA_DIR": str(tmp_path), variable: value})


# The sweep -----------------------------------------------------------------------------------


def add_deliveries(database, admin, ages: dict[str, tuple[str, float]]) -> None:
    """A webhook of the tenant with deliveries named by id: (status, age in days). Pending
    ones are due far in the future, so no worker sends them meanwhile."""
    hook = admin.client.post(
        "/api/webhooks",
        json={"url": "http://127.0.0.1:9/h", "events": ["new_flaky_test"], "secret": "s" * 16},
    )
    assert hook.status_code == 201, hook.text
    now = utcnow()
    with database.transaction() as session:
        for delivery_id, (status, days) in ages.items():
            session.add(
                WebhookDelivery(
                    id=delivery_id,
                    webhook_id=hook.json()["id"],
                    event="new_flaky_test",
                    payload="{}",
                    status=status,
                    attempts=1,
                    next_attempt_at=now + timedelta(days=365),
                    attempt_log="[]",
                    created_at=now - timedelta(days=days),
                )
            )


def deliveries_left(database, ids: list[str]) -> set[str]:
    with database.read() as session:
        return set(session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.id.in_(ids))))


def events_left(database, repo_id: str) -> int:
    with database.read() as session:
        return session.scalar(
            select(func.count()).select_from(TestEvent).where(TestEvent.repo_id == repo_id)
        )


def test_a_sweep_deletes_exactly_what_is_older_than_the_retention(database, admin):
    repo = f"acme/sweep-{uuid.uuid4().hex[:6]}"
    old_run = uploaded(admin.client, {"test_a": ["fail", "pass"], "test_b": ["pass"]}, repo, "1")
    repo_id = repo_id_of(database, admin, repo)
    backdate(database, 200, runs=[old_run], events_of=repo_id)  # test_a's flake: 200 days ago
    new_run = uploaded(admin.client, {"test_a": ["pass"], "test_c": ["fail", "pass"]}, repo, "2")
    marks = {f"{uuid.uuid4()}": v for v in [("delivered", 31), ("dead", 45), ("pending", 90)]}
    marks |= {f"{uuid.uuid4()}": v for v in [("delivered", 29), ("dead", 1)]}
    add_deliveries(database, admin, marks)
    tests = {t["name"]: t["id"] for t in admin.client.get(f"/api/repos/{repo_id}").json()["tests"]}

    swept = sweep_tenant(
        database,
        tenant_id_of(database, admin),
        RetentionDays(**{**DEFAULTS, "events_days": 100}),
        utcnow(),
    )

    assert (swept.results, swept.runs, swept.events, swept.deliveries) == (3, 1, 1, 2)
    assert swept.builds == 1  # the old run's; the new run's build has its run
    assert admin.client.get(f"/api/runs/{old_run}").status_code == 404
    builds = admin.client.get("/api/v1/runs", params={"project": repo}).json()["runs"]
    assert len(builds) == 1
    assert admin.client.get(f"/api/runs/{new_run}").status_code == 200
    assert results_of(database, new_run) == 3
    assert events_left(database, repo_id) == 1  # test_c's, today
    kept = {i for i, (status, days) in marks.items() if status == "pending" or days < 30}
    assert deliveries_left(database, list(marks)) == kept
    # A test whose every result went stays, with its state and figures.
    gone = admin.client.get(f"/api/tests/{tests['test_b']}")
    assert gone.status_code == 200
    assert gone.json()["total_runs"] == 1
    assert admin.client.get(f"/api/tests/{tests['test_a']}").json()["state"] == "flaky"


def test_runs_kept_longer_than_their_results_keep_their_totals(database, admin):
    repo = f"acme/runs-{uuid.uuid4().hex[:6]}"
    run_id = uploaded(admin.client, {"test_a": ["pass"], "test_b": ["fail"]}, repo, "3")
    backdate(database, 60, runs=[run_id])
    policy = RetentionDays(**{**DEFAULTS, "results_days": 30, "runs_days": 90})

    swept = sweep_tenant(database, tenant_id_of(database, admin), policy, utcnow())

    assert (swept.results, swept.runs) == (2, 0)
    run = admin.client.get(f"/api/runs/{run_id}")
    assert run.status_code == 200
    summary = run.json()["run"]["summary"]
    assert (summary["tests"], summary["failed"]) == (2, 1)
    later = sweep_tenant(database, tenant_id_of(database, admin), policy, utcnow() + timedelta(31))
    assert later.runs == 1
    assert admin.client.get(f"/api/runs/{run_id}").status_code == 404


def test_a_sweep_applies_each_tenants_own_retention_only(database, server, settings, admin):
    other = make_tenant(database, server, scopes=("ingest", "read", "admin"))
    repo = f"acme/iso-{uuid.uuid4().hex[:6]}"
    mine = uploaded(admin.client, {"test_a": ["pass"]}, repo, "4")
    theirs = uploaded(other.client, {"test_a": ["pass"]}, repo, "4")
    backdate(database, 60, runs=[mine, theirs])
    admin.client.put("/api/retention", json={"results_days": 30, "runs_days": 30})

    sweep(database, settings)

    assert admin.client.get(f"/api/runs/{mine}").status_code == 404
    assert other.client.get(f"/api/runs/{theirs}").status_code == 200
    assert results_of(database, theirs) == 1


def test_a_sweep_deletes_old_github_deliveries_once_done_with(database, settings):
    now = utcnow()
    ages = {  # (event, processed, attempts, age in days)
        "applied-old": ("workflow_job", True, 1, 31),
        "applied-new": ("check_run", True, 1, 29),
        "failed-out-old": ("workflow_job", False, 5, 40),
        "waiting-old": ("pull_request", False, 2, 90),
        # What `testlens github link` reads an installation's repositories from.
        "installed-old": ("installation", True, 1, 400),
        "added-old": ("installation_repositories", True, 1, 300),
    }
    guids = {name: f"{name}-{uuid.uuid4()}" for name in ages}
    with database.transaction() as session:
        for name, (kind, processed, attempts, days) in ages.items():
            received = now - timedelta(days=days)
            session.add(
                GithubDelivery(
                    id=guids[name],
                    event=kind,
                    payload="{}",
                    received_at=received,
                    processed_at=received if processed else None,
                    attempts=attempts,
                    # Not due: no server's worker tries it meanwhile.
                    next_attempt_at=None if processed else now + timedelta(days=365),
                )
            )

    swept = sweep(database, replace(settings, retention_deliveries_days=30), now)

    assert swept.github_deliveries >= 2
    with database.read() as session:
        left = set(
            session.scalars(select(GithubDelivery.id).where(GithubDelivery.id.in_(guids.values())))
        )
    kept = ("applied-new", "waiting-old", "installed-old", "added-old")
    assert left == {guids[name] for name in kept}


class Transactions:
    """Rows each transaction deleted, per table, measured on the engine as they happen."""

    def __init__(self, database: Database) -> None:
        self.deleted: dict[int, dict[str, int]] = {}
        self._engine = database.engine
        self._numbers = itertools.count()

    def _begin(self, connection: Any) -> None:
        connection.info["transaction"] = next(self._numbers)

    def _executed(self, connection: Any, cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words[:2] == ["DELETE", "FROM"]:
            rows = self.deleted.setdefault(connection.info.get("transaction", -1), {})
            rows[words[2]] = rows.get(words[2], 0) + cursor.rowcount

    def __enter__(self) -> Transactions:
        event.listen(self._engine, "begin", self._begin)
        event.listen(self._engine, "after_cursor_execute", self._executed)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self._engine, "begin", self._begin)
        event.remove(self._engine, "after_cursor_execute", self._executed)

    def of(self, table: str) -> list[int]:
        """Rows of ``table`` deleted by each transaction that deleted any, in order."""
        return [rows[table] for rows in self.deleted.values() if rows.get(table)]


def test_a_sweep_deletes_a_batch_per_transaction(database, admin):
    repo = f"acme/batch-{uuid.uuid4().hex[:6]}"
    big = {f"test_{i:04d}": ["pass"] for i in range(2500)}
    run_id = uploaded(admin.client, big, repo, "5")
    backdate(database, 200, runs=[run_id])

    with Transactions(database) as transactions:
        swept = sweep_tenant(
            database, tenant_id_of(database, admin), RetentionDays(**DEFAULTS), utcnow(), 1000
        )

    assert swept.results == 2500
    assert transactions.of("test_results") == [1000, 1000, 500]
    assert transactions.of("runs") == [1]
    assert all(sum(rows.values()) <= 1000 for rows in transactions.deleted.values())


def trends(client, repo: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/analytics/flakiness-trends", params={"project": repo, "days": 3})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_trends_survive_the_results_they_were_counted_from(database, admin):
    repo = f"acme/trends-{uuid.uuid4().hex[:6]}"
    stable = {f"test_stable_{i}": ["pass"] for i in range(10)}
    for commit, cases in [("6", {"test_pay": ["fail", "pass"]}), ("7", {"test_pay": ["fail"]})]:
        uploaded(admin.client, {**stable, **cases}, repo, commit)
    before = trends(admin.client, repo)
    assert before[-1]["flakyTestCount"] == 1
    assert before[-1]["testRuns"] == 22
    repo_id = repo_id_of(database, admin, repo)

    # Today's results, swept as they will be once they are 200 days old.
    later = utcnow() + timedelta(days=200)
    swept = sweep_tenant(database, tenant_id_of(database, admin), RetentionDays(**DEFAULTS), later)

    assert (swept.results, swept.runs) == (23, 2)
    with database.read() as session:
        assert session.scalar(select(func.count()).where(Run.repo_id == repo_id)) == 0
    assert trends(admin.client, repo) == before


def test_the_server_sweeps_on_its_own(database, settings, admin):
    repo = f"acme/auto-{uuid.uuid4().hex[:6]}"
    run_id = uploaded(admin.client, {"test_a": ["pass"]}, repo, "8")
    backdate(database, 60, runs=[run_id])
    admin.client.put("/api/retention", json={"results_days": 30, "runs_days": 30})
    live = LiveServer(create_app(replace(settings, retention_sweep_seconds=0.05))).start()
    try:
        deadline = time.monotonic() + 30
        while admin.client.get(f"/api/runs/{run_id}").status_code != 404:
            assert time.monotonic() < deadline, "the sweeper did not delete the old run"
            time.sleep(0.05)
    finally:
        live.stop()


def test_the_sweeper_waits_out_an_outage_with_one_line_each_way(tmp_path, caplog):
    """A database without testlens's tables fails every sweep, as a database that is down
    does; once migrated, the sweeper carries on by itself."""
    database = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    settings = Settings(database_url="unused", data_dir=tmp_path, retention_sweep_seconds=0.05)
    sweeper = RetentionSweeper(database, settings)
    caplog.set_level(logging.WARNING, logger="testlens.server.retention")
    sweeper.start()
    try:
        time.sleep(0.5)
        upgrade(database.engine)
        deadline = time.monotonic() + 30
        while "resumed" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
    finally:
        sweeper.stop()
        database.dispose()
    lines = [r.getMessage() for r in caplog.records if r.name == "testlens.server.retention"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("retention sweeps paused, database unavailable:")
    assert lines[1] == "retention sweeps resumed: the database answers again"


# Deleting a repository -----------------------------------------------------------------------

REPO_TABLES = sorted(t.name for t in Base.metadata.sorted_tables if "repo_id" in t.c)


def test_every_table_of_a_repository_is_deleted_from():
    assert sorted(t.name for t in queries.REPOSITORY_TABLES) == REPO_TABLES


def rows_of(database, repo_id: str) -> dict[str, int]:
    """Rows of every table that belong to the repository (results by their runs)."""
    counts = {}
    with database.read() as session:
        for table in Base.metadata.sorted_tables:
            if "repo_id" in table.c:
                counts[table.name] = session.scalar(
                    select(func.count()).select_from(table).where(table.c.repo_id == repo_id)
                )
        counts["test_results"] = session.scalar(
            select(func.count())
            .select_from(TestResult)
            .join(Run, Run.id == TestResult.run_id)
            .where(Run.repo_id == repo_id)
        )
        counts["repositories"] = session.scalar(
            select(func.count()).where(Repository.id == repo_id)
        )
    return counts


def fill(database, admin, repo: str) -> None:
    """A repository with a row in every table that has one per repository."""
    stable = {f"test_stable_{i}": ["pass"] for i in range(10)}
    for commit, cases in [("a", {"test_pay": ["fail", "pass"]}), ("b", {"test_pay": ["pass"]})]:
        uploaded(admin.client, {**stable, **cases}, repo, commit)
    repo_id = next(
        r["id"] for r in admin.client.get("/api/repos").json()["repos"] if r["name"] == repo
    )
    test_id = admin.client.get(f"/api/repos/{repo_id}").json()["tests"][0]["id"]
    quarantined = admin.client.post(f"/api/tests/{test_id}/quarantine", json={"reason": "flaky"})
    assert quarantined.status_code < 300, quarantined.text
    plan = admin.client.post(
        "/api/shard-plans",
        json={"repo": repo, "shards": 2, "tests": ["tests/test_shop.py::TestShop::test_pay"]},
    )
    assert plan.status_code < 300, plan.text
    fix = admin.client.post("/api/fix-attempts", json={"test_id": test_id, "pr_number": 3})
    assert fix.status_code == 201, fix.text
    # CI jobs come from signed GitHub deliveries, which this server takes none of: one row
    # as the GitHub App's processing stores it.
    with database.transaction() as session:
        session.add(
            CiJob(
                id=str(uuid.uuid4()),
                repo_id=repo_id,
                kind="workflow_job",
                external_id=1,
                name="test",
                run_attempt=1,
            )
        )


def test_deleting_a_repository_removes_all_of_it_and_nothing_else(database, server, admin):
    name = f"acme/gone-{uuid.uuid4().hex[:6]}"
    kept = f"acme/kept-{uuid.uuid4().hex[:6]}"
    other = make_tenant(database, server, scopes=("ingest", "read", "admin"))
    for tenant, repo in [(admin, name), (admin, kept), (other, name)]:
        fill(database, tenant, repo)
    gone_id = repo_id_of(database, admin, name)
    before = rows_of(database, gone_id)
    assert all(before.values()), before  # every table has rows to delete
    untouched = {
        repo_id: rows_of(database, repo_id)
        for repo_id in (repo_id_of(database, admin, kept), repo_id_of(database, other, name))
    }

    response = admin.client.delete(f"/api/repos/{name.upper()}")

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert set(rows_of(database, gone_id).values()) == {0}
    assert {repo_id: rows_of(database, repo_id) for repo_id in untouched} == untouched
    again = admin.client.delete(f"/api/repos/{name}")
    assert again.status_code == 404
    assert again.json()["code"] == "NOT_FOUND"
    assert set(again.json()) == {"error", "code", "message", "details"}
    assert name not in {r["name"] for r in admin.client.get("/api/repos").json()["repos"]}


def test_another_tenants_repository_is_a_404_and_stays(database, server, admin):
    name = f"acme/theirs-{uuid.uuid4().hex[:6]}"
    uploaded(admin.client, {"test_a": ["pass"]}, name, "c")
    repo_id = repo_id_of(database, admin, name)
    before = rows_of(database, repo_id)
    stranger = make_tenant(database, server, scopes=("ingest", "read", "admin"))
    reader = make_tenant(database, server, scopes=("ingest", "read"))

    missing = stranger.client.delete(f"/api/repos/{name}")
    refused = reader.client.delete(f"/api/repos/{name}")

    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
    assert refused.status_code == 403
    assert rows_of(database, repo_id) == before


def test_a_repository_is_deleted_a_batch_per_transaction(database, admin):
    name = f"acme/small-{uuid.uuid4().hex[:6]}"
    fill(database, admin, name)
    repo_id = repo_id_of(database, admin, name)

    with Transactions(database) as transactions:
        delete_repository(database, tenant_id_of(database, admin), name, batch=3)

    assert set(rows_of(database, repo_id).values()) == {0}
    assert transactions.of("test_results") == [3] * 7 + [2]  # 23 results
    assert max(sum(rows.values()) for rows in transactions.deleted.values()) <= 3


def test_a_sweep_with_nothing_old_runs_no_delete_at_all(database, admin):
    repo = f"acme/fresh-{uuid.uuid4().hex[:6]}"
    uploaded(admin.client, {"test_a": ["fail", "pass"]}, repo, "9")
    add_deliveries(database, admin, {f"{uuid.uuid4()}": ("delivered", 1)})

    with Transactions(database) as transactions:
        swept = sweep_tenant(
            database, tenant_id_of(database, admin), RetentionDays(**DEFAULTS), utcnow()
        )

    assert not swept
    assert transactions.deleted == {}


def test_live_events_go_a_week_after_their_run_ends(database, admin):
    def orchestrated() -> str:
        body = {"testFiles": ["tests/test_a.py"], "workerCount": 1}
        run = admin.client.post("/api/v1/orchestrate", json=body).json()["runId"]
        admin.client.post(f"/api/v1/orchestrate/{run}/claims", json={"batchId": "b"})
        assert admin.client.delete(f"/api/v1/orchestrate/{run}").status_code == 200  # ends it
        return run

    old, recent = orchestrated(), orchestrated()
    with database.transaction() as session:
        session.execute(
            update(Build).where(Build.id == old).values(completed_at=utcnow() - timedelta(days=8))
        )

    def logged(run: str) -> int:
        with database.read() as session:
            return session.scalar(select(func.count()).where(RunEvent.build_id == run))

    assert logged(old) == logged(recent) == 2  # run:start, run:end
    swept = sweep_tenant(
        database, tenant_id_of(database, admin), RetentionDays(**DEFAULTS), utcnow()
    )
    assert swept.live_events == 2
    assert (logged(old), logged(recent)) == (0, 2)
    again = sweep_tenant(
        database, tenant_id_of(database, admin), RetentionDays(**DEFAULTS), utcnow()
    )
    assert again.live_events == 0
