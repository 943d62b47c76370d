"""The live stream (/api/v1/ws) read by real WebSocket clients: events in order from the log,
resuming without gap or duplicate, refusals (1008, 1013), a stalled client closed rather
than buffered, and two server processes sharing one log."""

from __future__ import annotations

import asyncio
import json
import socket as socketlib
import threading
import time
import uuid
from datetime import timedelta

import httpx
import pytest
import websockets
from builders import eventually, junit_from_durations, make_tenant, two_servers, upload
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from websockets.exceptions import ConnectionClosed

from testlens.server.models import ApiKey, Build, LiveConnection, RunEvent, utcnow
from testlens.server.orchestration import connections, events, stream

FILES = ["tests/test_a.py", "tests/test_b.py", "tests/test_c.py"]


def ws_url(base: str, **params: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return base.replace("http", "ws", 1) + "/api/v1/ws" + (f"?{query}" if query else "")


def create(client: httpx.Client, files=FILES) -> str:
    repo = f"acme/live-{uuid.uuid4().hex[:6]}"
    body = {"testFiles": files, "workerCount": 1, "project": repo}
    return client.post("/api/v1/orchestrate", json=body).json()["runId"]


def work(client: httpx.Client, run: str, batches: int = 99) -> None:
    """Claim and report up to ``batches`` batches, each file passing one test."""
    for number in range(batches):
        batch = f"b{number}-{uuid.uuid4().hex[:6]}"
        answer = client.post(f"/api/v1/orchestrate/{run}/claims", json={"batchId": batch})
        if answer.status_code == 409:
            return
        items = answer.json()["items"]
        xml = junit_from_durations({f"{item['file']}::test_ok": 0.1 for item in items})
        project = answer.json()["project"]
        stored = upload(client, xml, repo=project, orchestration_run=run, batch_id=batch)
        assert stored.status_code == 201, stored.text


async def read_until_end(socket, into: list[dict], stop_after: int | None = None) -> None:
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), 15))
        into.append(message)
        if message["type"] == "run:end" or (stop_after and len(into) >= stop_after):
            return


def test_a_subscriber_sees_every_event_of_a_run_in_order(tenant, server):
    run = create(tenant.client)
    got: list[dict] = []

    async def main() -> None:
        headers = {"Authorization": f"Bearer {tenant.key}", "X-Run-ID": run}
        async with websockets.connect(ws_url(server.url), additional_headers=headers) as socket:
            reader = asyncio.create_task(read_until_end(socket, got))
            await asyncio.to_thread(work, tenant.client, run)
            await reader

    asyncio.run(main())
    types = [message["type"] for message in got]
    assert types[0] == "run:start" and types[-1] == "run:end"
    assert [message["seq"] for message in got] == list(range(1, len(got) + 1))
    results = [r for m in got if m["type"] == "test:batch" for r in m["payload"]["results"]]
    assert sorted(r["testFile"] for r in results) == FILES
    assert got[-1]["payload"] == {
        "runId": run,
        "status": "completed",
        "totalTests": 3,
        "passedTests": 3,
        "failedTests": 0,
    }


def test_a_subscriber_that_reconnects_resumes_without_gap_or_duplicate(tenant, server):
    run = create(tenant.client)
    first: list[dict] = []
    second: list[dict] = []

    async def main() -> None:
        protocols = ["testlens", tenant.key]  # as a browser sends its key
        async with websockets.connect(
            ws_url(server.url, runId=run), subprotocols=protocols
        ) as socket:
            assert socket.subprotocol == "testlens"
            await asyncio.to_thread(work, tenant.client, run, 1)
            await read_until_end(socket, first, stop_after=2)  # run:start, test:batch
        await asyncio.to_thread(work, tenant.client, run)  # the rest, while away
        last = first[-1]["seq"]
        async with websockets.connect(
            ws_url(server.url, runId=run, after=str(last)), subprotocols=protocols
        ) as socket:
            await read_until_end(socket, second)

    asyncio.run(main())
    seqs = [message["seq"] for message in first + second]
    assert seqs == list(range(1, len(seqs) + 1))
    assert second[-1]["type"] == "run:end"


