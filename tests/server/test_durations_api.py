"""Duration predictions end to end: history comes from real uploads to /api/test-results, and
is read back through /api/durations, /api/shard-plans and the Flakiness.io Durations API."""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import brotli
import httpx
import jwt
import pytest
from builders import junit_from_durations, make_tenant, upload
from corpus import CORPUS
from sqlalchemy import func, select

from testlens.core.durations import DEFAULT_MS, Sample, estimate
from testlens.core.identity import TestKey as Key  # not a test class to collect
from testlens.core.identity import match_tests
from testlens.server.durations import jobs as durations_jobs
from testlens.server.durations import tasks as durations_tasks
from testlens.server.models import DurationJob

EXAMPLE = CORPUS / "flakiness-report-example.json"


def ingest_runs(client: httpx.Client, runs: list[dict[str, float]], **fields: str) -> None:
    """Upload each run as its own CI run (another commit), oldest first."""
    for number, run in enumerate(runs):
        response = upload(client, junit_from_durations(run), commit=f"{number:040x}", **fields)
        assert response.status_code == 201, response.text


def expected_ms(*seconds: float) -> float:
    """What testlens predicts from these runs (oldest first): the core estimate's p50."""
    samples = [Sample(s * 1000, len(seconds) - 1 - age) for age, s in enumerate(seconds)]
    return estimate(samples).p50_ms


def flakiness_report(
    tests: list[str], environments: tuple[str, ...] = ("linux",), **extra: object
) -> dict:
    """A Flakiness report listing pytest node ids to run, one file suite per file."""
    files: dict[str, dict] = {}
    for nodeid in tests:
        key = Key.from_nodeid(nodeid)
        file = files.setdefault(
            key.file,
            {
                "type": "file",
                "title": key.file,
                "location": {"file": key.file, "line": 0, "column": 0},
                "suites": [],
                "tests": [],
            },
        )
        holder = file
        for title in filter(None, key.classname.split("::")):
            found = [suite for suite in holder["suites"] if suite["title"] == title]
            if not found:
                found = [{"type": "suite", "title": title, "suites": [], "tests": []}]
                holder["suites"].append(found[0])
            holder = found[0]
        holder["tests"].append({"title": key.name, "attempts": []})
    return {
        "category": "pytest",
        "commitId": "f" * 40,
        "startTimestamp": 0,
        "duration": 0,
        "environments": [{"name": name} for name in environments],
        "suites": list(files.values()),
        **extra,
    }


def attempts_by_nodeid(document: dict) -> dict[str, list[dict]]:
    """Each test's attempts, keyed like :func:`flakiness_report`'s input."""
    found: dict[str, list[dict]] = {}

    def walk(suite: dict, file: str, path: tuple[str, ...]) -> None:
        if suite["type"] == "file":
            file = suite["title"]
        else:
            path = (*path, suite["title"])
        for child in suite.get("suites", []):
            walk(child, file, path)
        for test in suite.get("tests", []):
            found["::".join((file, *path, test["title"]))] = test["attempts"]

    for suite in document["suites"]:
        walk(suite, "", ())
    return found


def compress(document: dict | bytes) -> bytes:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return brotli.compress(raw)


def create(
    client: httpx.Client, commit: str = "c" * 40, group: str = "unit", **slugs: str
) -> dict[str, str]:
    response = client.post(
        "/api/testDurations/create", json={"commitId": commit, "shardGroupKey": group, **slugs}
    )
    assert response.status_code == 200, response.text
    return response.json()


def put_report(client: httpx.Client, url: str, body: bytes) -> httpx.Response:
    return client.put(
        url, content=body, headers={"Content-Encoding": "br", "Content-Type": "application/json"}
    )


