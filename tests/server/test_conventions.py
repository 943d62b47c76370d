"""The conventions of the server, checked on the real app: every route declares what it
answers, handlers hand their work to services, real answers match the declared models, and
every page number is bounded."""

from __future__ import annotations

import inspect
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from builders import make_tenant, upload
from fastapi.routing import APIRoute
from pydantic import BaseModel

from testlens.server import app as app_module
from testlens.server.pagination import MAX_PAGE

# SQLAlchemy's statement builders and session calls (``router.delete(`` is a route, not SQL).
SQL = re.compile(
    r"(?<![.\w])(select|insert|update|delete)\(|\.execute\(|\.transaction\(|\.scalars?\("
)

# Routes whose success has no JSON body to model.
NO_BODY = {
    ("DELETE", "/api/webhooks/{webhook_id}"),
    ("DELETE", "/api/tests/{test_id}/quarantine"),
    ("DELETE", "/api/keys/{key_id}"),
    ("DELETE", "/api/repos/{owner}/{name}"),
    ("PUT", "/api/testDurations/jobs/{job_id}/report"),
    ("GET", "/api/testDurations/jobs/{job_id}/durations"),  # Brotli-compressed bytes
    ("GET", "/client/testlens.whl"),  # the client wheel, binary
    ("GET", "/api/v1/orchestrate/{runId}/progress"),  # Server-Sent Events
    ("GET", "/client/{filename}"),
    ("GET", "/metrics"),  # the Prometheus text format
}


def api_routes(app: Any) -> list[APIRoute]:
    """Every documented route: the app's own and those of each area's router (read from
    the routers, as FastAPI keeps included routes in its own wrappers)."""
    routes = [*app.routes, *(r for router in app_module.ROUTERS for r in router.routes)]
    return [r for r in routes if isinstance(r, APIRoute) and r.include_in_schema]


def declared_model(route: APIRoute) -> type[BaseModel] | None:
    if isinstance(route.response_model, type) and issubclass(route.response_model, BaseModel):
        return route.response_model
    answer = route.responses.get(route.status_code or 200, {})
    model = answer.get("model")
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def test_every_route_declares_its_response_model(app):
    routes = api_routes(app)
    assert len(routes) >= 20
    missing = []
    for route in routes:
        for method in route.methods:
            if (method, route.path) not in NO_BODY and declared_model(route) is None:
                missing.append((method, route.path))
    assert missing == []


def test_handlers_run_no_sql(app):
    offenders = [
        f"{route.endpoint.__module__}.{route.endpoint.__name__}"
        for route in api_routes(app)
        if SQL.search(inspect.getsource(route.endpoint))
    ]
    assert offenders == []


def test_endpoints_modules_hold_routes_only():
    found = list(Path(inspect.getfile(app_module)).parent.rglob("endpoints.py"))
    assert len(found) >= 3
    for path in found:
        assert not SQL.search(path.read_text()), path


def conforms(model: type[BaseModel], data: Any) -> None:
    """``data`` is exactly a ``model``: it validates, and has no field the model lacks."""
    parsed = model.model_validate(data)
    assert parsed.model_dump(mode="json", by_alias=True) == data


REPORT = b"""<testsuite name="s">
<testcase classname="tests.test_shop.Shop" name="test_pay" file="tests/test_shop.py" time="0.2">
  <failure message="boom">trace</failure></testcase>
<testcase classname="tests.test_shop.Shop" name="test_pay" file="tests/test_shop.py" time="0.1" />
<testcase classname="tests.test_shop.Shop" name="test_ok" file="tests/test_shop.py" time="0.1" />
</testsuite>"""


