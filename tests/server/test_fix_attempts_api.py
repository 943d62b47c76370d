"""/api/fix-attempts and pull request tracking: real uploads on the mainline before and
after a fix, the verdict's figures, and the test's resolution."""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import replace

import pytest
from builders import LiveServer, junit, make_tenant, upload
from sqlalchemy import select

from testlens.core.flakiness import clean_runs_needed
from testlens.server.app import create_app
from testlens.server.fixes.service import pull_request_event
from testlens.server.models import FixAttempt, Repository, TestCase, TestEvent, utcnow

_commits = itertools.count(1)


def send(client, cases, repo, **fields):
    fields.setdefault("branch", "main")
    response = upload(client, junit(cases), repo=repo, commit=f"{next(_commits):040x}", **fields)
    assert response.status_code == 201, response.text


def id_of(database, repo: str, name: str) -> str:
    with database.read() as session:
        return session.scalars(
            select(TestCase.id)
            .join(Repository, Repository.id == TestCase.repo_id)
            .where(Repository.name == repo, TestCase.name == name)
        ).one()


def flaky_history(client, repo, runs=10, every=2):
    """``runs`` mainline runs; test_pay fails and passes on retry in every ``every``th."""
    for i in range(runs):
        pay = ["fail", "pass"] if i % every == 0 else ["pass"]
        send(client, {"test_pay": pay, "test_ok": ["pass"]}, repo)


@pytest.fixture
def admin(database, server):
    tenant = make_tenant(database, server, scopes=("ingest", "read", "admin"))
    yield tenant
    tenant.client.close()