def submit(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/api/testDurations/submit", headers={"Authorization": f"Bearer {token}"})


def poll(client: httpx.Client, url: str) -> httpx.Response:
    """GET the download URL until it stops answering 404 (computing)."""
    deadline = time.monotonic() + 30
    while True:
        response = client.get(url)
        if response.status_code != 404 or time.monotonic() > deadline:
            return response
        assert response.json()["code"] == "NOT_READY"
        time.sleep(0.05)


def round_trip(tenant, anonymous, report: dict, **create_fields: str) -> dict:
    """create -> PUT (Brotli) -> submit -> GET: the report with predicted attempts."""
    job = create(tenant.client, **create_fields)
    assert put_report(anonymous, job["uploadUrl"], compress(report)).status_code == 200
    submitted = submit(anonymous, job["testDurationsToken"])
    assert submitted.status_code == 200, submitted.text
    response = poll(anonymous, submitted.json()["downloadUrl"])
    assert response.status_code == 200, response.text
    return response.json()


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture
def count_computations(monkeypatch):
    """Count the jobs actually computed by the server (it runs in this process)."""
    calls: list[str] = []
    original = durations_tasks.fill

    def counting(database, job_id):
        calls.append(job_id)
        return original(database, job_id)

    monkeypatch.setattr(durations_tasks, "fill", counting)
    return calls


@pytest.fixture
def small_uploads(app):
    """The server's upload limit lowered to 2000 bytes, for one test."""
    settings = app.state.settings
    app.state.settings = dataclasses.replace(settings, max_upload_bytes=2000)
    yield
    app.state.settings = settings


CART_RUNS = [
    {
        "tests/test_cart.py::TestCart::test_add": 1.0,
        "tests/test_cart.py::test_total": 0.25,
        "tests/test_pay.py::TestPay::test_card[visa]": 3.0,
    },
    {
        "tests/test_cart.py::TestCart::test_add": 1.4,
        "tests/test_cart.py::test_total": 0.25,
        "tests/test_pay.py::TestPay::test_card[visa]": 3.0,
    },
    {
        "tests/test_cart.py::TestCart::test_add": 1.2,
        "tests/test_cart.py::test_total": 0.25,
        "tests/test_pay.py::TestPay::test_card[visa]": 3.0,
    },
]
ADD_MS = expected_ms(1.0, 1.4, 1.2)


# /api/durations ------------------------------------------------------------------------------


def test_listing_reads_history_written_at_ingest(tenant):
    ingest_runs(tenant.client, CART_RUNS, environment="linux")
    response = tenant.client.get(
        "/api/durations", params={"repo": "acme/shop", "environment": "linux"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["repo"] == "acme/shop"
    assert body["environment"] == "linux"
    by_nodeid = {test["nodeid"]: test for test in body["tests"]}
    assert sorted(by_nodeid) == sorted(CART_RUNS[0])
    add = by_nodeid["tests/test_cart.py::TestCart::test_add"]
    assert add["file"] == "tests/test_cart.py"
    assert add["classname"] == "tests.test_cart.TestCart"
    assert add["name"] == "test_add"
    assert add["p50_ms"] == pytest.approx(ADD_MS)
    assert add["p90_ms"] >= add["p50_ms"]
    assert add["samples"] == 3
    assert len(add["id"]) == 32
    assert by_nodeid["tests/test_cart.py::test_total"]["p50_ms"] == pytest.approx(250)

    # No history in another environment; the repository does have environments of its own.
    other = tenant.client.get(
        "/api/durations", params={"repo": "acme/shop", "environment": "macos"}
    ).json()
    assert other == {"repo": "acme/shop", "environment": "macos", "tests": []}


def test_listing_without_environments_answers_for_any(tenant):
    ingest_runs(tenant.client, CART_RUNS[:1])
    body = tenant.client.get(
        "/api/durations", params={"repo": "acme/shop", "environment": "linux"}
    ).json()
    assert body["environment"] == ""
    assert len(body["tests"]) == 3


def test_listing_unknown_repo_is_404_and_foreign_repo_too(tenant, database, server):
    missing = tenant.client.get("/api/durations", params={"repo": "acme/nothing"})
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
    ingest_runs(tenant.client, CART_RUNS[:1])
    intruder = make_tenant(database, server)
    assert intruder.client.get("/api/durations", params={"repo": "acme/shop"}).status_code == 404
    bad = tenant.client.get("/api/durations", params={"repo": "no-slash"})
    assert bad.status_code == 422


# Matching ------------------------------------------------------------------------------------


JUNIT_ADD = Key("tests/test_x.py", "pytest", "tests.test_x.TestFoo", "test_a[1]")
JUNIT_MODULE = Key("tests/test_x.py", "pytest", "tests.test_x", "test_b")
JUNIT_INNER = Key("tests/test_x.py", "pytest", "tests.test_x.TestFoo.Inner", "test_c")
FLAKINESS_LOGIN = Key("tests/test_api.py", "TestLogin", "", "test_ok")
PYTEST_FLAKINESS = Key("tests/test_api.py", "", "", "TestLogin::test_out")
JAVA = Key("", "com.acme.FooTest", "com.acme.FooTest", "testBar")


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        # 1. exact identity
        (JUNIT_ADD, JUNIT_ADD),
        # 2. same file and name, same last class component
        (Key.from_nodeid("tests/test_x.py::TestFoo::test_a[1]"), JUNIT_ADD),
        (Key.from_nodeid("tests/test_x.py::TestFoo::Inner::test_c"), JUNIT_INNER),
        (Key.from_nodeid("tests/test_x.py::test_b"), JUNIT_MODULE),
        (Key("tests/test_x.py", "TestFoo", "", "test_a[1]"), JUNIT_ADD),
        (Key.from_nodeid("tests/test_api.py::TestLogin::test_ok"), FLAKINESS_LOGIN),
        (Key("tests/test_api.py", "", "", "TestLogin::test_ok"), FLAKINESS_LOGIN),
        (Key.from_nodeid("tests/test_api.py::TestLogin::test_out"), PYTEST_FLAKINESS),
        (Key("", "", "FooTest", "testBar"), JAVA),
        # 3. same file and name, unique
        (Key.from_nodeid("tests/test_x.py::TestRenamed::test_a[1]"), JUNIT_ADD),
        # no match: wrong parameters, wrong file
        (Key.from_nodeid("tests/test_x.py::TestFoo::test_a[2]"), None),
        (Key.from_nodeid("tests/test_y.py::TestFoo::test_a[1]"), None),
    ],
)
def test_matching_rules(requested, expected):
    stored = {JUNIT_ADD, JUNIT_MODULE, JUNIT_INNER, FLAKINESS_LOGIN, PYTEST_FLAKINESS, JAVA}
    assert match_tests([requested], stored).get(requested) == expected


def test_ambiguous_names_match_nothing_unless_the_class_decides():
    first = Key("t.py", "pytest", "t.TestA", "test_x")
    second = Key("t.py", "pytest", "t.TestB", "test_x")
    module = Key("t.py", "pytest", "t", "test_x")
    stored = {first, second, module}
    asked = [
        Key.from_nodeid(n) for n in ("t.py::TestA::test_x", "t.py::test_x", "t.py::TestC::test_x")
    ]
    assert match_tests(asked, stored) == {asked[0]: first, asked[1]: module}


# /api/shard-plans ----------------------------------------------------------------------------


def plan(client: httpx.Client, tests: list[str], **fields: object) -> httpx.Response:
    return client.post(
        "/api/shard-plans",
        json={"repo": "acme/shop", "environment": "linux", "shards": 2, "tests": tests} | fields,
    )


def test_shard_plan_uses_matched_history_and_falls_back(tenant):
    ingest_runs(
        tenant.client,
        [{**run, "tests/test_cart.py::TestOther::test_add": 0.5} for run in CART_RUNS],
        environment="linux",
    )
    tests = [
        "tests/test_cart.py::TestCart::test_add",  # exact class
        "tests/test_cart.py::test_total",  # module-level test
        "tests/test_pay.py::TestRenamed::test_card[visa]",  # unique (file, name)
        "tests/test_cart.py::TestGone::test_add",  # two candidates: the file's median
        "tests/test_new.py::test_x",  # a new file: the repository's median
    ]
    response = plan(tenant.client, tests, shards=1)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"plan_id", "shards", "durations_ms", "sources"}
    assert body["sources"] == {"history": 3, "file": 1, "suite": 0, "repo": 1, "default": 0}
    assert sorted(body["shards"][0]) == sorted(tests)
    known = {"add": ADD_MS, "other": 500.0, "total": 250.0, "card": 3000.0}
    file_median = statistics.median([known["add"], known["other"], known["total"]])
    repo_median = statistics.median(known.values())
    expected = known["add"] + known["total"] + known["card"] + file_median + repo_median
    assert body["durations_ms"] == [pytest.approx(expected, abs=0.01)]


