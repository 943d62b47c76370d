"""The worker protocol of orchestrated runs (docs/orchestration.md), shared by the clients that
take work from a run's queue: ``testlens worker`` (:mod:`.worker`) and the pytest plugin's
queue mode (:mod:`.pytest_queue`).

Only the protocol lives here: the paths, the claim's body, the answers' shapes, the upload
fields that tie a report to its batch, the thread that keeps a lease alive, and the one that
publishes live events while tests run (:class:`LivePublisher`). Policy stays
with each client, because the two differ on purpose: the calls take a
:class:`~testlens.client.http.Client` whose retries and time budget the caller chose, errors
propagate for the caller to judge (fall back, fail, or let it pass), and the heartbeat
reports through callbacks, so that one client can print at once and the other collect
warnings for pytest's summary. Neither click nor pytest is imported, so each client loads
only its own.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..core.identity import TestKey
from .http import Budget, Client, ServerError

RUNS_PATH = "/api/v1/orchestrate"
RUN_FINISHED = "RUN_FINISHED"
RUN_CANCELLED = "RUN_CANCELLED"
DEFAULT_HEARTBEAT = 10.0
"""Seconds between heartbeats when a claim's answer does not say: the server's default."""

LIVE_EVERY = 0.5
"""Seconds between a publisher's sends: often enough to look live, seldom enough to cost a
large run one small request a second per machine at most."""
LIVE_SEND_AT = 100
"""Events waiting that make a publisher send at once rather than at its next tick."""
LIVE_PER_REQUEST = 500
"""Events one ``POST /api/v1/runs/{runId}/events`` may carry: the server's limit."""
LIVE_WAITING = 5_000
"""Events a publisher holds for a server that is slow or gone; it drops what comes after."""
LIVE_SEND_SECONDS = 2.0
"""Seconds one send may take, as one try: a live event late by more is no longer live."""
LIVE_CLOSE_SECONDS = 2.0
"""Seconds closing a publisher may spend sending what is left."""

EventType = Literal["test:start", "test:batch"]
"""What a runner may publish to a run's live stream."""

Rerun = Literal["failed", "all"]
"""What a retried CI job asks the run for: the work its node ran whose tests failed, or all."""


class RunOver(Exception):
    """The run hands out no more work: 409 ``RUN_FINISHED`` or ``RUN_CANCELLED``. Not a
    :class:`~testlens.client.http.ServerError`, so that a caller that falls back when the
    server fails never takes the end of the run for a failure."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Item:
    """One unit of work of a claimed batch: a file, or the listed tests of one file, with the
    retries a failing test of it may use."""

    file: str
    tests: tuple[str, ...] | None
    retries: int = 0

    @property
    def entries(self) -> tuple[str, ...]:
        """What a runner is given for this item: its tests, else its file."""
        return self.tests if self.tests is not None else (self.file,)


@dataclass(frozen=True, slots=True)
class Batch:
    """A claimed batch: its items, and the run's project and environment, which the batch's
    upload names."""

    batch_id: str
    items: tuple[Item, ...]
    project: str | None
    environment: str | None
    heartbeat_seconds: float

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Batch:
        """The batch of a ``claimed`` answer. The fields the API leaves optional or nullable
        take the server's defaults (no retries, the default heartbeat) when absent."""
        items = tuple(
            Item(
                str(item["file"]),
                None if item.get("tests") is None else tuple(map(str, item["tests"])),
                int(item.get("retries") or 0),
            )
            for item in answer["items"]
        )
        return cls(
            str(answer["batchId"]),
            items,
            answer.get("project"),
            answer.get("environment"),
            float(answer.get("heartbeatSeconds") or DEFAULT_HEARTBEAT),
        )

    @property
    def entries(self) -> list[str]:
        return [entry for item in self.items for entry in item.entries]


