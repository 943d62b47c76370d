"""Two ``testlens serve`` processes on one database share one queue: every item goes out
once, and a lease that lapses on one is handed out by either."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import httpx
from builders import junit_from_durations, two_servers, upload
from sqlalchemy import create_engine, select

from testlens.server.database import normalize_url
from testlens.server.models import WorkItem

FILES = [f"tests/test_{i:03}.py" for i in range(80)]


def test_two_server_processes_hand_out_each_item_once(scratch_database_url, tmp_path):
    with two_servers(scratch_database_url, tmp_path, TESTLENS_LEASE_SECONDS="1") as (
        first_url,
        second_url,
        tenant,
    ):
        clients = [
            httpx.Client(base_url=url, headers=tenant.headers, timeout=30)
            for url in (first_url, second_url)
        ]
        try:
            repo = f"acme/two-{uuid.uuid4().hex[:6]}"
            created = clients[0].post(
                "/api/v1/orchestrate",
                json={"testFiles": FILES, "workerCount": 8, "project": repo},
            )
            run = created.json()["runId"]
            # A worker that dies with its batch: its items must run elsewhere.
            dead = clients[1].post(f"/api/v1/orchestrate/{run}/claims", json={"batchId": "dead"})
            lost_with_it = {item["file"] for item in dead.json()["items"]}
            ran: list[str] = []
            lock = threading.Lock()

            def worker(number: int) -> None:
                client = clients[number % 2]
                while True:
                    batch = uuid.uuid4().hex
                    answer = client.post(
                        f"/api/v1/orchestrate/{run}/claims",
                        json={"batchId": batch, "worker": f"w{number}"},
                    )
                    if answer.status_code == 409:
                        return
                    body = answer.json()
                    if body["status"] == "wait":
                        threading.Event().wait(body["retryAfter"])
                        continue
                    files = [item["file"] for item in body["items"]]
                    xml = junit_from_durations({f"{file}::test_ok": 0.01 for file in files})
                    # Reported through the other process than the one that handed it out.
                    stored = upload(
                        clients[(number + 1) % 2],
                        xml,
                        repo=repo,
                        orchestration_run=run,
                        batch_id=batch,
                    )
                    assert stored.status_code == 201, stored.text
                    with lock:
                        ran.extend(files)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            detail = clients[0].get(f"/api/v1/runs/{run}").json()
        finally:
            for client in clients:
                client.close()
    # Every file ran, the dead worker's too; a file ran once more only for each lease of a
    # live worker that lapsed on it (these workers send no heartbeat; leases last 1 s).
    assert sorted(set(ran)) == sorted(FILES)
    assert lost_with_it and lost_with_it <= set(ran)
    lapses = requeues(scratch_database_url, run)
    assert all(lapses[file] >= 1 for file in lost_with_it), lapses
    extra = {
        file: (times, lapses[file])
        for file, times in Counter(ran).items()
        if times > 1 + lapses[file] - (file in lost_with_it)
    }
    assert not extra, extra
    assert detail["run"]["status"] == "completed"
    assert detail["run"]["totalTests"] == len(FILES) == detail["run"]["passedTests"]
    assert all(result["retryCount"] == 0 for result in detail["results"])


def requeues(url: str, run: str) -> dict[str, int]:
    """How often each file of the run went back to the queue after a lapsed lease."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(WorkItem.file, WorkItem.requeues).where(WorkItem.build_id == run)
            )
            return {file: times for file, times in rows}
    finally:
        engine.dispose()