def test_shard_plan_is_deterministic_and_stored_for_every_node(tenant, database, server):
    ingest_runs(tenant.client, CART_RUNS, environment="linux")
    tests = [f"tests/test_gen.py::test_{n}" for n in range(40)] + list(CART_RUNS[0])
    first = plan(tenant.client, tests, shards=3)
    shuffled = random.Random(7).sample(tests, len(tests))
    second = plan(tenant.client, shuffled, shards=3)
    assert first.status_code == second.status_code == 201
    one, two = first.json(), second.json()
    assert one["plan_id"] != two["plan_id"]
    assert {k: v for k, v in one.items() if k != "plan_id"} == {
        k: v for k, v in two.items() if k != "plan_id"
    }
    assert sorted(n for shard in one["shards"] for n in shard) == sorted(tests)
    assert len(one["durations_ms"]) == 3

    fetched = tenant.client.get(f"/api/shard-plans/{one['plan_id']}")
    assert fetched.status_code == 200
    assert fetched.json() == one
    intruder = make_tenant(database, server)
    hidden = intruder.client.get(f"/api/shard-plans/{one['plan_id']}")
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "NOT_FOUND"


def test_shard_plan_for_a_new_repository_uses_defaults(tenant):
    tests = [f"spec/test_{n}.py::test_it" for n in range(6)]
    response = plan(tenant.client, tests, repo="acme/brand-new", shards=3)
    assert response.status_code == 201
    body = response.json()
    assert body["sources"]["default"] == 6
    assert [len(shard) for shard in body["shards"]] == [2, 2, 2]
    assert body["durations_ms"] == [2 * DEFAULT_MS] * 3


