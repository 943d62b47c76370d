"""The pytest plugin, run in real pytest processes on small projects against the live server."""

from __future__ import annotations

import json
import re

import pytest
from builders import free_port, make_tenant, upload
from sqlalchemy import select

from testlens.server.models import TestCase, TestResult

SAMPLE = {
    "test_cart": """
        def test_add():
            pass

        def test_pay():
            pass

        class TestTotals:
            def test_sum(self):
                pass

            def test_tax(self):
                pass
    """,
    "test_user": """
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_login(n):
            pass
    """,
}
TESTS = [
    "test_cart.py::test_add",
    "test_cart.py::test_pay",
    "test_cart.py::TestTotals::test_sum",
    "test_cart.py::TestTotals::test_tax",
    "test_user.py::test_login[1]",
    "test_user.py::test_login[2]",
]
SECONDS = dict(zip(TESTS, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0], strict=True))
"""21 s over 3 shards: {6, 1}, {5, 2}, {4, 3} is the one split with 7 s on every shard."""

FAILING = {
    "test_broken": """
        def test_broken():
            print("\\x1b[31mcolour and a NUL\\x00 that XML cannot carry")
            assert 1 + 1 == 3, "arithmetic is off"

        def test_fine():
            pass
    """,
}

_PASSED = re.compile(r"^(\S+::\S+) PASSED", re.MULTILINE)
_UPLOADED = re.compile(
    r"testlens: uploaded (\d+) tests \((\d+) attempts, (\d+) flaky\) as run (\S+)"
)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", *args, timeout=120)


def remote(server, tenant, repo: str = "acme/plugin") -> list[str]:
    return [
        "--testlens",
        "--testlens-server",
        server.url,
        "--testlens-token",
        tenant.key,
        "--testlens-repo",
        repo,
    ]


def passed(result: pytest.RunResult) -> list[str]:
    return _PASSED.findall(result.stdout.str())


def uploaded_run(result: pytest.RunResult, tenant) -> dict:
    found = _UPLOADED.search(result.stdout.str())
    assert found, result.stdout.str()
    return tenant.client.get(f"/api/runs/{found.group(4)}").json()["run"]


def assert_partition(shards: list[list[str]]) -> None:
    flat = [test for shard in shards for test in shard]
    assert sorted(flat) == sorted(TESTS), shards


def test_inert_unless_enabled(project, server, tenant, database):
    project.makepyfile(**SAMPLE)
    result = run(project, *remote(server, tenant)[1:])
    result.assert_outcomes(passed=6)
    assert "testlens:" not in result.stdout.str()
    assert tenant.client.get("/api/repos").json()["repos"] == []
    # Asked to shard while disabled: running every test on every node would be a silent waste.
    refused = run(project, "--testlens-shard", "0/2")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "--testlens-shard needs --testlens" in refused.stderr.str()


@pytest.mark.parametrize("how", ["ini", "environment"])
def test_enabled_by_ini_or_environment(project, server, tenant, monkeypatch, how):
    project.makepyfile(**SAMPLE)
    if how == "ini":
        project.makeini("[pytest]\ntestlens = true\n")
    else:
        monkeypatch.setenv("TESTLENS_PYTEST", "1")
    monkeypatch.setenv("TESTLENS_SERVER", server.url)
    monkeypatch.setenv("TESTLENS_TOKEN", tenant.key)
    result = run(project, "--testlens-repo", "acme/plugin")
    assert uploaded_run(result, tenant)["summary"]["tests"] == 6


def test_shards_from_a_durations_file_partition_and_balance(project):
    project.makepyfile(**SAMPLE)
    (project.path / ".test_durations").write_text(json.dumps(SECONDS))
    shards = []
    for index in range(3):
        result = run(
            project,
            "--testlens",
            "--testlens-no-upload",
            "--testlens-shard",
            f"{index}/3",
            "--testlens-durations",
            ".test_durations",
        )
        result.assert_outcomes(passed=2, deselected=4)
        assert (
            f"testlens: shard {index}/3: 2 of 6 tests (durations file .test_durations)"
            in result.stdout.str()
        )
        shards.append(passed(result))
    assert_partition(shards)
    assert [sum(SECONDS[test] for test in shard) for shard in shards] == [7.0, 7.0, 7.0]


def test_shard_runs_after_keyword_selection(project):
    """Every node splits what -k left, so the shards still cover exactly those tests."""
    project.makepyfile(**SAMPLE)
    shards = [
        passed(
            run(
                project,
                "--testlens",
                "--testlens-no-upload",
                "-k",
                "cart",
                "--testlens-shard",
                f"{index}/2",
            )
        )
        for index in range(2)
    ]
    assert sorted(test for shard in shards for test in shard) == sorted(TESTS[:4])
    assert [len(shard) for shard in shards] == [2, 2]


def history_report() -> bytes:
    cases = "".join(
        f'<testcase file="{file}" classname="{classname}" name="{name}" time="{SECONDS[test]}"/>'
        for test in TESTS
        for file, classname, name in [_identity(test)]
    )
    return f'<?xml version="1.0"?><testsuites><testsuite>{cases}</testsuite></testsuites>'.encode()


