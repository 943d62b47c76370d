"""/api/analytics/dashboard and /api/analytics/repos/{id} (the Unfold dialect) over a small
dataset whose every figure is worked out by hand."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from builders import make_tenant, upload
from sqlalchemy import select, update

from testlens.server.models import DailyRollup, Repository, TestCase, utcnow

_commits = itertools.count(1)
SECONDS = 360  # each attempt's time: a run's duration is the sum of its attempts'


def report(cases: dict[str, list[str]]) -> bytes:
    parts = ['<testsuites><testsuite name="pytest">']
    for name, outcomes in cases.items():
        for outcome in outcomes:
            child = '<failure message="boom">trace</failure>' if outcome == "fail" else ""
            parts.append(
                f'<testcase classname="tests.test_dash" name="{name}" file="tests/test_dash.py" '
                f'time="{SECONDS}">{child}</testcase>'
            )
    parts.append("</testsuite></testsuites>")
    return "".join(parts).encode()


def send(client, cases, repo):
    number = next(_commits)
    response = upload(
        client, report(cases), repo=repo, commit=f"{number:040x}", branch="main",
        workflow_run_id=f"wf-{number}",
    )  # fmt: skip
    assert response.status_code == 201, response.text


FLAKE = ["fail", "pass"]


@pytest.fixture
def dataset(database, server):
    """Repository acme/dash: five runs of three tests; test_pay flakes in runs 1-4 and
    test_login in runs 1 and 5, after it was quarantined. acme/dash-two: one passing run.
    Plus a rollup of 40 days ago (10 test runs, 5 flaky), and root causes."""
    tenant = make_tenant(database, server, scopes=("ingest", "read", "admin"))
    client = tenant.client
    dash = f"{tenant.name}/dash"  # repository names are per tenant; the database is shared
    send(client, {"test_pay": FLAKE, "test_login": FLAKE, "test_ok": ["pass"]}, dash)
    for _ in range(3):
        send(client, {"test_pay": FLAKE, "test_login": ["pass"], "test_ok": ["pass"]}, dash)
    with database.read() as session:
        repo_id, login, pay = (
            session.scalar(select(Repository.id).where(Repository.name == dash)),
            *(
                session.scalar(
                    select(TestCase.id)
                    .join(Repository, Repository.id == TestCase.repo_id)
                    .where(Repository.name == dash, TestCase.name == name)
                )
                for name in ("test_login", "test_pay")
            ),
        )
    assert client.post(f"/api/tests/{login}/quarantine", json={}).status_code == 201
    send(client, {"test_pay": ["pass"], "test_login": FLAKE, "test_ok": ["pass"]}, dash)
    send(client, {"test_ok": ["pass"]}, f"{tenant.name}/dash-two")
    old_day = (utcnow() - timedelta(days=40)).date().isoformat()
    with database.transaction() as session:
        session.add(
            DailyRollup(
                repo_id=repo_id, day=old_day, runs=2, test_runs=10, failed_test_runs=5,
                flaky_test_runs=5, flaky_tests=1, flake_score_sum=0.2,
            )
        )  # fmt: skip
        for test, cause in ((pay, "timing"), (login, "network")):
            session.execute(
                update(TestCase).where(TestCase.id == test).values(root_cause_category=cause)
            )
    for body in (
        {"test_id": pay, "pr_number": 7, "status": "merged"},
        {"test_id": pay, "pr_number": 8},
        {"test_id": login},
    ):
        assert client.post("/api/fix-attempts", json=body).status_code == 201
    yield tenant, repo_id, old_day, pay, login
    client.close()


def test_dashboard_figures(dataset, settings):
    tenant, _repo_id, _old_day, pay, login = dataset
    scores = {
        test: tenant.client.get(f"/api/tests/{test}").json()["flake_score"] for test in (pay, login)
    }
    assert scores[pay] >= 0.10 > scores[login]  # 4 flakes in 5 runs against 2 in 5
    body = tenant.client.get("/api/analytics/dashboard").json()
    # Test runs in the last 30 days: 5 runs x 3 tests + 1; flaky ones: 4 + 2.
    hours = 1 * (4 * SECONDS) / 3600  # one flake absorbed by the quarantine x median build
    assert body == {
        "health_score": round(100 * (1 - 6 / 16), 1),
        "total_tests": 4,
        "total_repos": 2,
        "flaky_tests": 2,
        "critical_flaky": 1,
        "prs_created": 2,
        "prs_merged": 1,
        "time_saved_hours": round(hours, 2),
        "cost_savings_usd": round(hours * settings.ci_cost_per_hour, 2),
        "trends": {
            # The 30 days before: the old rollup alone, 5 flaky of 10.
            "health_score_change": round(62.5 - 50.0, 1),
            "flaky_tests_change": 2,
        },
    }


def test_repo_figures_by_period(dataset):
    tenant, repo_id, old_day, _pay, _login = dataset
    today = utcnow().date().isoformat()
    recent = {
        "repo_id": repo_id,
        "test_runs": 15,
        "total_tests": 3,
        "flaky_tests": 2,
        "fixes_applied": 1,
        "health_score_history": [{"date": today, "score": 60.0}],  # 100 x (1 - 6/15)
        "root_causes": {"network": 1, "timing": 1},
    }
    for period in ("7d", "30d"):
        body = tenant.client.get(f"/api/analytics/repos/{repo_id}", params={"period": period})
        assert body.json() == {**recent, "period": period}
    assert tenant.client.get(f"/api/analytics/repos/{repo_id}").json()["period"] == "30d"
    for period in ("90d", "all"):
        body = tenant.client.get(f"/api/analytics/repos/{repo_id}", params={"period": period})
        assert body.json() == {
            **recent,
            "period": period,
            "test_runs": 25,
            "health_score_history": [
                {"date": old_day, "score": 50.0},
                {"date": today, "score": 60.0},
            ],
        }


@pytest.mark.parametrize("period", ["1d", "", "30", "ALL", "7d "])
def test_bad_periods_are_refused(dataset, period):
    tenant, repo_id, *_ = dataset
    response = tenant.client.get(f"/api/analytics/repos/{repo_id}", params={"period": period})
    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_ERROR"


def test_another_tenants_repository_is_not_found(dataset, database, server):
    _tenant, repo_id, *_ = dataset
    stranger = make_tenant(database, server)
    try:
        for path in (f"/api/analytics/repos/{repo_id}", "/api/analytics/repos/nope"):
            response = stranger.client.get(path)
            assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND"
        empty = stranger.client.get("/api/analytics/dashboard").json()
        assert empty["total_repos"] == 0 and empty["health_score"] is None
        assert empty["trends"] == {"health_score_change": None, "flaky_tests_change": 0}
    finally:
        stranger.client.close()
