"""A server that accepts connections but never answers must not hold a build: every client
call shares a time budget per CI step, and the step goes on (or fails) with a message."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from builders import RERUN_XML
from click.testing import CliRunner

from testlens.cli import main
from testlens.client.http import Budget, BudgetExhausted, Client
from testlens.client.pytest_plugin import RUN_BUDGET


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that completes TCP handshakes (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_counts_time_in_calls_only_and_stops_the_retries():
    clock = FakeClock()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        clock.now += 4.0  # every try hangs for 4 s, then times out
        raise httpx.ReadTimeout("silent", request=request)

    budget = Budget(10.0, clock=clock)
    client = Client(
        "http://ci", None, attempts=10, budget=budget, sleep=lambda s: None,
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    with pytest.raises(httpx.TimeoutException):
        client.request("GET", "/plan")
    assert len(calls) == 3  # 4 + 4 + 4 s: the third try used up the 10 s
    clock.now += 600.0  # the tests run for ten minutes: not the server's time
    with pytest.raises(BudgetExhausted):
        client.request("POST", "/upload")
    assert len(calls) == 3


def test_upload_to_a_silent_server_gives_up_within_its_budget(silent_server, tmp_path):
    report = tmp_path / "unit.xml"
    report.write_bytes(RERUN_XML)
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        ["upload", str(report), "--repo", "acme/x", "--server", silent_server, "--timeout", "3"],
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert "could not reach" in result.output
    assert elapsed < 8, elapsed


def test_a_pytest_run_against_a_silent_server_waits_at_most_its_budget(project, silent_server):
    project.makepyfile(test_a="def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    started = time.monotonic()
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--testlens", f"--testlens-server={silent_server}",
        "--testlens-repo=acme/x", "--testlens-shard=0/2", "--testlens-plan-key=run-1/unit",
        "--testlens-quarantine", "--testlens-timeout=4", timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.ret == pytest.ExitCode.OK  # the build's own exit code
    output = result.stdout.str()
    assert "no shard plan from the server" in output
    assert "results not uploaded" in output
    assert elapsed < 4 + 6, elapsed  # the budget, plus starting Python twice


def test_the_default_budgets_bound_a_run_and_an_upload():
    from testlens.client.cli import UPLOAD_BUDGET

    assert RUN_BUDGET == 30.0
    assert UPLOAD_BUDGET == 60.0