def closed_with(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async def main() -> tuple[int, str]:
        async with websockets.connect(url, additional_headers=headers) as socket:
            try:
                while True:
                    message = json.loads(await asyncio.wait_for(socket.recv(), 10))
                    assert message["type"] == "error", message  # nothing else is sent
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return closed.rcvd.code, closed.rcvd.reason

    return asyncio.run(main())


def test_a_bad_key_or_a_foreign_run_is_closed_with_1008_and_no_data(tenant, database, server):
    other = make_tenant(database, server)
    foreign = create(other.client)
    code, reason = closed_with(
        ws_url(server.url), {"Authorization": f"Bearer {tenant.key}", "X-Run-ID": foreign}
    )
    assert code == 1008 and "not found" in reason.lower()
    code, _ = closed_with(ws_url(server.url), {"Authorization": "Bearer tl_sk_wrong"})
    assert code == 1008
    code, _ = closed_with(ws_url(server.url), {})
    assert code == 1008
    other.client.close()


def test_the_eleventh_connection_of_a_tenant_is_refused_with_1013(tenant, server):
    headers = {"Authorization": f"Bearer {tenant.key}"}

    async def main() -> tuple[int, str]:
        sockets = [
            await websockets.connect(ws_url(server.url), additional_headers=headers)
            for _ in range(10)
        ]
        try:
            async with websockets.connect(ws_url(server.url), additional_headers=headers) as extra:
                message = json.loads(await asyncio.wait_for(extra.recv(), 10))
                assert message["type"] == "error"
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(extra.recv(), 10)
                assert closed.value.rcvd is not None
                return closed.value.rcvd.code, message["payload"]["message"]
        finally:
            for socket in sockets:
                await socket.close()

    code, message = asyncio.run(main())
    assert code == 1013 and "10 live connections" in message


def test_the_cap_counts_a_tenants_connections_on_every_process(scratch_database_url, tmp_path):
    with two_servers(scratch_database_url, tmp_path, TESTLENS_WS_MAX_CONNECTIONS="4") as (
        first_url,
        second_url,
        tenant,
    ):
        headers = {"Authorization": f"Bearer {tenant.key}"}

        async def refused(url: str) -> str:
            async with websockets.connect(ws_url(url), additional_headers=headers) as extra:
                message = json.loads(await asyncio.wait_for(extra.recv(), 10))
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(extra.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
                return message["payload"]["message"]

        async def main() -> None:
            sockets = [
                await websockets.connect(ws_url(url), additional_headers=headers)
                for url in (first_url, second_url, first_url, second_url)
            ]
            try:
                for url in (first_url, second_url):
                    assert "4 live connections" in await refused(url)
                await sockets.pop().close()  # one closes on the second process...
                again = await eventually_admitted(first_url)  # ...and the first admits one
                sockets.append(again)
            finally:
                for socket in sockets:
                    await socket.close()

        async def eventually_admitted(url: str) -> websockets.ClientConnection:
            deadline = time.monotonic() + 10
            while True:
                socket = await websockets.connect(ws_url(url), additional_headers=headers)
                try:
                    await asyncio.wait_for(socket.recv(), 0.3)  # only a refusal sends at once
                except TimeoutError:
                    return socket
                await socket.close()
                assert time.monotonic() < deadline, "no connection was admitted again"

        asyncio.run(main())


def test_a_connection_the_database_cannot_count_is_told_to_come_back(tenant, server, monkeypatch):
    def down(*_args: object) -> None:
        raise OperationalError("SELECT pg_advisory_xact_lock", {}, Exception("no answer"))

    monkeypatch.setattr(connections, "admit", down)
    code, reason = closed_with(ws_url(server.url), {"Authorization": f"Bearer {tenant.key}"})
    assert code == 1013 and "reconnect" in reason


def test_a_connection_its_process_stopped_renewing_no_longer_counts(tenant, database):
    with database.read() as session:
        tenant_id = session.scalar(select(ApiKey.tenant_id).where(ApiKey.id == tenant.key_id))
    now = utcnow()
    left = now - timedelta(seconds=connections.LEASE_SECONDS + 5)
    with database.transaction() as session:
        for seen in [left] * 3 + [now]:
            session.add(
                LiveConnection(
                    id=str(uuid.uuid4()), tenant_id=tenant_id, opened_at=left, seen_at=seen
                )
            )
    admitted = connections.admit(database, tenant_id, cap=2)  # the three stale rows go
    assert admitted is not None
    assert connections.admit(database, tenant_id, cap=2) is None
    connections.release(database, admitted)
    with database.read() as session:
        rows = session.scalars(
            select(LiveConnection.seen_at).where(LiveConnection.tenant_id == tenant_id)
        ).all()
    assert rows == [now]


def test_a_stalled_client_is_closed_instead_of_buffered(tenant, server, monkeypatch):
    """A client that never reads: once the sockets' buffers are full the server's send
    waits, and after SEND_TIMEOUT it closes with 1013 instead of queueing more."""
    monkeypatch.setattr(stream, "SEND_TIMEOUT", 0.5)
    run = create(tenant.client)
    raw = socketlib.socket()
    raw.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 8192)  # no autotuning
    raw.connect(("127.0.0.1", server.port))
    raw.sendall(
        (
            f"GET /api/v1/ws?runId={run} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {tenant.key}\r\n\r\n"
        ).encode()
    )
    handshake = b""
    while b"\r\n\r\n" not in handshake:
        handshake += raw.recv(1)
    assert handshake.startswith(b"HTTP/1.1 101")
    flood = [{"type": "test:start", "payload": {"testFile": "x" * 4000}} for _ in range(500)]
    for _ in range(4):  # 8 MB: more than the server's send buffer (4 MB) and ours hold
        answer = tenant.client.post(f"/api/v1/runs/{run}/events", json={"events": flood})
        assert answer.status_code == 202
    time.sleep(2)  # the server's send waits, then gives up
    raw.settimeout(10)
    received = b""
    while chunk := raw.recv(65536):
        received += chunk
    raw.close()
    close = received.rfind(b"\x88")  # the close frame: opcode 8, FIN
    assert close != -1
    length = received[close + 1]
    code = int.from_bytes(received[close + 2 : close + 4], "big")
    reason = received[close + 4 : close + 2 + length].decode()
    assert code == 1013 and "too far behind" in reason
    assert len(received) < 8_000_000  # not everything was queued for it


def test_published_events_reach_subscribers_and_bad_ones_are_refused(tenant, server):
    run = create(tenant.client)
    got: list[dict] = []

    async def main() -> None:
        headers = {"Authorization": f"Bearer {tenant.key}", "X-Run-ID": run}
        async with websockets.connect(ws_url(server.url), additional_headers=headers) as socket:
            event = {"type": "test:start", "payload": {"testFile": "tests/test_a.py"}}
            answer = await asyncio.to_thread(
                tenant.client.post, f"/api/v1/runs/{run}/events", json={"events": [event]}
            )
            assert answer.status_code == 202 and answer.json() == {"accepted": 1, "seq": 1}
            got.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))

    asyncio.run(main())
    assert got[0]["type"] == "test:start"
    assert got[0]["payload"] == {"testFile": "tests/test_a.py", "runId": run}
    bad = tenant.client.post(
        f"/api/v1/runs/{run}/events", json={"events": [{"type": "run:end", "payload": {}}]}
    )
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_PARAMETERS"
    unknown = tenant.client.post(
        f"/api/v1/runs/{uuid.uuid4()}/events",
        json={"events": [{"type": "test:start", "payload": {}}]},
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "RUN_NOT_FOUND"


def test_a_plain_run_is_opened_before_its_upload_which_joins_it(tenant, server, database):
    repo = f"acme/plain-{uuid.uuid4().hex[:6]}"
    body = {"project": repo, "ciBuildId": f"ci-{uuid.uuid4().hex[:8]}", "totalTests": 2}
    opened = tenant.client.post("/api/v1/runs", json=body)
    assert opened.status_code == 201, opened.text
    run = opened.json()["runId"]
    assert opened.json()["status"] == "running"
    # Another machine of the same CI run gets the same run, and logs its own start.
    again = tenant.client.post("/api/v1/runs", json={**body, "shardIndex": 1, "totalShards": 2})
    assert again.status_code == 200 and again.json()["runId"] == run
    other = tenant.client.post("/api/v1/runs", json={"project": repo})
    assert other.status_code == 201 and other.json()["runId"] != run

    xml = junit_from_durations({"tests/test_a.py::test_ok": 0.1, "tests/test_b.py::test_ok": 0.2})
    stored = upload(tenant.client, xml, repo=repo, orchestration_run=run)
    assert stored.status_code == 201, stored.text
    detail = tenant.client.get(f"/api/v1/runs/{run}").json()
    assert detail["run"]["status"] == "completed" and detail["totalResults"] == 2

    got: list[dict] = []

    async def main() -> None:
        headers = {"Authorization": f"Bearer {tenant.key}", "X-Run-ID": run}
        async with websockets.connect(ws_url(server.url), additional_headers=headers) as socket:
            await read_until_end(socket, got)

    asyncio.run(main())
    assert [m["type"] for m in got] == ["run:start", "run:start", "test:batch", "run:end"]
    assert [m["payload"]["shardIndex"] for m in got[:2]] == [0, 1]
    assert got[0]["payload"] == {"runId": run, "totalTests": 2, "shardIndex": 0, "totalShards": 1}
    assert len(got[2]["payload"]["results"]) == 2
    assert got[3]["payload"]["status"] == "completed" and got[3]["payload"]["totalTests"] == 2


def test_a_plain_run_nothing_reaches_fails_after_the_inactivity_timeout(tenant, database):
    repo = f"acme/gone-{uuid.uuid4().hex[:6]}"
    quiet, publishing = (
        tenant.client.post("/api/v1/runs", json={"project": repo}).json()["runId"] for _ in range(2)
    )
    long_ago = utcnow() - timedelta(hours=2)  # the timeout is 30 minutes
    with database.transaction() as session:
        session.execute(
            update(Build).where(Build.id.in_([quiet, publishing])).values(active_at=long_ago)
        )
    # Publishing counts as activity: that run is not idle.
    answer = tenant.client.post(
        f"/api/v1/runs/{publishing}/events",
        json={"events": [{"type": "test:start", "payload": {"testFile": "tests/test_a.py"}}]},
    )
    assert answer.status_code == 202, answer.text

    def status(run: str) -> dict:
        return tenant.client.get(f"/api/v1/runs/{run}").json()["run"]

    # The server's queue sweeper (every few seconds) times the quiet run out.
    ended = eventually(lambda: (run := status(quiet))["status"] == "failed" and run, "timed out")
    assert ended["reason"] == "timed out: nothing was uploaded or published for 1800 s"
    with database.read() as session:
        kinds = session.scalars(select(RunEvent.type).where(RunEvent.build_id == quiet)).all()
    assert kinds == ["run:end"]
    assert status(publishing)["status"] == "running"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"project": "not a repo"},
        {"project": "acme/shop", "totalTests": -1},
        {"project": "acme/shop", "ciBuildId": ""},
        {"project": "acme/shop", "unknown": 1},
    ],
)
def test_a_bad_plain_run_is_refused_and_nothing_stored(tenant, body):
    answer = tenant.client.post("/api/v1/runs", json=body)
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_PARAMETERS"
    assert tenant.client.get("/api/v1/runs").json()["runs"] == []