def test_real_answers_match_the_declared_models(app, database, server):
    admin = make_tenant(database, server, scopes=("admin",))
    client = admin.client
    repo = f"acme/shop-{uuid.uuid4().hex[:6]}"
    models = {
        (method, route.path): declared_model(route)
        for route in api_routes(app)
        for method in route.methods
    }
    answers: list[tuple[str, str, Any]] = []

    def check(method: str, path: str, url: str, **kwargs: Any) -> Any:
        response = client.request(method, url, **kwargs)
        assert response.status_code < 300, (url, response.text)
        body = response.json()
        model = models[(method, path)]
        assert model is not None
        conforms(model, body)
        answers.append((method, path, body))
        return body

    form = {"repo": repo, "framework": "pytest", "commit": "a" * 40}
    run = check(
        "POST",
        "/api/test-results",
        "/api/test-results",
        files={"file": ("r.xml", REPORT)},
        data=form,
    )
    check("GET", "/api/runs/{run_id}", f"/api/runs/{run['run_id']}")
    org, name = repo.split("/")
    check("GET", "/api/v1/testdeck/flaky", f"/api/v1/testdeck/flaky?org={org}&repo={name}")
    repos = check("GET", "/api/repos", "/api/repos")
    repo_id = next(r["id"] for r in repos["repos"] if r["name"] == repo)
    detail = check("GET", "/api/repos/{repo_id}", f"/api/repos/{repo_id}")
    test_id = detail["tests"][0]["id"]
    check("GET", "/api/tests/{test_id}", f"/api/tests/{test_id}")
    for kind in ("flaky-tests", "flakiness-trends", "flaky-recommendations"):
        path = f"/api/v1/analytics/{kind}"
        check("GET", path, f"{path}?project={repo}")
    check(
        "POST",
        "/api/tests/{test_id}/quarantine",
        f"/api/tests/{test_id}/quarantine",
        json={"reason": "flaky"},
    )
    check("GET", "/api/quarantine", f"/api/quarantine?repo={repo}")
    hook = check(
        "POST",
        "/api/webhooks",
        "/api/webhooks",
        json={"url": "http://127.0.0.1:9/h", "events": ["new_flaky_test"], "secret": "s" * 16},
    )
    check("GET", "/api/webhooks", "/api/webhooks")
    check(
        "GET",
        "/api/webhooks/{webhook_id}/deliveries",
        f"/api/webhooks/{hook['id']}/deliveries",
    )
    check("GET", "/api/durations", f"/api/durations?repo={repo}")
    check("PUT", "/api/retention", "/api/retention", json={"results_days": 90})
    check("GET", "/api/retention", "/api/retention")
    plan = check(
        "POST",
        "/api/shard-plans",
        "/api/shard-plans",
        json={"repo": repo, "shards": 2, "tests": ["tests/test_shop.py::TestShop::test_pay"]},
    )
    check("GET", "/api/shard-plans/{plan_id}", f"/api/shard-plans/{plan['plan_id']}")
    check(
        "POST",
        "/api/testDurations/create",
        "/api/testDurations/create",
        json={"commitId": "b" * 40, "shardGroupKey": "unit"},
    )
    check("GET", "/healthz", "/healthz")
    check("GET", "/readyz", "/readyz")
    assert len(answers) >= 20


@pytest.mark.parametrize("page", [0, -1, MAX_PAGE + 1, 99999999999999999999, "x"])
def test_page_numbers_out_of_range_are_422_with_the_shared_body(tenant, page):
    upload(tenant.client, REPORT)
    repo_id = tenant.client.get("/api/repos").json()["repos"][0]["id"]
    for url in (
        f"/api/v1/testdeck/flaky?org=acme&repo=shop&page={page}",
        f"/api/repos/{repo_id}?page={page}",
    ):
        response = tenant.client.get(url)
        assert response.status_code == 422, (url, response.text)
        body = response.json()
        assert set(body) == {"error", "code", "message", "details"}
        assert body["code"] == "VALIDATION_ERROR"
        assert body["details"]["errors"][0]["field"] == "page"


def test_the_feed_bounds_the_page_in_a_json_body_too(tenant):
    upload(tenant.client, REPORT)
    response = tenant.client.request(
        "GET",
        "/api/v1/testdeck/flaky",
        json={"org": "acme", "repo": "shop", "page": 10**20},
    )
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["field"] == "page"


def test_the_highest_page_is_an_empty_page_not_an_error(tenant):
    upload(tenant.client, REPORT)
    response = tenant.client.get(f"/api/v1/testdeck/flaky?org=acme&repo=shop&page={MAX_PAGE}")
    assert response.status_code == 200
    assert response.json()["test_cases"] == []
