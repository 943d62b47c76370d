"""Orchestrated runs over HTTP: creating a run, claiming its work as leases, results through
ingest, lapsed and released leases, cancel, rerun of a retried CI job, the Shifty "runs",
the progress stream, and the refusals (shared error body, nothing stored)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from builders import LiveServer, Tenant, ingest_history, junit_from_durations, make_tenant, upload
from sqlalchemy import func, select

from testlens.server.app import create_app
from testlens.server.models import ApiKey, Build
from testlens.server.orchestration import service

FILES = [f"tests/test_{name}.py" for name in "abcdefghij"]


def new_repo() -> str:
    return f"acme/orch-{uuid.uuid4().hex[:8]}"


def create(client: httpx.Client, files=FILES, **fields) -> httpx.Response:
    return client.post("/api/v1/orchestrate", json={"testFiles": files, **fields})


def claim(client: httpx.Client, run: str, batch: str | None = None, **fields) -> httpx.Response:
    body = {"batchId": batch or uuid.uuid4().hex, **fields}
    return client.post(f"/api/v1/orchestrate/{run}/claims", json=body)


def report(items: list[dict], failing: tuple[str, ...] = ()) -> bytes:
    """A pytest JUnit report with one passing test per claimed file (``test_ok``), and a
    failing ``test_bad`` in each file of ``failing``."""
    cases = {f"{item['file']}::test_ok": 0.1 for item in items}
    xml = junit_from_durations(cases).decode()
    for file in failing:
        module = file.removesuffix(".py").replace("/", ".")
        xml = xml.replace(
            "</testsuite>",
            f'<testcase classname="{module}" name="test_bad" file="{file}" time="0.1">'
            '<failure message="assert 1 == 2">trace</failure></testcase></testsuite>',
        )
    return xml.encode()


def finish(
    client: httpx.Client, run: str, repo: str, batch: str, items: list[dict], failing=()
) -> None:
    answer = upload(
        client, report(items, failing), repo=repo, orchestration_run=run, batch_id=batch
    )
    assert answer.status_code == 201, answer.text


def drain(client: httpx.Client, run: str, repo: str, failing=(), **claim_fields) -> list[str]:
    """Claim and report batches until the run says it is done; the files run, in order."""
    ran = []
    while True:
        batch = uuid.uuid4().hex
        answer = claim(client, run, batch, **claim_fields)
        if answer.status_code == 409:
            assert answer.json()["code"] == "RUN_FINISHED", answer.text
            return ran
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "claimed", body
        ran += [item["file"] for item in body["items"]]
        here = tuple(f for f in failing if f in {item["file"] for item in body["items"]})
        finish(client, run, repo, batch, body["items"], here)


def builds_of(database, tenant: Tenant) -> int:
    with database.read() as session:
        tenant_id = session.scalar(select(ApiKey.tenant_id).where(ApiKey.id == tenant.key_id))
        return session.scalar(select(func.count()).where(Build.tenant_id == tenant_id))


# Creating a run -----------------------------------------------------------------------------


def test_a_run_is_planned_and_every_machine_of_a_ci_build_gets_it(tenant):
    repo = new_repo()
    # History: test_a is slow, the other files have never run.
    slow = junit_from_durations(
        {"tests/test_a.py::test_one": 30.0, "tests/test_a.py::test_two": 30.0}
    )
    assert upload(tenant.client, slow, repo=repo).status_code == 201
    first = create(tenant.client, project=repo, workerCount=3, ciBuildId="ci-1")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "pending" and body["workerCount"] == 3
    assert len(body["shards"]) == 3
    # test_a counts its two known tests; the nine new files one test each.
    assert body["totalTests"] == 11
    assert sum(shard["testCount"] for shard in body["shards"]) == 11
    durations = sorted(shard["estimatedDuration"] for shard in body["shards"])
    assert durations[-1] >= 60_000  # test_a's history, on one shard
    assert all(duration > 0 for duration in durations)  # unknown files are never free
    again = create(
        tenant.client, files=list(reversed(FILES)), project=repo, workerCount=3, ciBuildId="ci-1"
    )
    assert again.status_code == 200
    assert again.json()["runId"] == body["runId"]
    # The longest item goes out first.
    first_claim = claim(tenant.client, body["runId"], worker="w1").json()
    assert first_claim["items"][0]["file"] == "tests/test_a.py"
    assert first_claim["project"] == repo


def test_a_machine_with_another_list_is_refused_naming_the_difference(tenant):
    assert create(tenant.client, ciBuildId="ci-2").status_code == 201
    other = create(tenant.client, files=[*FILES[:-1], "tests/test_z.py"], ciBuildId="ci-2")
    assert other.status_code == 409
    body = other.json()
    assert body["code"] == "PLAN_CONFLICT"
    assert body["details"]["only_here"] == ["tests/test_z.py"]
    assert body["details"]["only_in_run"] == ["tests/test_j.py"]


@pytest.mark.parametrize(
    "body",
    [
        {"testFiles": []},
        {"testFiles": ["a.py"], "workerCount": 0},
        {"testFiles": ["a.py"], "workerCount": 21},
        {"testFiles": ["a.py", "a.py"]},
        {"testFiles": ["a.py"], "strategy": "random"},
        {"testFiles": ["a.py"], "project": "not a repo"},
        {"testFiles": [f"t{i}.py" for i in range(50_001)]},
        {"files": ["a.py"]},
    ],
)
def test_bad_requests_get_invalid_parameters_and_store_nothing(tenant, database, body):
    before = builds_of(database, tenant)
    answer = tenant.client.post("/api/v1/orchestrate", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "INVALID_PARAMETERS"
    assert set(answer.json()) == {"error", "code", "message", "details"}
    assert builds_of(database, tenant) == before


def test_unknown_and_foreign_runs_are_not_found(tenant, database, server):
    other = make_tenant(database, server)
    run = create(other.client).json()["runId"]
    for run_id in (run, str(uuid.uuid4())):
        for method, path, body in (
            ("POST", f"/api/v1/orchestrate/{run_id}/claims", {"batchId": "b1"}),
            ("POST", f"/api/v1/orchestrate/{run_id}/claims/b1/heartbeat", None),
            ("DELETE", f"/api/v1/orchestrate/{run_id}/claims/b1", None),
            ("DELETE", f"/api/v1/orchestrate/{run_id}", None),
            ("GET", f"/api/v1/orchestrate/{run_id}/progress", None),
            ("GET", f"/api/v1/runs/{run_id}", None),
            ("GET", f"/api/v1/runs/{run_id}/failed-tests", None),
        ):
            answer = tenant.client.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["code"] == "RUN_NOT_FOUND"
    # The other tenant's run was not touched by any of it.
    assert claim(other.client, run).json()["status"] == "claimed"
    other.client.close()


def test_an_upload_naming_a_foreign_run_or_an_unclaimed_batch_is_refused(tenant, database, server):
    other = make_tenant(database, server)
    run = create(other.client).json()["runId"]
    xml = junit_from_durations({"tests/test_a.py::test_ok": 0.1})
    answer = upload(tenant.client, xml, orchestration_run=run)
    assert answer.status_code == 404 and answer.json()["code"] == "RUN_NOT_FOUND"
    mine = create(tenant.client).json()["runId"]
    answer = upload(tenant.client, xml, orchestration_run=mine, batch_id="never-claimed")
    assert answer.status_code == 400 and answer.json()["details"]["field"] == "batch_id"
    other.client.close()


def test_the_queue_refuses_runs_beyond_its_caps(settings, database):
    live = LiveServer(create_app(replace(settings, queue_max_active_runs=1))).start()
    try:
        tenant = make_tenant(database, live)
        assert create(tenant.client).status_code == 201
        full = create(tenant.client)
        assert full.status_code == 503
        assert full.json()["code"] == "QUEUE_FULL"
        assert full.headers["Retry-After"] == "30"
        tenant.client.close()
    finally:
        live.stop()


# Claims and results --------------------------------------------------------------------------


def test_every_item_goes_out_once_and_a_repeated_claim_gets_the_same_batch(tenant):
    repo = new_repo()
    run = create(tenant.client, project=repo, workerCount=2).json()["runId"]
    first = claim(tenant.client, run, "batch-1", worker="w1")
    repeated = claim(tenant.client, run, "batch-1", worker="w1")
    assert first.json() == repeated.json()
    finish(tenant.client, run, repo, "batch-1", first.json()["items"])
    ran = [item["file"] for item in first.json()["items"]]
    ran += drain(tenant.client, run, repo, worker="w2")
    assert sorted(ran) == sorted(FILES)
    assert Counter(ran).most_common(1)[0][1] == 1
    detail = tenant.client.get(f"/api/v1/runs/{run}").json()
    assert detail["run"]["status"] == "completed"
    assert detail["run"]["totalTests"] == len(FILES) == detail["run"]["passedTests"]
    assert detail["totalResults"] == len(FILES)
    stats = tenant.client.get("/api/v1/orchestrate/queue/stats").json()
    assert stats == {"waiting": 0, "active": 0, "completed": len(FILES), "failed": 0}


def test_batches_shrink_as_the_queue_empties(tenant):
    files = [f"tests/test_{i:03}.py" for i in range(200)]
    run = create(tenant.client, files=files, workerCount=4).json()["runId"]
    sizes = []
    while (answer := claim(tenant.client, run)).status_code == 200:
        if answer.json()["status"] == "wait":
            break
        sizes.append(len(answer.json()["items"]))
    assert sum(sizes) == 200
    assert sizes[0] > sizes[-1]
    assert sizes == sorted(sizes, reverse=True)


def test_a_test_reported_twice_is_one_test_with_two_attempts(tenant):
    repo = new_repo()
    run = create(tenant.client, files=FILES[:1], project=repo).json()["runId"]
    batch = claim(tenant.client, run, "only").json()
    finish(tenant.client, run, repo, "only", batch["items"], failing=(FILES[0],))
    # The failing test passes in a second report of the run (a retry by hand).
    xml = junit_from_durations({f"{FILES[0]}::test_bad": 0.1})
    assert upload(tenant.client, xml, repo=repo, orchestration_run=run).status_code == 201
    detail = tenant.client.get(f"/api/v1/runs/{run}").json()
    assert detail["run"]["totalTests"] == 2
    assert detail["run"]["flakyTests"] == 1 and detail["run"]["failedTests"] == 0
    bad = [r for r in detail["results"] if r["testName"] == "test_bad"]
    assert len(bad) == 1 and bad[0]["retryCount"] == 1 and bad[0]["status"] == "flaky"
    assert tenant.client.get(f"/api/v1/runs/{run}/failed-tests").json() == {"failedTests": []}


def test_failed_tests_name_each_failure_with_its_message(tenant):
    repo = new_repo()
    run = create(tenant.client, project=repo).json()["runId"]
    drain(tenant.client, run, repo, failing=("tests/test_c.py", "tests/test_f.py"))
    detail = tenant.client.get(f"/api/v1/runs/{run}").json()["run"]
    assert detail["status"] == "failed"
    assert detail["failedTests"] == 2 and detail["passedTests"] == len(FILES)
    failed = tenant.client.get(f"/api/v1/runs/{run}/failed-tests").json()["failedTests"]
    assert sorted(f["testFile"] for f in failed) == ["tests/test_c.py", "tests/test_f.py"]
    assert {f["testName"] for f in failed} == {"test_bad"}
    assert {f["errorMessage"] for f in failed} == {"assert 1 == 2"}


def test_a_static_run_hands_each_node_its_own_shard(tenant):
    repo = new_repo()
    created = create(tenant.client, project=repo, workerCount=2, strategy="static").json()
    run = created["runId"]
    no_node = claim(tenant.client, run)
    assert no_node.status_code == 400 and no_node.json()["code"] == "INVALID_PARAMETERS"
    zero = drain(tenant.client, run, repo, nodeIndex=0)
    one = drain(tenant.client, run, repo, nodeIndex=1)
    assert len(zero) == created["shards"][0]["testCount"]
    assert len(one) == created["shards"][1]["testCount"]
    assert sorted(zero + one) == sorted(FILES)
    assert tenant.client.get(f"/api/v1/runs/{run}").json()["run"]["shardStrategy"] == "static"


# Leases --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_lease(settings) -> Iterator[LiveServer]:
    """A server whose leases lapse after 0.5 s without a heartbeat."""
    live = LiveServer(
        create_app(replace(settings, lease_seconds=0.5, heartbeat_seconds=0.1))
    ).start()
    yield live
    live.stop()


@pytest.fixture
def quick(database, short_lease) -> Iterator[Tenant]:
    tenant = make_tenant(database, short_lease)
    yield tenant
    tenant.client.close()


def wait_for(condition, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_lapsed_lease_goes_back_to_the_front_of_the_queue(quick):
    repo = new_repo()
    run = create(quick.client, project=repo, workerCount=5).json()["runId"]
    dead = claim(quick.client, run, "dead", worker="dead").json()["items"]
    answer = claim(quick.client, run, "alive", worker="alive").json()
    assert {i["id"] for i in answer["items"]}.isdisjoint({i["id"] for i in dead})
    time.sleep(0.8)  # the dead worker never heartbeats
    beat = quick.client.post(f"/api/v1/orchestrate/{run}/claims/dead/heartbeat").json()
    assert beat["status"] == "expired"
    again = claim(quick.client, run, "next", worker="alive").json()
    assert [i["id"] for i in again["items"]][: len(dead)] == [i["id"] for i in dead]


def test_heartbeats_keep_a_lease(quick):
    repo = new_repo()
    run = create(quick.client, files=FILES[:2], project=repo, workerCount=1).json()["runId"]
    held = claim(quick.client, run, "held").json()
    assert len(held["items"]) == 2
    for _ in range(12):
        time.sleep(0.1)
        beat = quick.client.post(f"/api/v1/orchestrate/{run}/claims/held/heartbeat").json()
        assert beat["status"] == "active"
    waiting = claim(quick.client, run).json()
    assert waiting["status"] == "wait" and waiting["retryAfter"] > 0


def test_a_released_batch_goes_elsewhere_at_once(tenant):
    run = create(tenant.client, workerCount=1, files=FILES[:3]).json()["runId"]
    held = claim(tenant.client, run, "stopping").json()["items"]
    released = tenant.client.delete(f"/api/v1/orchestrate/{run}/claims/stopping")
    assert released.json() == {"released": len(held)}
    again = claim(tenant.client, run, "taker").json()["items"]
    assert [i["id"] for i in again] == [i["id"] for i in held]


def test_an_item_whose_workers_keep_dying_is_lost_and_reported(quick):
    repo = new_repo()
    run = create(quick.client, files=FILES[:1], project=repo).json()["runId"]
    for attempt in range(3):
        answer = claim(quick.client, run, f"doomed-{attempt}", worker=f"w{attempt}")
        assert answer.json()["status"] == "claimed"
        time.sleep(0.7)
    wait_for(lambda: quick.client.get(f"/api/v1/runs/{run}").json()["run"]["status"] == "failed")
    failed = quick.client.get(f"/api/v1/runs/{run}/failed-tests").json()["failedTests"]
    assert len(failed) == 1 and failed[0]["testFile"] == FILES[0]
    assert "stopped answering 3 times" in failed[0]["errorMessage"]
    assert claim(quick.client, run).json()["code"] == "RUN_FINISHED"
    stats = quick.client.get("/api/v1/orchestrate/queue/stats").json()
    assert stats["failed"] == 1


def test_a_straggling_batch_gets_a_second_worker_and_the_first_result_counts(tenant, monkeypatch):
    # core.queue's rule waits the claim's p90 and 5 s more; its tests cover it. Here: 0.2 s.
    monkeypatch.setattr(service, "straggler_after_ms", lambda items: 200.0)
    repo = new_repo()
    run = create(tenant.client, files=FILES[:1], project=repo).json()["runId"]
    slow = claim(tenant.client, run, "slow", worker="slow").json()["items"]
    time.sleep(0.3)
    copy = claim(tenant.client, run, "copy", worker="fast").json()
    assert copy["status"] == "claimed"
    assert [i["id"] for i in copy["items"]] == [i["id"] for i in slow]
    finish(tenant.client, run, repo, "copy", copy["items"])
    finish(tenant.client, run, repo, "slow", slow, failing=(FILES[0],))  # too late: speculative
    detail = tenant.client.get(f"/api/v1/runs/{run}").json()
    assert detail["run"]["status"] == "completed"
    assert detail["run"]["totalTests"] == 1 and detail["results"][0]["retryCount"] == 0


# Cancel and rerun ----------------------------------------------------------------------------


def test_cancel_removes_waiting_work_and_keeps_what_runs(tenant):
    repo = new_repo()
    run = create(tenant.client, project=repo, workerCount=5).json()["runId"]
    running = claim(tenant.client, run, "running").json()["items"]
    answer = tenant.client.delete(f"/api/v1/orchestrate/{run}")
    assert answer.json() == {"success": True, "message": "Orchestration cancelled"}
    beat = tenant.client.post(f"/api/v1/orchestrate/{run}/claims/running/heartbeat").json()
    assert beat["status"] == "cancelled"
    refused = claim(tenant.client, run)
    assert refused.status_code == 409 and refused.json()["code"] == "RUN_CANCELLED"
    finish(tenant.client, run, repo, "running", running)
    detail = tenant.client.get(f"/api/v1/runs/{run}").json()
    assert detail["run"]["status"] == "cancelled"
    assert detail["run"]["passedTests"] == len(running)
    stats = tenant.client.get("/api/v1/orchestrate/queue/stats").json()
    assert stats["waiting"] == 0 and stats["completed"] == len(running)
    assert tenant.client.delete(f"/api/v1/orchestrate/{run}").status_code == 200


def test_a_retried_ci_job_gets_only_its_failed_items_once(tenant):
    repo = new_repo()
    run = create(tenant.client, project=repo, workerCount=2, ciBuildId="ci-rerun").json()["runId"]
    node0 = drain(tenant.client, run, repo, failing=("tests/test_a.py",), nodeIndex=0)
    assert "tests/test_a.py" in node0
    assert tenant.client.get(f"/api/v1/runs/{run}").json()["run"]["status"] == "failed"
    retry = claim(tenant.client, run, "retry-1", nodeIndex=0, rerun="failed", attempt=2).json()
    assert [i["file"] for i in retry["items"]] == ["tests/test_a.py"]
    passing = junit_from_durations(
        {"tests/test_a.py::test_ok": 0.1, "tests/test_a.py::test_bad": 0.1}
    )
    answer = upload(tenant.client, passing, repo=repo, orchestration_run=run, batch_id="retry-1")
    assert answer.status_code == 201
    detail = tenant.client.get(f"/api/v1/runs/{run}").json()["run"]
    assert detail["status"] == "completed" and detail["flakyTests"] == 1
    again = claim(tenant.client, run, "retry-2", nodeIndex=0, rerun="failed", attempt=2)
    assert again.json()["code"] == "RUN_FINISHED"
    fixed = claim(tenant.client, run, "retry-3", nodeIndex=0, rerun="all", attempt=3).json()
    assert sorted(i["file"] for i in fixed["items"]) == sorted(node0)


# Runs made of uploads, listing, progress ------------------------------------------------------


def test_uploads_of_one_workflow_run_are_one_run(tenant):
    repo = new_repo()
    wf = str(uuid.uuid4().int % 10**9)
    a = junit_from_durations({"tests/test_a.py::test_1": 0.5, "tests/test_b.py::test_1": 0.5})
    b = junit_from_durations({"tests/test_c.py::test_1": 1.5})
    for xml in (a, b):
        assert (
            upload(tenant.client, xml, repo=repo, workflow_run_id=wf, branch="main").status_code
            == 201
        )
    assert upload(tenant.client, a, repo=repo, branch="other").status_code == 201
    runs = tenant.client.get("/api/v1/runs", params={"project": repo}).json()["runs"]
    assert len(runs) == 2
    by_branch = {run["branch"]: run for run in runs}
    assert by_branch["main"]["totalTests"] == 3 and by_branch["main"]["status"] == "completed"
    assert by_branch["main"]["durationMs"] == 1500.0  # the longest upload
    assert by_branch["other"]["totalTests"] == 2
    only_main = tenant.client.get("/api/v1/runs", params={"project": repo, "branch": "main"})
    assert [run["id"] for run in only_main.json()["runs"]] == [by_branch["main"]["id"]]
    paged = tenant.client.get("/api/v1/runs", params={"project": repo, "limit": 1, "offset": 1})
    assert len(paged.json()["runs"]) == 1
    failed = tenant.client.get("/api/v1/runs", params={"project": repo, "status": "failed"})
    assert failed.json()["runs"] == []


def test_runs_refuse_another_tenant_and_bad_parameters(tenant):
    answer = tenant.client.get("/api/v1/runs", params={"tenant": "someone-else"})
    assert answer.status_code == 403 and answer.json()["code"] == "INVALID_TENANT"
    assert tenant.client.get("/api/v1/runs", params={"tenant": tenant.name}).status_code == 200
    for params in ({"limit": 0}, {"status": "exploded"}, {"offset": -1}):
        bad = tenant.client.get("/api/v1/runs", params=params)
        assert bad.status_code == 400 and bad.json()["code"] == "INVALID_PARAMETERS"


def test_progress_streams_snapshots_until_the_run_ends(tenant, server):
    repo = new_repo()
    run = create(tenant.client, files=FILES[:4], project=repo, workerCount=2).json()["runId"]
    events: list[dict] = []
    ids: list[int] = []

    def listen() -> None:
        with (
            httpx.Client(base_url=server.url, headers=tenant.headers, timeout=30) as client,
            client.stream("GET", f"/api/v1/orchestrate/{run}/progress") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line.removeprefix("data:")))
                elif line.startswith("id:"):
                    ids.append(int(line.removeprefix("id:")))

    listener = threading.Thread(target=listen)
    listener.start()
    wait_for(lambda: len(events) >= 1)
    assert events[0]["status"] == "pending"
    assert [shard["index"] for shard in events[0]["shards"]] == [0, 1]
    drain(tenant.client, run, repo, failing=("tests/test_a.py",))
    listener.join(timeout=15)
    assert not listener.is_alive(), "the stream did not close when the run ended"
    last = events[-1]
    assert last["status"] == "failed" and last["failedTests"] == 1 and last["passedTests"] == 4
    assert all(shard["status"] == "completed" for shard in last["shards"])
    assert sum(shard["completed"] for shard in last["shards"]) == 4
    assert ids[0] == 0 and ids == sorted(ids) and ids[-1] >= 3  # the run's events so far


def test_concurrent_claims_hand_out_each_item_once_in_shrinking_batches(tenant):
    files = [f"tests/test_{i:03}.py" for i in range(120)]
    run = create(tenant.client, files=files, workerCount=20).json()["runId"]
    got: list[int] = []
    sizes: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            answer = claim(tenant.client, run)
            if answer.status_code != 200 or answer.json()["status"] != "claimed":
                return
            with lock:
                got.extend(item["id"] for item in answer.json()["items"])
                sizes.append(len(answer.json()["items"]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == len(set(got)) == 120
    # Each claim sized its batch from what was left when it was served, counting earlier
    # claims that had not yet answered: the batches are those of claims made one at a time.
    alone = create(tenant.client, files=files, workerCount=20).json()["runId"]
    expected = []
    while (answer := claim(tenant.client, alone).json()).get("status") == "claimed":
        expected.append(len(answer["items"]))
    assert sorted(sizes) == sorted(expected) and len(expected) > 20


def test_flaky_and_broken_files_go_first_and_flaky_ones_carry_retries(tenant):
    repo = new_repo()
    ingest_history(tenant.client, repo=repo)  # test_pay flaky, test_login broken
    slow = junit_from_durations({"tests/test_slow.py::test_x": 100.0})
    assert upload(tenant.client, slow, repo=repo, environment="linux").status_code == 201
    files = ["tests/test_slow.py", "tests/test_shop.py", "tests/test_new.py"]
    run = create(tenant.client, files=files, project=repo, environment="linux").json()["runId"]
    items = claim(tenant.client, run).json()["items"]
    assert items[0]["file"] == "tests/test_shop.py"
    assert items[0]["retries"] >= 1
    assert all(item["retries"] == 0 for item in items[1:])


def test_listed_tests_find_their_state_whatever_format_reported_them(tenant):
    """History from pytest's JUnit XML (classname tests.test_shop.TestShop) and a run that
    lists node ids (tests/test_shop.py::TestShop::test_pay) name the same tests."""
    repo = new_repo()
    ingest_history(tenant.client, repo=repo)
    listed = ["tests/test_shop.py::TestShop::test_pay", "tests/test_other.py::test_x"]
    run = create(
        tenant.client, files=["tests/test_other.py"], tests=listed, project=repo, workerCount=1
    )
    items = claim(tenant.client, run.json()["runId"]).json()["items"]
    by_file = {item["file"]: item for item in items}
    assert by_file["tests/test_shop.py"]["tests"] == listed[:1]
    assert by_file["tests/test_shop.py"]["retries"] >= 1
    assert by_file["tests/test_other.py"]["retries"] == 0
