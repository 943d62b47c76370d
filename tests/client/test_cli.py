"""The ``testlens`` command against the real server and real reports."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from builders import RERUN_XML, corpus_file, free_port, ingest_history, stored
from click.testing import CliRunner

from testlens.cli import main
from testlens.client import ci_env
from testlens.client.http import Client, ServerError

GITHUB_ENV = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "acme/api",
    "GITHUB_REF_NAME": "12/merge",
    "GITHUB_HEAD_REF": "feature/login",
    "GITHUB_SHA": "f" * 40,
    "GITHUB_RUN_ID": "991",
    "GITHUB_REF": "refs/pull/12/merge",
    "GITHUB_JOB": "unit-tests",
}


def run(args, env=None):
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return result


def test_parse_prints_normalized_json():
    path = corpus_file("action-junit-report", "test_results", "python", "report.xml")
    result = run(["parse", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["format"] == "junit"
    assert set(document["summary"]) == {
        "tests",
        "passed",
        "failed",
        "errors",
        "skipped",
        "flaky",
        "attempts",
        "duration_ms",
    }
    assert document["summary"]["tests"] == len(document["tests"]) > 0
    first = document["tests"][0]
    assert set(first) == {"file", "suite", "classname", "name", "status", "duration_ms", "attempts"}


def test_parse_reports_errors_readably(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<testsuite><testcase")
    result = CliRunner().invoke(main, ["parse", str(bad)])
    assert result.exit_code == 1
    assert "invalid XML" in result.output


def test_upload_takes_defaults_from_github_actions(tenant, database, server, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "unit.xml").write_bytes(RERUN_XML)
    (tmp_path / "reports" / "notes.txt").write_text("not a report")
    env = {**GITHUB_ENV, "TESTLENS_SERVER": server.url, "TESTLENS_TOKEN": tenant.key}
    result = run(["upload", str(tmp_path / "reports")], env=env)
    assert result.exit_code == 0, result.output
    assert "3 tests, 1 flaky" in result.output
    run_id = result.output.strip().rsplit(" ", 1)[-1]
    stored_run = tenant.client.get(f"/api/runs/{run_id}").json()["run"]
    assert stored_run["repo"] == "acme/api"
    assert stored_run["branch"] == "feature/login"
    assert stored_run["commit"] == "f" * 40
    assert stored_run["workflow_run_id"] == "991"
    assert stored_run["pr_number"] == 12
    assert stored_run["provider"] == "github"
    assert stored_run["framework"] == "junit"  # detected from the report


def test_upload_globs_and_large_files_gzip(tenant, database, server, tmp_path):
    big = corpus_file(
        "test-reporter", "__tests__", "fixtures", "external", "jest", "jest-test-results.xml"
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big.xml").write_bytes(big.read_bytes())
    (tmp_path / "a" / "small.xml").write_bytes(RERUN_XML)
    result = run(
        [
            "upload",
            str(tmp_path / "**" / "*.xml"),
            "--repo",
            "acme/web",
            "--framework",
            "jest",
            "--server",
            server.url,
            "--token",
            tenant.key,
        ]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count(" run ") == 2
    assert stored(database, tenant.name)["runs"] == 2


def test_upload_exits_nonzero_with_server_message(server, tmp_path):
    path = tmp_path / "r.xml"
    path.write_bytes(RERUN_XML)
    result = CliRunner().invoke(
        main,
        [
            "upload",
            str(path),
            "--repo",
            "acme/web",
            "--server",
            server.url,
            "--token",
            "tl_sk_wrong",
        ],
    )
    assert result.exit_code == 1
    assert "401 INVALID_API_KEY: Invalid or revoked API key" in result.output


def test_upload_requires_repo_outside_ci(tmp_path):
    path = tmp_path / "r.xml"
    path.write_bytes(RERUN_XML)
    result = CliRunner().invoke(main, ["upload", str(path)], env={"GITHUB_ACTIONS": ""})
    assert result.exit_code == 2
    assert "--repo is required" in result.output


class FlakyServer:
    """Loopback server answering from a script of (status, headers) before succeeding."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests += 1
                status, headers = outer.script.pop(0) if outer.script else (201, {})
                body = json.dumps(
                    {"success": True, "tests_processed": 1, "flaky_detected": 0, "run_id": "r1"}
                    if status == 201
                    else {"error": "x", "code": "BUSY", "message": "try later", "details": {}}
                ).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


def test_client_retries_429_and_5xx_honouring_retry_after():
    flaky = FlakyServer([(503, {}), (429, {"Retry-After": "7"}), (502, {})])
    slept: list[float] = []
    with Client(flaky.url, "k", sleep=slept.append, backoff=0.5) as client:
        response = client.request(
            "POST",
            "/api/test-results",
            content_factory=lambda: {"files": {"file": ("r.xml", b"<x/>")}},
        )
    flaky.httpd.shutdown()
    assert response.status_code == 201
    assert flaky.requests == 4
    assert slept[1] == 7.0  # Retry-After wins over backoff
    # Jittered exponential backoff: base 0.5 s doubling per try, jitter in [50%, 100%].
    assert 0.25 <= slept[0] <= 0.5 and 1.0 <= slept[2] <= 2.0