def test_a_fix_is_verified_by_enough_clean_mainline_runs_and_resolves_its_test(admin, database):
    repo = "acme/fixes"
    hook = admin.client.post(
        "/api/webhooks",
        json={
            "url": "http://127.0.0.1:9/hook",
            "events": ["resolved_flaky_test"],
            "secret": "s3cret-for-tests-only",
        },
    )
    assert hook.status_code == 201, hook.text
    flaky_history(admin.client, repo)  # 10 runs, test_pay failing in 5
    # A pull request's and a feature branch's failures are not the mainline's.
    send(admin.client, {"test_pay": ["fail"], "test_ok": ["pass"]}, repo, pr_number="9")
    send(admin.client, {"test_pay": ["fail"], "test_ok": ["pass"]}, repo, branch="feature/x")
    pay = id_of(database, repo, "test_pay")
    assert admin.client.get(f"/api/tests/{pay}").json()["state"] == "flaky"

    created = admin.client.post(
        "/api/fix-attempts",
        json={
            "test_id": pay,
            "pr_url": "https://github.com/acme/fixes/pull/42",
            "pr_number": 42,
            "branch_name": "fix/pay",
            "status": "merged",
            "confidence": 0.8,
            "code_changes": {"files_changed": 2, "lines_added": 10, "lines_removed": 3},
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "merged" and body["pr_number"] == 42 and body["confidence"] == 0.8
    assert body["code_changes"] == {"files_changed": 2, "lines_added": 10, "lines_removed": 3}
    verdict = body["verdict"]
    assert verdict["state"] == "pending"
    assert verdict["before"]["runs"] == 10 and verdict["before"]["failures"] == 5
    assert verdict["before"]["rate"] == pytest.approx(6 / 12)  # uniform prior: (5+1)/(10+2)
    assert verdict["after"] == {"runs": 0, "failures": 0, "rate": 0.5, "low": pytest.approx(0.025),
                                "high": pytest.approx(0.975)}  # fmt: skip
    assert verdict["probability_improved"] == pytest.approx(6 / 12)
    # Half the before-rate is 0.25; the after-rate's bound 1 - 0.025 ** (1/(k+1)) is under
    # it from k = 12 clean runs on.
    needed = verdict["clean_runs_needed"]
    assert needed == 12 == clean_runs_needed((10, 5), (0, 0))
    attempt = body["id"]

    for _ in range(needed - 1):
        send(admin.client, {"test_pay": ["pass"], "test_ok": ["pass"]}, repo)
    send(admin.client, {"test_pay": ["fail"], "test_ok": ["pass"]}, repo, pr_number="10")
    almost = admin.client.get(f"/api/fix-attempts/{attempt}").json()
    assert almost["verdict"]["state"] == "pending"
    assert almost["verdict"]["clean_runs_needed"] == 1
    assert almost["effectiveness"] == {
        "runs_since_fix": needed - 1,
        "failures_before": 5,
        "failures_after": 0,
        "success_rate": 1.0,
    }
    assert admin.client.get(f"/api/tests/{pay}").json()["state"] == "flaky"

    send(admin.client, {"test_pay": ["pass"], "test_ok": ["pass"]}, repo)
    done = admin.client.get(f"/api/fix-attempts/{attempt}").json()
    assert done["verdict"]["state"] == "verified"
    assert done["verdict"]["clean_runs_needed"] is None
    assert done["verdict"]["probability_improved"] >= 0.95
    assert done["effectiveness"]["runs_since_fix"] == needed
    assert admin.client.get(f"/api/tests/{pay}").json()["state"] == "healthy"
    with database.read() as session:
        events = session.scalars(
            select(TestEvent).where(TestEvent.test_id == pay, TestEvent.to_state == "healthy")
        ).all()
        stored = session.get(FixAttempt, attempt)
        assert stored is not None and stored.verdict == "verified"
    assert len(events) == 1
    assert "pull request #42" in events[0].reason
    assert "https://github.com/acme/fixes/pull/42" in events[0].reason
    sent = admin.client.get(f"/api/webhooks/{hook.json()['id']}/deliveries").json()["deliveries"]
    assert [delivery["event"] for delivery in sent] == ["resolved_flaky_test"]


def test_a_fix_that_changes_nothing_is_ineffective_after_thirty_runs(tenant, database):
    repo = "acme/ineffective"
    flaky_history(tenant.client, repo, runs=10, every=5)  # 2 failing runs of 10
    merged_at = utcnow().isoformat()
    for i in range(29):
        pay = ["fail", "pass"] if i % 3 == 0 else ["pass"]  # 10 failing runs of 29
        send(tenant.client, {"test_pay": pay, "test_ok": ["pass"]}, repo)
    pay_id = id_of(database, repo, "test_pay")
    created = tenant.client.post(
        "/api/fix-attempts", json={"test_id": pay_id, "status": "merged", "merged_at": merged_at}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["verdict"]["state"] == "pending"  # 29 runs after: not enough to say
    assert body["effectiveness"]["failures_before"] == 2
    assert body["effectiveness"]["failures_after"] == 10
    assert body["effectiveness"]["success_rate"] == pytest.approx(19 / 29)
    send(tenant.client, {"test_pay": ["pass"], "test_ok": ["pass"]}, repo)
    judged = tenant.client.get(f"/api/fix-attempts/{body['id']}").json()
    assert judged["verdict"]["state"] == "ineffective"
    assert judged["verdict"]["probability_improved"] < 0.5
    assert judged["effectiveness"]["runs_since_fix"] == 30

    # A test that never failed in 40 mainline runs needs hundreds of clean runs to prove
    # anything: its rate was already low (the 1% floor is what makes it reachable at all).
    ok = tenant.client.post(
        "/api/fix-attempts",
        json={"test_id": id_of(database, repo, "test_ok"), "status": "merged"},
    ).json()
    assert ok["verdict"]["state"] == "pending"
    assert ok["verdict"]["before"]["runs"] == 40 and ok["verdict"]["before"]["failures"] == 0
    assert ok["verdict"]["clean_runs_needed"] == clean_runs_needed((40, 0), (0, 0)) > 500


def _pull(number, body, **extra):
    return {
        "number": number,
        "html_url": f"https://github.com/acme/prs/pull/{number}",
        "body": body,
        "title": "Fix flaky tests",
        "head": {"ref": f"fix/{number}"},
        "merged": False,
        "merged_at": None,
        "state": "open",
        "additions": 5,
        "deletions": 1,
        "changed_files": 1,
        "user": {"login": "octocat"},
        **extra,
    }


def _event(database, repo_name, action, pull):
    with database.transaction() as session:
        repo = session.scalars(select(Repository).where(Repository.name == repo_name)).one()
        pull_request_event(session, repo, action, pull, utcnow())


def _attempts(database, repo_name):
    with database.read() as session:
        rows = session.scalars(
            select(FixAttempt)
            .join(Repository, Repository.id == FixAttempt.repo_id)
            .where(Repository.name == repo_name)
        ).all()
        return {
            (row.pr_number, row.test_id): (
                row.status,
                row.source,
                row.merged_at,
                row.merge_commit_sha,
            )
            for row in rows
        }


def test_pull_requests_name_their_tests_and_their_attempts_follow_them(tenant, database, caplog):
    repo = "acme/prs"
    send(
        tenant.client,
        {"test_pay": ["fail", "pass"], "test_ok": ["pass"], "test_cart": ["pass"]},
        repo,
    )
    pay, ok, cart = (id_of(database, repo, name) for name in ("test_pay", "test_ok", "test_cart"))
    body = (
        "Retry the payment client.\n\n"
        "Fixes-test: tests/test_shop.py::TestShop::test_pay\n"
        "fixes-test: TestShop.test_ok\n"
        f"See https://testlens.example/tests/{cart} too.\n"
        "Fixes-test: tests/test_shop.py::TestShop::test_gone\n"
    )
    with caplog.at_level(logging.INFO, logger="testlens.server.fixes.service"):
        _event(database, repo, "opened", _pull(5, body))
    assert "test_gone" in caplog.text
    first = _attempts(database, repo)
    assert set(first) == {(5, pay), (5, ok), (5, cart)}
    assert {status for status, *_ in first.values()} == {"pending"}
    assert {source for _, source, *_ in first.values()} == {"pull_request"}

    _event(database, repo, "opened", _pull(5, body))  # a replay
    _event(database, repo, "synchronize", _pull(5, body))
    assert _attempts(database, repo) == first

    # An edit that stops naming a test closes its attempt; merging settles the others.
    edited = "Fixes-test: tests/test_shop.py::TestShop::test_pay\nFixes-test: TestShop.test_ok"
    _event(database, repo, "edited", _pull(5, edited))
    assert _attempts(database, repo)[(5, cart)][0] == "closed"
    merged = _pull(
        5, edited, merged=True, merged_at="2030-01-02T03:04:05Z", merge_commit_sha="ab" * 20,
        state="closed", additions=12, deletions=4, changed_files=3,
    )  # fmt: skip
    _event(database, repo, "closed", merged)
    _event(database, repo, "closed", merged)  # a replay
    after = _attempts(database, repo)
    assert len(after) == 3
    status, _, merged_at, sha = after[(5, pay)]
    assert status == "merged" and sha == "ab" * 20
    assert merged_at.isoformat().startswith("2030-01-02T03:04:05")
    assert after[(5, ok)][0] == "merged"
    detail = tenant.client.get("/api/fix-attempts", params={"status": "merged"}).json()
    assert {item["test_id"] for item in detail["fix_attempts"]} == {pay, ok}
    item = next(item for item in detail["fix_attempts"] if item["test_id"] == pay)
    assert item["branch_name"] == "fix/5" and item["merged"] is True
    assert item["merged_at"] == "2030-01-02T03:04:05Z"
    code = tenant.client.get(f"/api/fix-attempts/{item['id']}").json()["code_changes"]
    assert code == {"files_changed": 3, "lines_added": 12, "lines_removed": 4}

    # Closed without merging: closed. A pull request naming no known test stores nothing.
    _event(database, repo, "opened", _pull(6, "Fixes-test: " + cart))
    _event(database, repo, "closed", _pull(6, "Fixes-test: " + cart, state="closed"))
    assert _attempts(database, repo)[(6, cart)][0] == "closed"
    _event(database, repo, "opened", _pull(7, "Fixes-test: nothing::here"))
    _event(database, repo, "labeled", _pull(8, "Fixes-test: " + cart))
    assert {number for number, _ in _attempts(database, repo)} == {5, 6}


def test_listing_filters_and_summary(tenant, database, server):
    repo, other_repo = "acme/list", "acme/list-two"
    send(tenant.client, {"test_pay": ["pass"], "test_ok": ["pass"]}, repo)
    send(tenant.client, {"test_pay": ["pass"]}, other_repo)
    pay, ok = id_of(database, repo, "test_pay"), id_of(database, repo, "test_ok")
    elsewhere = id_of(database, other_repo, "test_pay")
    posted = []
    for test, status in ((pay, "pending"), (ok, "closed"), (pay, "merged"), (elsewhere, "pending")):
        response = tenant.client.post("/api/fix-attempts", json={"test_id": test, "status": status})
        assert response.status_code == 201, response.text
        posted.append(response.json()["id"])
    listed = tenant.client.get("/api/fix-attempts").json()
    assert [item["id"] for item in listed["fix_attempts"]] == posted[::-1]  # newest first
    assert listed["summary"] == {"total": 4, "pending": 2, "merged": 1, "closed": 1}
    item = listed["fix_attempts"][1]
    assert item["test_name"] == "test_pay" and item["test_file_path"] == "tests/test_shop.py"
    assert item["repo"]["name"] == repo
    assert item["repo"]["github_url"] == f"https://github.com/{repo}"
    assert item["status"] == "merged" and item["merged"] is True and item["merged_at"]
    repo_id = item["repo"]["id"]
    only = tenant.client.get("/api/fix-attempts", params={"repo_id": repo_id, "limit": 1}).json()
    assert [entry["id"] for entry in only["fix_attempts"]] == [posted[2]]
    assert only["summary"] == {"total": 3, "pending": 1, "merged": 1, "closed": 1}
    pending = tenant.client.get("/api/fix-attempts", params={"status": "pending"}).json()
    assert {entry["id"] for entry in pending["fix_attempts"]} == {posted[0], posted[3]}

    stranger = make_tenant(database, server)
    try:
        assert stranger.client.get("/api/fix-attempts").json() == {
            "fix_attempts": [],
            "summary": {"total": 0, "pending": 0, "merged": 0, "closed": 0},
        }
        for response in (
            stranger.client.get(f"/api/fix-attempts/{posted[0]}"),
            stranger.client.get("/api/fix-attempts", params={"repo_id": repo_id}),
            stranger.client.post("/api/fix-attempts", json={"test_id": pay}),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "NOT_FOUND"
    finally:
        stranger.client.close()


@pytest.mark.parametrize(
    ("request_args", "status", "code"),
    [
        (("get", "/api/fix-attempts", {"params": {"limit": 0}}), 422, "VALIDATION_ERROR"),
        (("get", "/api/fix-attempts", {"params": {"limit": 101}}), 422, "VALIDATION_ERROR"),
        (("get", "/api/fix-attempts", {"params": {"limit": "x"}}), 422, "VALIDATION_ERROR"),
        (("get", "/api/fix-attempts", {"params": {"status": "open"}}), 422, "VALIDATION_ERROR"),
        (("get", "/api/fix-attempts", {"params": {"repo_id": "nope"}}), 404, "NOT_FOUND"),
        (("get", "/api/fix-attempts/nope", {}), 404, "NOT_FOUND"),
        (("post", "/api/fix-attempts", {"json": {}}), 422, "VALIDATION_ERROR"),
        (("post", "/api/fix-attempts", {"json": {"test_id": "0" * 32}}), 404, "NOT_FOUND"),
        (("post", "/api/fix-attempts", {"content": b"{"}), 422, "VALIDATION_ERROR"),
    ],
)
def test_bad_requests_get_the_shared_error_body(tenant, request_args, status, code):
    method, path, kwargs = request_args
    if "content" in kwargs:
        kwargs = {**kwargs, "headers": {"Content-Type": "application/json"}}
    response = getattr(tenant.client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"] and "details" in body


def test_bad_fix_bodies_store_nothing(tenant, database, server):
    repo = "acme/bad-bodies"
    send(tenant.client, {"test_pay": ["pass"]}, repo)
    pay = id_of(database, repo, "test_pay")
    for body, status, code in (
        ({"test_id": pay, "confidence": 2}, 422, "VALIDATION_ERROR"),
        ({"test_id": pay, "status": "open"}, 422, "VALIDATION_ERROR"),
        ({"test_id": pay, "code_changes": {"lines_added": -1}}, 422, "VALIDATION_ERROR"),
        ({"test_id": pay, "merged_at": "2024-01-01T00:00:00Z"}, 400, "INVALID_FIELD"),
        ({"test_id": pay, "status": "merged", "merged_at": "2999-01-01T00:00:00Z"}, 400,
         "INVALID_FIELD"),
    ):  # fmt: skip
        response = tenant.client.post("/api/fix-attempts", json=body)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
    reader = make_tenant(database, server, scopes=("read",))
    try:
        refused = reader.client.post("/api/fix-attempts", json={"test_id": pay})
        assert refused.status_code == 403 and refused.json()["code"] == "INSUFFICIENT_SCOPE"
    finally:
        reader.client.close()
    assert tenant.client.get("/api/fix-attempts").json()["summary"]["total"] == 0


def test_a_servers_own_mainline_branches_judge_fixes_at_ingest(settings, tmp_path):
    """With TESTLENS_MAINLINE_BRANCHES=release, the runs on release prove the fix as they
    arrive: the test is resolved by the upload that verifies it, not only when read."""
    app = create_app(replace(settings, mainline_branches=("release",)))
    live = LiveServer(app).start()
    try:
        tenant = make_tenant(app.state.database, live)
        repo = f"acme/release-{uuid.uuid4().hex[:6]}"
        for i in range(10):
            pay = ["fail", "pass"] if i % 2 == 0 else ["pass"]
            send(tenant.client, {"test_pay": pay, "test_ok": ["pass"]}, repo, branch="release")
        pay_id = id_of(app.state.database, repo, "test_pay")
        created = tenant.client.post(
            "/api/fix-attempts", json={"test_id": pay_id, "status": "merged"}
        )
        assert created.status_code == 201, created.text
        assert created.json()["verdict"]["clean_runs_needed"] == 12
        for _ in range(12):
            send(tenant.client, {"test_pay": ["pass"], "test_ok": ["pass"]}, repo, branch="release")
        assert tenant.client.get(f"/api/tests/{pay_id}").json()["state"] == "healthy"
        with app.state.database.read() as session:
            stored = session.get(FixAttempt, created.json()["id"])
            assert stored is not None and stored.verdict == "verified"
    finally:
        live.stop()