def test_a_batched_stream_sends_what_gathered_in_one_message(tenant, server):
    run = create(tenant.client)
    frames: list[list[dict]] = []

    async def main() -> None:
        headers = {"Authorization": f"Bearer {tenant.key}", "X-Run-ID": run}
        url = ws_url(server.url, batch="true")
        async with websockets.connect(url, additional_headers=headers) as socket:
            events = [{"type": "test:start", "payload": {"n": n}} for n in range(30)]
            for part in (events[:10], events[10:]):
                answer = await asyncio.to_thread(
                    tenant.client.post, f"/api/v1/runs/{run}/events", json={"events": part}
                )
                assert answer.status_code == 202
            while sum(map(len, frames)) < 30:
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))

    asyncio.run(main())
    messages = [message for frame in frames for message in frame]
    assert [m["seq"] for m in messages] == list(range(1, 31))
    assert [m["payload"]["n"] for m in messages] == list(range(30))
    assert len(frames) < 30  # gathered, not one a message


def test_a_subscriber_on_one_process_sees_a_worker_reporting_through_another(
    scratch_database_url, tmp_path
):
    with two_servers(scratch_database_url, tmp_path) as (first_url, second_url, tenant):
        worker = httpx.Client(base_url=second_url, headers=tenant.headers, timeout=30)
        run = create(worker, files=[f"tests/test_{i}.py" for i in range(12)])
        got: list[dict] = []

        async def main() -> None:
            headers = {"Authorization": f"Bearer {tenant.key}", "X-Run-ID": run}
            async with websockets.connect(ws_url(first_url), additional_headers=headers) as socket:
                reader = asyncio.create_task(read_until_end(socket, got))
                await asyncio.to_thread(work, worker, run)
                await reader

        try:
            asyncio.run(main())
        finally:
            worker.close()
    assert [message["seq"] for message in got] == list(range(1, len(got) + 1))
    assert got[-1]["type"] == "run:end" and got[-1]["payload"]["passedTests"] == 12


