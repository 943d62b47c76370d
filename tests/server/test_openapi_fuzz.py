"""Every operation of the OpenAPI document, fuzzed by schemathesis against the real server.

The schema is the one the server serves; requests carry a real admin key of a tenant with
real data (uploads, a quarantine, webhooks, a shard plan, durations jobs), and about half of
the well-formed requests name its rows, so that reads and writes reach them as well as the
404s. Every answer must be no server error (a documented 503 aside) and documented: its
status, content type, body and headers as the operation's responses say.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import brotli
import pytest
import schemathesis
from builders import LiveServer, Tenant, ingest_history, junit, make_tenant, upload
from fastapi import FastAPI
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

EXAMPLES = 30
"""Generated requests per operation and phase (fuzzing; the coverage phase adds its own)."""

CONFIG: dict[str, Any] = {
    "seed": 20260601,
    "suppress-health-check": ["all"],
    "generation": {
        "mode": "all",  # well-formed requests and malformed ones
        "max-examples": EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    # A 503 is the documented answer when the database does not answer; any other 5xx fails.
    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
}

REPO = "acme/shop"

# schemathesis's own strategies draw from `random` (its business, not this test's).
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")


@dataclass
class World:
    """The tenant's rows, and what a request must carry to reach them."""

    owner: Tenant
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    # By operation label: what to send instead of the generic values above.
    path_for: dict[str, dict[str, str]] = field(default_factory=dict)
    query_for: dict[str, dict[str, str]] = field(default_factory=dict)
    headers_for: dict[str, dict[str, str]] = field(default_factory=dict)
    body_for: dict[str, dict[str, Any]] = field(default_factory=dict)  # fields of a form


