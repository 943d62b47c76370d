"""Live events published by the runners while tests run: ``pytest --testlens-queue`` and
``testlens worker`` against the real server, read back by a real WebSocket client; and a
server that refuses them, which must cost the run nothing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from builders import LiveServer, free_port

from testlens.client.http import ServerError
from testlens.client.queue_api import LIVE_CLOSE_SECONDS, LivePublisher
from testlens.server.app import create_app

TESTS = {
    "tests/test_shop.py::TestCart::test_add": "passed",
    "tests/test_shop.py::TestCart::test_remove": "skipped",
    "tests/test_shop.py::test_broken": "failed",
    "tests/test_slow.py::test_slow": "passed",
}
SHOP = """
    import pytest

    class TestCart:
        def test_add(self):
            pass

        def test_remove(self):
            pytest.skip("later")

    def test_broken():
        assert False
"""
SLOW = """
    import time

    def test_slow():
        time.sleep(1.5)
"""


@pytest.fixture
def shop(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(**{"tests/test_shop": SHOP, "tests/test_slow": SLOW})
    return project


@pytest.fixture(scope="module")
def refusing(settings) -> Iterator[LiveServer]:
    """A server on the session's database that answers every publish of live events 404,
    as it does for an unknown run, and everything else as usual."""
    app = create_app(settings)
    refusal = json.dumps({"code": "RUN_NOT_FOUND", "message": "Run not found"}).encode()

    async def refuse_events(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/events"):
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": refusal})
            return
        await app(scope, receive, send)

    live = LiveServer(refuse_events).start()
    yield live
    live.stop()


def plain_args(url: str, key: str) -> list[str]:
    return [
        *("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:schemathesis", "-v"),
        *("--testlens", "--testlens-server", url, "--testlens-token", key),
        *("--testlens-repo", "acme/live"),
    ]


def queue_args(url: str, key: str) -> list[str]:
    return [
        *plain_args(url, key),
        *("--testlens-queue", "--testlens-workers", "1"),
        *("--testlens-ci-build-id", f"build-{uuid.uuid4().hex[:12]}"),
    ]


def start(project: pytest.Pytester, *args: str) -> subprocess.Popen[bytes]:
    return project.popen([sys.executable, "-m", "pytest", *args], stdin=subprocess.DEVNULL)


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1) + "/api/v1/ws"


def stored(tenant, run_id: str) -> dict[str, dict]:
    """The run's results on the server, by node id."""
    body = tenant.client.get(f"/api/v1/runs/{run_id}").json()
    return {f"{row['testFile']}::{row['testName']}": row for row in body["results"]}


def comparable(result: dict) -> dict:
    """A result less what differs between a live one and an uploaded one by design: the
    id (the node id, the server's test id) and the duration (read back from the report)."""
    return {key: value for key, value in result.items() if key not in ("id", "durationMs")}


@pytest.mark.parametrize("arguments", [queue_args, plain_args], ids=["queue", "plain"])
def test_a_run_publishes_each_start_then_its_result_before_the_upload(
    arguments, shop, server, tenant
):
    """Queue mode publishes to its orchestrated run; a plain run opens a run of uploads,
    publishes to it, and its upload joins it."""
    got: list[dict] = []
    slow = "tests/test_slow.py::test_slow"
    seen_running: list[tuple[bool, bool]] = []  # at the slow test's start: (running, uploaded)

    async def watch() -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {tenant.key}"}  # the tenant's every run, from now
        async with websockets.connect(ws_url(server.url), additional_headers=headers) as socket:
            process = start(shop, *arguments(server.url, tenant.key))
            while not got or got[-1]["type"] != "run:end":
                got.append(json.loads(await asyncio.wait_for(socket.recv(), 15)))
                payload = got[-1]["payload"]
                if got[-1]["type"] == "test:start" and payload["testName"] == "test_slow":
                    uploaded = any(
                        message["type"] == "test:batch" and not message["payload"].get("live")
                        for message in got
                    )
                    seen_running.append((process.poll() is None, uploaded))
            out, err = await asyncio.to_thread(process.communicate, timeout=30)
            return process.returncode, (out + err).decode()

    code, output = asyncio.run(watch())
    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert "live events not published" not in output
    # Seen while the test ran, before its batch was uploaded.
    assert seen_running == [(True, False)]

    run_id = got[0]["runId"]
    assert got[0]["type"] == "run:start" and got[0]["payload"]["totalTests"] == len(TESTS)
    if arguments is plain_args:  # the terminal names the run a plain session published to
        assert f"testlens: CI run {run_id}: GET /api/v1/runs/{run_id}" in output
    assert {message["runId"] for message in got} == {run_id}
    assert [message["seq"] for message in got] == list(range(1, len(got) + 1))
    starts = {
        f"{m['payload']['testFile']}::{m['payload']['testName']}": index
        for index, m in enumerate(got)
        if m["type"] == "test:start"
    }
    live: dict[str, tuple[int, dict]] = {}
    uploaded: dict[str, dict] = {}
    for index, message in enumerate(got):
        if message["type"] != "test:batch":
            continue
        for result in message["payload"]["results"]:
            nodeid = f"{result['testFile']}::{result['testName']}"
            if message["payload"].get("live"):
                assert nodeid not in live, "one live result per test"
                live[nodeid] = (index, result)
            else:
                uploaded[nodeid] = result
    assert sorted(starts) == sorted(live) == sorted(uploaded) == sorted(TESTS)
    for nodeid, (index, result) in live.items():
        assert starts[nodeid] < index, nodeid
        assert result["id"] == nodeid
        assert result["status"] == TESTS[nodeid]
    assert live[slow][1]["durationMs"] >= 1500

    # The live results agree with the uploaded ones, in the events and in the run's detail.
    detail = stored(tenant, run_id)
    for nodeid, (_index, result) in live.items():
        assert comparable(result) == comparable(uploaded[nodeid]) == comparable(detail[nodeid])
        assert result["durationMs"] == pytest.approx(detail[nodeid]["durationMs"], abs=1)


