"""Flaky feed, repositories, tests, analytics and quarantine, through real uploads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from builders import STABLE, ingest_history, junit, make_tenant, upload


@pytest.fixture
def history(tenant):
    return ingest_history(tenant.client)


def test_flaky_detected_counts_tests_made_or_kept_flaky(tenant):
    bodies = ingest_history(tenant.client)
    assert [b["flaky_detected"] for b in bodies] == [1, 1, 1, 1, 1]


def test_flaky_feed_has_the_seed_shape(tenant, history):
    response = tenant.client.get(
        "/api/v1/testdeck/flaky",
        params={"org": "acme", "repo": "shop", "github_check_name": "unit"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["repository"] == {"name": "shop", "org": "acme"}
    assert body["github_check"] == {"name": "unit", "provider": "github"}
    assert [c["name"] for c in body["test_cases"]] == ["test_pay"]
    case = body["test_cases"][0]
    assert set(case) == {
        "name",
        "class_name",
        "first_occurrence",
        "last_occurrence",
        "details_url",
        "last_24_hours_count",
    }
    assert case["class_name"] == "tests.test_shop.TestShop"
    assert case["last_24_hours_count"] == 1
    assert case["first_occurrence"].endswith("Z")
    details = tenant.client.get(case["details_url"])
    assert details.status_code == 200
    assert details.json()["name"] == "test_pay"
    # The same query as a JSON body, and a check name that has no flaky tests.
    as_body = tenant.client.request(
        "GET", "/api/v1/testdeck/flaky", json={"org": "acme", "repo": "shop"}
    )
    assert [c["name"] for c in as_body.json()["test_cases"]] == ["test_pay"]
    other_check = tenant.client.get(
        "/api/v1/testdeck/flaky", params={"repo": "acme/shop", "github_check_name": "e2e"}
    )
    assert other_check.json()["test_cases"] == []


def test_flaky_feed_paginates_by_100(tenant):
    # Flaky tests among many stable ones: a run where most tests fail is an outage.
    cases = {f"test_flaky_{i:03d}": ["fail", "pass"] for i in range(101)}
    cases.update({f"test_fine_{i:03d}": ["pass"] for i in range(150)})
    assert upload(tenant.client, junit(cases), repo="acme/big").status_code == 201
    first = tenant.client.get("/api/v1/testdeck/flaky", params={"repo": "acme/big"})
    second = tenant.client.get("/api/v1/testdeck/flaky", params={"repo": "acme/big", "page": 2})
    assert len(first.json()["test_cases"]) == 100
    assert 'rel="next"' in first.headers["link"]
    assert len(second.json()["test_cases"]) == 1
    assert "link" not in second.headers
    names = {c["name"] for c in first.json()["test_cases"] + second.json()["test_cases"]}
    assert len(names) == 101


def test_flaky_feed_errors(tenant, history):
    missing = tenant.client.get("/api/v1/testdeck/flaky", params={"org": "acme"})
    assert missing.status_code == 400
    assert missing.json()["details"]["field"] == "repo"
    unknown = tenant.client.get("/api/v1/testdeck/flaky", params={"repo": "acme/nope"})
    assert unknown.status_code == 404


def test_repos_list_and_detail(tenant, history):
    repos = tenant.client.get("/api/repos").json()["repos"]
    assert len(repos) == 1
    repo = repos[0]
    assert repo["name"] == "acme/shop"
    assert repo["github_url"] == "https://github.com/acme/shop"
    assert repo["total_tests"] == 22
    assert repo["flaky_count"] == 1
    # 22 tests, one flaky and one broken: 100 * (1 - 2/22)
    assert repo["health_score"] == pytest.approx(90.9)
    detail = tenant.client.get(f"/api/repos/{repo['id']}").json()
    assert detail["summary"] == {"total": 22, "passing": 20, "flaky": 1, "failing": 1}
    by_name = {t["name"]: t for t in detail["tests"]}
    assert by_name["test_pay"]["state"] == "flaky"
    assert by_name["test_login"]["state"] == "broken"
    assert by_name["test_pay"]["framework"] == "pytest"
    assert by_name["test_pay"]["total_runs"] == 5
    assert by_name["test_pay"]["pass_rate"] == 1.0  # passed in the end every time
    assert by_name["test_login"]["pass_rate"] == 0.4
    assert by_name["test_pay"]["root_cause_category"] is None
    assert detail["tests"][0]["name"] in ("test_pay", "test_login")  # most flaky first
    assert tenant.client.get("/api/repos/not-a-repo").status_code == 404


def test_test_detail(tenant, history):
    repo_id = tenant.client.get("/api/repos").json()["repos"][0]["id"]
    tests = tenant.client.get(f"/api/repos/{repo_id}").json()["tests"]
    pay = next(t for t in tests if t["name"] == "test_pay")
    body = tenant.client.get(f"/api/tests/{pay['id']}").json()
    assert body["state"] == "flaky"
    assert body["total_runs"] == 5
    assert body["flaky_runs"] == 1
    low, high = body["flake_score_interval"]
    assert 0 <= low <= body["flake_score"] <= high <= 1
    assert body["duration_p50_ms"] == pytest.approx(250.0)
    assert body["environments"][0]["environment"] == "linux"
    runs = body["recent_runs"]
    assert len(runs) == 6  # five runs, one with a retry
    assert runs[0]["status"] == "passed"
    assert runs[-1] == {**runs[-1], "status": "failed", "error_message": "boom", "attempt": 0}
    assert [e["to"] for e in body["events"]] == ["flaky"]
    login = next(t for t in tests if t["name"] == "test_login")
    login_body = tenant.client.get(f"/api/tests/{login['id']}").json()
    assert login_body["state"] == "broken"
    assert next(e["to"] for e in login_body["events"]) == "broken"


def test_analytics(tenant, history):
    flaky = tenant.client.get(
        "/api/v1/analytics/flaky-tests", params={"project": "acme/shop"}
    ).json()["data"]
    assert [(d["testName"], d["flakyRuns"], d["totalRuns"]) for d in flaky] == [("test_pay", 1, 5)]
    assert flaky[0]["flakinessRate"] == 20.0
    assert flaky[0]["testFile"] == "tests/test_shop.py"
    assert (
        tenant.client.get(
            "/api/v1/analytics/flaky-tests", params={"project": "acme/shop", "minRate": 50}
        ).json()["data"]
        == []
    )
    trends = tenant.client.get(
        "/api/v1/analytics/flakiness-trends", params={"project": "acme/shop", "days": 7}
    ).json()["data"]
    assert len(trends) == 7
    today = trends[-1]
    assert today["detectionDate"] == datetime.now(UTC).date().isoformat()
    assert today["flakyTestCount"] == 1
    assert today["avgFlakinessRate"] > 0
    assert sum(d["flakyTestCount"] for d in trends[:-1]) == 0
    advice = tenant.client.get(
        "/api/v1/analytics/flaky-recommendations", params={"project": "acme/shop"}
    ).json()["data"]
    assert [(a["test"]["name"], a["severity"]) for a in advice] == [
        ("test_login", "critical"),
        ("test_pay", "high"),
    ]
    assert set(advice[1]) == {"test", "severity", "recommendation", "impact"}
    assert tenant.client.get("/api/v1/analytics/flaky-tests").status_code == 400


def test_quarantine_lifecycle(tenant, database, server, history):
    admin = make_tenant(database, server, scopes=("admin",))
    repo_id = tenant.client.get("/api/repos").json()["repos"][0]["id"]
    pay = next(
        t
        for t in tenant.client.get(f"/api/repos/{repo_id}").json()["tests"]
        if t["name"] == "test_pay"
    )
    # Only admin keys quarantine, and only their own tenant's tests.
    assert tenant.client.post(f"/api/tests/{pay['id']}/quarantine", json={}).status_code == 403
    assert admin.client.post(f"/api/tests/{pay['id']}/quarantine", json={}).status_code == 404
    owner_admin_key = make_admin_for(tenant, database, server)
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    created = owner_admin_key.post(
        f"/api/tests/{pay['id']}/quarantine",
        json={"reason": "JIRA-12 races the cache", "expires_at": expires},
    )
    assert created.status_code == 201, created.text
    assert created.json()["reason"] == "JIRA-12 races the cache"
    listed = tenant.client.get("/api/quarantine", params={"repo": "acme/shop"}).json()
    assert [(t["name"], t["nodeid"]) for t in listed["tests"]] == [
        ("test_pay", "tests/test_shop.py::TestShop::test_pay")
    ]
    assert tenant.client.get(f"/api/tests/{pay['id']}").json()["state"] == "quarantined"
    past = owner_admin_key.post(
        f"/api/tests/{pay['id']}/quarantine", json={"expires_at": "2001-01-01T00:00:00Z"}
    )
    assert past.status_code == 400
    assert owner_admin_key.delete(f"/api/tests/{pay['id']}/quarantine").status_code == 204
    assert owner_admin_key.delete(f"/api/tests/{pay['id']}/quarantine").status_code == 404
    assert tenant.client.get("/api/quarantine", params={"repo": "acme/shop"}).json()["tests"] == []
    events = [e["to"] for e in tenant.client.get(f"/api/tests/{pay['id']}").json()["events"]]
    assert events[:2] == ["flaky", "quarantined"]


def make_admin_for(tenant, database, server):
    """An admin key for an existing tenant."""
    import httpx

    from testlens.server.auth import create_key

    with database.transaction() as session:
        _key, secret = create_key(session, tenant.name, ("admin",))
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"})


def test_every_read_is_tenant_scoped(tenant, database, server, history):
    intruder = make_tenant(database, server)
    repo_id = tenant.client.get("/api/repos").json()["repos"][0]["id"]
    test_id = tenant.client.get(f"/api/repos/{repo_id}").json()["tests"][0]["id"]
    assert intruder.client.get("/api/repos").json() == {"repos": []}
    for path, params in [
        (f"/api/repos/{repo_id}", {}),
        (f"/api/tests/{test_id}", {}),
        ("/api/v1/testdeck/flaky", {"repo": "acme/shop"}),
        ("/api/v1/analytics/flaky-tests", {"project": "acme/shop"}),
        ("/api/v1/analytics/flakiness-trends", {"project": "acme/shop"}),
        ("/api/v1/analytics/flaky-recommendations", {"project": "acme/shop"}),
        ("/api/quarantine", {"repo": "acme/shop"}),
    ]:
        response = intruder.client.get(path, params=params)
        assert response.status_code == 404, path
        assert response.json()["code"] == "NOT_FOUND"
        assert tenant.client.get(path, params=params).status_code == 200, path


def test_pull_request_regressions_do_not_make_tests_flaky(tenant):
    """A PR that breaks a test, between mainline runs that pass, is the PR's own bug."""
    cases = {**STABLE, "test_checkout": ["pass"]}
    broken = {**STABLE, "test_checkout": ["fail"]}
    for n in range(6):
        main = upload(
            tenant.client, junit(cases), repo="acme/pr", branch="main", commit=f"m{n}" * 10
        )
        pr = upload(
            tenant.client,
            junit(broken),
            repo="acme/pr",
            branch="feature/x",
            pr_number=str(40 + n),
            commit=f"p{n}" * 10,
        )
        assert main.json()["flaky_detected"] == pr.json()["flaky_detected"] == 0
    feed = tenant.client.get("/api/v1/testdeck/flaky", params={"repo": "acme/pr"}).json()
    assert feed["test_cases"] == []


