"""Outgoing webhooks end to end: the API, the outbox and the worker, against a real receiver.

Each test serves its own app with fast retry timings, and a real HTTP receiver on loopback
that can be down, slow or failing. Events go in through ``outbox.enqueue``, as ingest
calls it; what the receiver gets is checked against the deliveries the API reports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from builders import (
    STABLE,
    LiveServer,
    Tenant,
    eventually,
    free_port,
    junit,
    make_tenant,
    served,
    upload,
)
from sqlalchemy import delete, func, select

from testlens.server.app import create_app
from testlens.server.models import ApiKey, Webhook, WebhookDelivery, utcnow
from testlens.server.webhooks import outbox, service, tasks

SECRET = "whsec-correct-horse-battery-staple"
FAST = {
    "webhook_max_attempts": 1000,  # tests that dead-letter set their own limit
    "webhook_backoff_base_seconds": 0.05,
    "webhook_backoff_cap_seconds": 0.2,
    "webhook_poll_seconds": 0.02,
    "webhook_timeout_seconds": 0.5,
}


@dataclass(frozen=True)
class Received:
    delivery: str
    event: str
    headers: dict[str, str]
    body: bytes
    answered: int  # the status the receiver answered with


class Receiver:
    """A webhook endpoint on loopback that records every request it gets.

    It starts down (nothing listens on its port); ``up()`` starts it. ``failures``: answer 500
    to that many first requests. ``slow``: make that many first requests wait ``delay``
    seconds before answering (beyond the sender's timeout). ``hold`` blocks requests until
    set.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/testlens"
        self.failures = 0
        self.slow = 0
        self.delay = 0.0
        self.requests: list[Received] = []
        self.finished = 0  # requests answered, or given up on by the sender
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the sender hung up on a slow answer: expected here

        self._httpd = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def down(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        with self._lock:
            number = len(self.requests) + 1
            answer = 500 if number <= self.failures else 200
            self.requests.append(
                Received(
                    request.headers.get("X-Testlens-Delivery", ""),
                    request.headers.get("X-Testlens-Event", ""),
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                    answer,
                )
            )
            late = number <= self.slow
        try:
            if late:
                time.sleep(self.delay)
            request.send_response(answer)
            request.send_header("Content-Length", "0")
            request.end_headers()
        finally:
            with self._lock:
                self.finished += 1

    def delivered(self) -> list[Received]:
        """The requests answered 2xx: what the receiver accepted."""
        with self._lock:
            return [r for r in self.requests if r.answered == 200]

    def per_delivery(self) -> Counter[str]:
        with self._lock:
            return Counter(r.delivery for r in self.requests)


def signature_ok(received: Received, secret: str = SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers["x-testlens-signature-256"], expected)


@pytest.fixture(scope="module", autouse=True)
def only_our_workers(app) -> Iterator[None]:
    """Pause the shared server's delivery worker while this module runs.

    The tests count attempts exactly and prove that a restarted server resumes the queue, so
    the worker of the server under test must be the only one sending.
    """
    worker = getattr(app.state, "webhook_worker", None)
    if worker is not None:
        worker.stop()
    yield
    if worker is not None:
        worker.start()


@pytest.fixture
def fast_settings(settings, request):
    """The session's database with fast retries; indirect parametrization overrides fields."""
    return replace(settings, **{**FAST, **getattr(request, "param", {})})


@pytest.fixture
def hooks_server(fast_settings) -> Iterator[LiveServer]:
    live = LiveServer(create_app(fast_settings)).start()
    yield live
    live.stop()


def tenant_id(database, tenant: Tenant) -> str:
    with database.read() as session:
        return session.scalar(select(ApiKey.tenant_id).where(ApiKey.id == tenant.key_id))


def drop_webhooks(database, tenant: Tenant) -> None:
    """Delete the tenant's webhooks, so no later test's worker sends their deliveries."""
    tenant.client.close()
    owner = tenant_id(database, tenant)
    with database.transaction() as session:
        session.execute(delete(Webhook).where(Webhook.tenant_id == owner))


@pytest.fixture
def make_admin(database, hooks_server) -> Iterator[Callable[[], Tenant]]:
    """Tenants with admin keys; their webhooks (and so deliveries) are removed afterwards."""
    made: list[Tenant] = []

    def make() -> Tenant:
        made.append(make_tenant(database, hooks_server, scopes=("admin",)))
        return made[-1]

    yield make
    for tenant in made:
        drop_webhooks(database, tenant)


@pytest.fixture
def admin(make_admin) -> Tenant:
    return make_admin()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.down()


def subscribe(tenant: Tenant, url: str, events: tuple[str, ...] = outbox.EVENTS) -> str:
    response = tenant.client.post(
        "/api/webhooks", json={"url": url, "events": list(events), "secret": SECRET}
    )
    assert response.status_code == 201, response.text
    assert SECRET not in response.text
    return response.json()["id"]


def emit(database, tenant: Tenant, event: str, payload: dict[str, Any]) -> int:
    """Enqueue one event the way ingest does: inside a committed transaction."""
    tid = tenant_id(database, tenant)
    with database.transaction() as session:
        return outbox.enqueue(session, tid, event, payload)


def deliveries(tenant: Tenant, webhook_id: str) -> list[dict[str, Any]]:
    response = tenant.client.get(f"/api/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    assert SECRET not in response.text
    return response.json()["deliveries"]


def settled(tenant: Tenant, webhook_id: str, count: int, status: str = "delivered"):
    """A check for :func:`eventually`: all ``count`` deliveries have reached ``status``."""

    def check() -> list[dict[str, Any]] | None:
        found = deliveries(tenant, webhook_id)
        ok = len(found) == count and all(d["status"] == status for d in found)
        return found if ok else None

    return check


def assert_shared_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "message", "details"}
    assert body["code"] == code
    return body


# --- the subscription API ----------------------------------------------------------------


def test_create_list_delete_and_the_secret_stays_write_only(admin, database):
    created = admin.client.post(
        "/api/webhooks",
        json={
            "url": "https://ci.example.com/hooks",
            "events": ["new_flaky_test"],
            "secret": SECRET,
        },
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "url", "events", "created_at"}
    assert body["url"] == "https://ci.example.com/hooks"
    assert body["events"] == ["new_flaky_test"]

    listed = admin.client.get("/api/webhooks")
    assert listed.json() == {"webhooks": [body]}
    assert SECRET not in listed.text
    with database.transaction() as session:
        stored = session.scalar(select(Webhook.secret).where(Webhook.id == body["id"]))
    assert SECRET not in stored

    assert admin.client.delete(f"/api/webhooks/{body['id']}").status_code == 204
    assert admin.client.get("/api/webhooks").json() == {"webhooks": []}
    assert_shared_error(admin.client.delete(f"/api/webhooks/{body['id']}"), 404, "NOT_FOUND")


def test_the_secret_is_not_logged(admin, receiver, database, caplog):
    receiver.failures = 1
    receiver.up()
    with caplog.at_level("DEBUG"):
        hook = subscribe(admin, receiver.url)
        emit(database, admin, "new_flaky_test", {"test": "t"})
        eventually(settled(admin, hook, 1), "the delivery")
    assert caplog.records
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "ftp://ci.example.com/hooks"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "ci.example.com/hooks"}, "url"),
        ({"url": "https://ci.example.com/a hook"}, "url"),
        ({"url": 42}, "url"),
        ({"events": []}, "events"),
        ({"events": ["new_flaky_test", "tests_exploded"]}, "events"),
        ({"events": "new_flaky_test"}, "events"),
        ({"secret": "too-short"}, "secret"),
        ({"secret": None}, "secret"),
        ({"event": "new_flaky_test"}, "event"),
    ],
)
def test_invalid_subscriptions_get_422_with_shared_body(admin, changes, field):
    body = {
        "url": "https://ci.example.com/hooks",
        "events": ["new_flaky_test"],
        "secret": SECRET,
        **changes,
    }
    body = {k: v for k, v in body.items() if v is not None}
    response = admin.client.post("/api/webhooks", json=body)
    error = assert_shared_error(response, 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == field
    assert SECRET not in response.text
    assert admin.client.get("/api/webhooks").json() == {"webhooks": []}


def test_unknown_event_is_named_and_malformed_json_is_refused(admin):
    unknown = admin.client.post(
        "/api/webhooks",
        json={"url": "https://x.example/h", "events": ["boom"], "secret": SECRET},
    )
    assert (
        "unknown event 'boom'" in assert_shared_error(unknown, 422, "VALIDATION_ERROR")["message"]
    )
    garbled = admin.client.post(
        "/api/webhooks", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_shared_error(garbled, 422, "VALIDATION_ERROR")


def test_webhooks_need_an_admin_key(database, hooks_server, admin):
    hook = subscribe(admin, "https://ci.example.com/hooks")
    reader = make_tenant(database, hooks_server, scopes=("ingest", "read"))
    with reader.client:
        assert_shared_error(reader.client.get("/api/webhooks"), 403, "INSUFFICIENT_SCOPE")
        assert_shared_error(reader.client.post("/api/webhooks", json={}), 403, "INSUFFICIENT_SCOPE")
    with httpx.Client(base_url=hooks_server.url) as anonymous:
        assert anonymous.get("/api/webhooks").status_code == 401
        assert anonymous.get(f"/api/webhooks/{hook}/deliveries").status_code == 401


def test_tenants_never_see_each_others_webhooks(make_admin, database, receiver):
    owner, other = make_admin(), make_admin()
    receiver.up()
    hook = subscribe(owner, receiver.url)
    emit(database, owner, "new_flaky_test", {"test": "mine"})
    delivery = eventually(settled(owner, hook, 1), "the owner's delivery")[0]

    assert other.client.get("/api/webhooks").json() == {"webhooks": []}
    for response in (
        other.client.get(f"/api/webhooks/{hook}/deliveries"),
        other.client.post(f"/api/webhooks/{hook}/deliveries/{delivery['id']}/redeliver"),
        other.client.delete(f"/api/webhooks/{hook}"),
    ):
        assert_shared_error(response, 404, "NOT_FOUND")
    # Another tenant's event reaches none of the owner's webhooks.
    assert emit(database, other, "new_flaky_test", {"test": "theirs"}) == 0
    assert len(deliveries(owner, hook)) == 1
    assert len(owner.client.get("/api/webhooks").json()["webhooks"]) == 1


def test_unknown_ids_and_bad_pages(admin):
    hook = subscribe(admin, "https://ci.example.com/hooks")
    assert_shared_error(admin.client.get("/api/webhooks/nope/deliveries"), 404, "NOT_FOUND")
    assert_shared_error(
        admin.client.post(f"/api/webhooks/{hook}/deliveries/nope/redeliver"), 404, "NOT_FOUND"
    )
    assert_shared_error(
        admin.client.get(f"/api/webhooks/{hook}/deliveries", params={"page": 0}),
        422,
        "VALIDATION_ERROR",
    )


# --- the outbox ----------------------------------------------------------------------------


def test_enqueue_follows_the_transaction_and_the_subscriptions(admin, database):
    flaky_only = subscribe(admin, "https://a.example/h", ("new_flaky_test",))
    both = subscribe(admin, "https://b.example/h")
    tid = tenant_id(database, admin)

    with pytest.raises(RuntimeError), database.transaction() as session:
        assert outbox.enqueue(session, tid, "new_flaky_test", {"n": 1}) == 2
        raise RuntimeError("the ingest failed after queueing")
    assert emit(database, admin, "resolved_flaky_test", {"n": 2}) == 1
    with pytest.raises(ValueError, match="unknown webhook event"), database.transaction() as s:
        outbox.enqueue(s, tid, "new_flakey_test", {})

    with database.transaction() as session:
        rows = session.execute(
            select(WebhookDelivery.webhook_id, WebhookDelivery.event).where(
                WebhookDelivery.webhook_id.in_([flaky_only, both])
            )
        ).all()
    assert [tuple(r) for r in rows] == [(both, "resolved_flaky_test")]


def test_backoff_doubles_up_to_the_cap_with_equal_jitter(fast_settings):
    settings = replace(
        fast_settings, webhook_backoff_base_seconds=10, webhook_backoff_cap_seconds=3600
    )
    for failures, ceiling in [(1, 10), (2, 20), (3, 40), (9, 2560), (10, 3600), (500, 3600)]:
        waits = [tasks.backoff(settings, failures).total_seconds() for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1


# --- delivery ------------------------------------------------------------------------------


def test_every_event_is_delivered_once_signed_and_under_one_id(admin, database, receiver):
    receiver.up()
    hook = subscribe(admin, receiver.url)
    for n in range(30):
        event = outbox.EVENTS[n % 2]
        assert emit(database, admin, event, {"seq": n, "test": f"tests/test_{n}.py::t"}) == 1

    found = eventually(settled(admin, hook, 30), "30 deliveries")
    ids = {d["id"] for d in found}
    assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in found)
    assert receiver.per_delivery() == Counter({i: 1 for i in ids})  # once each, none lost

    by_seq: dict[int, str] = {}
    for received in receiver.delivered():
        body = json.loads(received.body)
        assert received.event == outbox.EVENTS[body["seq"] % 2]
        assert body == {"seq": body["seq"], "test": f"tests/test_{body['seq']}.py::t"}
        assert received.headers["content-type"] == "application/json"
        assert received.headers["user-agent"] == "testlens-webhooks"
        assert signature_ok(received)
        assert not signature_ok(received, secret=SECRET + "x")
        by_seq[body["seq"]] = received.delivery
    assert sorted(by_seq) == list(range(30))
    assert len(set(by_seq.values())) == 30  # no event under two delivery ids


def test_failures_are_retried_under_the_same_id_with_the_same_signed_body(
    admin, database, receiver
):
    receiver.failures = 2
    receiver.up()
    hook = subscribe(admin, receiver.url)
    emit(database, admin, "new_flaky_test", {"test": "t"})

    (delivery,) = eventually(settled(admin, hook, 1), "the retried delivery")
    assert delivery["attempts"] == 3
    assert delivery["last_status_code"] == 200
    assert delivery["last_error"] is None
    log = delivery["attempts_log"]
    assert [(a["status_code"], a["error"]) for a in log] == [
        (500, "HTTP 500"),
        (500, "HTTP 500"),
        (200, None),
    ]
    assert all(a["duration_ms"] >= 0 and a["at"] for a in log)
    assert [a["at"] for a in log] == sorted(a["at"] for a in log)

    assert {r.delivery for r in receiver.requests} == {delivery["id"]}
    assert len({(r.body, r.headers["x-testlens-signature-256"]) for r in receiver.requests}) == 1
    assert all(signature_ok(r) for r in receiver.requests)


def test_a_receiver_that_is_down_gets_everything_once_it_is_up(admin, database, receiver):
    hook = subscribe(admin, receiver.url)
    for n in range(5):
        emit(database, admin, "resolved_flaky_test", {"seq": n})

    def retried() -> list[dict[str, Any]] | None:
        found = deliveries(admin, hook)
        return found if all(d["attempts"] >= 2 for d in found) else None

    for d in eventually(retried, "two failed attempts each"):
        assert d["status"] == "pending"
        assert d["last_status_code"] is None
        assert d["last_error"] == "no HTTP response"  # not the reason: that would leak it
        assert d["next_attempt_at"] is not None
    receiver.up()
    found = eventually(settled(admin, hook, 5), "delivery after the receiver came up")
    assert receiver.per_delivery() == Counter({d["id"]: 1 for d in found})


def test_a_slow_receiver_times_out_and_is_retried(admin, database, receiver):
    receiver.slow, receiver.delay = 1, 3 * FAST["webhook_timeout_seconds"]
    receiver.up()
    hook = subscribe(admin, receiver.url)
    emit(database, admin, "new_flaky_test", {"test": "t"})

    (delivery,) = eventually(settled(admin, hook, 1), "delivery after a timeout")
    first, second = delivery["attempts_log"]
    assert first["status_code"] is None
    assert first["error"] == "no HTTP response"
    assert first["duration_ms"] >= 0.9 * FAST["webhook_timeout_seconds"] * 1000
    assert second["status_code"] == 200
    # The slow request did reach the receiver: a duplicate, under the same id, from a retry.
    assert receiver.per_delivery() == Counter({delivery["id"]: 2})


@pytest.mark.parametrize("fast_settings", [{"webhook_max_attempts": 3}], indirect=True)
def test_dead_letter_after_the_attempt_limit_then_redeliver(
    admin, database, receiver, fast_settings
):
    receiver.failures = 10**6
    receiver.up()
    hook = subscribe(admin, receiver.url)
    emit(database, admin, "new_flaky_test", {"test": "t"})

    (dead,) = eventually(settled(admin, hook, 1, "dead"), "dead-lettering")
    limit = fast_settings.webhook_max_attempts
    assert dead["attempts"] == limit
    assert dead["next_attempt_at"] is None
    assert dead["last_status_code"] == 500 and dead["last_error"] == "HTTP 500"
    assert len(dead["attempts_log"]) == limit
    assert len(receiver.requests) == limit

    receiver.failures = 0
    revived = admin.client.post(f"/api/webhooks/{hook}/deliveries/{dead['id']}/redeliver")
    assert revived.status_code == 202
    assert revived.json()["delivery"]["status"] == "pending"
    assert revived.json()["delivery"]["attempts"] == 0

    (delivered,) = eventually(settled(admin, hook, 1), "the redelivery")
    assert delivered["id"] == dead["id"]
    assert delivered["attempts"] == 1
    assert len(delivered["attempts_log"]) == limit + 1
    assert [r.delivery for r in receiver.delivered()] == [dead["id"]]


def test_a_delivered_event_can_be_sent_again(admin, database, receiver):
    receiver.up()
    hook = subscribe(admin, receiver.url)
    emit(database, admin, "new_flaky_test", {"test": "t"})
    (first,) = eventually(settled(admin, hook, 1), "the delivery")
    assert (
        admin.client.post(f"/api/webhooks/{hook}/deliveries/{first['id']}/redeliver").status_code
        == 202
    )
    eventually(lambda: len(receiver.delivered()) == 2, "the second copy")
    assert {r.delivery for r in receiver.delivered()} == {first["id"]}
    assert receiver.delivered()[0].body == receiver.delivered()[1].body


def test_an_outcome_that_arrives_after_a_redelivery_is_ignored(admin, database, receiver):
    receiver.slow, receiver.delay = 1, 3 * FAST["webhook_timeout_seconds"]
    receiver.up()
    hook = subscribe(admin, receiver.url)
    emit(database, admin, "new_flaky_test", {"test": "t"})
    eventually(lambda: receiver.requests, "the first request")
    (delivery,) = deliveries(admin, hook)
    assert (
        admin.client.post(f"/api/webhooks/{hook}/deliveries/{delivery['id']}/redeliver").status_code
        == 202
    )

    # The redelivery succeeds while the first send still waits; that send's timeout must not
    # turn the delivered event back into a pending one.
    eventually(lambda: receiver.finished == 2, "both requests to end")
    (final,) = deliveries(admin, hook)
    assert (final["status"], final["attempts"]) == ("delivered", 1)
    assert receiver.per_delivery() == Counter({delivery["id"]: 2})


def test_two_servers_share_the_queue_without_duplicates(
    admin, database, receiver, fast_settings, hooks_server
):
    receiver.up()
    hook = subscribe(admin, receiver.url)
    second = LiveServer(create_app(fast_settings)).start()
    try:
        for n in range(40):
            emit(database, admin, "new_flaky_test", {"seq": n})
        found = eventually(settled(admin, hook, 40), "40 deliveries")
    finally:
        second.stop()
    assert receiver.per_delivery() == Counter({d["id"]: 1 for d in found})


def test_deleting_a_webhook_drops_its_pending_deliveries(admin, database, receiver):
    doomed = subscribe(admin, receiver.url, ("new_flaky_test",))
    kept = subscribe(admin, receiver.url, ("resolved_flaky_test",))
    for n in range(3):
        emit(database, admin, "new_flaky_test", {"seq": n})
    eventually(lambda: all(d["attempts"] >= 1 for d in deliveries(admin, doomed)), "attempts")

    assert admin.client.delete(f"/api/webhooks/{doomed}").status_code == 204
    with database.transaction() as session:
        left = session.scalar(select(func.count()).where(WebhookDelivery.webhook_id == doomed))
    assert left == 0
    receiver.up()
    emit(database, admin, "resolved_flaky_test", {"seq": "marker"})
    (marker,) = eventually(settled(admin, kept, 1), "the kept webhook's delivery")
    assert [r.delivery for r in receiver.requests] == [marker["id"]]


def test_deliveries_are_paged_newest_first(admin, database):
    hook = subscribe(admin, f"http://127.0.0.1:{free_port()}/nobody-listens")
    for n in range(service.PAGE_SIZE + 5):
        emit(database, admin, "new_flaky_test", {"seq": n})

    def page(number: int) -> dict[str, Any]:
        response = admin.client.get(f"/api/webhooks/{hook}/deliveries", params={"page": number})
        assert response.status_code == 200
        return response.json()

    first, second, third = page(1), page(2), page(3)
    assert (first["page"], first["has_more"]) == (1, True)
    assert (second["page"], second["has_more"]) == (2, False)
    assert third == {"deliveries": [], "page": 3, "has_more": False}
    assert len(first["deliveries"]) == service.PAGE_SIZE
    assert len(second["deliveries"]) == 5
    created = [
        datetime.fromisoformat(d["created_at"]) for d in first["deliveries"] + second["deliveries"]
    ]
    assert created == sorted(created, reverse=True)
    ids = [d["id"] for d in first["deliveries"] + second["deliveries"]]
    assert len(set(ids)) == service.PAGE_SIZE + 5


# --- surviving restarts and crashes --------------------------------------------------------


def test_a_restarted_server_resumes_delivery(fast_settings, database, receiver):
    first = LiveServer(create_app(fast_settings)).start()
    owner = make_tenant(database, first, scopes=("admin",))
    try:
        hook = subscribe(owner, receiver.url)
        for n in range(5):
            emit(database, owner, "new_flaky_test", {"seq": n})
        eventually(
            lambda: all(d["attempts"] >= 1 for d in deliveries(owner, hook)), "failed attempts"
        )
        first.stop()
        assert not [t for t in threading.enumerate() if t.name == "testlens-webhooks"]
        receiver.up()

        second = LiveServer(create_app(fast_settings)).start()
        try:
            owner.client.base_url = second.url
            found = eventually(settled(owner, hook, 5), "delivery by the restarted server")
        finally:
            second.stop()
        assert receiver.per_delivery() == Counter({d["id"]: 1 for d in found})
        assert sorted(json.loads(r.body)["seq"] for r in receiver.delivered()) == list(range(5))
    finally:
        drop_webhooks(database, owner)


def test_a_crash_mid_send_means_a_retry_under_the_same_id(
    fast_settings, database, receiver, tmp_path: Path
):
    """SIGKILL a real server process while it waits on the receiver: nothing is lost."""
    receiver.slow, receiver.delay = 1, 3.0  # holds the first request past the kill
    receiver.up()
    env = {
        **os.environ,
        "TESTLENS_DATABASE_URL": fast_settings.database_url,
        "TESTLENS_DATA_DIR": str(tmp_path),
        "TESTLENS_WEBHOOK_POLL_SECONDS": "0.02",
        "TESTLENS_WEBHOOK_TIMEOUT_SECONDS": "1",  # the kill lands well within it
        "TESTLENS_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",  # the receiver's loopback
    }
    with served(env, tmp_path / "server.log") as (process, url):
        owner = make_tenant(database, SimpleNamespace(url=url), ("admin",))
        try:
            hook = subscribe(owner, receiver.url)
            emit(database, owner, "new_flaky_test", {"test": "t"})
            eventually(lambda: receiver.requests, "the request to reach the receiver")
        finally:
            process.kill()
            process.wait()
    try:
        with database.transaction() as session:
            leased = session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook)
            ).one()
        assert (leased.status, leased.attempts) == ("pending", 0)  # the attempt never ended
        assert leased.next_attempt_at > utcnow()  # leased: no other worker takes it yet

        survivor = LiveServer(create_app(fast_settings)).start()
        try:
            owner.client.base_url = survivor.url
            (delivery,) = eventually(settled(owner, hook, 1), "the delivery after the crash")
        finally:
            survivor.stop()
    finally:
        drop_webhooks(database, owner)
    assert delivery["id"] == leased.id
    assert delivery["attempts"] == 1
    assert receiver.per_delivery() == Counter({leased.id: 2})