def test_client_gives_up_after_bounded_attempts():
    flaky = FlakyServer([(503, {})] * 10)
    client = Client(flaky.url, "k", attempts=3, sleep=lambda _s: None)
    with client, pytest.raises(ServerError) as raised:
        client.request("POST", "/x", content=b"")
    flaky.httpd.shutdown()
    assert flaky.requests == 3
    assert raised.value.status == 503
    assert raised.value.message == "try later"


def test_keys_create_list_revoke(settings, server):
    env = {"TESTLENS_DATABASE_URL": settings.database_url}
    created = CliRunner().invoke(
        main,
        ["keys", "create", "--tenant", "cli-team", "--scopes", "read", "--name", "laptop"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("tl_sk_") and len(secret) > 40
    listed = run(["keys", "list"], env=env)
    line = next(line for line in listed.output.splitlines() if "cli-team" in line)
    assert secret not in listed.output  # secrets are never shown again
    assert "read" in line and "active" in line and "laptop" in line
    key_id = line.split()[0]
    revoked = run(["keys", "revoke", key_id], env=env)
    assert revoked.exit_code == 0
    assert "revoked" in run(["keys", "list"], env=env).output.split(key_id, 1)[1].splitlines()[0]
    bad = CliRunner().invoke(main, ["keys", "create", "--tenant", "x", "--scopes", "root"], env=env)
    assert bad.exit_code == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            GITHUB_ENV,
            ci_env.CiContext(
                "github", "acme/api", "feature/login", "f" * 40, "991", "12", "unit-tests"
            ),
        ),
        (
            {
                "GITLAB_CI": "true",
                "CI_PROJECT_PATH": "grp/proj",
                "CI_COMMIT_REF_NAME": "main",
                "CI_COMMIT_SHA": "abc",
                "CI_PIPELINE_ID": "5",
                "CI_JOB_NAME": "test",
            },
            ci_env.CiContext("gitlab", "grp/proj", "main", "abc", "5", None, "test"),
        ),
        (
            {
                "CIRCLECI": "true",
                "CIRCLE_PROJECT_USERNAME": "o",
                "CIRCLE_PROJECT_REPONAME": "r",
                "CIRCLE_BRANCH": "dev",
                "CIRCLE_SHA1": "def",
                "CIRCLE_WORKFLOW_ID": "w",
                "CIRCLE_PULL_REQUEST": "https://github.com/o/r/pull/9",
                "CIRCLE_JOB": "build",
            },
            ci_env.CiContext("circleci", "o/r", "dev", "def", "w", "9", "build"),
        ),
        (
            {
                "BUILDKITE": "true",
                "BUILDKITE_REPO": "git@github.com:org/app.git",
                "BUILDKITE_BRANCH": "main",
                "BUILDKITE_COMMIT": "123",
                "BUILDKITE_BUILD_ID": "b1",
                "BUILDKITE_PULL_REQUEST": "false",
                "BUILDKITE_LABEL": ":pytest:",
            },
            ci_env.CiContext("buildkite", "org/app", "main", "123", "b1", None, ":pytest:"),
        ),
        (
            {
                "JENKINS_URL": "http://ci",
                "GIT_URL": "https://github.com/org/svc.git",
                "GIT_BRANCH": "origin/release",
                "GIT_COMMIT": "456",
                "BUILD_TAG": "jenkins-svc-3",
                "JOB_NAME": "svc",
            },
            ci_env.CiContext("jenkins", "org/svc", "release", "456", "jenkins-svc-3", None, "svc"),
        ),
        ({}, ci_env.CiContext()),
    ],
)
def test_ci_environment_detection(env, expected):
    assert ci_env.detect(env) == expected


def test_flaky_lists_the_feed_as_a_table_and_as_json(tenant, server):
    ingest_history(tenant.client, repo="acme/cli")
    env = {"TESTLENS_SERVER": server.url, "TESTLENS_TOKEN": tenant.key}
    table = run(["flaky", "--repo", "acme/cli"], env=env)
    assert table.exit_code == 0, table.output
    assert "test_pay" in table.output
    assert "tests.test_shop.TestShop" in table.output
    assert "test_login" not in table.output  # broken, not flaky
    as_json = json.loads(run(["flaky", "--repo", "acme/cli", "--json"], env=env).output)
    assert [c["name"] for c in as_json["test_cases"]] == ["test_pay"]
    assert as_json["test_cases"][0]["last_24_hours_count"] == 1
    missing = CliRunner().invoke(main, ["flaky", "--repo", "acme/none"], env=env)
    assert missing.exit_code == 1
    assert "404 NOT_FOUND" in missing.output