def _identity(nodeid: str) -> tuple[str, str, str]:
    file, *classes, name = nodeid.split("::")
    return file, "::".join(classes), name


def test_shards_from_the_server_plan(project, server, tenant):
    for commit in "123":
        response = upload(
            tenant.client,
            history_report(),
            repo="acme/plugin",
            commit=commit * 40,
            environment="linux",
        )
        assert response.status_code == 201, response.text
    project.makepyfile(**SAMPLE)
    args = [
        *remote(server, tenant),
        "--testlens-environment",
        "linux",
        "--testlens-no-upload",
        "--testlens-plan-key",
        "build-7/unit",
    ]
    first = run(project, *args, "--testlens-shard", "0/3")
    note = re.search(r"server plan (\S+) of CI run build-7/unit\)", first.stdout.str())
    assert note, first.stdout.str()
    plan_id = note.group(1)
    shards = [passed(first)] + [
        passed(run(project, *args, "--testlens-shard", f"{index}/3")) for index in (1, 2)
    ]
    assert_partition(shards)
    assert [sum(SECONDS[test] for test in shard) for shard in shards] == [7.0, 7.0, 7.0]
    plan = tenant.client.get(f"/api/shard-plans/{plan_id}").json()
    assert [sorted(shard) for shard in plan["shards"]] == [sorted(shard) for shard in shards]


def test_server_down_falls_back_with_warnings_and_keeps_the_exit_code(project):
    project.makepyfile(**SAMPLE)
    (project.path / ".test_durations").write_text(json.dumps(SECONDS))
    dead = [
        "--testlens",
        "--testlens-server",
        f"http://127.0.0.1:{free_port()}",
        "--testlens-repo",
        "acme/plugin",
        "--testlens-plan-key",
        "build-8/unit",
    ]
    local = run(
        project,
        "--testlens",
        "--testlens-no-upload",
        "--testlens-shard",
        "0/3",
        "--testlens-durations",
        ".test_durations",
    )
    everything = run(project, *dead, "--testlens-shard", "0/3")
    output = everything.stdout.str()
    assert everything.ret == pytest.ExitCode.OK
    assert (
        "testlens: warning: no shard plan from the server: could not reach http://127.0.0.1"
        in output
    )
    assert "running ALL 6 tests on this node" in output
    everything.assert_outcomes(passed=6)
    assert "testlens: warning: results not uploaded: could not reach http://127.0.0.1" in output
    fallback = run(
        project,
        *dead,
        "--testlens-shard",
        "0/3",
        "--testlens-durations",
        ".test_durations",
        "--testlens-fallback",
        "split",
        "--testlens-no-upload",
    )
    assert "splitting by durations file .test_durations instead" in fallback.stdout.str()
    assert passed(fallback) == passed(local)
    counted = run(
        project, *dead, "--testlens-shard", "1/3", "--testlens-no-upload",
        "--testlens-fallback", "split",
    )  # fmt: skip
    assert "no test durations known: splitting by test count" in counted.stdout.str()
    counted.assert_outcomes(passed=2, deselected=4)
    failed = run(project, *dead, "--testlens-shard", "1/3", "--testlens-fallback", "fail")
    assert failed.ret == pytest.ExitCode.USAGE_ERROR
    assert "no shard plan from the server" in failed.stderr.str()


def test_refused_upload_is_a_warning_not_a_failure(project, server):
    wrong_key = (
        *("--testlens", "--testlens-server", server.url),
        *("--testlens-token", "tl_sk_wrong", "--testlens-repo", "acme/plugin"),
    )
    project.makepyfile(**SAMPLE)
    result = run(project, *wrong_key)
    assert result.ret == pytest.ExitCode.OK
    assert "results not uploaded: the server said 401 INVALID_API_KEY" in result.stdout.str()
    project.makepyfile(**FAILING)
    failing = run(project, *wrong_key, "test_broken.py")
    assert failing.ret == pytest.ExitCode.TESTS_FAILED


def test_results_are_uploaded_at_session_end(project, server, tenant, database):
    project.makepyfile(
        **SAMPLE,
        **FAILING,
        test_skip="""
        import pytest

        @pytest.mark.skip(reason="not yet")
        def test_later():
            pass
    """,
    )
    result = run(project, *remote(server, tenant), "--testlens-environment", "linux-py3.11")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # pytest's own verdict, untouched
    stored = uploaded_run(result, tenant)
    assert stored["repo"] == "acme/plugin"
    assert stored["framework"] == "pytest"
    assert stored["environment"] == "linux-py3.11"
    summary = stored["summary"]
    assert (summary["tests"], summary["passed"], summary["failed"], summary["skipped"]) == (
        9,
        7,
        1,
        1,
    )
    with database.transaction() as session:
        message, stdout = session.execute(
            select(TestResult.error_message, TestResult.stdout)
            .join(TestCase, TestCase.id == TestResult.test_id)
            .where(TestResult.run_id == stored["id"], TestCase.name == "test_broken")
        ).one()
    assert message.startswith("AssertionError: arithmetic is off")
    # Characters XML cannot carry arrive spelled out instead of breaking the report.
    assert "\\x1b[31mcolour and a NUL\\x00 that XML cannot carry" in stdout
    # Identities are node ids: the server hands them back as pytest names them.
    listed = tenant.client.get(
        "/api/durations", params={"repo": "acme/plugin", "environment": "linux-py3.11"}
    ).json()["tests"]
    assert {test["nodeid"] for test in listed} >= set(TESTS)