def test_shard_plan_groups_by_file(tenant):
    tests = [f"tests/test_{f}.py::test_{n}" for f in "abcd" for n in range(3)]
    body = plan(tenant.client, tests, group_by="file").json()
    for shard in body["shards"]:
        files = {Key.from_nodeid(nodeid).file for nodeid in shard}
        assert all(sum(t.startswith(f) for t in shard) == 3 for f in files)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"shards": 0}, "VALIDATION_ERROR"),
        ({"shards": 1001}, "VALIDATION_ERROR"),
        ({"group_by": "class"}, "VALIDATION_ERROR"),
        ({"repo": "nope"}, "VALIDATION_ERROR"),
        ({"tests": [""]}, "VALIDATION_ERROR"),
        ({"tests": ["a.py::t", "a.py::::t"]}, "DUPLICATE_TEST"),
    ],
)
def test_shard_plan_validation(tenant, fields, code):
    response = plan(tenant.client, **{"tests": ["a.py::t"], **fields})
    assert response.status_code == 422
    assert response.json()["code"] == code


def test_shard_plan_needs_read_scope(database, server, anonymous):
    ingest_only = make_tenant(database, server, scopes=("ingest",))
    assert plan(ingest_only.client, ["a.py::t"]).status_code == 403
    assert plan(anonymous, ["a.py::t"]).status_code == 401


# The Durations API ---------------------------------------------------------------------------


def test_durations_round_trip(tenant, anonymous):
    ingest_runs(tenant.client, CART_RUNS, environment="linux")
    report = flakiness_report(
        [*CART_RUNS[0], "tests/test_new.py::test_unknown"],
        environments=("linux", "macos"),
        flakinessProject="acme/shop",
    )
    job = create(tenant.client)
    assert job["uploadUrl"].startswith(f"{tenant.client.base_url}/api/testDurations/")
    assert claims(job["testDurationsToken"])["exp"] - time.time() == pytest.approx(600, abs=30)
    assert put_report(anonymous, job["uploadUrl"], compress(report)).status_code == 200
    submitted = submit(anonymous, job["testDurationsToken"])
    assert submitted.status_code == 200
    download = submitted.json()["downloadUrl"]
    assert poll(anonymous, download).status_code == 200
    with anonymous.stream("GET", download) as response:
        assert response.headers["content-encoding"] == "br"
        assert response.headers["content-type"] == "application/json"
        document = json.loads(brotli.decompress(b"".join(response.iter_raw())))
    assert document["environments"] == report["environments"]
    assert document["commitId"] == report["commitId"]
    assert attempts_by_nodeid(document) == {
        "tests/test_cart.py::TestCart::test_add": [
            {"environmentIdx": 0, "duration": pytest.approx(ADD_MS)}
        ],
        "tests/test_cart.py::test_total": [{"environmentIdx": 0, "duration": 250.0}],
        "tests/test_pay.py::TestPay::test_card[visa]": [{"environmentIdx": 0, "duration": 3000.0}],
        "tests/test_new.py::test_unknown": [],
    }


