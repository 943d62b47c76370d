"""POST /api/test-results end to end: real reports, real server, real database."""

from __future__ import annotations

import gzip

import pytest
from builders import RERUN_XML, corpus_file, junit, make_tenant, stored, upload
from sqlalchemy import select

from testlens.server.models import TestCase, TestResult


def test_upload_stores_run_tests_and_every_attempt(tenant, database):
    response = upload(
        tenant.client,
        RERUN_XML,
        branch="main",
        commit="a" * 40,
        workflow_run_id="77",
        pr_number="12",
        environment="linux",
        check_name="unit",
        provider="github",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {
        "success": True,
        "tests_processed": 3,
        "flaky_detected": 1,
        "run_id": body["run_id"],
    }
    assert stored(database, tenant.name) == {"runs": 1, "tests": 3, "results": 4}

    run = tenant.client.get(f"/api/runs/{body['run_id']}").json()["run"]
    assert run["repo"] == "acme/shop"
    assert run["commit"] == "a" * 40
    assert run["pr_number"] == 12
    assert run["format"] == "junit"
    assert run["summary"] == {
        "tests": 3,
        "passed": 1,
        "failed": 0,
        "errors": 0,
        "skipped": 1,
        "flaky": 1,
        "attempts": 4,
        "duration_ms": 3250.0,
    }
    with database.transaction() as session:
        attempts = session.execute(
            select(TestResult.attempt, TestResult.status, TestResult.error_message)
            .join(TestCase, TestCase.id == TestResult.test_id)
            .where(TestResult.run_id == body["run_id"], TestCase.name == "test_pay")
            .order_by(TestResult.attempt)
        ).all()
    assert [tuple(a) for a in attempts] == [
        (0, "failed", "timeout talking to stripe"),
        (1, "passed", None),
    ]


def test_same_report_twice_counts_once(tenant, database):
    first = upload(tenant.client, RERUN_XML, commit="b" * 40, workflow_run_id="1")
    again = upload(tenant.client, gzip.compress(RERUN_XML), commit="b" * 40, workflow_run_id="1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["testlens-duplicate"] == "true"
    assert stored(database, tenant.name)["runs"] == 1
    # Another workflow run of the same commit is a new run (a rerun is evidence).
    other = upload(tenant.client, RERUN_XML, commit="b" * 40, workflow_run_id="2")
    assert other.json()["run_id"] != first.json()["run_id"]
    assert stored(database, tenant.name) == {"runs": 2, "tests": 3, "results": 8}


def test_test_identity_is_stable_across_runs(tenant, database):
    upload(tenant.client, RERUN_XML, commit="1" * 40)
    upload(tenant.client, RERUN_XML.replace(b'time="0.5"', b'time="0.7"'), commit="2" * 40)
    assert stored(database, tenant.name) == {"runs": 2, "tests": 3, "results": 8}


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"repo": ""}, "repo", "MISSING_FIELD"),
        ({"framework": ""}, "framework", "MISSING_FIELD"),
        ({"repo": "not-a-slug"}, "repo", "INVALID_FIELD"),
        ({"repo": "a/b/c"}, "repo", "INVALID_FIELD"),
        ({"pr_number": "twelve"}, "pr_number", "INVALID_FIELD"),
        ({"format": "cobol"}, "format", "INVALID_FIELD"),
        ({"branch": "x" * 301}, "branch", "INVALID_FIELD"),
        # root: an absolute path (of either system) in printable text, at most 1,000 long.
        ({"root": "home/runner/work/shop"}, "root", "INVALID_FIELD"),
        ({"root": "~/project"}, "root", "INVALID_FIELD"),
        ({"root": "C:work"}, "root", "INVALID_FIELD"),
        ({"root": "/home/runner\n/work"}, "root", "INVALID_FIELD"),
        ({"root": "/home/\x00runner"}, "root", "INVALID_FIELD"),
        ({"root": "/" + "x" * 1000}, "root", "INVALID_FIELD"),
    ],
)
def test_invalid_fields_get_400_with_shared_body(tenant, database, fields, field, code):
    response = upload(tenant.client, RERUN_XML, **fields)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error", "code", "message", "details"}
    assert body["error"] == "Bad Request"
    assert body["code"] == code
    assert body["details"]["field"] == field
    assert stored(database, tenant.name)["runs"] == 0