def test_duration_samples_keep_the_newest_without_growing_unbounded():
    import json

    from testlens.server.ingest.detection import MAX_DURATION_SAMPLES, _append_samples

    stored = "[]"
    for n in range(5 * MAX_DURATION_SAMPLES):
        stored = _append_samples(stored, [f"[{float(n)!r},{int(n % 7 == 0)}]"])
        kept = json.loads(stored)
        assert len(kept) <= 2 * MAX_DURATION_SAMPLES
        assert kept[-1] == [float(n), n % 7 == 0]  # the newest sample is always last
    assert len(kept) >= MAX_DURATION_SAMPLES
    assert [d for d, _ in kept] == [float(n) for n in range(150 - len(kept), 150)]
    assert _append_samples(stored, None) == stored


def _listed(client, repo: str, name: str) -> dict:
    """The test ``name`` as its repository's page lists it."""
    repo_id = next(r["id"] for r in client.get("/api/repos").json()["repos"] if r["name"] == repo)
    tests = client.get(f"/api/repos/{repo_id}").json()["tests"]
    return next(t for t in tests if t["name"] == name)


@pytest.mark.parametrize("same", ["commit", "tree_sha"])
def test_a_rerun_of_the_same_code_proves_a_flake_from_the_earlier_runs(tenant, same):
    """The failure and the pass are two uploads of one commit (or of one git tree under two
    commits, as after a rebase), with passing uploads of other code between them."""
    repo = f"acme/rerun-{same}"

    def send(run: int, passed: bool, code: str) -> None:
        fields = {"commit": f"{run:040x}", "workflow_run_id": str(run), same: code}
        cases = {**STABLE, "test_pay": ["pass" if passed else "fail"]}
        response = upload(tenant.client, junit(cases), repo=repo, **fields)
        assert response.status_code == 201, response.text

    send(1, False, "a" * 40)
    for run in range(2, 5):
        send(run, True, f"{run:040x}")
    assert _listed(tenant.client, repo, "test_pay")["state"] == "healthy"
    send(5, True, "a" * 40)  # the rerun of the code that failed
    listed = _listed(tenant.client, repo, "test_pay")
    assert listed["state"] == "flaky"
    events = tenant.client.get(f"/api/tests/{listed['id']}").json()["events"]
    assert "on the same code" in events[-1]["reason"]


def test_an_outage_is_no_proof_when_its_commit_passes_on_rerun(tenant):
    repo = "acme/outage"
    everything = {**STABLE, "test_pay": ["pass"]}
    outage = {name: ["fail"] for name in everything}  # every test failed: the runner died
    for run, commit, cases in (("1", "d", everything), ("2", "c", outage), ("3", "c", everything)):
        response = upload(
            tenant.client, junit(cases), repo=repo, commit=commit * 40, workflow_run_id=run
        )
        assert response.status_code == 201, response.text
    assert _listed(tenant.client, repo, "test_pay")["state"] == "healthy"
