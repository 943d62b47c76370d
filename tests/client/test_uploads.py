"""``testlens upload`` of a directory as CI jobs do it: each file read for what it is, a stray
file skipped wherever it sorts, an exit status that says whether anything failed, and the
environment named after the runner."""

from __future__ import annotations

import platform
from pathlib import Path

from builders import RERUN_XML, free_port
from click.testing import CliRunner

from testlens.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"


def upload(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(main, ["upload", *args], env=env, catch_exceptions=False)


def runs_of(tenant, output: str) -> list[dict]:
    ids = [line.rsplit(" ", 1)[-1] for line in output.splitlines() if " run " in line]
    return [tenant.client.get(f"/api/runs/{run_id}").json()["run"] for run_id in ids]


def test_each_file_keeps_its_own_format_and_strays_are_skipped_wherever_they_sort(
    tenant, server, tmp_path
):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "a-settings.json").write_text('{"editor": {"tabSize": 4}}')  # sorts first
    (reports / "b-unit.xml").write_bytes(RERUN_XML)
    (reports / "c-mocha.json").write_bytes((DATA / "javascript" / "mocha.json").read_bytes())
    (reports / "d-broken.xml").write_text("<testsuite><testcase")
    env = {"TESTLENS_SERVER": server.url, "TESTLENS_TOKEN": tenant.key}
    result = upload([str(reports), "--repo", "acme/mixed"], env)
    assert result.exit_code == 0, result.output
    assert "a-settings.json: skipped, not a test report" in result.output
    assert "d-broken.xml: skipped, not a test report" in result.output
    runs = runs_of(tenant, result.output)
    assert sorted(run["framework"] for run in runs) == ["junit", "mocha"]
    assert {run["format"] for run in runs} == {"junit", "mocha"}


def test_nothing_to_upload_or_a_failed_upload_exits_1(tenant, server, tmp_path):
    env = {"TESTLENS_SERVER": server.url, "TESTLENS_TOKEN": tenant.key}
    strays = tmp_path / "strays"
    strays.mkdir()
    (strays / "notes.json").write_text("[1, 2, 3]")
    nothing = upload([str(strays), "--repo", "acme/mixed"], env)
    assert nothing.exit_code == 1
    assert "0 of 1 files uploaded (0 failed, 1 skipped)" in nothing.output
    good = tmp_path / "good.xml"
    good.write_bytes(RERUN_XML)
    dead = {**env, "TESTLENS_SERVER": f"http://127.0.0.1:{free_port()}"}
    failed = upload([str(good), "--repo", "acme/mixed"], dead)
    assert failed.exit_code == 1
    assert "could not reach" in failed.output


def test_the_environment_defaults_to_the_runner_and_the_ci_job(tenant, server, tmp_path):
    report = tmp_path / "unit.xml"
    report.write_bytes(RERUN_XML)
    env = {
        "TESTLENS_SERVER": server.url,
        "TESTLENS_TOKEN": tenant.key,
        "GITLAB_CI": "true",
        "CI_PROJECT_PATH": "acme/gl",
        "CI_COMMIT_SHA": "e" * 40,
        "CI_PIPELINE_ID": "311",
        "CI_JOB_NAME": "Unit Tests 2/4",  # a parallel job: its nodes share one environment
    }
    result = upload([str(report)], env)
    assert result.exit_code == 0, result.output
    (run,) = runs_of(tenant, result.output)
    system, machine = platform.system().lower(), platform.machine().lower()
    assert run["environment"] == f"{system}-{machine}-unit-tests"
    explicit = upload([str(report), "--environment", "win-py3.12", "--commit", "d" * 40], env)
    (given,) = runs_of(tenant, explicit.output)
    assert given["environment"] == "win-py3.12"