@pytest.mark.parametrize("root", ["/home/runner/work/shop/shop/", "D:\\a\\shop\\shop", "c:/src"])
def test_a_root_of_either_system_is_taken(tenant, root):
    response = upload(tenant.client, RERUN_XML, root=root)
    assert response.status_code == 201, response.text


def test_missing_repo_message_matches_dialect(tenant):
    response = tenant.client.post(
        "/api/test-results", files={"file": ("r.xml", RERUN_XML)}, data={"framework": "jest"}
    )
    assert response.json() == {
        "error": "Bad Request",
        "code": "MISSING_FIELD",
        "message": "Missing required field: repo",
        "details": {"field": "repo", "expected": "string in format 'owner/repo'"},
    }


def test_missing_file_and_wrong_content_type(tenant):
    no_file = tenant.client.post("/api/test-results", data={"repo": "a/b", "framework": "x"})
    assert no_file.status_code == 400
    assert no_file.json()["details"]["field"] == "file"
    raw = tenant.client.post(
        "/api/test-results", content=RERUN_XML, headers={"content-type": "application/xml"}
    )
    assert raw.status_code == 415
    assert raw.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_unparseable_report_is_422_with_reason(tenant, database):
    response = upload(tenant.client, b'{"hello": "world"}', filename="r.json")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "UNPARSEABLE_REPORT"
    assert "unrecognised JSON report" in body["message"]
    assert stored(database, tenant.name)["runs"] == 0


def test_a_report_read_by_recovery_is_stored_and_marked_as_recovered(tenant):
    well_formed = (
        b'<testsuites><testsuite name="shop"><testcase classname="t.Cart" name="adds"/>'
        b'<testcase classname="t.Cart" name="pays"><failure message="a &amp; b">x &lt; y'
        b"</failure></testcase></testsuite></testsuites>"
    )
    # An unescaped & and <, and the closing </testsuites> never written.
    damaged = well_formed.replace(b"&amp;", b"&").replace(b"&lt;", b"<")[: -len("</testsuites>")]
    runs = {}
    for name, report in (("damaged", damaged), ("well-formed", well_formed)):
        response = upload(tenant.client, report, repo=f"acme/{name}")
        assert response.status_code == 201, response.text
        assert response.json()["tests_processed"] == 2
        runs[name] = tenant.client.get(f"/api/runs/{response.json()['run_id']}").json()["run"]
    assert runs["damaged"]["recovered"] is True
    assert runs["damaged"]["recovered_reason"]
    assert runs["damaged"]["summary"] == runs["well-formed"]["summary"]
    assert (runs["well-formed"]["recovered"], runs["well-formed"]["recovered_reason"]) == (
        False,
        None,
    )


