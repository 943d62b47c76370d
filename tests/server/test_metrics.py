"""GET /metrics end to end: the real app over HTTP, its figures read back from the exposition.

The module serves one app with a metrics token. Each test reads the figures before and after
what it does and checks the difference, so the tests share that app in any order; webhook
deliveries get an app on a database of their own, whose queue no other worker touches.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any, TypeVar

import httpx
import pytest
from builders import RERUN_XML, LiveServer, Tenant, free_port, make_tenant, stored, upload
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select, update
from sqlalchemy.pool import QueuePool

from testlens.server import metrics
from testlens.server.app import ROUTERS, create_app
from testlens.server.models import ApiKey, Webhook
from testlens.server.webhooks import outbox

# One pytest test reported twice, with and without its file: two entries that become one test
# only as they are stored (the parser tells them apart), with both attempts.
SPLIT_RERUN = b"""<testsuite name="pytest">
<testcase classname="tests.test_cart" name="test_pay" file="tests/test_cart.py" time="0.5">
  <failure message="timeout">trace</failure></testcase>
<testcase classname="tests.test_cart" name="test_pay" time="0.25"/>
</testsuite>"""
TOKEN = "scrape-" + uuid.uuid4().hex
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}
REQUESTS = "testlens_http_requests_total"

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]
T = TypeVar("T")


def scrape(url: str) -> Figures:
    """Every sample ``GET /metrics`` answers, by name and labels."""
    response = httpx.get(f"{url}/metrics", headers=SCRAPER, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def figure(figures: Figures, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series not counted yet (it appears at its first)."""
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def grown(before: Figures, after: Figures, name: str, **labels: str) -> float:
    return figure(after, name, **labels) - figure(before, name, **labels)


def eventually(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while (result := check()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "message", "details"}
    assert body["code"] == code


@pytest.fixture(scope="module")
def metered(settings) -> Iterator[tuple[FastAPI, LiveServer]]:
    app = create_app(replace(settings, metrics_token=TOKEN))
    live = LiveServer(app).start()
    yield app, live
    live.stop()


@pytest.fixture
def client(metered) -> Iterator[Tenant]:
    """A tenant of the metered app, with an ingest+read key."""
    app, live = metered
    tenant = make_tenant(app.state.database, live)
    yield tenant
    tenant.client.close()


# --- the scrape token -----------------------------------------------------------------------


def test_without_a_token_metrics_are_off_and_answer_404(anonymous):
    assert_error(anonymous.get("/metrics"), 404, "METRICS_DISABLED")
    guessed = anonymous.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert_error(guessed, 404, "METRICS_DISABLED")


def test_a_scrape_needs_the_metrics_token_not_an_api_key(metered, client):
    url = metered[1].url
    missing = httpx.get(f"{url}/metrics")
    assert_error(missing, 401, "UNAUTHORIZED")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(httpx.get(f"{url}/metrics", headers={"Authorization": TOKEN}), 401, "UNAUTHORIZED")
    for wrong in (
        "Bearer " + TOKEN[:-1],
        "Bearer " + TOKEN + "x",
        f"Bearer {client.key}",  # a tenant's API key reads no metrics
        "Bearer ünïcödé".encode(),
    ):
        response = httpx.get(f"{url}/metrics", headers={"Authorization": wrong})
        assert_error(response, 401, "INVALID_METRICS_TOKEN")
        assert TOKEN not in response.text
    assert httpx.get(f"{url}/metrics", headers={"Authorization": f"bearer {TOKEN}"}).is_success


def test_the_route_is_documented_with_its_answers(metered):
    operation = httpx.get(f"{metered[1].url}/openapi.json").json()["paths"]["/metrics"]["get"]
    answers = operation["responses"]
    assert set(answers) == {"200", "401", "404"}
    assert list(answers["200"]["content"]) == [metrics.MEDIA_TYPE]
    assert "UNAUTHORIZED" in answers["401"]["description"]
    assert "INVALID_METRICS_TOKEN" in answers["401"]["description"]
    assert "METRICS_DISABLED" in answers["404"]["description"]


# --- HTTP traffic ---------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_method_and_status(metered, client):
    app, live = metered
    missing = [uuid.uuid4().hex for _ in range(2)]
    before = scrape(live.url)
    for run_id in missing:
        assert client.client.get(f"/api/runs/{run_id}").status_code == 404
    assert client.client.get("/api/repos").status_code == 200
    assert client.client.get(f"/no/such/{missing[0]}").status_code == 404
    assert client.client.post("/healthz").status_code == 405
    after = scrape(live.url)

    def counted(method: str, route: str, status: str) -> float:
        return grown(before, after, REQUESTS, method=method, route=route, status=status)

    assert counted("GET", "/api/runs/{run_id}", "404") == 2
    assert counted("GET", "/api/repos", "200") == 1
    assert counted("GET", "unmatched", "404") == 1
    assert counted("POST", "/healthz", "405") == 1
    # The first scrape; a scrape's own request is counted after its answer is made.
    assert counted("GET", "/metrics", "200") == 1
    timed = "testlens_http_request_duration_seconds_count"
    assert grown(before, after, timed, method="GET", route="/api/runs/{run_id}") == 2
    assert all("status" not in dict(labels) for name, labels in after if name == timed)

    declared = {
        getattr(route, "path", None)
        for route in [*app.routes, *(r for router in ROUTERS for r in router.routes)]
    }
    labelled = {dict(labels)["route"] for name, labels in after if name == REQUESTS}
    assert labelled <= declared | {metrics.UNMATCHED}
    assert not any(run_id in route for route in labelled for run_id in missing)


def test_an_unexpected_error_counts_as_the_500_clients_get(metered, client, monkeypatch):
    from testlens.server.ingest import service

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "store_report", broken)
    before = scrape(metered[1].url)
    assert upload(client.client, RERUN_XML, commit="e" * 40).status_code == 500
    after = scrape(metered[1].url)
    upload_500 = {"method": "POST", "route": "/api/test-results", "status": "500"}
    assert grown(before, after, REQUESTS, **upload_500) == 1
    assert grown(before, after, "testlens_ingest_store_seconds_count") == 1
    assert grown(before, after, "testlens_ingest_results_total") == 0