def test_every_rerun_attempt_is_uploaded(project, server, tenant, database):
    project.makepyfile(
        test_flaky="""
        calls = []

        def test_flaky():
            calls.append(1)
            assert len(calls) > 1, "first call fails"

        def test_always_fails():
            assert False

        def test_steady():
            pass
    """
    )
    result = run(project, *remote(server, tenant), "--reruns", "2")
    assert result.parseoutcomes()["rerun"] == 3
    found = _UPLOADED.search(result.stdout.str())
    assert found and found.group(1, 2, 3) == ("3", "6", "1"), result.stdout.str()
    summary = uploaded_run(result, tenant)["summary"]
    assert (summary["flaky"], summary["failed"], summary["attempts"]) == (1, 1, 6)
    with database.transaction() as session:
        attempts = session.execute(
            select(TestCase.name, TestResult.attempt, TestResult.status, TestResult.error_message)
            .join(TestCase, TestCase.id == TestResult.test_id)
            .where(TestResult.run_id == found.group(4))
            .order_by(TestCase.name, TestResult.attempt)
        ).all()
    assert [tuple(row[:3]) for row in attempts] == [
        ("test_always_fails", 0, "failed"),
        ("test_always_fails", 1, "failed"),
        ("test_always_fails", 2, "failed"),
        ("test_flaky", 0, "failed"),
        ("test_flaky", 1, "passed"),
        ("test_steady", 0, "passed"),
    ]
    assert "first call fails" in attempts[3].error_message


def test_subtests_under_reruns_are_parts_of_their_attempt(project, server, tenant):
    """pytest-rerunfailures logs a test's setup, call and teardown after the run, but its
    subtests' reports as they happen, so they come before the setup they belong to: they must
    not open an attempt of their own (a made-up 0 ms pass per test with subtests)."""
    project.makepyfile(
        test_sub="""
        import unittest

        calls = []

        class T(unittest.TestCase):
            def test_steady(self):
                for i in range(3):
                    with self.subTest(i=i):
                        self.assertTrue(True)

            def test_flaky(self):
                calls.append(1)
                for i in range(2):
                    with self.subTest(i=i):
                        self.assertTrue(True)
                self.assertGreater(len(calls), 1, "first call fails")
    """
    )
    result = run(project, *remote(server, tenant), "--reruns", "1")
    found = _UPLOADED.search(result.stdout.str())
    assert found and found.group(1, 2, 3) == ("2", "3", "1"), result.stdout.str()
    summary = uploaded_run(result, tenant)["summary"]
    assert (summary["tests"], summary["flaky"], summary["attempts"]) == (2, 1, 3)


def test_quarantined_failures_become_xfail(project, server, database):
    admin = make_tenant(database, server, scopes=("ingest", "read", "admin"))
    project.makepyfile(**FAILING)
    args = [*remote(server, admin), "--testlens-quarantine", "-rx"]
    before = run(project, *args)
    assert before.ret == pytest.ExitCode.TESTS_FAILED
    # A repository's first run has no quarantine list yet: a warning, and nothing changes.
    assert "testlens: warning: no quarantine list (the server said 404" in before.stdout.str()
    repo_id = admin.client.get("/api/repos").json()["repos"][0]["id"]
    tests = admin.client.get(f"/api/repos/{repo_id}").json()["tests"]
    broken = next(test["id"] for test in tests if test["name"] == "test_broken")
    response = admin.client.post(
        f"/api/tests/{broken}/quarantine", json={"reason": "flaky on CI, see #42"}
    )
    assert response.status_code == 201, response.text

    after = run(project, *args)
    assert after.ret == pytest.ExitCode.OK
    after.assert_outcomes(passed=1, xfailed=1)
    output = after.stdout.str()
    assert "testlens: 1 of these tests quarantined: their failures count as xfail" in output
    assert "quarantined by testlens: flaky on CI, see #42" in output
    # The server still learns what really happened.
    assert uploaded_run(after, admin)["summary"]["failed"] == 1
    admin.client.close()


def test_quarantine_list_unavailable_changes_nothing(project):
    project.makepyfile(**FAILING)
    result = run(
        project,
        "--testlens",
        "--testlens-server",
        f"http://127.0.0.1:{free_port()}",
        "--testlens-repo",
        "acme/plugin",
        "--testlens-quarantine",
        "--testlens-no-upload",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    assert (
        "testlens: warning: no quarantine list (could not reach http://127.0.0.1"
        in result.stdout.str()
    )