def _presigned(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """A presigned URL's job id and query (``expires``, ``signature``)."""
    parts = urlsplit(url)
    return {"job_id": parts.path.split("/")[4]}, dict(parse_qsl(parts.query))


def _durations_report() -> bytes:
    test = {"title": "test_pay", "attempts": []}
    suite = {"type": "suite", "title": "TestShop", "suites": [], "tests": [test]}
    file = {
        "type": "file",
        "title": "tests/test_shop.py",
        "location": {"file": "tests/test_shop.py", "line": 0, "column": 0},
        "suites": [suite],
        "tests": [],
    }
    report = {
        "category": "pytest",
        "commitId": "f" * 40,
        "startTimestamp": 0,
        "duration": 0,
        "environments": [{"name": "linux"}],
        "suites": [file],
    }
    return brotli.compress(json.dumps(report).encode())


@pytest.fixture(scope="module")
def world(app: FastAPI, server: LiveServer) -> Iterator[World]:
    # With the rate limits on, most requests of a fuzzing run would be 429s, which would test
    # the limiter and little else (tests/server/test_rate_limits.py tests it).
    assert not app.state.settings.rate_limits_enabled, "the suite's settings turn them off"
    owner = make_tenant(app.state.database, server, scopes=("admin",))
    client = owner.client

    def answer(method: str, url: str, **kwargs: Any) -> Any:
        response = client.request(method, url, **kwargs)
        assert response.status_code < 300, (url, response.text)
        return response.json() if response.content else None

    def webhook() -> str:
        body = {"url": "http://127.0.0.1:9/h", "events": ["new_flaky_test"], "secret": "s" * 16}
        return str(answer("POST", "/api/webhooks", json=body)["id"])

    hook = webhook()  # before the uploads, so that their events make deliveries
    runs = ingest_history(client, repo=REPO)
    doomed = upload(client, junit({"test_gone": ["pass"]}), repo="acme/doomed")
    assert doomed.status_code == 201, doomed.text
    repo_id = answer("GET", "/api/repos")["repos"][0]["id"]
    test_id = answer("GET", f"/api/repos/{repo_id}")["tests"][0]["id"]
    answer("POST", f"/api/tests/{test_id}/quarantine", json={"reason": "flaky"})
    deliveries = answer("GET", f"/api/webhooks/{hook}/deliveries")["deliveries"]
    assert deliveries, "the uploads made a flaky test, which the webhook is told of"
    plan = answer(
        "POST",
        "/api/shard-plans",
        json={"repo": REPO, "shards": 2, "tests": ["tests/test_shop.py::TestShop::test_pay"]},
    )
    slugs = {"orgSlug": "acme", "projectSlug": "shop"}
    waiting = answer(
        "POST",
        "/api/testDurations/create",
        json={"commitId": "1" * 40, "shardGroupKey": "waiting", **slugs},
    )
    computed = answer(
        "POST",
        "/api/testDurations/create",
        json={"commitId": "2" * 40, "shardGroupKey": "computed", **slugs},
    )
    answer(
        "PUT",
        computed["uploadUrl"],
        content=_durations_report(),
        headers={"Content-Encoding": "br", "Content-Type": "application/json"},
    )
    token = {"Authorization": f"Bearer {computed['testDurationsToken']}"}
    download = answer("POST", "/api/testDurations/submit", headers=token)["downloadUrl"]
    wheel = client.get("/client/testlens.whl")
    assert wheel.status_code == 200
    filename = wheel.headers["content-disposition"].split('"')[1]

    upload_path, upload_query = _presigned(waiting["uploadUrl"])
    download_path, download_query = _presigned(download)
    world = World(
        owner,
        path={
            "run_id": runs[0]["run_id"],
            "repo_id": repo_id,
            "test_id": test_id,
            "webhook_id": hook,
            "delivery_id": deliveries[0]["id"],
            "plan_id": plan["plan_id"],
            "filename": filename,
        },
        query={"repo": REPO, "project": REPO},
        path_for={
            # Deleted by the run: rows of their own, so that the other operations keep theirs.
            "DELETE /api/webhooks/{webhook_id}": {"webhook_id": webhook()},
            "DELETE /api/keys/{key_id}": {
                "key_id": answer("POST", "/api/keys", json={"scopes": ["read"]})["id"]
            },
            "DELETE /api/repos/{owner}/{name}": {"owner": "acme", "name": "doomed"},
            "PUT /api/testDurations/jobs/{job_id}/report": upload_path,
            "GET /api/testDurations/jobs/{job_id}/durations": download_path,
        },
        query_for={
            "PUT /api/testDurations/jobs/{job_id}/report": upload_query,
            "GET /api/testDurations/jobs/{job_id}/durations": download_query,
        },
        headers_for={"POST /api/testDurations/submit": token},
        # A real report under the generated form fields, so that they are stored too.
        body_for={"POST /api/test-results": {"file": junit({"test_fuzzed": ["fail", "pass"]})}},
    )
    yield world
    client.close()


@pytest.fixture(scope="module")
def api_schema(server: LiveServer, world: World) -> OpenApiSchema:
    config = schemathesis.Config.from_dict({**CONFIG, "base-url": server.url})
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's from_fixture() renames the test per operation through the item's
    # `_nodeid`, which pytest 9.2 no longer has (Node keeps `_id`): give it one to read.
    request.node._nodeid = request.node.nodeid


def _aims_at_rows(case: Case) -> bool:
    """Whether ``case`` names the tenant's rows: half of the well-formed cases, chosen by
    their content so that a case replays (and shrinks) the same."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return False
    content = repr((case.path_parameters, case.query, case.body)).encode()
    return zlib.crc32(content) % 2 == 0


@schema.parametrize()
def test_every_operation_answers_as_documented(case: Case, world: World) -> None:
    label = case.operation.label
    if _aims_at_rows(case):
        for name in case.path_parameters or {}:
            value = world.path_for.get(label, {}).get(name, world.path.get(name))
            if value is not None:
                case.path_parameters[name] = value
        wanted = {**world.query, **world.query_for.get(label, {})}
        for name in wanted.keys() & {p.name for p in case.operation.query}:
            case.query = {**(case.query or {}), name: wanted[name]}
        if isinstance(case.body, dict) and label in world.body_for:
            case.body = {**case.body, **world.body_for[label]}
    headers = {**world.owner.headers, **world.headers_for.get(label, {})}
    case.call_and_validate(headers=headers, checks=CHECKS)