# --- ingest ---------------------------------------------------------------------------------


def test_an_upload_counts_the_results_it_stores_and_times_parsing_and_storing(metered, client):
    app, live = metered
    before = scrape(live.url)
    # RERUN_XML: four attempts of three tests (test_pay's two entries become one test).
    first = upload(client.client, RERUN_XML, commit="a" * 40)
    assert first.status_code == 201, first.text
    after = scrape(live.url)
    assert stored(app.state.database, client.name)["results"] == 4
    assert grown(before, after, "testlens_ingest_results_total") == 4
    for stage in ("parse", "store"):
        assert grown(before, after, f"testlens_ingest_{stage}_seconds_count") == 1
        assert grown(before, after, f"testlens_ingest_{stage}_seconds_sum") > 0
    created = {"method": "POST", "route": "/api/test-results", "status": "201"}
    assert grown(before, after, REQUESTS, **created) == 1

    merged = upload(client.client, SPLIT_RERUN, commit="b" * 40)
    assert merged.json()["tests_processed"] == 1, merged.text
    both = scrape(live.url)
    assert stored(app.state.database, client.name)["results"] == 4 + 2
    assert grown(after, both, "testlens_ingest_results_total") == 2

    again = upload(client.client, RERUN_XML, commit="a" * 40)
    assert again.headers["testlens-duplicate"] == "true"
    unreadable = upload(client.client, b"this is no test report", filename="r.xml")
    assert unreadable.status_code == 422, unreadable.text
    later = scrape(live.url)
    assert grown(both, later, "testlens_ingest_results_total") == 0
    assert grown(both, later, "testlens_ingest_parse_seconds_count") == 2
    assert grown(both, later, "testlens_ingest_store_seconds_count") == 1  # the duplicate's


# --- rate limiting --------------------------------------------------------------------------


def test_rate_limited_counts_by_dialect_in_the_serving_apps_figures(metered):
    app, live = metered
    limited = "testlens_rate_limited_requests_total"

    def unserved() -> float:
        return metrics.UNSERVED.registry.get_sample_value(limited, {"dialect": "unfold"}) or 0.0

    before = scrape(live.url)
    with metrics.serving(app.state.metrics):
        metrics.rate_limited("unfold")
        metrics.rate_limited("unfold")
        metrics.rate_limited("flakiness")
    outside = unserved()
    metrics.rate_limited("unfold")  # no app serves this call: no app's figures change
    assert unserved() == outside + 1
    after = scrape(live.url)
    assert grown(before, after, limited, dialect="unfold") == 2
    assert grown(before, after, limited, dialect="flakiness") == 1


# --- the database pool ----------------------------------------------------------------------


def test_pool_gauges_show_the_apps_connections_at_scrape_time(metered):
    app, live = metered
    engine = app.state.database.engine
    pool = engine.pool
    assert isinstance(pool, QueuePool)  # PostgreSQL's, and SQLite's for a database file
    if app.state.database.dialect == "postgresql":
        assert pool.size() == 10

    def showing(checked_out: int, overflow: int | None) -> Figures | None:
        # Background workers check connections out for a moment: wait for a quiet scrape.
        # One that does while every pooled connection is held opens one more, which then
        # stays idle in the pool: ``overflow`` None takes the pool's own count of those.
        figures = scrape(live.url)
        shown = (
            figure(figures, "testlens_db_pool_checked_out"),
            figure(figures, "testlens_db_pool_overflow"),
        )
        expected = (checked_out, pool.overflow() if overflow is None else overflow)
        return figures if shown == expected else None

    held = [engine.connect() for _ in range(pool.size() + 1)]
    try:
        figures = eventually(lambda: showing(len(held), None), "the held connections")
        assert figure(figures, "testlens_db_pool_overflow") >= 1
        assert figure(figures, "testlens_db_pool_size") == pool.size()
    finally:
        for connection in held:
            connection.close()
    eventually(lambda: showing(0, 0), "the connections back in the pool")