def test_durations_from_flakiness_history_and_slugs(tenant, anonymous):
    """History ingested from a Flakiness report answers the same report: the report's tests
    are identified as the parser identifies them, in each environment by name."""
    example = json.loads(EXAMPLE.read_text())
    assert (
        upload(
            tenant.client,
            EXAMPLE.read_bytes(),
            filename="report.json",
            repo="acme/web",
            framework="pytest",
        ).status_code
        == 201
    )
    document = round_trip(tenant, anonymous, example, orgSlug="acme", projectSlug="web")
    attempts = attempts_by_nodeid(document)
    assert attempts == {
        "tests/test_api.py::TestLogin::test_ok": [
            {"environmentIdx": 0, "duration": 120},
            {"environmentIdx": 1, "duration": 135},
        ],
        "tests/test_api.py::TestLogin::test_retry": [
            {"environmentIdx": 0, "duration": expected_ms(0.8, 0.7)}
        ],
        "tests/test_api.py::test_skip_windows": [],
        "tests/test_api.py::test_known_bug": [{"environmentIdx": 0, "duration": 15}],
        "tests/test_api.py::test_slow": [{"environmentIdx": 0, "duration": 3000}],
    }


def test_repository_without_environments_answers_every_environment(tenant, anonymous):
    ingest_runs(tenant.client, CART_RUNS[:1], repo="acme/plain")
    report = flakiness_report(
        ["tests/test_cart.py::test_total"], environments=("chromium", "firefox")
    )
    document = round_trip(tenant, anonymous, report, orgSlug="acme", projectSlug="plain")
    assert attempts_by_nodeid(document)["tests/test_cart.py::test_total"] == [
        {"environmentIdx": 0, "duration": 250.0},
        {"environmentIdx": 1, "duration": 250.0},
    ]


def test_unknown_repository_leaves_every_attempt_empty(tenant, anonymous):
    report = flakiness_report(["tests/test_cart.py::test_total"], flakinessProject="acme/none")
    document = round_trip(tenant, anonymous, report)
    assert attempts_by_nodeid(document) == {"tests/test_cart.py::test_total": []}


def test_shards_of_one_run_share_one_job_and_one_computation(
    tenant, anonymous, database, count_computations
):
    ingest_runs(tenant.client, CART_RUNS, environment="linux")
    shard1, shard2 = (create(tenant.client, commit="d" * 40, group="e2e-linux") for _ in "12")
    assert shard1["testDurationsToken"] != shard2["testDurationsToken"]
    job_id = claims(shard1["testDurationsToken"])["job"]
    assert claims(shard2["testDurationsToken"])["job"] == job_id
    other_group = create(tenant.client, commit="d" * 40, group="e2e-mac")
    other_project = create(
        tenant.client, commit="d" * 40, group="e2e-linux", orgSlug="acme", projectSlug="shop"
    )
    assert (
        len(
            {
                claims(job["testDurationsToken"])["job"]
                for job in (shard1, other_group, other_project)
            }
        )
        == 3
    )

    first = flakiness_report(["tests/test_cart.py::test_total"], flakinessProject="acme/shop")
    later = flakiness_report(
        ["tests/test_cart.py::TestCart::test_add"], flakinessProject="acme/shop"
    )
    assert put_report(anonymous, shard1["uploadUrl"], compress(first)).status_code == 200
    assert put_report(anonymous, shard2["uploadUrl"], compress(later)).status_code == 200
    with ThreadPoolExecutor(2) as pool:  # the shards submit at the same moment
        submitted = list(
            pool.map(lambda job: submit(anonymous, job["testDurationsToken"]), (shard1, shard2))
        )
    urls = [response.json()["downloadUrl"] for response in submitted]
    bodies = [poll(anonymous, url) for url in urls]
    assert bodies[0].content == bodies[1].content
    assert list(attempts_by_nodeid(bodies[0].json())) == ["tests/test_cart.py::test_total"]
    assert submit(anonymous, shard2["testDurationsToken"]).status_code == 200
    assert poll(anonymous, urls[0]).status_code == 200
    assert count_computations == [job_id]
    with database.transaction() as session:
        rows = session.scalar(
            select(func.count()).select_from(DurationJob).where(DurationJob.commit_id == "d" * 40)
        )
    assert rows == 3


