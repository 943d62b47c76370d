"""A rate-limited server, seen from CI: a 429 whose ``Retry-After`` fits the time budget is
waited out and retried; one that does not ends the step at once, saying so, whether the
upload came from ``testlens upload`` or the pytest plugin (both use ``client.http``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from builders import RERUN_XML, LiveServer, Tenant, make_tenant, upload
from click.testing import CliRunner

from testlens.cli import main
from testlens.client.http import Budget, Client, ServerError
from testlens.server.app import create_app

RATE_LIMITED = {
    "error": "Too Many Requests",
    "code": "RATE_LIMITED",
    "message": "Rate limit exceeded",
}


def answers(*script: tuple[int, dict[str, str]]) -> tuple[httpx.MockTransport, list[str]]:
    """A transport answering from ``script`` (then 201), and the paths it was sent."""
    queue, sent = list(script), []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        status, headers = queue.pop(0) if queue else (201, {})
        body = {**RATE_LIMITED, "details": {}} if status == 429 else {"run_id": "r1"}
        return httpx.Response(status, headers=headers, json=body)

    return httpx.MockTransport(handler), sent


def test_a_retry_after_within_the_budget_is_waited_out():
    transport, sent = answers((429, {"Retry-After": "3"}))
    slept: list[float] = []
    with Client("http://ci", "k", budget=Budget(10), sleep=slept.append, transport=transport) as c:
        assert c.request("POST", "/api/test-results").status_code == 201
    assert (sent, slept) == (["/api/test-results"] * 2, [3.0])


def test_a_retry_after_beyond_the_budget_gives_up_at_once_saying_why():
    transport, sent = answers((429, {"Retry-After": "60"}))
    slept: list[float] = []
    client = Client("http://ci", "k", budget=Budget(10), sleep=slept.append, transport=transport)
    with client, pytest.raises(ServerError) as raised:
        client.request("POST", "/api/test-results")
    assert (sent, slept) == (["/api/test-results"], [])  # no sleep, no second try
    assert (raised.value.status, raised.value.code) == (429, "RATE_LIMITED")
    assert raised.value.message == (
        "Rate limit exceeded (it asks to retry after 60 s, more than the 10 s left of this "
        "step's time budget)"
    )


@pytest.fixture
def exhausted(settings) -> Iterator[tuple[str, Tenant]]:
    """A live server allowing one upload a minute per repository, whose clock stands still,
    and a tenant that has just used ``acme/limited``'s: its next upload waits 60 s."""
    app = create_app(replace(settings, rate_limits_enabled=True, rate_limit_uploads_per_minute=1))
    app.state.rate_limiter.clock = lambda: 1_767_225_600.0
    server = LiveServer(app).start()
    tenant = make_tenant(app.state.database, server)
    assert upload(tenant.client, RERUN_XML, repo="acme/limited").status_code == 201
    refused = upload(tenant.client, RERUN_XML, repo="acme/limited")
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "60")
    yield server.url, tenant
    tenant.client.close()
    server.stop()


def test_testlens_upload_reports_the_rate_limit_instead_of_sleeping_out_its_budget(
    exhausted, tmp_path
):
    url, tenant = exhausted
    report = tmp_path / "unit.xml"
    report.write_bytes(RERUN_XML)
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "upload", str(report), "--repo", "acme/limited", "--server", url,
            "--token", tenant.key, "--timeout", "30",
        ],
        env={"GITHUB_ACTIONS": ""},
    )  # fmt: skip
    assert time.monotonic() - started < 10  # sleeping out the budget would take 30 s
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "server said 429 RATE_LIMITED: Rate limit exceeded (it asks to retry after 60 s" in (
        output
    )


def test_the_pytest_plugin_reports_the_rate_limit_and_the_run_goes_on(exhausted, project):
    url, tenant = exhausted
    project.makepyfile(test_a="def test_one():\n    pass\n")
    started = time.monotonic()
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--testlens", f"--testlens-server={url}",
        f"--testlens-token={tenant.key}", "--testlens-repo=acme/limited",
        "--testlens-timeout=30", timeout=120,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    output = " ".join(result.stdout.str().split())
    assert (
        "results not uploaded: the server said 429 RATE_LIMITED: Rate limit exceeded "
        "(it asks to retry after 60 s"
    ) in output
    assert time.monotonic() - started < 25  # sleeping out the budget would take 30 s
