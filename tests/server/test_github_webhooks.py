"""GitHub App deliveries end to end: signed requests to a real server over HTTP, applied by
its background worker, their effects read back through ``/api/repos`` (and, for what no
API shows yet, the database).

Each test module's app is its own, on its own SQLite file, configured as an App would be;
the payloads are shaped after GitHub's documented ones, trimmed to the fields that matter
plus a few that do not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from builders import LiveServer, Tenant, eventually, junit, upload
from click.testing import CliRunner
from sqlalchemy import func, select

from testlens.server import cli
from testlens.server.app import create_app
from testlens.server.auth import create_key
from testlens.server.database import Database
from testlens.server.github import service, tasks
from testlens.server.models import CiJob, FixAttempt, GithubDelivery, GithubInstallation, Repository
from testlens.server.settings import Settings

SECRET = "whsec-github-app-correct-horse"
TEAM = "acme-platform"
ENTERPRISE = "https://github.acme.example/api/v3"

# Servers and tenants


@contextmanager
def github_server(directory: Path, **github: Any) -> Iterator[tuple[Database, LiveServer]]:
    """A server of its own (its own SQLite file) with the App's webhook secret and ``github``
    settings, serving while the block runs."""
    settings = Settings(
        database_url=f"sqlite:///{directory / 'github.db'}",
        data_dir=directory,
        rate_limits_enabled=False,
        github_webhook_secret=SECRET,
        **github,
    )
    app = create_app(settings)
    live = LiveServer(app).start()
    try:
        yield app.state.database, live
    finally:
        live.stop()
        app.state.database.dispose()


def named_tenant(database: Database, server: LiveServer, name: str) -> Tenant:
    with database.transaction() as session:
        key, secret = create_key(session, name, ("ingest", "read"))
        key_id = key.id
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    )
    return Tenant(name, secret, key_id, client)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, LiveServer]]:
    """The App's installations go to TEAM; its repositories' links point at an Enterprise
    Server."""
    directory = tmp_path_factory.mktemp("github")
    with github_server(directory, github_tenant=TEAM, github_api_url=ENTERPRISE) as served:
        yield served


@pytest.fixture(scope="module")
def team(world: tuple[Database, LiveServer]) -> Iterator[Tenant]:
    tenant = named_tenant(*world, TEAM)
    yield tenant
    tenant.client.close()


@pytest.fixture(scope="module")
def other(world: tuple[Database, LiveServer]) -> Iterator[Tenant]:
    tenant = named_tenant(*world, "someone-else")
    yield tenant
    tenant.client.close()


@pytest.fixture
def database(world: tuple[Database, LiveServer]) -> Database:
    return world[0]


@pytest.fixture
def github(world: tuple[Database, LiveServer]) -> Iterator[httpx.Client]:
    """A client with no API key, as GitHub is."""
    with httpx.Client(base_url=world[1].url, timeout=30) as client:
        yield client


# Deliveries


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(
    client: httpx.Client,
    event: str,
    payload: Any,
    *,
    guid: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str | None] | None = None,
) -> httpx.Response:
    """POST a delivery as GitHub does; ``headers`` override (None: leave one out)."""
    raw = body if body is not None else json.dumps(payload).encode()
    sent: dict[str, str | None] = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": signature(raw),
        **(headers or {}),
    }
    kept = {name: value for name, value in sent.items() if value is not None}
    return client.post("/api/github/webhooks", content=raw, headers=kept)


def deliver(client: httpx.Client, database: Database, event: str, payload: Any) -> str:
    """Send a delivery and wait until the worker has processed it; its GUID."""
    response = send(client, event, payload)
    assert response.status_code == 202, response.text
    guid = response.json()["delivery"]
    eventually(lambda: stored(database, guid).processed_at is not None, f"{event} processed")
    return guid


def stored(database: Database, guid: str) -> GithubDelivery:
    with database.read() as session:
        delivery = session.get(GithubDelivery, guid)
    assert delivery is not None
    return delivery


def delivery_count(database: Database) -> int:
    with database.read() as session:
        return session.scalar(select(func.count()).select_from(GithubDelivery)) or 0


# Payloads, after GitHub's webhook documentation


def account(login: str) -> dict[str, Any]:
    return {"login": login, "id": 9919, "type": "Organization", "site_admin": False}


def repository(full_name: str, github_id: int, default_branch: str | None = None) -> dict:
    owner, name = full_name.split("/")
    repo: dict[str, Any] = {
        "id": github_id,
        "node_id": f"R_{github_id}",
        "name": name,
        "full_name": full_name,
        "private": True,
    }
    if default_branch is not None:  # the full object of repository events
        repo.update(
            owner=account(owner),
            html_url=f"https://github.com/{full_name}",
            default_branch=default_branch,
            fork=False,
        )
    return repo


def installation(action: str, installation_id: int, repos: list[dict] | None) -> dict:
    payload: dict[str, Any] = {
        "action": action,
        "installation": {
            "id": installation_id,
            "account": account("acme"),
            "repository_selection": "selected",
            "app_id": 424242,
            "target_type": "Organization",
            "permissions": {"checks": "read", "pull_requests": "write"},
            "events": ["check_run", "workflow_job", "pull_request"],
            "created_at": "2024-05-01T09:00:00.000Z",
        },
        "sender": account("octocat"),
    }
    if repos is not None:
        payload["repositories"] = repos
    return payload


def installation_repositories(
    action: str, installation_id: int, added: list[dict], removed: list[dict]
) -> dict:
    return {
        "action": action,
        "installation": installation(action, installation_id, None)["installation"],
        "repository_selection": "selected",
        "repositories_added": added,
        "repositories_removed": removed,
        "requester": None,
        "sender": account("octocat"),
    }


def workflow_job(
    action: str,
    installation_id: int,
    repo: dict,
    job_id: int,
    attempt: int = 1,
    conclusion: str | None = "failure",
) -> dict:
    return {
        "action": action,
        "workflow_job": {
            "id": job_id,
            "run_id": 9001,
            "run_attempt": attempt,
            "workflow_name": "CI",
            "head_branch": "feature/pay",
            "run_url": "https://api.github.com/repos/acme/shop/actions/runs/9001",
            "head_sha": "f" * 40,
            "status": "completed" if action == "completed" else "in_progress",
            "conclusion": conclusion,
            "created_at": "2024-05-02T10:00:00Z",
            "started_at": "2024-05-02T10:00:05Z",
            "completed_at": "2024-05-02T10:03:35Z" if action == "completed" else None,
            "name": "tests (3.11)",
            "steps": [],
            "labels": ["ubuntu-latest"],
            "runner_name": "GitHub Actions 2",
        },
        "repository": repo,
        "installation": {"id": installation_id, "node_id": "MDIz"},
        "sender": account("octocat"),
    }


def check_run(installation_id: int, repo: dict, check_id: int) -> dict:
    return {
        "action": "completed",
        "check_run": {
            "id": check_id,
            "name": "lint",
            "head_sha": "e" * 40,
            "external_id": "",
            "status": "completed",
            "conclusion": "success",
            "started_at": "2024-05-02T11:00:00Z",
            "completed_at": "2024-05-02T11:01:00Z",
            "check_suite": {"id": 55, "head_branch": "main", "head_sha": "e" * 40},
            "app": {"id": 15368, "slug": "github-actions"},
            "pull_requests": [],
        },
        "repository": repo,
        "installation": {"id": installation_id, "node_id": "MDIz"},
        "sender": account("octocat"),
    }


def pull_request(installation_id: int, repo: dict, number: int, body: str) -> dict:
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number,
            "html_url": f"https://github.com/{repo['full_name']}/pull/{number}",
            "state": "open",
            "title": "Stop test_pay from racing",
            "body": body,
            "user": {"login": "octocat"},
            "head": {"ref": "fix/pay", "sha": "a" * 40},
            "base": {"ref": "main"},
            "merged": False,
            "merged_at": None,
            "merge_commit_sha": None,
            "additions": 3,
            "deletions": 1,
            "changed_files": 1,
        },
        "repository": repo,
        "installation": {"id": installation_id, "node_id": "MDIz"},
        "sender": account("octocat"),
    }


def repos_of(tenant: Tenant) -> dict[str, dict]:
    response = tenant.client.get("/api/repos")
    assert response.status_code == 200
    return {repo["name"]: repo for repo in response.json()["repos"]}


def new_id() -> int:
    return uuid.uuid4().int % 10**9


# The tests


def test_installations_link_and_unlink_repositories_of_their_tenant(github, database, team, other):
    assert upload(team.client, junit({"test_pay": ["pass"]}), repo="acme/shop").status_code == 201
    assert upload(other.client, junit({"test_pay": ["pass"]}), repo="acme/shop").status_code == 201
    number = new_id()
    shop, api = repository("Acme/Shop", number + 1), repository("acme/api", number + 2)

    deliver(github, database, "installation", installation("created", number, [shop, api]))
    repos = repos_of(team)
    # Matched by name case-insensitively: the uploaded repository, now installed.
    assert repos["acme/shop"]["installed_at"] is not None
    assert repos["acme/shop"]["github_url"] == "https://github.acme.example/acme/shop"
    assert repos["acme/api"]["installed_at"] is not None  # created
    assert repos["acme/api"]["total_tests"] == 0
    # Another tenant's repository of the same name is not this installation's.
    assert repos_of(other)["acme/shop"]["installed_at"] is None
    assert "acme/api" not in repos_of(other)

    deliver(
        github,
        database,
        "installation_repositories",
        installation_repositories("removed", number, [], [api]),
    )
    repos = repos_of(team)
    assert repos["acme/api"]["installed_at"] is None  # kept, unlinked
    assert repos["acme/shop"]["installed_at"] is not None

    deliver(
        github,
        database,
        "installation_repositories",
        installation_repositories("added", number, [api], []),
    )
    assert repos_of(team)["acme/api"]["installed_at"] is not None

    deliver(github, database, "installation", installation("suspend", number, None))
    assert all(r["installed_at"] is None for r in repos_of(team).values())
    deliver(github, database, "installation", installation("unsuspend", number, None))
    assert repos_of(team)["acme/shop"]["installed_at"] is not None
    assert repos_of(team)["acme/api"]["installed_at"] is not None

    deliver(github, database, "installation", installation("deleted", number, [shop, api]))
    repos = repos_of(team)
    assert {name: r["installed_at"] for name, r in repos.items()} == {
        "acme/shop": None,
        "acme/api": None,
    }
    assert repos["acme/shop"]["total_tests"] == 1  # its history stays
    with database.read() as session:
        removed = session.get(GithubInstallation, number)
        assert removed is not None and removed.removed_at is not None
        assert removed.account_login == "acme"


def test_completed_jobs_and_check_runs_are_recorded_once_per_attempt(github, database, team):
    number = new_id()
    repo = repository("acme/jobs", number + 1, default_branch="trunk")
    deliver(github, database, "installation", installation("created", number, [repo]))

    deliver(github, database, "workflow_job", workflow_job("in_progress", number, repo, 11))
    deliver(github, database, "workflow_job", workflow_job("completed", number, repo, 11))
    # GitHub redelivers with a new GUID: the same job and attempt, one row, updated.
    again = workflow_job("completed", number, repo, 11, conclusion="success")
    deliver(github, database, "workflow_job", again)
    deliver(github, database, "workflow_job", workflow_job("completed", number, repo, 11, 2))
    deliver(github, database, "check_run", check_run(number, repo, 12))

    repo_id = repos_of(team)["acme/jobs"]["id"]
    with database.read() as session:
        jobs = session.scalars(
            select(CiJob).where(CiJob.repo_id == repo_id).order_by(CiJob.kind, CiJob.run_attempt)
        ).all()
        default_branch = session.get(Repository, repo_id).default_branch  # type: ignore[union-attr]
    assert [(j.kind, j.external_id, j.run_attempt, j.conclusion) for j in jobs] == [
        ("check_run", 12, 1, "success"),
        ("workflow_job", 11, 1, "success"),
        ("workflow_job", 11, 2, "failure"),
    ]
    job = jobs[1]
    assert (job.name, job.workflow_run_id, job.head_sha, job.head_branch) == (
        "tests (3.11)",
        "9001",
        "f" * 40,
        "feature/pay",
    )
    assert (job.completed_at - job.started_at).total_seconds() == 210  # type: ignore[operator]
    assert jobs[0].head_branch == "main"
    assert jobs[0].workflow_run_id is None
    assert default_branch == "trunk"


def test_a_pull_request_naming_a_test_is_handed_to_fix_tracking(github, database, team):
    name = f"acme/fixes-{new_id()}"
    assert upload(team.client, junit({"test_pay": ["fail", "pass"]}), repo=name).status_code == 201
    repo_id = repos_of(team)[name]["id"]
    tests = team.client.get(f"/api/repos/{repo_id}").json()["tests"]
    number = new_id()
    repo = repository(name, number + 1, default_branch="main")
    payload = pull_request(number, repo, 17, f"Retries the mock.\n\nFixes-test: {tests[0]['id']}")
    deliver(github, database, "pull_request", payload)
    with database.read() as session:
        attempts = session.scalars(select(FixAttempt).where(FixAttempt.repo_id == repo_id)).all()
    assert [(a.test_id, a.pr_number, a.status, a.source) for a in attempts] == [
        (tests[0]["id"], 17, "pending", "pull_request")
    ]


def test_bad_requests_are_refused_and_store_nothing(github, database):
    payload = installation("created", new_id(), [])
    body = json.dumps(payload).encode()
    before = delivery_count(database)

    unsigned = send(github, "installation", payload, headers={"X-Hub-Signature-256": None})
    tampered = bytearray(body)
    tampered[10] ^= 1
    changed = send(
        github,
        "installation",
        None,
        body=bytes(tampered),
        headers={"X-Hub-Signature-256": signature(body)},
    )
    wrong = send(
        github, "installation", payload, headers={"X-Hub-Signature-256": signature(body, "guess")}
    )
    sha1 = send(
        github,
        "installation",
        payload,
        headers={"X-Hub-Signature-256": signature(body).replace("sha256=", "sha1=")},
    )
    for refused in (unsigned, changed, wrong, sha1):
        assert refused.status_code == 401, refused.text
        assert refused.json()["code"] == "INVALID_WEBHOOK_SIGNATURE"
        assert set(refused.json()) == {"error", "code", "message", "details"}

    no_event = send(github, "installation", payload, headers={"X-GitHub-Event": None})
    no_guid = send(github, "installation", payload, headers={"X-GitHub-Delivery": None})
    long_guid = send(github, "installation", payload, guid="x" * 65)
    for refused, code in (
        (no_event, "MISSING_FIELD"),
        (no_guid, "MISSING_FIELD"),
        (long_guid, "INVALID_FIELD"),
    ):
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == code
    assert no_event.json()["details"]["field"] == "X-GitHub-Event"

    for malformed in (b'{"action": "created",', b"[1, 2]", b"\xff\xfe{}", b""):
        response = send(github, "installation", None, body=malformed)
        assert response.status_code == 400, malformed
        assert response.json()["code"] == "INVALID_JSON"
    assert delivery_count(database) == before


def test_a_replayed_delivery_is_answered_but_processed_once(github, database, team):
    number = new_id()
    repo = repository("acme/replayed", number + 1)
    deliver(github, database, "installation", installation("created", number, []))
    added = installation_repositories("added", number, [repo], [])
    guid = deliver(github, database, "installation_repositories", added)
    deliver(
        github,
        database,
        "installation_repositories",
        installation_repositories("removed", number, [], [repo]),
    )
    replay = send(github, "installation_repositories", added, guid=guid)
    assert replay.status_code == 202
    assert replay.json() == {
        "delivery": guid,
        "event": "installation_repositories",
        "duplicate": True,
    }
    time.sleep(0.3)  # what a second processing would take, had it been queued
    # Processed again, it would have linked the repository anew.
    assert repos_of(team)["acme/replayed"]["installed_at"] is None
    assert stored(database, guid).attempts == 1


def test_ping_and_unknown_events_are_stored_as_processed(github, database):
    for event in ("ping", "star", "deployment_status"):
        response = send(github, event, {"zen": "Keep it logically awesome.", "hook_id": 1})
        assert response.status_code == 202
        assert response.json()["duplicate"] is False
        delivery = stored(database, response.json()["delivery"])
        assert delivery.processed_at is not None
        assert (delivery.attempts, delivery.error) == (0, None)


def test_an_unusable_payload_is_recorded_not_retried(github, database):
    broken = workflow_job("completed", new_id(), {"id": 5, "name": "no full name"}, 1)
    response = send(github, "workflow_job", broken)
    guid = response.json()["delivery"]
    delivery = eventually(
        lambda: (d := stored(database, guid)).processed_at is not None and d, "recorded"
    )
    assert delivery.attempts == 1
    assert delivery.error == "the repository lacks its id or full_name"


def test_a_failing_delivery_waits_before_its_next_try(github, database, team, monkeypatch):
    def fail(*args: Any) -> None:
        raise RuntimeError("GitHub said 502")

    monkeypatch.setattr(service, "_record_job", fail)
    number = new_id()
    repo = repository("acme/later", number + 1)
    response = send(github, "workflow_job", workflow_job("completed", number, repo, 3))
    guid = response.json()["delivery"]
    first = eventually(lambda: (d := stored(database, guid)).attempts == 1 and d, "a first try")
    assert first.next_attempt_at is not None
    wait = (first.next_attempt_at - first.received_at).total_seconds()
    assert tasks.RETRY_SECONDS <= wait < tasks.RETRY_SECONDS + 5, wait
    time.sleep(1.5)  # a poll later: not tried again yet
    assert stored(database, guid).attempts == 1
    assert [tasks.retry_delay(n) for n in (1, 2, 3, 4)] == [10, 30, 90, 270]


def test_a_failing_delivery_is_retried_up_to_the_cap(github, database, team, monkeypatch):
    def fail(*args: Any) -> None:
        raise RuntimeError("the database said no")

    monkeypatch.setattr(service, "_record_job", fail)
    monkeypatch.setattr(tasks, "RETRY_SECONDS", 0.05)  # waits of 0.05, 0.15, 0.45, 1.35 s
    number = new_id()
    repo = repository("acme/failing", number + 1)
    response = send(github, "workflow_job", workflow_job("completed", number, repo, 31))
    guid = response.json()["delivery"]
    delivery = eventually(lambda: (d := stored(database, guid)).attempts == 5 and d, "5 tries")
    time.sleep(1.5)  # a poll later: no sixth try
    delivery = stored(database, guid)
    assert (delivery.attempts, delivery.processed_at) == (5, None)
    assert delivery.error == "RuntimeError: the database said no"
    # What the failed tries did (the repository linked) was undone each time.
    assert "acme/failing" not in repos_of(team)


def test_the_webhook_needs_no_key_and_is_off_without_a_secret(anonymous):
    """The suite's shared server has no webhook secret: 404, in the shared error body."""
    response = send(anonymous, "ping", {"zen": "x"})
    assert response.status_code == 404
    assert response.json()["code"] == "GITHUB_APP_DISABLED"
    assert set(response.json()) == {"error", "code", "message", "details"}