def test_uploads_that_make_a_test_flaky_and_resolve_it_send_the_seed_payloads(
    admin, receiver, monkeypatch
):
    from testlens.server.ingest import service as ingest

    subscribe(admin, receiver.up().url)
    start = datetime.now(UTC)
    clock = {"now": start}
    monkeypatch.setattr(ingest, "utcnow", lambda: clock["now"])

    def run(n: int, pay: list[str]) -> None:
        clock["now"] = start + timedelta(hours=n)
        response = upload(
            admin.client,
            junit({**STABLE, "test_pay": pay}),
            repo="acme/hooks",
            commit=f"{n:040x}",
            check_name="unit",
            provider="github",
        )
        assert response.status_code == 201, response.text

    run(0, ["pass"])
    run(1, ["fail", "pass"])  # a retry that passed: flaky at once
    first = eventually(lambda: receiver.delivered(), "new_flaky_test delivery")
    assert [r.event for r in first] == ["new_flaky_test"]
    assert signature_ok(first[0])
    flaky_at = (start + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert json.loads(first[0].body) == {
        "action": "new_flaky_test",
        "repository": {"name": "hooks", "org": "acme"},
        "test_suite": {"name": "unit", "provider": "github"},
        "test_case": {
            "name": "test_pay",
            "class_name": "tests.test_shop.TestShop",
            "first_occurrence": flaky_at,
            "last_occurrence": flaky_at,
            "last_24_hours_count": 1,
        },
        "commit_sha": f"{1:040x}",
    }
    # Staying flaky sends nothing more; resolving needs 14 quiet days and enough clean runs.
    for n in range(2, 80):
        run(24 * 15 + n, ["pass"])
    events = eventually(
        lambda: [r for r in receiver.delivered() if r.event == "resolved_flaky_test"],
        "resolved_flaky_test delivery",
    )
    assert len(events) == 1
    resolved = json.loads(events[0].body)
    assert resolved["action"] == "resolved_flaky_test"
    assert "commit_sha" not in resolved
    assert resolved["test_case"]["last_24_hours_count"] == 0
    assert [r.event for r in receiver.delivered()] == ["new_flaky_test", "resolved_flaky_test"]


# --- targets: no deliveries into the server's own network ---------------------------------

NON_PUBLIC = [
    "http://127.0.0.1:5432/",
    "http://127.1/",  # short form of 127.0.0.1
    "http://2130706433/",  # decimal
    "http://0x7f000001/",  # hex
    "http://0.0.0.0:8000/",
    "http://localhost:8000/",  # a name that resolves to loopback
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.0.0.5/",
    "http://172.16.1.1/",
    "http://192.168.1.10/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "https://[fd00::1]/",
]


@pytest.fixture
def strict_server(settings) -> Iterator[LiveServer]:
    """A server with the default policy: public addresses only."""
    live = LiveServer(create_app(replace(settings, webhook_allowed_networks=()))).start()
    yield live
    live.stop()


@pytest.mark.parametrize("url", NON_PUBLIC)
def test_registration_refuses_hosts_that_are_not_public(database, strict_server, url):
    owner = make_tenant(database, strict_server, scopes=("admin",))
    response = owner.client.post(
        "/api/webhooks", json={"url": url, "events": ["new_flaky_test"], "secret": SECRET}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "INVALID_FIELD" and body["details"]["field"] == "url"
    assert "refused by policy" in body["message"]
    assert owner.client.get("/api/webhooks").json()["webhooks"] == []
    owner.client.close()


def test_public_and_allowed_hosts_are_accepted(database, strict_server, admin):
    owner = make_tenant(database, strict_server, scopes=("admin",))
    body = {"events": ["new_flaky_test"], "secret": SECRET}
    public = owner.client.post("/api/webhooks", json={**body, "url": "https://93.184.216.34/h"})
    assert public.status_code == 201, public.text
    # hooks_server allows 127.0.0.0/8 (TESTLENS_WEBHOOK_ALLOWED_NETWORKS) and nothing more.
    allowed = admin.client.post("/api/webhooks", json={**body, "url": "http://127.0.0.1:9/h"})
    assert allowed.status_code == 201, allowed.text
    private = admin.client.post("/api/webhooks", json={**body, "url": "http://10.0.0.5/h"})
    assert private.status_code == 400
    drop_webhooks(database, owner)
    owner.client.close()


def test_every_delivery_is_checked_again_and_refusals_say_only_that(settings, receiver):
    receiver.up()
    strict = replace(settings, **FAST, webhook_allowed_networks=())
    worker = tasks.DeliveryWorker(None, None, strict)  # type: ignore[arg-type]
    job = tasks._Job(
        id="d-1", event="new_flaky_test", body="{}", attempts=0, attempt_log="[]",
        lease_until=utcnow(), url=receiver.url, encrypted_secret="",
    )  # fmt: skip
    with httpx.Client() as client:
        attempt = worker._send(client, job)
    assert attempt.error == "refused by policy"
    assert attempt.status_code is None
    assert receiver.requests == []


def test_a_name_resolving_to_public_and_private_addresses_is_refused():
    from testlens.server.webhooks.targets import RefusedTarget, check

    def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(RefusedTarget):
        check("https://rebind.example/h", resolver=mixed)
    target = check("https://ok.example:8443/h", resolver=lambda host, port: ["93.184.216.34"])
    assert (str(target.url), target.host) == ("https://93.184.216.34:8443/h", "ok.example")
