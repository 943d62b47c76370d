"""Rate limits, through the real app over HTTP: the headers, the 429 and its body, each
limit's key and bucket, every store, two server processes sharing one, and a store outage.

The session's server has the limits off (conftest); each test here serves an app of its own
with them on, small limits set through its settings, and a clock it moves by hand, so that
no test waits for a bucket to refill.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
from builders import LiveServer, Tenant, free_port, junit, make_tenant, stored, two_servers, upload
from fastapi import FastAPI
from sqlalchemy import select

from testlens.server import ratelimit
from testlens.server.app import create_app
from testlens.server.database import Database
from testlens.server.models import RateLimitBucket
from testlens.server.models import Tenant as TenantRow
from testlens.server.settings import Settings

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
REPORT = junit({"test_ok": ["pass"]})
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class Clock:
    """The limiter's clock, in epoch seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Limited:
    app: FastAPI
    url: str
    clock: Clock
    database: Database

    def tenant(self, scopes: tuple[str, ...] = ("ingest", "read")) -> Tenant:
        return make_tenant(self.database, SimpleNamespace(url=self.url), scopes)

    def rejections(self, dialect: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(
            "testlens_rate_limited_requests_total", {"dialect": dialect}
        )
        return value or 0.0


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis of this machine (``TESTLENS_TEST_REDIS_URL``); skipped without one, except
    in CI, where a missing Redis fails the run."""
    url = os.environ.get("TESTLENS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"needs Redis at {url}: {exc}")
    return url


@pytest.fixture
def limited(settings: Settings) -> Iterator[Any]:
    """``limited(**settings)``: a live app with rate limits on, ``settings`` over the
    session's (its database); stopped after the test."""
    servers: list[LiveServer] = []

    def serve(**overrides: Any) -> Limited:
        app = create_app(replace(settings, rate_limits_enabled=True, **overrides))
        clock = Clock()
        app.state.rate_limiter.clock = clock
        servers.append(LiveServer(app).start())
        return Limited(app, servers[-1].url, clock, app.state.database)

    yield serve
    for server in servers:
        server.stop()


STORES = ["memory", "database", "redis"]


def store_settings(store: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if store != "redis":
        return {"rate_limit_store": store}
    return {"rate_limit_store": store, "redis_url": request.getfixturevalue("redis_url")}


def rate(response: httpx.Response) -> tuple[int, int, int]:
    """The response's (limit, remaining, reset)."""
    limit, remaining, reset = (int(response.headers[name]) for name in RATE_HEADERS)
    return limit, remaining, reset


# --- headers, the 429, the reset -------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
def test_headers_count_down_then_429_until_a_token_comes_back(limited, store, request):
    server = limited(rate_limit_repos_per_minute=5, **store_settings(store, request))
    tenant = server.tenant()
    seen = [rate(tenant.client.get("/api/repos")) for _ in range(5)]
    # Limit 5; one token comes back every 12 s; full again 12 s after each request's time.
    assert seen == [(5, 4 - n, math.ceil(NOW + 12 * (n + 1))) for n in range(5)]

    refused = tenant.client.get("/api/repos")
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "Too Many Requests",
        "code": "RATE_LIMITED",
        "message": "Rate limit exceeded",
        "retry_after": 12,
        "details": {"group": "repos", "limit": 5, "per_minute": 5, "reset": int(NOW) + 60},
    }
    assert refused.headers["retry-after"] == "12"
    assert rate(refused) == (5, 0, int(NOW) + 60)
    assert server.rejections("unfold") == 1

    server.clock.now += 11.5  # not yet
    assert tenant.client.get("/api/repos").headers["retry-after"] == "1"
    server.clock.now += 0.5  # one token back, for one request
    assert rate(tenant.client.get("/api/repos")) == (5, 0, int(NOW) + 72)
    assert tenant.client.get("/api/repos").status_code == 429
    server.clock.now += 60  # the bucket is full again: the window has reset
    response = tenant.client.get("/api/repos")
    assert response.status_code == 200
    assert rate(response)[:2] == (5, 4)


def test_error_answers_of_a_limited_route_carry_the_headers(limited):
    server = limited(rate_limit_repos_per_minute=5)
    tenant = server.tenant()
    missing = tenant.client.get(f"/api/tests/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert rate(missing)[:2] == (5, 4)
    invalid = tenant.client.get(f"/api/repos/{uuid.uuid4()}", params={"page": 0})
    assert invalid.status_code == 422
    assert rate(invalid)[:2] == (5, 3)


def test_what_is_not_limited_carries_no_headers_and_costs_nothing(limited):
    server = limited(rate_limit_repos_per_minute=2)
    tenant = server.tenant()
    with httpx.Client(base_url=server.url) as anonymous:
        for path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/metrics"):
            response = anonymous.get(path)
            assert not set(RATE_HEADERS) & set(response.headers), path
        for _ in range(5):  # no key, or a wrong one: 401, and nobody's quota
            for headers in ({}, {"Authorization": "Bearer tl_sk_nope"}):
                response = anonymous.get("/api/repos", headers=headers)
                assert response.status_code == 401
                assert "x-ratelimit-limit" not in response.headers
    assert rate(tenant.client.get("/api/repos"))[:2] == (2, 1)


def test_limits_off_means_no_headers_and_no_429(tenant):
    """The session's server runs with ``rate_limits_enabled=False``."""
    for _ in range(3):
        response = tenant.client.get("/api/repos")
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers


# --- each limit ----------------------------------------------------------------------------


def test_the_101st_upload_of_a_repository_in_a_minute_is_refused_before_it_is_read(limited):
    server = limited()  # the defaults: 100 uploads a minute per repository
    tenant = server.tenant()
    for n in range(100):  # the same report: stored once, counted each time
        response = upload(tenant.client, REPORT, repo="acme/shop" if n % 2 else "Acme/Shop")
        assert response.status_code == 201, response.text
    assert rate(response)[:2] == (100, 0)
    before = stored(server.database, tenant.name)

    refused = upload(tenant.client, b"not a report at all", repo="ACME/shop", commit="b" * 40)
    assert refused.status_code == 429  # not 422: refused before the report is parsed
    assert refused.json() == {
        "error": "Too Many Requests",
        "code": "RATE_LIMITED",
        "message": "Rate limit exceeded",
        "retry_after": 1,  # a token comes back every 0.6 s
        "details": {
            "group": "uploads",
            "limit": 100,
            "per_minute": 100,
            "reset": int(NOW) + 60,
            "repo": "ACME/shop",
        },
    }
    assert refused.headers["retry-after"] == "1"
    assert rate(refused) == (100, 0, int(NOW) + 60)
    assert stored(server.database, tenant.name) == before

    other = upload(tenant.client, REPORT, repo="acme/other")
    assert other.status_code == 201
    assert rate(other)[:2] == (100, 99)
    # Uploads have their own buckets: the tenant's reads are untouched.
    assert rate(tenant.client.get("/api/repos"))[:2] == (60, 59)


def test_an_upload_refused_before_its_repository_is_known_is_not_counted(limited):
    server = limited(rate_limit_uploads_per_minute=2)
    tenant = server.tenant()
    missing = tenant.client.post("/api/test-results", files={"file": ("r.xml", REPORT)})
    assert missing.status_code == 400
    assert "x-ratelimit-limit" not in missing.headers
    assert rate(upload(tenant.client, REPORT))[:2] == (2, 1)


def test_v1_bursts_to_twice_its_rate_then_refuses(limited):
    server = limited(rate_limit_v1_per_minute=5, rate_limit_v1_burst=10)
    tenant = server.tenant()
    assert upload(tenant.client, REPORT).status_code == 201  # the uploads' bucket, not v1's
    url = "/api/v1/testdeck/flaky?org=acme&repo=shop"
    burst = [tenant.client.get(url) for _ in range(10)]
    assert [r.status_code for r in burst] == [200] * 10
    assert [rate(r)[:2] for r in burst] == [(10, 9 - n) for n in range(10)]
    refused = tenant.client.get(url)
    assert refused.status_code == 429
    assert refused.json()["retry_after"] == 12  # 5 a minute: one every 12 s
    assert refused.json()["details"]["group"] == "v1"
    assert server.rejections("shifty") == 1
    assert server.rejections("unfold") == 0
    server.clock.now += 24
    assert [tenant.client.get(url).status_code for _ in range(3)] == [200, 200, 429]
    # The other /api routes have their own bucket.
    assert rate(tenant.client.get("/api/repos"))[:2] == (60, 59)


def test_the_default_limits():
    limits = ratelimit.Limits.from_settings(Settings(database_url="sqlite://", data_dir=Path()))
    assert (limits.uploads.per_minute, limits.uploads.burst) == (100, 100)
    assert (limits.repos.per_minute, limits.repos.burst) == (60, 60)
    assert (limits.analytics.per_minute, limits.analytics.burst) == (100, 100)
    assert (limits.v1.per_minute, limits.v1.burst) == (500, 1000)
    assert (limits.api.per_minute, limits.api.burst) == (300, 300)
    route = limits.for_route
    assert route("/api/v1/analytics/flaky-tests") is limits.v1
    assert route("/api/analytics/flaky-tests") is limits.analytics
    assert route("/api/repos") is route("/api/tests/{test_id}/quarantine") is limits.repos
    assert route("/api/testDurations/create") is route("/api/keys") is limits.api
    assert route("/api/test-results") is None  # keyed by repository, in the endpoint
    assert route("/healthz") is route("/client/{filename}") is None


def test_the_settings_read_from_the_environment():
    read = Settings.from_env
    assert read({}).rate_limits_enabled is True
    for off in ("off", "False", "0", "no"):
        assert read({"TESTLENS_RATE_LIMITS_ENABLED": off}).rate_limits_enabled is False
    env = {"TESTLENS_RATE_LIMIT_STORE": "Redis", "TESTLENS_RATE_LIMIT_V1_BURST": "20"}
    assert (read(env).rate_limit_store, read(env).rate_limit_v1_burst) == ("redis", 20)
    for bad in (
        {"TESTLENS_RATE_LIMITS_ENABLED": "maybe"},
        {"TESTLENS_RATE_LIMIT_STORE": "disk"},
        {"TESTLENS_RATE_LIMIT_UPLOADS_PER_MINUTE": "0"},
    ):
        with pytest.raises(ValueError, match="is not valid"):
            read(bad)
    assert "secret" not in repr(read({"TESTLENS_REDIS_URL": "redis://:secret@cache:6379/0"}))


def test_the_store_defaults_to_the_database_where_several_processes_serve(tmp_path):
    sqlite = Database(f"sqlite:///{tmp_path / 'x.db'}")
    postgres = Database("postgresql://postgres@127.0.0.1:1/none")  # never connected to
    base = Settings(database_url="", data_dir=tmp_path)
    try:
        assert isinstance(ratelimit.store_for(base, sqlite), ratelimit.MemoryStore)
        assert isinstance(ratelimit.store_for(base, postgres), ratelimit.DatabaseStore)
        forced = replace(base, rate_limit_store="database")
        assert isinstance(ratelimit.store_for(forced, sqlite), ratelimit.DatabaseStore)
        with_redis = replace(base, redis_url="redis://127.0.0.1:6379/0")
        assert isinstance(ratelimit.store_for(with_redis, postgres), ratelimit.RedisStore)
        with pytest.raises(ValueError, match="TESTLENS_REDIS_URL"):
            ratelimit.store_for(replace(base, rate_limit_store="redis"), sqlite)
    finally:
        sqlite.dispose()
        postgres.dispose()


def test_the_rest_of_the_api_has_its_own_bucket(limited):
    server = limited(rate_limit_api_per_minute=2)
    tenant = server.tenant()
    assert rate(tenant.client.get("/api/quarantine", params={"repo": "acme/shop"}))[:2] == (2, 1)
    durations = tenant.client.get("/api/durations", params={"repo": "acme/shop"})
    assert rate(durations)[:2] == (2, 0)
    assert tenant.client.get(f"/api/runs/{uuid.uuid4()}").status_code == 429


def test_tenants_have_separate_buckets(limited):
    server = limited(rate_limit_repos_per_minute=3)
    first, second = server.tenant(), server.tenant()
    assert [first.client.get("/api/repos").status_code for _ in range(4)] == [200] * 3 + [429]
    assert rate(second.client.get("/api/repos"))[:2] == (3, 2)


def test_a_tenants_keys_share_its_bucket(limited):
    server = limited(rate_limit_api_per_minute=3)
    admin = server.tenant(("admin",))
    created = admin.client.post("/api/keys", json={"scopes": ["read"]})
    assert created.status_code == 201
    assert rate(created)[:2] == (3, 2)
    other_key = {"Authorization": f"Bearer {created.json()['secret']}"}
    listed = admin.client.get("/api/quarantine", params={"repo": "a/b"}, headers=other_key)
    assert rate(listed)[:2] == (3, 1)


def test_the_openapi_document_declares_429_on_limited_routes_only(limited):
    server = limited()
    with httpx.Client(base_url=server.url) as client:
        paths = client.get("/openapi.json").json()["paths"]
    declared = {
        (method, path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "429" in operation["responses"]
    }
    assert ("post", "/api/test-results") in declared
    assert ("get", "/api/v1/analytics/flaky-tests") in declared
    assert ("delete", "/api/keys/{key_id}") in declared
    for unlimited in (
        ("get", "/healthz"),
        ("get", "/client/{filename}"),
        ("post", "/api/testDurations/submit"),  # a job token, not an API key
        ("put", "/api/testDurations/jobs/{job_id}/report"),  # a presigned URL
    ):
        assert unlimited not in declared
    refused = paths["/api/repos"]["get"]["responses"]["429"]
    assert refused["description"].startswith("RATE_LIMITED: ")
    body = refused["content"]["application/json"]["schema"]["allOf"]
    assert body[0] == {"$ref": "#/components/schemas/ErrorBody"}
    assert body[1]["required"] == ["retry_after"]
    assert set(refused["headers"]) == {
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    }


# --- stores shared by processes, and a store outage ---------------------------------------


@pytest.mark.parametrize("store", ["database", "redis"])
def test_two_server_processes_together_never_let_in_more_than_the_limit(
    store, scratch_database_url, tmp_path, request
):
    limits = {
        "TESTLENS_RATE_LIMITS_ENABLED": "true",
        "TESTLENS_RATE_LIMIT_STORE": store,
        "TESTLENS_RATE_LIMIT_REPOS_PER_MINUTE": "5",  # a token back every 12 s
    }
    if store == "redis":
        limits["TESTLENS_REDIS_URL"] = request.getfixturevalue("redis_url")
    with two_servers(scratch_database_url, tmp_path, **limits) as (first_url, second_url, tenant):
        clients = [
            httpx.Client(base_url=url, headers=tenant.headers, timeout=30)
            for url in (first_url, second_url)
        ]
        try:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda n: clients[n % 2].get("/api/repos"), range(40)))
        finally:
            for client in clients:
                client.close()
    # The test takes far less than the 12 s a token needs to come back: of the 40 requests,
    # the two processes let in exactly the bucket's 5 between them.
    assert sum(r.status_code == 200 for r in answers) == 5
    assert sum(r.status_code == 429 for r in answers) == 35
    assert {rate(r)[0] for r in answers} == {5}


def test_a_failing_store_never_fails_a_request_and_is_logged_once(limited, caplog):
    caplog.set_level(logging.WARNING, logger="testlens.server")
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = limited(rate_limit_repos_per_minute=3, rate_limit_store="redis", redis_url=dead)
    tenant = server.tenant()
    answers = [tenant.client.get("/api/repos") for _ in range(4)]
    # Each process limits on its own meanwhile, headers and all.
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [rate(r)[1] for r in answers] == [2, 1, 0, 0]
    failures = [r for r in caplog.records if "store failed" in r.getMessage()]
    assert len(failures) == 1
    assert "redis" in failures[0].getMessage()


class FlakyStore(ratelimit.MemoryStore):
    name = "flaky"
    failures = (ConnectionError,)

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def take(self, key: str, now: int, limit: ratelimit.Limit) -> tuple[int, bool]:
        self.calls += 1
        if self.down:
            raise ConnectionError("the store is down")
        return super().take(key, now, limit)


def test_the_limiter_tries_a_failed_store_again_every_few_seconds(caplog):
    caplog.set_level(logging.WARNING, logger="testlens.server")
    limits = ratelimit.Limits.from_settings(Settings(database_url="sqlite://", data_dir=Path()))
    store, clock = FlakyStore(), Clock()
    limiter = ratelimit.RateLimiter(limits, store, clock)
    store.down = True
    assert limiter.take(limits.repos, "t").remaining == 59  # the fallback answered
    clock.now += 0.1
    assert limiter.take(limits.repos, "t").remaining == 58  # still the fallback...
    assert store.calls == 1  # ...without asking the store again
    clock.now += ratelimit.STORE_RETRY / 1_000_000
    limiter.take(limits.repos, "t")
    assert store.calls == 2  # asked again, still down: no second log line
    store.down = False
    clock.now += ratelimit.STORE_RETRY / 1_000_000
    assert limiter.take(limits.repos, "t").remaining == 59  # the store's own bucket
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "flaky store" in m] == [
        "rate limits: the flaky store failed (ConnectionError: the store is down); each "
        "process limits on its own until it answers again",
        "rate limits: the flaky store answers again",
    ]


def test_the_database_store_forgets_full_buckets(limited):
    server = limited(rate_limit_repos_per_minute=5, rate_limit_store="database")
    tenant = server.tenant()
    tenant.client.get("/api/repos")
    key = f"repos:{_tenant_id(server.database, tenant)}"
    assert _bucket(server.database, key) is not None
    server.clock.now += 2 * 60  # full again, and a sweep is due
    server.tenant().client.get("/api/repos")
    assert _bucket(server.database, key) is None


def _tenant_id(database: Database, tenant: Tenant) -> str:
    with database.read() as session:
        return session.scalar(select(TenantRow.id).where(TenantRow.name == tenant.name))


def _bucket(database: Database, key: str) -> int | None:
    with database.read() as session:
        return session.scalar(select(RateLimitBucket.full_at).where(RateLimitBucket.key == key))