def test_secrets_never_appear_in_logs_or_answers(github, database, caplog):
    caplog.set_level(logging.DEBUG)
    payload = installation("created", new_id(), [])
    answers = [
        send(github, "installation", payload),
        send(github, "installation", payload, headers={"X-Hub-Signature-256": "sha256=00"}),
        send(github, "installation", None, body=b"not json"),
        send(github, "ping", {"hook": {"config": {"secret": "********"}}}),
    ]
    time.sleep(0.5)
    for answer in answers:
        assert SECRET not in answer.text
        assert signature(json.dumps(payload).encode()) not in answer.text
    assert SECRET not in caplog.text


# Tenants chosen, or not


def test_the_only_tenant_gets_the_installation(tmp_path):
    with github_server(tmp_path) as (database, server):
        tenant = named_tenant(database, server, "solo")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            repo = repository("solo/app", 5)
            deliver(client, database, "installation", installation("created", 77, [repo]))
        assert repos_of(tenant)["solo/app"]["installed_at"] is not None
        assert repos_of(tenant)["solo/app"]["github_url"] == "https://github.com/solo/app"
        tenant.client.close()


def test_an_installation_no_tenant_is_chosen_for_waits_for_a_link(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="testlens.server.github")
    with github_server(tmp_path) as (database, server):
        first = named_tenant(database, server, "first")
        second = named_tenant(database, server, "second")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            repo = repository("acme/orphan", 8, default_branch="main")
            deliver(client, database, "installation", installation("created", 88, [repo]))
            deliver(client, database, "workflow_job", workflow_job("completed", 88, repo, 41))
        warnings = [r for r in caplog.records if "testlens github link 88" in r.getMessage()]
        assert len(warnings) == 1  # once, though two deliveries came
        assert repos_of(first) == repos_of(second) == {}
        with database.read() as session:
            assert session.get(GithubInstallation, 88).tenant_id is None  # type: ignore[union-attr]

        monkeypatch.setenv("TESTLENS_DATABASE_URL", f"sqlite:///{tmp_path / 'github.db'}")
        monkeypatch.setenv("TESTLENS_DATA_DIR", str(tmp_path))
        runner = CliRunner()
        listed = runner.invoke(cli.github, ["list"])
        assert "88  acme  (no tenant)  installed  linked repositories: 0" in listed.output
        linked = runner.invoke(cli.github, ["link", "88", "second"])
        assert linked.exit_code == 0, linked.output
        assert "acme/orphan" in linked.output
        assert repos_of(second)["acme/orphan"]["installed_at"] is not None
        assert repos_of(first) == {}
        assert (
            "88  acme  second  installed  linked repositories: 1"
            in runner.invoke(cli.github, ["list"]).output
        )

        unknown = runner.invoke(cli.github, ["link", "99", "second"])
        assert unknown.exit_code != 0
        assert "no delivery from GitHub installation 99" in unknown.output
        nobody = runner.invoke(cli.github, ["link", "88", "nobody"])
        assert nobody.exit_code != 0
        assert "no tenant is named 'nobody'" in nobody.output
        first.client.close()
        second.client.close()