def test_auth_is_required_and_checked(anonymous, tenant, database, server):
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/readyz").status_code == 200
    missing = upload(anonymous, RERUN_XML)
    assert missing.status_code == 401
    assert missing.json()["code"] == "UNAUTHORIZED"
    wrong = anonymous.post(
        "/api/test-results",
        headers={"Authorization": "Bearer tl_sk_not-a-key"},
        files={"file": ("r.xml", RERUN_XML)},
        data={"repo": "a/b", "framework": "x"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "INVALID_API_KEY"
    other_tenant = tenant.client.post(
        "/api/test-results",
        headers={"X-Tenant-ID": "someone-else"},
        files={"file": ("r.xml", RERUN_XML)},
        data={"repo": "a/b", "framework": "x"},
    )
    assert other_tenant.status_code == 403
    assert other_tenant.json()["code"] == "INVALID_TENANT"
    own = upload(
        tenant.client.__class__(
            base_url=server.url, headers={**tenant.headers, "X-Tenant-ID": tenant.name}
        ),
        RERUN_XML,
    )
    assert own.status_code == 201
    read_only = make_tenant(database, server, scopes=("read",))
    denied = upload(read_only.client, RERUN_XML)
    assert denied.status_code == 403
    assert denied.json()["code"] == "INSUFFICIENT_SCOPE"


def test_revoked_key_is_refused(tenant, database):
    from testlens.server.auth import revoke
    from testlens.server.models import ApiKey

    assert upload(tenant.client, RERUN_XML).status_code == 201
    with database.transaction() as session:
        revoke(session.get(ApiKey, tenant.key_id))
    assert upload(tenant.client, RERUN_XML, commit="c" * 40).status_code == 401


def test_tenants_never_see_each_other(tenant, database, server):
    run_id = upload(tenant.client, RERUN_XML).json()["run_id"]
    intruder = make_tenant(database, server)
    response = intruder.client.get(f"/api/runs/{run_id}")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    # The same repository name in another tenant is another repository.
    upload(intruder.client, RERUN_XML)
    assert stored(database, tenant.name) == {"runs": 1, "tests": 3, "results": 4}
    assert stored(database, intruder.name) == {"runs": 1, "tests": 3, "results": 4}


def test_every_corpus_family_ingests(tenant):
    for parts in [
        ("test-reporter", "__tests__", "fixtures", "external", "jest", "jest-test-results.xml"),
        ("test-reporter", "__tests__", "fixtures", "dotnet-trx.trx"),
        ("test-reporter", "__tests__", "fixtures", "external", "mocha", "mocha-test-results.json"),
        ("test-reporter", "__tests__", "fixtures", "golang-json.json"),
        ("ctrf", "examples", "with-retries.json"),
    ]:
        path = corpus_file(*parts)
        response = upload(tenant.client, path.read_bytes(), filename=path.name)
        assert response.status_code == 201, (path, response.text)
        assert response.json()["tests_processed"] > 0


def test_unknown_path_uses_shared_error_body(tenant):
    response = tenant.client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"


def test_unexpected_errors_are_500_with_a_request_id_and_no_internals(tenant, monkeypatch):
    from testlens.server.ingest import service as ingest

    def broken(*_args, **_kwargs):
        raise RuntimeError("database exploded: password=hunter2")

    monkeypatch.setattr(ingest, "store_report", broken)
    response = upload(tenant.client, RERUN_XML, commit="d" * 40)
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "Internal Server Error"
    assert body["code"] == "INTERNAL_ERROR"
    assert body["details"]["request_id"] == response.headers["x-request-id"]
    assert "hunter2" not in response.text and "exploded" not in response.text
    # A request id the client sent is kept, so logs on both sides can be matched.
    again = tenant.client.post(
        "/api/test-results",
        files={"file": ("r.xml", RERUN_XML)},
        data={"repo": "acme/shop", "framework": "pytest"},
        headers={"X-Request-ID": "ci-42"},
    )
    assert again.json()["details"]["request_id"] == "ci-42"


def test_a_report_is_evaluated_and_written_in_chunks_with_the_same_outcome(tenant, monkeypatch):
    from testlens.server.ingest import detection

    def history(repo: str) -> dict[str, tuple]:
        uploads = [
            {**{f"test_{i:02d}": ["pass"] for i in range(20)}, "test_03": ["fail", "pass"]},
            {**{f"test_{i:02d}": ["pass"] for i in range(20)}, "test_07": ["fail"]},
            {
                **{f"test_{i:02d}": ["pass"] for i in range(20)},
                "test_07": ["fail"],
                "new": ["skip"],
            },
        ]
        for n, cases in enumerate(uploads):
            response = upload(tenant.client, junit(cases), repo=repo, commit=f"{n:040x}")
            assert response.status_code == 201, response.text
        repo_id = next(
            r["id"] for r in tenant.client.get("/api/repos").json()["repos"] if r["name"] == repo
        )
        tests = tenant.client.get(f"/api/repos/{repo_id}").json()["tests"]
        return {
            t["name"]: (t["state"], t["flake_score"], t["total_runs"], t["pass_rate"])
            for t in tests
        }

    whole = history("acme/whole")
    monkeypatch.setattr(detection, "CHUNK_TESTS", 3)
    chunked = history("acme/chunked")
    assert chunked == whole
    assert len(whole) == 21
    assert whole["test_03"][0] == "flaky"
    trends = [
        tenant.client.get(
            "/api/v1/analytics/flakiness-trends", params={"project": repo, "days": 1}
        ).json()["data"]
        for repo in ("acme/whole", "acme/chunked")
    ]
    assert trends[0] == trends[1]
    today = trends[0][-1]
    counts = (today["flakyTestCount"], today["testRuns"], today["failedTestRuns"])
    assert counts == (1, 61, 3)