def test_the_pool_collector_reads_the_engines_pool_and_skips_pools_without_figures(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.db'}", pool_size=2, max_overflow=1)
    registry = CollectorRegistry()
    registry.register(metrics.PoolCollector(engine))

    def gauges() -> dict[str, float | None]:
        names = ("checked_out", "size", "overflow")
        return {n: registry.get_sample_value(f"testlens_db_pool_{n}") for n in names}

    assert gauges() == {"checked_out": 0, "size": 2, "overflow": 0}
    with engine.connect(), engine.connect():
        assert gauges() == {"checked_out": 2, "size": 2, "overflow": 0}
        with engine.connect():
            assert gauges() == {"checked_out": 3, "size": 2, "overflow": 1}
    assert gauges() == {"checked_out": 0, "size": 2, "overflow": 0}
    engine.dispose()

    in_memory = create_engine("sqlite://")  # one connection per thread, no pool figures
    assert list(metrics.PoolCollector(in_memory).collect()) == []
    in_memory.dispose()


# --- webhook deliveries ---------------------------------------------------------------------


class Receiver:
    """Answers 200 on ``/ok`` and 500 anywhere else."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200 if self.path == "/ok" else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def hooks(settings, scratch_database_url) -> Iterator[tuple[FastAPI, LiveServer]]:
    """An app on an empty database of its own, retrying fast and twice at most."""
    fast = {
        "webhook_max_attempts": 2,
        "webhook_backoff_base_seconds": 0.05,
        "webhook_backoff_cap_seconds": 0.1,
        "webhook_poll_seconds": 0.02,
        "webhook_timeout_seconds": 2.0,
    }
    own = replace(settings, database_url=scratch_database_url, metrics_token=TOKEN, **fast)
    app = create_app(own)
    live = LiveServer(app).start()
    yield app, live
    live.stop()


def test_each_delivery_attempt_is_counted_by_its_outcome(hooks):
    app, live = hooks
    database = app.state.database
    admin = make_tenant(database, live, scopes=("admin",))
    receiver = Receiver()
    try:
        outcomes = "testlens_webhook_delivery_attempts_total"
        start = scrape(live.url)
        assert {o: figure(start, outcomes, outcome=o) for o in metrics.DELIVERY_OUTCOMES} == {
            "delivered": 0,
            "retried": 0,
            "refused": 0,
            "dead_lettered": 0,
        }
        hook_ids = {}
        for path in ("/ok", "/fail", "/refused"):
            body = {"url": receiver.url + path, "events": ["new_flaky_test"], "secret": "s" * 16}
            response = admin.client.post("/api/webhooks", json=body)
            assert response.status_code == 201, response.text
            hook_ids[path] = response.json()["id"]
        with database.transaction() as session:
            # Allowed when registered, refused when sent: 10/8 is outside the allowed networks.
            session.execute(
                update(Webhook)
                .where(Webhook.id == hook_ids["/refused"])
                .values(url="http://10.0.0.5/h")
            )
            tenant_id = session.scalar(select(ApiKey.tenant_id).where(ApiKey.id == admin.key_id))
            assert outbox.enqueue(session, tenant_id, "new_flaky_test", {"test": "t"}) == 3

        def status(path: str) -> str:
            url = f"/api/webhooks/{hook_ids[path]}/deliveries"
            (delivery,) = admin.client.get(url).json()["deliveries"]
            return delivery["status"]

        def settled() -> bool | None:
            done = [status(p) for p in ("/ok", "/fail", "/refused")] == [
                "delivered",
                "dead",
                "dead",
            ]
            return True if done else None

        eventually(settled, "every delivery delivered or dead-lettered")
        expected = {"delivered": 1, "retried": 1, "refused": 1, "dead_lettered": 2}

        def counted() -> dict[str, float] | None:
            figures = scrape(live.url)
            found = {o: figure(figures, outcomes, outcome=o) for o in metrics.DELIVERY_OUTCOMES}
            return found if found == expected else None

        # Counted just after each outcome's transaction commits, so a moment after the API
        # shows it; nothing is pending any more, so these figures are final.
        eventually(counted, "the outcomes counted")
        assert counted() == expected
    finally:
        receiver.close()
        admin.client.close()