def test_download_is_404_until_computed(tenant, anonymous, monkeypatch):
    release = threading.Event()
    original = durations_tasks.fill

    def slow(database, job_id):
        release.wait(10)
        return original(database, job_id)

    monkeypatch.setattr(durations_tasks, "fill", slow)
    job = create(tenant.client, commit="e" * 40)
    report = flakiness_report(["a.py::t"], flakinessProject="acme/shop")
    put_report(anonymous, job["uploadUrl"], compress(report))
    url = submit(anonymous, job["testDurationsToken"]).json()["downloadUrl"]
    waiting = anonymous.get(url)
    assert waiting.status_code == 404
    assert set(waiting.json()) == {"error", "code", "message", "details"}
    assert waiting.json()["code"] == "NOT_READY"
    release.set()
    assert poll(anonymous, url).status_code == 200


def test_a_failed_computation_is_reported_and_retried_on_submit(tenant, anonymous, monkeypatch):
    original = durations_tasks.fill

    def broken(database, job_id):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(durations_tasks, "fill", broken)
    job = create(tenant.client, commit="f" * 40)
    put_report(
        anonymous,
        job["uploadUrl"],
        compress(flakiness_report(["a.py::t"], flakinessProject="acme/shop")),
    )
    url = submit(anonymous, job["testDurationsToken"]).json()["downloadUrl"]
    failed = poll(anonymous, url)
    assert failed.status_code == 500
    assert failed.json()["code"] == "COMPUTATION_FAILED"
    assert "disk on fire" in failed.json()["message"]
    monkeypatch.setattr(durations_tasks, "fill", original)
    assert submit(anonymous, job["testDurationsToken"]).status_code == 200
    assert poll(anonymous, url).status_code == 200


def test_submit_before_upload_is_400(tenant, anonymous):
    job = create(tenant.client, commit="1" * 40)
    response = submit(anonymous, job["testDurationsToken"])
    assert response.status_code == 400
    assert response.json()["code"] == "REPORT_NOT_UPLOADED"


def test_tokens_expired_forged_and_foreign(tenant, anonymous, app, database, server):
    job = create(tenant.client, commit="2" * 40)
    put_report(
        anonymous,
        job["uploadUrl"],
        compress(flakiness_report(["a.py::t"], flakinessProject="acme/shop")),
    )
    real = claims(job["testDurationsToken"])
    key = app.state.keys.derive("durations-token")
    past = datetime.now(UTC) - timedelta(minutes=11)
    expired = jwt.encode(
        {**real, "iat": past, "exp": past + timedelta(minutes=10)}, key, algorithm="HS256"
    )
    forged = jwt.encode(real, b"k" * 32, algorithm="HS256")
    other = claims(create(make_tenant(database, server).client)["testDurationsToken"])
    foreign = jwt.encode({**real, "tenant": other["tenant"]}, key, algorithm="HS256")
    for token, status, code in [
        (expired, 401, "TOKEN_EXPIRED"),
        (forged, 401, "INVALID_TOKEN"),
        (tenant.key, 401, "INVALID_TOKEN"),
        (foreign, 403, "FORBIDDEN"),
    ]:
        response = submit(anonymous, token)
        assert (response.status_code, response.json()["code"]) == (status, code)
    assert anonymous.post("/api/testDurations/submit").status_code == 401
    # A durations token is not an API key.
    refused = anonymous.post(
        "/api/testDurations/create",
        json={"commitId": "2" * 40, "shardGroupKey": "unit"},
        headers={"Authorization": f"Bearer {job['testDurationsToken']}"},
    )
    assert refused.status_code == 401