def test_a_tenant_stream_follows_commit_order_not_id_order(tenant, database):
    """Two transactions of one tenant: the one that inserted its event first commits last.
    Read by ids, a tenant-wide stream that read the other's event would pass over it."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time: commits follow inserts")
    first_run, second_run = create(tenant.client), create(tenant.client)
    with database.read() as session:
        tenant_id = session.scalar(select(Build.tenant_id).where(Build.id == first_run))
        start = events.newest_id(session, tenant_id)
    inserted, release = threading.Event(), threading.Event()

    def slow() -> None:
        with database.transaction() as session:
            events.append(session, tenant_id, first_run, [("test:start", {"n": 1})], utcnow())
            session.flush()
            inserted.set()
            release.wait(10)

    writer = threading.Thread(target=slow)
    writer.start()
    assert inserted.wait(10)
    with database.transaction() as session:
        events.append(session, tenant_id, second_run, [("test:start", {"n": 2})], utcnow())
    with database.read() as session:
        seen = events.read(session, tenant_id, build_id=None, after=start)
    assert [(e.build_id, e.tenant_seq) for e in seen] == [(second_run, start + 1)]
    release.set()
    writer.join()
    with database.read() as session:
        later = events.read(session, tenant_id, build_id=None, after=seen[-1].tenant_seq)
        ids = dict(session.execute(select(RunEvent.build_id, RunEvent.id)).all())
    assert [(e.build_id, e.tenant_seq) for e in later] == [(first_run, start + 2)]
    assert ids[first_run] < ids[second_run]  # inserted first, committed last
