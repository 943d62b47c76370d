"""Failure signatures stored at ingest and root causes computed in the background, read
back through ``GET /api/tests/{id}`` and ``GET /api/repos/{id}`` of the real app."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from html import escape

from builders import LiveServer, make_tenant, upload
from fake_llm import FakeLLM

from testlens.core.rootcause import CATEGORIES
from testlens.server.app import create_app


def report(cases: list[tuple[str, str, str]], file: str = "tests/test_net.py") -> bytes:
    """A pytest JUnit report: (test name, message of its failure or "" for a pass, traceback)."""
    module = file.removesuffix(".py").replace("/", ".")
    parts = ['<testsuites><testsuite name="pytest">']
    for name, message, trace in cases:
        attrs = f'classname="{module}" name="{name}" file="{file}" time="0.3"'
        child = f'<failure message="{escape(message)}">{escape(trace)}</failure>' if message else ""
        parts.append(f"<testcase {attrs}>{child}</testcase>")
    parts.append("</testsuite></testsuites>")
    return "".join(parts).encode()


def refused(port: int, tmp: str) -> tuple[str, str]:
    message = f"ConnectionRefusedError: [Errno 111] Connection refused: 127.0.0.1:{port}"
    trace = (
        "Traceback (most recent call last):\n"
        '  File "tests/test_net.py", line 12, in test_fetch\n'
        "    client.get(url)\n"
        f'  File "{tmp}/app/client.py", line 40, in get\n'
        "    sock.connect(address)\n"
        f"{message}"
    )
    return message, trace


def find_test_id(client, repo: str, name: str) -> str:
    found = client.get("/api/repos").json()["repos"]
    repo_id = next(r["id"] for r in found if r["name"] == repo)
    tests = client.get(f"/api/repos/{repo_id}").json()["tests"]
    return next(t["id"] for t in tests if t["name"] == name)


def analysed(client, test_id: str, seconds: float = 20.0) -> dict:
    """The test's detail once the background analysis has looked at its latest failures."""
    deadline = time.monotonic() + seconds
    while True:
        body = client.get(f"/api/tests/{test_id}").json()
        if body["last_analyzed_at"] is not None or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_failures_get_one_signature_per_way_of_failing_with_counts(tenant):
    repo = f"acme/net-{uuid.uuid4().hex[:6]}"
    runs = [
        refused(41234, "/tmp/pytest-of-ci/pytest-7"),
        refused(55001, "/tmp/pytest-of-ci/pytest-9"),
        ("", ""),
        ("AssertionError: assert 3 == 4", "tests/test_net.py:20: AssertionError"),
        refused(60123, "/tmp/pytest-of-ci/pytest-12"),
    ]
    for number, (message, trace) in enumerate(runs):
        body = report([("test_fetch", message, trace), ("test_ok", "", "")])
        answer = upload(tenant.client, body, repo=repo, commit=f"{number:040d}")
        assert answer.status_code == 201, answer.text
    test_id = find_test_id(tenant.client, repo, "test_fetch")
    detail = analysed(tenant.client, test_id)
    shapes = [(s["error_type"], s["count"]) for s in detail["signatures"]]
    assert shapes == [("ConnectionRefusedError", 3), ("AssertionError", 1)], detail["signatures"]
    network = detail["signatures"][0]
    assert "41234" not in network["message"] and "60123" not in network["message"]
    assert network["frames"] and all(":" in frame for frame in network["frames"])
    assert network["first_seen"] < network["last_seen"]
    assert detail["last_analyzed_at"] is not None
    assert detail["root_cause_category"] in CATEGORIES
    assert detail["ai_model_used"] is None
    ok = analysed(tenant.client, find_test_id(tenant.client, repo, "test_ok"), seconds=0)
    assert ok["signatures"] == [] and ok["root_cause_category"] is None