def test_presigned_urls_cannot_be_altered_or_reused(tenant, anonymous, monkeypatch):
    job = create(tenant.client, commit="3" * 40)
    body = compress(flakiness_report(["a.py::t"], flakinessProject="acme/shop"))
    url = httpx.URL(job["uploadUrl"])
    params = dict(url.params)
    tampered = [
        url.copy_merge_params({"signature": "A" * len(params["signature"])}),
        url.copy_merge_params({"expires": str(int(params["expires"]) + 3600)}),
        url.copy_with(params={"expires": params["expires"]}),
        str(url).replace(claims(job["testDurationsToken"])["job"], "0" * 36),
    ]
    for candidate in tampered:
        response = put_report(anonymous, str(candidate), body)
        assert response.status_code == 403, candidate
        assert response.json()["code"] == "INVALID_SIGNATURE"
    # The upload URL's signature does not open the download.
    download = anonymous.get(str(url).replace("/report?", "/durations?"))
    assert download.status_code == 403

    monkeypatch.setattr(durations_jobs, "UPLOAD_URL_TTL", timedelta(seconds=-1))
    stale = create(tenant.client, commit="4" * 40)
    expired = put_report(anonymous, stale["uploadUrl"], body)
    assert expired.status_code == 401
    assert expired.json()["code"] == "URL_EXPIRED"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"not brotli at all", 400, "not Brotli"),
        (compress(b"{not json"), 400, "invalid JSON"),
        (compress({"hello": "world"}), 400, "not in the flakiness format"),
        (compress({**flakiness_report(["a.py::t"]), "environments": [{}]}), 400, "'name'"),
        (compress(flakiness_report(["a.py::t"])), 400, "no repository"),
        (
            compress(
                json.dumps(flakiness_report(["a.py::t"], flakinessProject="a/b")).encode()
                + b" " * 3000
            ),
            413,
            "",
        ),
    ],
)
def test_malformed_and_oversized_reports(tenant, anonymous, small_uploads, body, status, reason):
    job = create(tenant.client, commit="5" * 40)
    response = put_report(anonymous, job["uploadUrl"], body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == ("INVALID_REPORT" if status == 400 else "PAYLOAD_TOO_LARGE")
    assert reason in response.json()["message"]
    assert submit(anonymous, job["testDurationsToken"]).status_code == 400
    # A valid report after a rejected one is still the first one kept.
    valid = compress(flakiness_report(["a.py::t"], flakinessProject="acme/shop"))
    assert put_report(anonymous, job["uploadUrl"], valid).status_code == 200
    assert submit(anonymous, job["testDurationsToken"]).status_code == 200


def test_deeply_nested_report_is_400(tenant, anonymous):
    job = create(tenant.client, commit="5" * 40)
    response = put_report(anonymous, job["uploadUrl"], brotli.compress(b"[" * 100_000))
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_REPORT"


def test_upload_limits_apply_before_decompression_too(tenant, anonymous, small_uploads):
    job = create(tenant.client, commit="6" * 40)
    noise = random.Random(1).randbytes(3000)
    assert put_report(anonymous, job["uploadUrl"], noise).status_code == 413
    plain = anonymous.put(
        job["uploadUrl"], content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert plain.status_code == 415


@pytest.mark.parametrize(
    "fields",
    [
        {"commitId": "a" * 40, "shardGroupKey": "has space"},
        {"commitId": "a" * 40, "shardGroupKey": "x" * 251},
        {"commitId": "a" * 40, "shardGroupKey": ""},
        {"commitId": "", "shardGroupKey": "unit"},
        {"commitId": "a" * 40, "shardGroupKey": "unit", "orgSlug": "acme"},
        {"shardGroupKey": "unit"},
    ],
)
def test_create_validation(tenant, fields):
    response = tenant.client.post("/api/testDurations/create", json=fields)
    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_ERROR"


def test_create_needs_a_read_key(database, server, anonymous):
    fields = {"commitId": "a" * 40, "shardGroupKey": "unit"}
    assert anonymous.post("/api/testDurations/create", json=fields).status_code == 401
    ingest_only = make_tenant(database, server, scopes=("ingest",))
    assert ingest_only.client.post("/api/testDurations/create", json=fields).status_code == 403