def test_a_server_that_refuses_live_events_never_fails_the_run(shop, refusing, tenant):
    started = time.monotonic()
    process = start(shop, *queue_args(refusing.url, tenant.key), "-k", "not broken")
    out, err = process.communicate(timeout=30)
    output = (out + err).decode()
    assert process.returncode == pytest.ExitCode.OK, output
    assert time.monotonic() - started < 15
    assert "2 passed, 1 skipped, 1 deselected" in output
    warnings = [line for line in output.splitlines() if "live events not published" in line]
    assert len(warnings) == 1 and "Run not found" in warnings[0], output
    run_id = re.search(r"orchestrated run (\S+): this machine ran 3 tests", output)[1]
    detail = tenant.client.get(f"/api/v1/runs/{run_id}").json()
    assert detail["run"]["status"] == "completed"
    assert len(detail["results"]) == 3


def test_the_publisher_stops_sending_once_refused_and_never_raises(server, tenant):
    failures: list[Exception] = []
    with LivePublisher(server.url, tenant.key, "no-such-run", on_failure=failures.append) as live:
        for number in range(150):  # more than one send's worth: the first is sent at once
            live.publish("test:start", {"testFile": f"tests/test_{number}.py", "testName": ""})
        deadline = time.monotonic() + 5
        while not failures and time.monotonic() < deadline:
            time.sleep(0.02)
        live.publish("test:start", {"testFile": "tests/test_late.py", "testName": ""})
    assert live.dropped == 151 and live.failed == 1
    assert len(failures) == 1
    assert isinstance(failures[0], ServerError) and failures[0].status == 404


def test_closing_without_a_server_takes_a_bounded_time(tenant):
    live = LivePublisher(f"http://127.0.0.1:{free_port()}", tenant.key, "run")
    live.publish("test:start", {"testFile": "tests/test_a.py", "testName": ""})
    started = time.monotonic()
    live.close()
    assert time.monotonic() - started < LIVE_CLOSE_SECONDS + 1
    assert live.dropped == 1


def test_a_worker_publishes_the_start_of_each_item(tmp_path: Path, server, tenant):
    (tmp_path / "tests").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name in ("a", "b"):
        (tmp_path / f"tests/test_{name}.py").write_text("def test_ok():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTLENS_", "GITHUB_"))}
    env.update(
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", TESTLENS_SERVER=server.url, TESTLENS_TOKEN=tenant.key
    )
    testlens = str(Path(sys.executable).with_name("testlens"))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "{files}"]
    worker = subprocess.run(
        [
            *(testlens, "worker", "--repo", "acme/live-worker", "--workers", "1"),
            *("--ci-build-id", f"build-{uuid.uuid4().hex[:12]}"),
            *("--files", "tests/test_a.py", "tests/test_b.py", "--"),
            *command,
            "--junitxml=testlens-batch-{batch}.xml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    assert "live events not published" not in worker.stderr
    run_id = worker.stderr.split("created run ", 1)[1].split(":", 1)[0]

    async def read() -> list[dict]:
        headers = {"Authorization": f"Bearer {tenant.key}", "X-Run-ID": run_id}
        got: list[dict] = []
        async with websockets.connect(ws_url(server.url), additional_headers=headers) as socket:
            while not got or got[-1]["type"] != "run:end":
                got.append(json.loads(await asyncio.wait_for(socket.recv(), 15)))
        return got

    got = asyncio.run(read())
    starts = [m for m in got if m["type"] == "test:start"]
    assert sorted(m["payload"]["testFile"] for m in starts) == [
        "tests/test_a.py",
        "tests/test_b.py",
    ]
    assert {m["payload"]["testName"] for m in starts} == {""}
    first_result = min(m["seq"] for m in got if m["type"] == "test:batch")
    assert max(m["seq"] for m in starts) < first_result
    # No live results from a worker: the upload's are the only ones.
    assert not any(m["payload"].get("live") for m in got if m["type"] == "test:batch")