def create_run(client: Client, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run for ``body``, and whether this call created it: a machine giving the
    ``ciBuildId`` of a run that exists joins it (409 ``PLAN_CONFLICT`` when its list
    differs)."""
    response = client.request("POST", RUNS_PATH, json=body)
    return response.json(), response.status_code == 201


def claim(
    client: Client,
    run_id: str,
    batch_id: str,
    *,
    worker: str,
    node_index: int | None = None,
    rerun: Rerun | None = None,
    attempt: int | None = None,
) -> Batch | float:
    """A batch to run, or the seconds to wait before asking again; :class:`RunOver` when the
    run hands out no more.

    ``batch_id`` is the caller's, new for each claim: a call the client retries sends the
    same one, so a batch granted by a call whose answer was lost is the one answered again.
    ``attempt`` goes only with ``rerun``, which is all it qualifies.
    """
    body: dict[str, Any] = {"batchId": batch_id, "worker": worker}
    if node_index is not None:
        body["nodeIndex"] = node_index
    if rerun is not None:
        body["rerun"] = rerun
        if attempt is not None:
            body["attempt"] = attempt
    try:
        response = client.request("POST", f"{RUNS_PATH}/{run_id}/claims", json=body)
    except ServerError as exc:
        if exc.status == 409 and exc.code in (RUN_FINISHED, RUN_CANCELLED):
            raise RunOver(exc.code) from None
        raise
    answer = response.json()
    if answer["status"] == "wait":
        return max(0.0, float(answer["retryAfter"]))
    if answer["status"] != "claimed":
        raise ValueError(f"unknown claim status {answer['status']!r}")
    return Batch.from_answer(answer)


def release(client: Client, run_id: str, batch_id: str) -> None:
    """Give the batch's items without a result back to the front of the queue now, rather
    than when its lease lapses."""
    client.request("DELETE", f"{RUNS_PATH}/{run_id}/claims/{batch_id}")


def upload_fields(run_id: str, batch_id: str) -> dict[str, str]:
    """The form fields that make a report's upload the results of a batch: it joins the
    run's build, and the batch's items are done."""
    return {"orchestration_run": run_id, "batch_id": batch_id}


def shown_name(test: str) -> tuple[str, str]:
    """``(testFile, testName)`` of a test id (a node id, or a file) as a run's results show
    it, so that a live event and the upload's result name a test alike: the file, and the
    rest of the node id (``TestCart::test_add``)."""
    key = TestKey.from_nodeid(test)
    return key.file, "::".join(part for part in (key.classname, key.name) if part)


class Heartbeat:
    """Renews a batch's lease every ``heartbeatSeconds`` from a thread of its own, because the
    caller's thread is busy running the batch.

    ``status`` is the server's last word (``active``, ``expired``, ``cancelled``, ``done``)
    and ``failed`` counts the beats that failed. A failed beat never stops the thread: the
    batch's results count when uploaded, even after its lease lapsed. ``connect`` gives a
    client, with the caller's retries and budget, for one beat. ``on_change`` hears of a
    status unlike the last and ``on_failure`` of a beat's exception, both on the heartbeat's
    thread. ``join_on_exit`` makes leaving wait for a beat in flight, so that ``status`` is
    final once read; otherwise leaving returns at once, for a caller being stopped with only
    seconds left.
    """

    def __init__(
        self,
        connect: Callable[[], Client],
        run_id: str,
        batch: Batch,
        *,
        on_change: Callable[[str], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        join_on_exit: bool = False,
    ) -> None:
        self.status = "active"
        self.failed = 0
        self._connect = connect
        self._path = f"{RUNS_PATH}/{run_id}/claims/{batch.batch_id}/heartbeat"
        self._every = batch.heartbeat_seconds
        self._on_change = on_change
        self._on_failure = on_failure
        self._join_on_exit = join_on_exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testlens-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._join_on_exit:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with self._connect() as client:
                    status = str(client.request("POST", self._path).json()["status"])
            except Exception as exc:  # nothing on this thread may disturb the batch
                self.failed += 1
                if self._on_failure is not None:
                    self._on_failure(exc)
                continue
            if status != self.status and self._on_change is not None:
                self._on_change(status)
            self.status = status


class LivePublisher:
    """Publishes a run's live events (``POST /api/v1/runs/{runId}/events``) from a thread of
    its own, so that watchers see tests start and finish before a batch's report is uploaded.

    Live events are for watching only: the upload is what counts, and its own events follow.
    So publishing is best effort and must never fail or slow the tests: :meth:`publish` only
    queues, the thread sends every :data:`LIVE_EVERY` seconds (at once when
    :data:`LIVE_SEND_AT` are waiting) with one try of at most :data:`LIVE_SEND_SECONDS`, and
    what cannot be sent is dropped and counted in ``dropped``: the events of a failed send,
    those beyond :data:`LIVE_WAITING` waiting, those left when :meth:`close` has spent
    :data:`LIVE_CLOSE_SECONDS`, and every event after the server refused one (a 4xx other than
    429, such as an unknown run: sending again would be refused again). ``on_failure`` hears
    of the first failure only, on the publisher's thread, so that a run against a server
    without the endpoint warns once rather than twice a second. :meth:`flush` lets a runner
    about to upload have its live events sent first, so that watchers get them before the
    authoritative ones. The thread starts with the publisher; leaving it as a context manager
    closes it.
    """

    def __init__(
        self,
        server: str,
        token: str | None,
        run_id: str,
        *,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self.dropped = 0
        self.failed = 0
        self._path = f"/api/v1/runs/{run_id}/events"
        self._client = Client(server, token, attempts=1, timeout=LIVE_SEND_SECONDS)
        self._on_failure = on_failure
        self._waiting: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._sending = False  # a request is in flight
        self._settled = threading.Condition(self._lock)  # notified when a send ends
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._refused = False
        self._thread = threading.Thread(target=self._run, name="testlens-live", daemon=True)
        self._thread.start()

    def __enter__(self) -> LivePublisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def publish(self, kind: EventType, payload: dict[str, Any]) -> None:
        """Queue one event; never blocks on the server, never raises for it."""
        with self._lock:
            if self._refused or self._closing.is_set() or len(self._waiting) >= LIVE_WAITING:
                self.dropped += 1
                return
            self._waiting.append({"type": kind, "payload": payload})
            if len(self._waiting) >= LIVE_SEND_AT:
                self._wake.set()

    def flush(self, seconds: float = LIVE_SEND_SECONDS) -> None:
        """Wait until what was published is sent or dropped, for at most ``seconds``."""
        with self._lock:
            self._wake.set()
            self._settled.wait_for(lambda: not (self._waiting or self._sending), seconds)

    def close(self) -> None:
        """Send what is waiting, for at most :data:`LIVE_CLOSE_SECONDS`, and stop; what is
        still waiting then is dropped."""
        self._closing.set()
        self._wake.set()
        self._thread.join(LIVE_CLOSE_SECONDS + 0.5)
        self._discard_waiting()

    def _run(self) -> None:
        with self._client:
            while not self._closing.is_set():
                self._wake.wait(LIVE_EVERY)
                self._wake.clear()
                self._send_waiting(None)
            self._send_waiting(time.monotonic() + LIVE_CLOSE_SECONDS)

    def _send_waiting(self, deadline: float | None) -> None:
        """Send the waiting events, :data:`LIVE_PER_REQUEST` at a time, until none is left, a
        send fails (the next tick tries again with what came since), or ``deadline``."""
        while True:
            seconds = LIVE_SEND_SECONDS
            if deadline is not None:
                seconds = min(seconds, deadline - time.monotonic())
                if seconds <= 0:
                    return
            with self._lock:
                count = min(len(self._waiting), LIVE_PER_REQUEST)
                events = [self._waiting.popleft() for _ in range(count)]
                self._sending = bool(events)
                if not events:
                    self._settled.notify_all()
                    return
            self._client.budget = Budget(seconds)
            try:
                self._client.request("POST", self._path, json={"events": events})
            except Exception as exc:  # nothing on this thread may disturb the tests
                # A refusal (an unknown run, a key without the scope) would be repeated.
                refused = (
                    isinstance(exc, ServerError) and 400 <= exc.status < 500 and exc.status != 429
                )
                with self._lock:
                    self.dropped += len(events)
                    self._refused = self._refused or refused
                    if refused:
                        self.dropped += len(self._waiting)
                        self._waiting.clear()
                    self._sending = False
                    self._settled.notify_all()
                self.failed += 1
                if self.failed == 1 and self._on_failure is not None:
                    self._on_failure(exc)
                return
            with self._lock:
                self._sending = False
                self._settled.notify_all()

    def _discard_waiting(self) -> None:
        with self._lock:
            self.dropped += len(self._waiting)
            self._waiting.clear()