def test_a_test_that_fails_only_on_one_os_is_environment_specific(tenant):
    repo = f"acme/env-{uuid.uuid4().hex[:6]}"
    message = "AssertionError: assert 'build\\\\out' == 'build/out'"
    for number in range(8):
        for os_name, failing in (("windows", True), ("linux", False)):
            cases = [("test_paths", message if failing else "", "tests/test_net.py:9")]
            answer = upload(
                tenant.client,
                report(cases),
                repo=repo,
                commit=f"{number:040d}",
                environment=f"{os_name}-py3.12",
            )
            assert answer.status_code == 201, answer.text
    detail = analysed(tenant.client, find_test_id(tenant.client, repo, "test_paths"))
    assert detail["root_cause_category"] == "environment_specific", detail
    assert detail["root_cause_confidence"] >= 0.6
    assert "windows" in detail["root_cause_explanation"]
    repo_id = detail["repo"]["id"]
    listed = tenant.client.get(f"/api/repos/{repo_id}").json()["tests"]
    assert listed[0]["root_cause_category"] == "environment_specific"
    assert listed[0]["last_analyzed_at"] == detail["last_analyzed_at"]
    assert listed[0]["ai_model_used"] is None


def test_tests_that_fail_together_are_reported_as_one_cluster(tenant):
    repo = f"acme/cluster-{uuid.uuid4().hex[:6]}"
    names = [f"test_db_{n}" for n in range(5)]
    message = "OperationalError: could not connect to server: Connection timed out"
    for number in range(6):
        failing = number % 2 == 0
        cases = [(name, message if failing else "", "tests/test_net.py:3") for name in names]
        answer = upload(tenant.client, report(cases), repo=repo, commit=f"{number:040d}")
        assert answer.status_code == 201, answer.text
    detail = analysed(tenant.client, find_test_id(tenant.client, repo, "test_db_0"))
    explanation = detail["root_cause_explanation"]
    assert sum(name in explanation for name in names[1:]) >= 1 or "4 other" in explanation, detail


def test_another_tenants_test_is_not_found(tenant, database, server):
    other_tenant = make_tenant(database, server)
    repo = f"acme/private-{uuid.uuid4().hex[:6]}"
    message, trace = refused(1234, "/tmp/x")
    assert (
        upload(tenant.client, report([("test_fetch", message, trace)]), repo=repo).status_code
        == 201
    )
    test_id = find_test_id(tenant.client, repo, "test_fetch")
    answer = other_tenant.client.get(f"/api/tests/{test_id}")
    assert answer.status_code == 404 and answer.json()["code"] == "NOT_FOUND"


def test_a_configured_model_writes_the_explanation_and_is_named(settings, tmp_path):
    leaked = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    reply = "It fails when the payment service refuses connections on the CI network."
    with FakeLLM(reply) as model:
        # A database of its own: the session's server would analyse the test without a model.
        configured = replace(
            settings,
            database_url=f"sqlite:///{tmp_path / 'llm.db'}",
            llm_base_url=model.url,
            llm_model="flake-explainer-1",
        )
        app = create_app(configured)
        live = LiveServer(app).start()
        try:
            tenant = make_tenant(app.state.database, live)
            repo = f"acme/llm-{uuid.uuid4().hex[:6]}"
            message, trace = refused(5432, "/tmp/x")
            for number, failing in enumerate([True, False, True]):
                cases = [("test_fetch", f"{message} token={leaked}" if failing else "", trace)]
                answer = upload(tenant.client, report(cases), repo=repo, commit=f"{number:040d}")
                assert answer.status_code == 201, answer.text
            detail = analysed(tenant.client, find_test_id(tenant.client, repo, "test_fetch"))
        finally:
            live.stop()
    assert detail["root_cause_explanation"] == reply
    assert detail["ai_model_used"] == "flake-explainer-1"
    assert detail["root_cause_category"] in CATEGORIES
    assert model.requests and all(leaked not in r.body.decode() for r in model.requests)
